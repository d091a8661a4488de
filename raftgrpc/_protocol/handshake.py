"""The first message of each direction of a Raft stream: Hello, then Welcome (pure code).

The dialling node's first request is a Hello naming it (or marking it read-only); the
accepting node answers with a Welcome naming itself. These functions judge one raw message
each and say what to do; the gRPC shell (:mod:`raftgrpc._transport.inbound`,
:mod:`raftgrpc._transport.outbound`)
does the I/O and the logging.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from raftgrpc.v1 import transport_pb2 as pb

__all__ = [
    "PROTOCOL_VERSION",
    "HelloFailure",
    "ReadOnlyHello",
    "WelcomeFailure",
    "claimed_node_id",
    "hello_bytes",
    "judge_hello",
    "judge_welcome",
    "not_a_member",
    "welcome_bytes",
]

PROTOCOL_VERSION = 1
"""Wire protocol version sent in Hello and Welcome."""


@dataclass(frozen=True)
class HelloFailure:
    """A Hello refused: end the stream with ``code`` and ``detail``."""

    code: grpc.StatusCode
    detail: str


@dataclass(frozen=True)
class ReadOnlyHello:
    """A Hello from a read-only follower (it names no node)."""


@dataclass(frozen=True)
class WelcomeFailure:
    """A Welcome refused: close the stream; ``reason`` for the log at ``level``."""

    reason: str
    level: int = logging.WARNING


def hello_bytes(node_id: str | None) -> bytes:
    """The serialized first request of a node (``None``: a read-only follower)."""
    hello = pb.Hello(protocol_version=PROTOCOL_VERSION)
    if node_id is None:
        hello.read_only.SetInParent()
    else:
        hello.node_id = node_id
    return pb.StreamRequest(hello=hello).SerializeToString()


def welcome_bytes(node_id: str) -> bytes:
    """The serialized first response of the node ``node_id``."""
    welcome = pb.Welcome(protocol_version=PROTOCOL_VERSION, node_id=node_id)
    return pb.StreamResponse(welcome=welcome).SerializeToString()


def judge_hello(raw: bytes) -> str | ReadOnlyHello | HelloFailure:
    """The node id a stream's first request claims, :class:`ReadOnlyHello`, or why it is
    refused. Membership is the caller's to check."""
    try:
        request = pb.StreamRequest.FromString(raw)
    except DecodeError:
        return HelloFailure(grpc.StatusCode.INVALID_ARGUMENT, "malformed Hello")
    if request.WhichOneof("kind") != "hello":
        return HelloFailure(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
    hello = request.hello
    if hello.protocol_version != PROTOCOL_VERSION:
        return HelloFailure(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"unsupported protocol version {hello.protocol_version}, "
            f"this node speaks {PROTOCOL_VERSION}",
        )
    identity = hello.WhichOneof("identity")
    if identity == "read_only":
        return ReadOnlyHello()
    if identity != "node_id":
        return HelloFailure(grpc.StatusCode.INVALID_ARGUMENT, "Hello names no node")
    node_id: str = hello.node_id
    return node_id


def not_a_member(node_id: str) -> HelloFailure:
    """The refusal of a Hello naming a node that is not a member."""
    return HelloFailure(
        grpc.StatusCode.PERMISSION_DENIED,
        f"node {node_id[:200]!r} is not a member of this cluster",
    )


def judge_welcome(raw: bytes, expected_node_id: str | None) -> pb.Welcome | WelcomeFailure:
    """The Welcome a stream's first response carries, or why the stream must be closed
    (``expected_node_id`` None: any node may answer)."""
    try:
        response = pb.StreamResponse.FromString(raw)
    except DecodeError:
        return WelcomeFailure("malformed Welcome")
    if response.WhichOneof("kind") != "welcome":
        return WelcomeFailure("answered Hello with something else")
    welcome: pb.Welcome = response.welcome
    if welcome.protocol_version != PROTOCOL_VERSION:
        return WelcomeFailure(
            f"speaks protocol version {welcome.protocol_version}, this node {PROTOCOL_VERSION}",
            logging.ERROR,
        )
    if expected_node_id is not None and welcome.node_id != expected_node_id:
        return WelcomeFailure(
            f"says it is node {welcome.node_id[:200]!r}, expected "
            f"{expected_node_id!r}; check the cluster's addresses",
            logging.ERROR,
        )
    return welcome


def claimed_node_id(raw: bytes) -> str | None:
    """The node id a stream's first request claims, if it is a Hello naming a node.

    Used by the auth and mTLS layers to bind a credential to the identity a peer speaks as;
    anything else (a read-only Hello, a malformed message) claims nothing here and is judged
    by the servicer's own handshake checks.
    """
    try:
        request = pb.StreamRequest.FromString(raw)
    except DecodeError:
        return None
    if request.WhichOneof("kind") != "hello" or request.hello.WhichOneof("identity") != "node_id":
        return None
    node_id: str = request.hello.node_id
    return node_id
