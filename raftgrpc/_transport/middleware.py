"""What a :class:`~raftgrpc.GrpcTransport` wraps around its gRPC server and channels.

:class:`~raftgrpc.TransportBuilder` fills a :class:`Middleware` from its ``with_*`` calls;
it can also be built by hand and bound with ``functools.partial(GrpcTransport,
middleware=...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from raftgrpc._transport.services import ServiceFactory

__all__ = ["FrameObserver", "Middleware", "NodeCallCredentials", "dial", "dial_aio"]


class FrameObserver(Protocol):
    """Sees each Raft message sent and received (raftgrpc's own tracing spans).

    Both methods run on PySyncObj's tick thread and must be cheap when they do nothing.
    """

    def on_send(self, peer: str, message: dict[str, Any], nbytes: int) -> dict[str, str] | None:
        """Called for each message sent; returns a W3C trace context to carry with it, or None."""

    def on_receive(
        self,
        peer: str,
        message: dict[str, Any],
        carrier: Mapping[str, str] | None,
        nbytes: int,
    ) -> contextlib.AbstractContextManager[None]:
        """Wraps the delivery to SyncObj of one received message that carries a trace
        context (``on_send`` returned one on the sender)."""


NodeCallCredentials = Callable[[str], grpc.CallCredentials]
"""Makes the call credentials (a JWT source) a node attaches, given the node's own id."""


@dataclass(frozen=True)
class Middleware:
    """Interceptors, credentials and observers around one transport's gRPC traffic.

    Interceptor sequences are in chain order: the first is the outermost (it sees a call
    first and its result last).
    """

    server_interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()
    """Applied to every RPC the node serves. The node's server is a ``grpc.aio`` server, so
    these are ``grpc.aio.ServerInterceptor`` objects (raftgrpc's own layers have both flavors:
    e.g. ``log.aio_server_interceptor()``)."""

    client_interceptors: Sequence[Any] = ()
    """Applied to every channel the node dials: ``grpc.aio`` client interceptors."""

    dial_interceptors: Sequence[Any] = ()
    """Client interceptors of grpcio's synchronous API, for the channels :func:`dial` makes
    (``TransportBuilder.dial``: admin and health clients)."""

    server_credentials: grpc.ServerCredentials | None = None
    """TLS (or local) credentials for the server port; None serves plaintext."""

    channel_credentials: grpc.ChannelCredentials | None = None
    """TLS (or local) credentials for dialling peers; None dials plaintext."""

    channel_options: Sequence[tuple[str, Any]] = ()
    """Extra channel options (e.g. ``grpc.ssl_target_name_override``)."""

    call_credentials: NodeCallCredentials | None = None
    """Per-call credentials (JWT); only sent on channels with ``channel_credentials``."""

    frame_observer: FrameObserver | None = None
    """raftgrpc's per-message spans; None traces nothing."""

    services: Sequence[ServiceFactory] = ()
    """Extra services the node serves (health, admin): see :mod:`raftgrpc._transport.services`."""

    on_close: Sequence[Callable[[], None]] = field(default_factory=tuple)
    """Called by ``destroy()`` (e.g. to stop a credential reloader)."""

    def __post_init__(self) -> None:
        for interceptor in self.server_interceptors:
            if not isinstance(interceptor, grpc.aio.ServerInterceptor):
                from raftgrpc._errors import ConfigError

                raise ConfigError(
                    f"{type(interceptor).__name__} is not a grpc.aio.ServerInterceptor: a "
                    "node's server runs on grpc.aio (see raftgrpc._transport.tickloop); raftgrpc's "
                    "layers have a grpc.aio flavor (aio_server_interceptor)"
                )
        for client in self.client_interceptors:
            if not isinstance(client, grpc.aio.ClientInterceptor):
                from raftgrpc._errors import ConfigError

                raise ConfigError(
                    f"{type(client).__name__} is not a grpc.aio client interceptor: a node's "
                    "channels are grpc.aio channels (interceptors of grpcio's synchronous API "
                    "go in dial_interceptors, for dial())"
                )
        if self.call_credentials is not None and self.channel_credentials is None:
            # gRPC itself refuses call credentials on insecure channels; fail at build time.
            from raftgrpc._errors import ConfigError

            raise ConfigError(
                "call credentials (tokens) need channel credentials: TLS, or local credentials "
                "for loopback development"
            )


def dial(
    target: str, middleware: Middleware, node_id: str, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel (grpcio's synchronous API) to ``target`` with ``middleware``'s credentials
    (tokens made for ``node_id``), channel options and ``dial_interceptors``, plus
    ``options``."""
    all_options = [*options, *middleware.channel_options]
    credentials = middleware.channel_credentials
    if credentials is None:
        channel = grpc.insecure_channel(target, options=all_options)
    else:
        if middleware.call_credentials is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, middleware.call_credentials(node_id)
            )
        channel = grpc.secure_channel(target, credentials, options=all_options)
    if middleware.dial_interceptors:
        channel = grpc.intercept_channel(channel, *middleware.dial_interceptors)
    return channel


def dial_aio(
    target: str, middleware: Middleware, node_id: str, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """:func:`dial` for the transport's own channels: a ``grpc.aio`` channel on the running
    event loop, with ``middleware``'s ``grpc.aio`` client interceptors."""
    all_options = [*options, *middleware.channel_options]
    interceptors = list(middleware.client_interceptors) or None
    credentials = middleware.channel_credentials
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)
    if middleware.call_credentials is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, middleware.call_credentials(node_id)
        )
    return grpc.aio.secure_channel(
        target, credentials, options=all_options, interceptors=interceptors
    )
