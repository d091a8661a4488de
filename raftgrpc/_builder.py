"""TransportBuilder: one configuration of middleware for every node of a cluster.

>>> factory = (
...     TransportBuilder()
...     .with_logging()
...     .with_tracing(provider, sample_ratio=0.01)
...     .with_tls(tls)
...     .with_jwt(verifier=verifier, tokens=tokens)
...     .build()
... )  # doctest: +SKIP
>>> node = MyStore(me, partners, transportClass=factory)  # doctest: +SKIP

Each ``with_*`` call adds a layer to both interceptor chains, server and client, in call
order: the layer added first is the outermost, so it sees a call first and its outcome
last (add logging and tracing before auth to log and trace refused calls too). TLS is not
an interceptor: it secures the port and channels wherever it is added, and with mTLS its
identity check is a server layer at its position.

``build()`` freezes what the builder holds: the factory it returns keeps that configuration
even if the builder is changed (or built again) afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from raftgrpc._errors import ConfigError
from raftgrpc._protocol.address import grpc_target
from raftgrpc._transport.config import TransportConfig
from raftgrpc._transport.grpc_transport import GrpcTransport
from raftgrpc._transport.inbound import claimed_node_id
from raftgrpc._transport.middleware import FrameObserver, Middleware, dial
from raftgrpc._transport.services import ServiceFactory

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from raftgrpc._security.tls import TlsConfig
    from raftgrpc.interceptors.auth import AuthMode, TokenSource, TokenVerifier

    # A client interceptor of grpcio's synchronous API (for the channels dial() makes).
    SyncClientInterceptor: TypeAlias = (
        grpc.UnaryUnaryClientInterceptor[Any, Any]
        | grpc.UnaryStreamClientInterceptor[Any, Any]
        | grpc.StreamUnaryClientInterceptor[Any, Any]
        | grpc.StreamStreamClientInterceptor[Any, Any]
    )
    # grpc.aio's client interceptors have no common typed base in the stubs.
    AioClientInterceptor: TypeAlias = Any

__all__ = ["TransportBuilder", "TransportFactory"]

TransportFactory = Callable[[Any, Any, Any], GrpcTransport]
"""What ``build()`` returns; PySyncObj calls it with ``(syncObj, selfNode, otherNodes)``."""


_LOCAL = grpc.LocalConnectionType.LOCAL_TCP


@dataclass(frozen=True)
class _Layer:
    name: str
    server: grpc.aio.ServerInterceptor[Any, Any] | None = None  # the node's server
    client: tuple[AioClientInterceptor, ...] = ()  # the node's channels
    dial: SyncClientInterceptor | None = None  # channels made by dial()


@dataclass(frozen=True)
class _Plan:
    """Everything a builder has been told, immutable: each ``with_*`` call replaces the
    builder's plan with a new one, so a factory built earlier keeps the plan it was built
    from."""

    config: TransportConfig = dataclasses.field(default_factory=TransportConfig)
    layers: tuple[_Layer, ...] = ()
    tls: TlsConfig | Callable[[str], TlsConfig] | None = None
    token_factory: Callable[[str], TokenSource] | None = None
    local_loopback: bool = False
    tracing: tuple[TracerProvider | None, float] | None = None
    retry_options: tuple[tuple[str, Any], ...] = ()
    closers: tuple[Callable[[], None], ...] = ()
    jwt_mode: AuthMode | None = None
    admin: tuple[float, bool] | None = None
    services: tuple[ServiceFactory, ...] = ()

    def adding(self, *layers: _Layer, **changes: Any) -> _Plan:
        """This plan with ``layers`` appended to the chain and ``changes`` applied."""
        return dataclasses.replace(self, layers=self.layers + layers, **changes)

    def middleware(self, node_id: str) -> Middleware:
        """The middleware of the node whose Raft id is ``node_id`` ("" for read-only)."""
        server_credentials: grpc.ServerCredentials | None = None
        channel_credentials: grpc.ChannelCredentials | None = None
        channel_options: list[tuple[str, Any]] = []
        if self.tls is not None:
            from raftgrpc._security import tls as tls_module

            tls = self.tls if isinstance(self.tls, tls_module.TlsConfig) else self.tls(node_id)
            if not tls.require_client_cert and any(x.name == "mtls-identity" for x in self.layers):
                raise ConfigError(
                    f"the TLS configuration of {node_id!r} does not require client certificates, "
                    "but with_tls() was given a function: return mTLS configurations, or pass "
                    "bind_identity=False"
                )
            server_credentials = tls_module.server_credentials(tls)
            channel_credentials = tls_module.channel_credentials(tls)
            channel_options = list(tls_module.channel_options(tls))
        elif self.local_loopback:
            server_credentials = grpc.local_server_credentials(_LOCAL)
            channel_credentials = grpc.local_channel_credentials(_LOCAL)
        call_credentials = None
        if self.token_factory is not None:
            if channel_credentials is None:
                raise ConfigError(
                    "JWT tokens are only sent on secure channels: call with_tls(), or pass "
                    "allow_insecure_loopback=True to with_jwt() for a loopback-only cluster"
                )
            # The node's token source is made once, here, when its transport is created
            # (not on each dial, which may run on the tick thread): a factory that fails
            # fails the transport's construction with its own error.
            from raftgrpc.interceptors import auth

            credentials = auth.call_credentials(self.token_factory(node_id))

            def call_credentials(_node_id: str) -> grpc.CallCredentials:
                return credentials

        observer: FrameObserver | None = None
        if self.tracing is not None:
            from raftgrpc.interceptors import tracing

            provider, ratio = self.tracing
            observer = tracing.FrameTracer(provider, sample_ratio=ratio, node_id=node_id)
        services = list(self.services)
        if self.admin is not None:
            from raftgrpc._ops import admin_service as admin

            timeout_s, allow = self.admin
            loopback_only = admin.require_authorization(self.jwt_mode, allow_unauthenticated=allow)
            services.append(admin.service(timeout_s=timeout_s, loopback_only=loopback_only))
        return Middleware(
            services=tuple(services),
            server_interceptors=tuple(x.server for x in self.layers if x.server is not None),
            client_interceptors=tuple(i for x in self.layers for i in x.client),
            dial_interceptors=tuple(x.dial for x in self.layers if x.dial is not None),
            server_credentials=server_credentials,
            channel_credentials=channel_credentials,
            channel_options=tuple(channel_options),
            call_credentials=call_credentials,
            frame_observer=observer,
            on_close=self.closers,
        )


class TransportBuilder:
    """Composes a :class:`~raftgrpc.GrpcTransport` with TLS, JWT auth, tracing, logging and
    user interceptors. The same builder (and the factory it builds) serves every node: what
    depends on the node (its token's subject) is derived from the node's id."""

    def __init__(self, config: TransportConfig | None = None) -> None:
        self._plan = _Plan() if config is None else _Plan(config=config)

    # -- configuration -------------------------------------------------------------------

    def with_config(self, config: TransportConfig) -> TransportBuilder:
        """Use ``config`` for the transport's own settings."""
        if not isinstance(config, TransportConfig):
            raise ConfigError(f"with_config() takes a TransportConfig, got {type(config).__name__}")
        self._plan = dataclasses.replace(self._plan, config=config)
        return self

    def with_tls(
        self, tls: TlsConfig | Callable[[str], TlsConfig], *, bind_identity: bool = True
    ) -> TransportBuilder:
        """Serve and dial with TLS.

        ``tls`` is a :class:`raftgrpc.TlsConfig`, or a function of the node id that
        returns one (each node has its own certificate, so one builder can serve every node:
        ``lambda node_id: TlsConfig(cert_file=f"certs/{node_id}.crt", ...)``).
        With mTLS (``require_client_cert``) and ``bind_identity``, a peer's certificate must
        name the node it claims to be in its Hello
        (:func:`raftgrpc.interceptors.identity.identity_interceptor`);
        that check is a server layer at this position of the chain.
        """
        from raftgrpc._security import tls as tls_module
        from raftgrpc.interceptors.identity import aio_identity_interceptor

        if self._plan.tls is not None:
            raise ConfigError("with_tls() was already called")
        if not (isinstance(tls, tls_module.TlsConfig) or callable(tls)):
            raise ConfigError(
                f"with_tls() takes a TlsConfig or a function of the node id, got "
                f"{type(tls).__name__}"
            )
        sample = tls if isinstance(tls, tls_module.TlsConfig) else None
        mutual = sample.require_client_cert if sample is not None else True
        layers: tuple[_Layer, ...] = ()
        if mutual and bind_identity:
            # A function is called per node in middleware(), which checks that what it
            # returns requires client certificates (unless bind_identity=False).
            layers = (_Layer("mtls-identity", server=aio_identity_interceptor(_raft_identity)),)
        self._plan = self._plan.adding(*layers, tls=tls)
        return self

    def with_jwt(
        self,
        *,
        verifier: TokenVerifier | None = None,
        tokens: Callable[[str], TokenSource] | None = None,
        mode: AuthMode | str | None = None,
        allow_insecure_loopback: bool = False,
    ) -> TransportBuilder:
        """Authenticate nodes with JWTs (:mod:`raftgrpc.interceptors.auth`).

        ``verifier`` (a ``TokenVerifier``) checks the tokens of inbound calls, in ``mode``
        (``AuthMode.ENFORCE`` by default; ``AUDIT`` logs and accepts, for rolling it out).
        The subject of a token must be the node id its stream claims in its Hello.
        ``tokens(node_id)`` returns the ``TokenSource`` a node attaches to the calls it makes;
        it is called once per transport. A read-only node is asked for ``tokens("")``: give
        it a token of its own (e.g. ``subject=node_id or "reader-1"``), which can only open
        read-only streams. Tokens are sent only on TLS channels; without
        :meth:`with_tls`, ``allow_insecure_loopback=True`` sends them over local credentials,
        which gRPC allows on loopback connections only (development).
        """
        from raftgrpc.interceptors import auth

        if verifier is None and tokens is None:
            raise ConfigError("with_jwt() needs a verifier, a token factory, or both")
        if tokens is not None and not callable(tokens):
            raise ConfigError("with_jwt(tokens=...) takes a function of the node id")
        layers: tuple[_Layer, ...] = ()
        jwt_mode = self._plan.jwt_mode
        if verifier is not None:
            jwt_mode = auth.AuthMode.ENFORCE if mode is None else auth.AuthMode(mode)
            layers = (
                _Layer(
                    "jwt",
                    server=auth.aio_server_interceptor(
                        verifier,
                        mode=jwt_mode,
                        identity_of=_raft_identity,
                        bind_unclaimed=_is_raft_stream,
                    ),
                ),
            )
        self._plan = self._plan.adding(
            *layers,
            jwt_mode=jwt_mode,
            token_factory=tokens,
            local_loopback=allow_insecure_loopback,
        )
        return self

    def with_tracing(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        sample_ratio: float = 0.01,
        rpc_spans: bool = True,
    ) -> TransportBuilder:
        """Trace with OpenTelemetry (:mod:`raftgrpc.interceptors.tracing`).

        RPC-level spans (opentelemetry-instrumentation-grpc, health checks excluded) when
        ``rpc_spans``, and raftgrpc's own spans for a ``sample_ratio`` share of the Raft
        messages, their W3C context carried in the message so the receiver's span joins the
        sender's trace. ``tracer_provider`` None: the global one.
        """
        from raftgrpc.interceptors import tracing

        if not 0.0 <= sample_ratio <= 1.0:
            raise ConfigError(f"sample_ratio must be within [0, 1], got {sample_ratio!r}")
        layers: tuple[_Layer, ...] = ()
        if rpc_spans:
            layers = (
                _Layer(
                    "tracing",
                    server=tracing.aio_server_interceptor(tracer_provider),
                    client=tuple(tracing.aio_client_interceptors(tracer_provider)),
                    dial=tracing.client_interceptor(tracer_provider),
                ),
            )
        self._plan = self._plan.adding(*layers, tracing=(tracer_provider, sample_ratio))
        return self

    def with_logging(self, logger: logging.Logger | None = None) -> TransportBuilder:
        """Log each RPC's lifecycle with structured fields (:mod:`raftgrpc.interceptors.log`)."""
        from raftgrpc.interceptors import log

        self._plan = self._plan.adding(
            _Layer(
                "logging",
                server=log.aio_server_interceptor(logger),
                client=(log.aio_client_interceptor(logger),),
                dial=log.client_interceptor(logger),
            )
        )
        return self

    def with_retries(
        self, methods: Sequence[tuple[str, str | None]], **policy: Any
    ) -> TransportBuilder:
        """Retry idempotent unary calls on channels made by :meth:`dial` (admin, health),
        and log retried attempts on the server (a layer at this position).

        The Raft stream is never retried: PySyncObj resends from its own state after a
        disconnect, and a replayed frame could arrive twice or out of order.
        """
        from raftgrpc.interceptors import retry

        self._plan = self._plan.adding(
            _Layer("retry", server=retry.aio_server_interceptor()),
            retry_options=tuple(retry.channel_options(methods, **policy)),
        )
        return self

    def with_admin(
        self, *, timeout_s: float = 10.0, allow_unauthenticated: bool = False
    ) -> TransportBuilder:
        """Serve ``raftgrpc.v1.Admin`` (status, membership, leadership transfer, code version:
        PySyncObj's utility commands, see :mod:`raftgrpc._ops.admin_service`) to admin-role tokens.

        Refused unless :meth:`with_jwt` enforces tokens, or ``allow_unauthenticated=True``
        (then callers on loopback addresses only, for development).
        """
        from raftgrpc._ops import admin_service as admin

        if self._plan.admin is not None:
            raise ConfigError("with_admin() was already called")
        admin.service(timeout_s=timeout_s)  # validates the settings now
        self._plan = dataclasses.replace(self._plan, admin=(timeout_s, allow_unauthenticated))
        return self

    def with_service(self, factory: ServiceFactory) -> TransportBuilder:
        """Serve an extra service on every node (see :mod:`raftgrpc._transport.services`)."""
        if not callable(factory):
            raise ConfigError(f"with_service() takes a service factory, got {factory!r}")
        self._plan = dataclasses.replace(self._plan, services=(*self._plan.services, factory))
        return self

    def with_server_interceptor(
        self, *interceptors: grpc.aio.ServerInterceptor[Any, Any]
    ) -> TransportBuilder:
        """Add user server interceptors, as layers at this position of the chain.

        A node's server is a ``grpc.aio`` server (the transport's I/O runs on SyncObj's
        tick thread, see :mod:`raftgrpc._transport.tickloop`): pass ``grpc.aio.ServerInterceptor``
        objects;
        a ``grpc.ServerInterceptor`` of the synchronous API is refused (ConfigError).
        """
        for interceptor in interceptors:
            if not isinstance(interceptor, grpc.aio.ServerInterceptor):
                raise ConfigError(
                    f"{type(interceptor).__name__} is not a grpc.aio.ServerInterceptor: a "
                    "node's server runs on grpc.aio; write the interceptor for grpc.aio"
                )
        self._plan = self._plan.adding(*(_Layer("user", server=i) for i in interceptors))
        return self

    def with_client_interceptor(
        self, *interceptors: AioClientInterceptor | SyncClientInterceptor
    ) -> TransportBuilder:
        """Add user client interceptors, as layers at this position of the chain:
        ``grpc.aio`` client interceptors apply to the node's own channels (its Raft
        streams), interceptors of grpcio's synchronous API to the channels :meth:`dial`
        makes."""
        self._plan = self._plan.adding(
            *(
                _Layer("user", client=(i,))
                if isinstance(i, grpc.aio.ClientInterceptor)
                else _Layer("user", dial=i)
                for i in interceptors
            )
        )
        return self

    def on_close(self, callback: Callable[[], None]) -> TransportBuilder:
        """Call ``callback`` when a transport built here is destroyed."""
        if not callable(callback):
            raise ConfigError(f"on_close() takes a callable, got {callback!r}")
        self._plan = dataclasses.replace(self._plan, closers=(*self._plan.closers, callback))
        return self

    # -- results -------------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Names of the chain's layers, outermost first (for logs and tests)."""
        return [layer.name for layer in self._plan.layers]

    def middleware(self, node_id: str) -> Middleware:
        """The middleware of the node whose Raft id is ``node_id`` ("" for read-only)."""
        return self._plan.middleware(node_id)

    def build(self) -> TransportFactory:
        """A ``transportClass`` for PySyncObj: ``SyncObj(..., transportClass=builder.build())``.

        The factory keeps the configuration the builder holds now: later ``with_*`` calls on
        the builder do not change it."""
        plan = self._plan
        if plan.admin is not None:  # fail here rather than when SyncObj starts
            from raftgrpc._ops import admin_service as admin

            admin.require_authorization(plan.jwt_mode, allow_unauthenticated=plan.admin[1])

        def factory(syncObj: Any, selfNode: Any, otherNodes: Any) -> GrpcTransport:
            node_id = selfNode.id if selfNode is not None else ""
            return GrpcTransport(
                syncObj,
                selfNode,
                otherNodes,
                config=plan.config,
                middleware=plan.middleware(node_id),
            )

        factory.__name__ = factory.__qualname__ = "GrpcTransport"
        return factory

    def dial(self, address: str, node_id: str = "") -> grpc.Channel:
        """A channel (grpcio's synchronous API) to a node's address with this
        configuration's security, client interceptors and retry policy, for unary calls
        (admin, health) made as ``node_id``
        (it picks the token subject and, when ``with_tls`` got a function, the certificate
        files: pass an id that function knows)."""
        plan = self._plan
        return dial(
            grpc_target(address), plan.middleware(node_id), node_id, list(plan.retry_options)
        )


def _is_raft_stream(request: Any) -> bool:
    """Whether ``request`` is a Raft stream's first request (raw bytes), not an admin call."""
    return isinstance(request, bytes)


def _raft_identity(request: Any) -> str | None:
    """The node id a Raft stream's first request claims (its Hello), for identity binding."""
    return claimed_node_id(request) if isinstance(request, bytes) else None
