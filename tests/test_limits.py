"""Limits a leaked token or a broken client meets at the HTTP level: slow and oversize headers,
a full room, deep JSON and oversize messages; each is a clear 4xx/5xx-free answer and the relay
goes on serving."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from monitoring.metrics import REGISTRY
from relay.logs import MAX_LINE, bounded
from tests.conftest import RelayUnderTest, settled
from tests.peers import SignallingError, whep_play

ROOM = "limits"


def limited(limit: str) -> float:
    """How often the relay refused something for `limit` so far (counters are per process)."""
    return REGISTRY.get_sample_value("ketang_limited_requests_total", {"limit": limit}) or 0.0


@pytest.fixture
def relay_env() -> dict[str, str]:
    return {"KETANG_IDLE_SECONDS": "1", "KETANG_SESSIONS_PER_ROOM": "1"}


async def connect(relay: RelayUnderTest) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = relay.base.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a"])
async def test_idle_and_slow_header_connections_are_closed(
    relay: RelayUnderTest, sent: bytes
) -> None:
    reader, writer = await connect(relay)
    writer.write(sent)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    assert await asyncio.wait_for(reader.read(100), timeout=5) == b""  # closed by the relay
    assert loop.time() - opened < 3
    writer.close()


async def test_oversize_headers_get_a_4xx_not_a_500(relay: RelayUnderTest) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{relay.base}/healthz", headers={"X-Big": "a" * 20000}) as reply,
    ):
        assert 400 <= reply.status < 500
    async with aiohttp.ClientSession() as http, http.get(f"{relay.base}/healthz") as reply:
        assert reply.status == 200


async def test_a_full_room_answers_503_with_retry_after(relay: RelayUnderTest) -> None:
    first = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "East"))
    before = limited("sessions_per_room")
    try:
        with pytest.raises(SignallingError) as refused:
            await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "West"))
        assert refused.value.status == 503 and "is full" in refused.value.body
        assert int(refused.value.headers["Retry-After"]) > 0
        assert limited("sessions_per_room") == before + 1
    finally:
        await first.close()


async def test_deep_json_is_a_clear_error_on_the_socket_and_the_api(relay: RelayUnderTest) -> None:
    deep = "[" * 4000 + "]" * 4000
    nesting, size = limited("message_nesting"), limited("message_bytes")
    token = relay.token(ROOM, "teacher", "Ms Wang")
    url = f"{relay.base}/api/rooms/{ROOM}/events?token={token}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(deep)
        while (reply := json.loads(await ws.receive_str(timeout=5)))["type"] != "error":
            pass
        assert "nested too deeply" in reply["error"]
        await ws.send_str('{"type": "ping"}')
        while (reply := json.loads(await ws.receive_str(timeout=5)))["type"] != "pong":
            pass
        await ws.send_str("x" * 9000)  # over the 8 KiB a page message may be
        closed = await ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert limited("message_nesting") == nesting + 1
    assert await settled(lambda: limited("message_bytes") == size + 1)
    admin = {"Authorization": f"Bearer {relay.token('*', 'admin')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{relay.base}/api/links", data=deep, headers=admin) as reply,
    ):
        assert reply.status == 400 and "nested" in (await reply.json())["error"]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("GET /class/r?token=eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoiciJ9.c2lnbmF0dXJl done",
         "GET /class/r?token=<token> done"),
        ("x" * (MAX_LINE + 10), "x" * MAX_LINE + "… (10 more characters)"),
    ],
)  # fmt: skip
def test_log_lines_are_bounded_and_never_carry_a_token(text: str, kept: str) -> None:
    assert bounded(text) == kept


async def test_a_client_gone_mid_body_is_counted_not_logged_as_an_error(
    relay: RelayUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    before = (
        REGISTRY.get_sample_value("ketang_limited_requests_total", {"limit": "body_incomplete"})
        or 0.0
    )
    _reader, writer = await connect(relay)
    token = relay.token(ROOM, "classroom", "East")
    writer.write(
        f"POST /whep/{ROOM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()

    def counted() -> bool:
        value = REGISTRY.get_sample_value(
            "ketang_limited_requests_total", {"limit": "body_incomplete"}
        )
        return (value or 0.0) == before + 1

    assert await settled(counted)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
