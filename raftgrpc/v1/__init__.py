"""Generated protobuf and gRPC code for ``proto/raftgrpc/v1`` (``make proto``; do not edit)."""
