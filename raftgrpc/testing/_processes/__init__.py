"""A Raft cluster of real processes on loopback, for tests that kill, restart and partition
nodes, and for benchmarks.

* :mod:`~raftgrpc.testing._processes.node`: one SyncObj node process (a replicated key-value
  store on a named transport) answering a line-based JSON control protocol; run it with
  ``python -m raftgrpc.testing._processes.node``.
* :mod:`~raftgrpc.testing._processes.harness`: :class:`~.harness.Cluster` starts, stops,
  kills and queries those processes and waits, with deadlines, for what a test expects;
  :class:`~.harness.Writer` is a client that keeps writing and records what was acknowledged.
* :mod:`~raftgrpc.testing._processes.rolling`: a rolling restart of a live cluster from one
  transport to another (a TCPTransport to gRPC migration, rehearsed).
* :mod:`~raftgrpc.testing._processes.fullstack` and
  :mod:`~raftgrpc.testing._processes.migrationstack`: the node transports ``grpc-full`` (every
  middleware layer, throwaway JWT keys) and ``grpc-mapped`` / ``migration``.

raftgrpc's multi-process tests (tests/cluster) and its benchmarks (bench/) are built on it.
It is private (not part of the public API: it changes with those tests): it lives in the
package so that tests/ and bench/ share one copy without either importing the other.
"""
