"""The pure core of raftgrpc: what goes on the wire and the policies that decide it.

Nothing here opens a socket, starts a thread or reads the clock by itself (where time
matters, it is passed in), so every module is tested by feeding inputs and asserting
outputs. The gRPC shell (:mod:`raftgrpc._transport`) only moves bytes and events.
"""
