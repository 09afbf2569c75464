"""The room event stream and the admin API: what pages send and get, and bad input refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.conftest import RelayUnderTest
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import whep_play, whip_publish

ROOM = "events"


@asynccontextmanager
async def socket(
    relay: RelayUnderTest, token: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http:
        url = f"{relay.base}/api/rooms/{ROOM}/events?token={token}"
        async with http.ws_connect(url) as ws:
            yield ws


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of this type (states and events interleave)."""
    while True:
        message: dict[str, Any] = json.loads(await ws.receive_str(timeout=10))
        if message["type"] == kind:
            return message


async def ask(ws: aiohttp.ClientWebSocketResponse, message: object) -> dict[str, Any]:
    """Send one message; the reply (ok, pong or error), skipping broadcasts."""
    await ws.send_str(message if isinstance(message, str) else json.dumps(message))
    while True:
        reply: dict[str, Any] = json.loads(await ws.receive_str(timeout=10))
        if reply["type"] in ("ok", "pong", "error"):
            return reply


async def test_a_page_gets_the_state_then_events_as_the_lesson_goes(relay: RelayUnderTest) -> None:
    async with socket(relay, relay.token(ROOM, "classroom", "East")) as ws:
        assert await next_of(ws, "hello") == {"type": "hello", "role": "classroom", "name": "East"}
        state = await next_of(ws, "state")
        assert state["live"] is False and state["classrooms"] == []
        teacher = await whip_publish(
            relay.base, ROOM, relay.token(ROOM, "teacher", "Ms Wang"), "camera",
            CounterVideoTrack(), ToneAudioTrack(),
        )  # fmt: skip
        try:
            assert (await next_of(ws, "event"))["event"] == "lesson-started"
            source = await next_of(ws, "event")
            assert source["event"] == "source-started" and source["source"] == "camera"
            state = await next_of(ws, "state")
            assert state["live"] is True
            assert state["sources"][0]["teacher"] == "Ms Wang"
        finally:
            await teacher.close()
        assert (await next_of(ws, "event"))["event"] == "source-ended"
        assert (await next_of(ws, "event"))["event"] == "lesson-ended"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "message is not JSON"),
        ([1, 2], 'a message is a JSON object with a "type"'),
        ({"type": "lesson", "title": "x"}, "'lesson' is not accepted from a classroom"),
        ({"type": "qoe", "session": "nope", "stats": {}}, "no session 'nope' of classroom 'East'"),
        ({"type": "qoe", "session": "OTHER", "stats": {}}, "of classroom 'East'"),
        ({"type": "qoe", "session": "SESSION", "stats": {"framesPerSecond": "fast"}},
         "stats field 'framesPerSecond' must be a finite number"),
        ({"type": "qoe", "session": "SESSION", "stats": [1]}, "stats must be a JSON object"),
    ],
)  # fmt: skip
async def test_bad_messages_get_a_clear_error_and_change_nothing(
    relay: RelayUnderTest, message: object, error: str
) -> None:
    classroom = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "East"))
    other = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "West"))
    session = classroom.location.rsplit("/", 1)[1]
    try:
        async with socket(relay, relay.token(ROOM, "classroom", "East")) as ws:
            good = {"type": "qoe", "session": session, "stats": {"framesPerSecond": 29.5}}
            assert await ask(ws, good) == {"type": "ok"}
            if isinstance(message, dict):
                sessions = {"SESSION": session, "OTHER": other.location.rsplit("/", 1)[1]}
                message = {
                    k: sessions.get(v, v) if isinstance(v, str) else v for k, v in message.items()
                }
            reply = await ask(ws, message)
            assert reply["type"] == "error" and error in reply["error"]
            # the socket still works, and the earlier report stands
            assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
            runtime = relay.registry.find(ROOM)
            assert runtime is not None
            views = {c.session: c for c in runtime.snapshot(0.0).classrooms}
            assert views[session].qoe == {"framesPerSecond": 29.5}
    finally:
        await classroom.close()
        await other.close()


async def test_the_teacher_sets_the_lesson_every_page_sees_it(relay: RelayUnderTest) -> None:
    async with (
        socket(relay, relay.token(ROOM, "teacher")) as teacher,
        socket(relay, relay.token(ROOM, "classroom")) as classroom,
    ):
        await next_of(classroom, "state")
        lesson = {"type": "lesson", "title": "认识五线谱", "subject": "音乐", "grade": "五年级"}
        assert await ask(teacher, lesson) == {"type": "ok"}
        state = await next_of(classroom, "state")
        assert state["lesson"] == {
            "title": "认识五线谱",
            "subject": "音乐",
            "grade": "五年级",
            "school": "",
        }
        reply = await ask(teacher, {"type": "lesson", "title": "x" * 500})
        assert "at most 120 characters" in reply["error"]


@pytest.mark.parametrize(
    ("role", "room", "status"),
    [(None, ROOM, 401), ("classroom", "other", 403), ("admin", "*", 101)],
)
async def test_the_event_stream_needs_a_token_for_the_room(
    relay: RelayUnderTest, role: str | None, room: str, status: int
) -> None:
    token = relay.token(room, role) if role else "garbage"
    async with aiohttp.ClientSession() as http:
        url = f"{relay.base}/api/rooms/{ROOM}/events?token={token}"
        if status == 101:
            async with http.ws_connect(url) as ws:
                assert (await next_of(ws, "hello"))["role"] == "admin"
            return
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await http.ws_connect(url)
        assert raised.value.status == status


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"room": "r1", "classrooms": ["A"]}, 200, None),
        ({"room": "bad room", "classrooms": ["A"]}, 400, "room"),
        ({"room": "r1", "classrooms": []}, 400, "classrooms must list"),
        ({"room": "r1", "classrooms": ["A"], "hours": -1}, 400, "hours"),
        ({"room": "r1", "classrooms": [""]}, 400, "classroom name"),
        ("[]", 400, "JSON object"),
    ],
)
async def test_links_api_makes_signed_links_or_says_what_is_wrong(
    relay: RelayUnderTest, body: object, status: int, error: str | None
) -> None:
    headers = {"Authorization": f"Bearer {relay.token('*', 'admin')}"}
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, str) else json.dumps(body)
        async with http.post(f"{relay.base}/api/links", data=data, headers=headers) as reply:
            answer = await reply.json()
    assert reply.status == status, answer
    if error:
        assert error in answer["error"]
    else:
        assert answer["teacher"]["url"].startswith(f"{relay.base}/teach/r1?token=")
        assert answer["classrooms"][0]["name"] == "A"


async def test_room_list_is_for_admins_only(relay: RelayUnderTest) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = ((relay.token(ROOM, "teacher"), 403), (relay.token("*", "admin"), 200))
        for token, status in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{relay.base}/api/rooms", headers=headers) as reply:
                assert reply.status == status
