"""The grpc.aio flavor of the security layers, on a real grpc.aio server, with a handler
shaped like the Raft stream's (an async generator; a task of its own reads the requests).

The synchronous flavors are tested in test_auth.py and test_tls.py; these check that the
async wrappers keep the same contract: a token on every call, the first request's identity
bound to the token's subject, a stream that cannot outlive its token, audit mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest

from raftgrpc.interceptors.auth import AuthMode, SigningTokenSource, aio_server_interceptor
from tests.test_auth import AUD, ISS, FakeClock, identity_of, keys, verifier_for

pytestmark = pytest.mark.timeout(60)

__all__ = ["keys"]  # the fixture, from test_auth

METHOD = "/raftgrpc.test.Chat/Stream"


class Chat:
    """Records the requests its reader task is given, and how the reader ended."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.reader_ended: list[str] = []

    async def stream(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self.seen.append(await requests.__anext__())
        yield b"welcome"
        done = asyncio.Event()

        async def read() -> None:
            try:
                async for request in requests:
                    self.seen.append(request)
            except Exception as exc:  # a layer ended the call while reading
                self.reader_ended.append(type(exc).__name__)
            finally:
                done.set()

        task = asyncio.get_running_loop().create_task(read())
        await done.wait()
        await task


def token_for(signing: Any, subject: str) -> str:
    source = SigningTokenSource(signing.pem, signing.kid, signing.alg, subject, AUD, ISS)
    return source.token()


async def _serve(interceptor: Any, chat: Chat) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[interceptor])
    handler = grpc.stream_stream_rpc_method_handler(chat.stream)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("raftgrpc.test.Chat", {"Stream": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def run_chat(
    interceptor: Any, chat: Chat, token: str | None, requests: list[bytes], expire: Any = None
) -> tuple[grpc.StatusCode, str]:
    """One stream: the requests written one by one (``expire()`` called before the last)."""

    async def main() -> tuple[grpc.StatusCode, str]:
        server, port = await _serve(interceptor, chat)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                metadata = () if token is None else (("authorization", f"Bearer {token}"),)
                call = channel.stream_stream(METHOD)(metadata=metadata)
                for i, request in enumerate(requests):
                    if expire is not None and i == len(requests) - 1:
                        await asyncio.sleep(0.2)  # what was written before is taken first
                        expire()
                    try:
                        await call.write(request)
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                        break
                    if i == 0:
                        try:
                            await call.read()
                        except grpc.aio.AioRpcError:
                            break
                await asyncio.sleep(0.2)  # let the server take the last request
                if not call.done():
                    await call.done_writing()
                code = await call.code()
                return code, await call.details()
        finally:
            await server.stop(None)

    return asyncio.run(main())


def test_the_first_request_binds_the_token_subject(keys: Any) -> None:
    verifier = verifier_for(keys.k1)
    chat = Chat()
    layer = aio_server_interceptor(verifier, identity_of=identity_of)
    code, _ = run_chat(layer, chat, token_for(keys.k1, "node-a"), [b"node-a|hello", b"more"])
    assert code == grpc.StatusCode.OK and chat.seen == [b"node-a|hello", b"more"]
    impostor = Chat()
    code, details = run_chat(layer, impostor, token_for(keys.k1, "node-a"), [b"node-b|hello"])
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not match the claimed identity" in details
    assert impostor.seen == []  # the handler never saw the refused request


def test_a_call_without_a_valid_token_is_refused_unless_auditing(keys: Any) -> None:
    for token, why in ((None, "missing"), (token_for(keys.k2, "node-a"), "unknown key")):
        chat = Chat()
        layer = aio_server_interceptor(verifier_for(keys.k1), identity_of=identity_of)
        code, _ = run_chat(layer, chat, token, [b"node-a|hello"])
        assert code == grpc.StatusCode.UNAUTHENTICATED, why
        assert chat.seen == []
    audited = Chat()
    layer = aio_server_interceptor(verifier_for(keys.k1), mode=AuthMode.AUDIT)
    code, _ = run_chat(layer, audited, None, [b"node-a|hello"])
    assert code == grpc.StatusCode.OK and audited.seen == [b"node-a|hello"]


def test_a_stream_cannot_outlive_its_token_even_read_by_another_task(keys: Any) -> None:
    """The Raft stream's requests are read by a task of the handler's, not the handler: the
    layer's abort from there ends the call, and nothing after the expiry is delivered."""
    clock = FakeClock(time.time())
    verifier = verifier_for(keys.k1, leeway_s=30.0, clock=clock)
    token = token_for(keys.k1, "node-a")
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    chat = Chat()
    layer = aio_server_interceptor(verifier, identity_of=identity_of)

    def expire() -> None:
        clock.now = expires + 31  # past the leeway

    code, details = run_chat(layer, chat, token, [b"node-a|hello", b"two", b"late"], expire)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "token expired" in details
    assert chat.seen == [b"node-a|hello", b"two"]
    assert chat.reader_ended == ["AbortError"]
