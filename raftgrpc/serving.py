"""Starting a gRPC server on its own thread pool, or leaving nothing behind."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["Serving", "start_server"]


class Serving:
    """A started server, its thread pool and the port it listens on."""

    def __init__(
        self, server: grpc.Server, executor: concurrent.futures.ThreadPoolExecutor, port: int
    ) -> None:
        self.server = server
        self.executor = executor
        self.port = port


def start_server(
    target: str,
    *,
    handlers: Sequence[Any],
    max_workers: int,
    max_concurrent_rpcs: int,
    thread_name_prefix: str,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[Any] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> Serving:
    """Bind ``target`` (TLS when ``credentials``) and start serving ``handlers``.

    Raises OSError (or gRPC's error) if the port cannot be bound; the server and its threads
    are then stopped, so a failed attempt can simply be retried.
    """
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=max_workers, thread_name_prefix=thread_name_prefix
    )
    server = grpc.server(
        executor,
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
        server.start()
    except BaseException:
        server.stop(None)
        executor.shutdown(wait=False)
        raise
    return Serving(server, executor, port)
