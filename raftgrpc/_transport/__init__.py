"""The gRPC shell: GrpcTransport, its streams and queues, and MigrationTransport.

Everything here runs on PySyncObj's tick thread (the event loop it drives) or hands work to
it; decisions about bytes and policies are delegated to :mod:`raftgrpc._protocol`.
"""
