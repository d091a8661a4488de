"""Starting a ``grpc.aio`` server on the transport's event loop, or leaving nothing behind."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["Serving", "start_server"]


class Serving:
    """A started server and the port it listens on."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.server = server
        self.port = port


async def start_server(
    target: str,
    *,
    handlers: Sequence[Any],
    max_concurrent_rpcs: int,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[Any] = (),
    credentials: grpc.ServerCredentials | None = None,
    executor: concurrent.futures.ThreadPoolExecutor | None = None,
) -> Serving:
    """Bind ``target`` (TLS when ``credentials``) and start serving ``handlers`` on the
    running event loop. ``executor`` runs handlers written for grpcio's synchronous API
    (``grpc.aio``'s migration thread pool); raftgrpc's own handlers are coroutines.

    Raises OSError (or gRPC's error) if the port cannot be bound; the server is then
    stopped, so a failed attempt can simply be retried.
    """
    server = grpc.aio.server(
        migration_thread_pool=executor,
        handlers=list(handlers),
        interceptors=list(interceptors),
        options=list(options),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, credentials)
        if not port:
            raise OSError(f"cannot listen on {target}")
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    return Serving(server, port)
