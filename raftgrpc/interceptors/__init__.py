"""gRPC interceptors and observers for raftgrpc: auth, tracing, logging, retries."""
