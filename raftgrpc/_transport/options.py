"""The gRPC channel and server options a transport's connections get, and why each.

Derived from :class:`~raftgrpc.TransportConfig` alone, so that every node of a cluster that
shares a config agrees on both ends of each connection (keepalive is the case that bites:
a client that pings faster than its server accepts gets GOAWAY too_many_pings).
"""

from __future__ import annotations

from typing import Any

from raftgrpc._transport.config import TransportConfig

__all__ = ["channel_options", "server_options"]

Options = list[tuple[str, Any]]


def _common(cfg: TransportConfig) -> Options:
    return [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(cfg: TransportConfig) -> Options:
    """Options of the channel a node dials each peer with."""
    return [
        *_common(cfg),
        # Raft messages are never retried by gRPC: PySyncObj resends from its own state.
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", int(cfg.reconnect_initial_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(cfg.reconnect_initial_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(cfg.reconnect_max_s * 1000)),
        # One connection per transport, even when nodes share a process (tests, demos).
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_http_proxy", int(cfg.use_http_proxy)),
    ]


def server_options(cfg: TransportConfig) -> Options:
    """Options of a node's server."""
    return [
        *_common(cfg),
        # grpcio sets SO_REUSEPORT by default: a second node would share the port silently.
        ("grpc.so_reuseport", 0),
        # Accept the clients' keepalive pings (the default allows one per 5 minutes and
        # answers faster pings with GOAWAY too_many_pings).
        ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.keepalive_time_s * 500)),
        ("grpc.http2.max_ping_strikes", 0),
        # A connection that never completes its HTTP/2 (or TLS) handshake is closed
        # after handshake_timeout_s instead of gRPC's 120 s; one without any stream
        # for connection_idle_s is closed too (clients reconnect transparently).
        ("grpc.server_handshake_timeout_ms", int(cfg.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(cfg.connection_idle_s * 1000)),
    ]
