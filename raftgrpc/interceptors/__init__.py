"""gRPC interceptors for raftgrpc, one public module per concern.

=====================  ====================================================================
module                 concern
=====================  ====================================================================
``auth``               JWT: token sources and call credentials (client), verification,
                       roles and identity binding (server), key sets that follow a file
``identity``           mTLS: the node id a peer claims must be one its certificate names
``tracing``            OpenTelemetry spans per RPC, and per sampled Raft message
``log``                structured logs of the RPC lifecycle, and a JSON formatter
``retry``              gRPC retry policies for idempotent unary calls; retried-attempt logs
``_skeleton``          (private) the server-interceptor skeleton the server layers share:
                       selection, the four handler kinds, grpcio's sync and aio flavours
``_handlers``          (private) taking a method handler apart and back together
``_client``            (private) client interceptors for every call kind in one method
=====================  ====================================================================
"""

__all__: list[str] = []
