"""Every bad WHIP/WHEP request gets its exact status and leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription

from tests.conftest import RelayUnderTest, open_fds, settled


async def make_offer(kinds: list[str], direction: str, data_channel: bool = False) -> str:
    """A real aiortc offer (ICE gathered), m-lines in `kinds` order, closed again right away."""
    pc = RTCPeerConnection()
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    if data_channel:
        pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


# offers to mutate or to send as they are: (m-line kinds, direction, with a data channel)
OFFERS = {
    "whip": (["audio", "video"], "sendonly", False),
    "whep": (["audio", "video"], "recvonly", False),
    "whip two audio": (["audio", "audio"], "sendonly", False),
    "whep two audio": (["audio", "video", "audio"], "recvonly", False),
    "whip two video": (["video", "audio", "video"], "sendonly", False),
    "whep three video": (["video", "video", "audio", "video"], "recvonly", False),
    "data channel only": ([], "sendonly", True),
}


@pytest.fixture(scope="module")
def offers() -> dict[str, str]:
    """Valid-looking publisher and player offers of every shape the cases need."""

    async def build() -> dict[str, str]:
        return {name: await make_offer(*shape) for name, shape in OFFERS.items()}

    return asyncio.run(build())


@dataclass(frozen=True)
class Case:
    path: str  # whip | whep
    room: str = "r1"
    token: tuple[str, str] | None = ("r1", "teacher")  # (room, role), None: no header
    content_type: str = "application/sdp"
    body: Callable[[str], str | bytes] = lambda sdp: sdp
    query: str = ""
    expired: bool = False
    offer: str = ""  # which of OFFERS to send; the path's own by default
    reason: str = ""  # what the one-line reason must say


def strip_codec(kind: str, codec: str) -> Callable[[str], str]:
    """Remove a codec from every m-line so the offer has nothing we forward."""

    def mutate(sdp: str) -> str:
        lines = sdp.splitlines()
        pts = {
            ln.split()[0].split(":")[1]
            for ln in lines
            if ln.startswith("a=rtpmap:") and codec in ln
        }
        keep = [
            ln for ln in lines if not any(f":{pt} " in ln or ln.endswith(f":{pt}") for pt in pts)
        ]
        return "\r\n".join(keep) + "\r\n"

    return mutate


def without(*prefixes: str) -> Callable[[str], str]:
    """Drop every line starting with one of `prefixes`."""

    def mutate(sdp: str) -> str:
        return "\r\n".join(ln for ln in sdp.splitlines() if not ln.startswith(prefixes)) + "\r\n"

    return mutate


# what a trickle client sends at once: no candidates yet, and no end-of-candidates (they
# follow by PATCH)
trickle_offer = without("a=candidate", "a=end-of-candidates")


def session_part(sdp: str) -> str:
    """Only the session-level lines: an offer without any m-line."""
    return sdp[: sdp.index("\r\nm=") + 2]


def bundle_tagged_by_second(sdp: str) -> str:
    """The BUNDLE group tagged by the second m-line instead of the first (RFC 9143 allows it)."""
    return sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1 0")


CLASSROOM = ("r1", "classroom")
CASES = {
    "missing token": (Case("whip", token=None), 401),
    "expired token": (Case("whip", expired=True), 401),
    "garbage token": (Case("whip", token=("garbage", "x")), 401),
    "token for another room": (Case("whip", token=("r2", "teacher")), 403),
    "classroom token publishing": (Case("whip", token=("r1", "classroom")), 403),
    "teacher token playing": (Case("whep", token=("r1", "teacher")), 403),
    "wrong content type": (Case("whip", content_type="text/plain"), 415),
    "oversize body": (Case("whip", body=lambda sdp: sdp + "a=x-pad:" + "p" * 70_000 + "\r\n"), 413),
    "not SDP at all": (Case("whip", body=lambda _: "hello"), 400),
    "truncated SDP": (Case("whip", body=lambda sdp: sdp[:200]), 400),
    "binary body": (Case("whip", body=lambda _: b"\xff\xfe\x00v=0"), 400),
    "bad source": (Case("whip", query="?source=blackboard"), 400),
    "bad room name": (Case("whip", room="-r1", token=("r1", "teacher")), 400),
    "no VP8 in publisher offer": (Case("whip", body=strip_codec("video", "VP8")), 400),
    "no Opus in player offer": (
        Case("whep", token=CLASSROOM, body=strip_codec("audio", "opus")),
        400,
    ),
    # shapes the relay refuses, WHIP (a teacher's source) and WHEP (a classroom)
    "two audio m-lines to WHIP": (
        Case("whip", offer="whip two audio", reason="at most one audio m-line"),
        400,
    ),
    "two audio m-lines to WHEP": (
        Case("whep", token=CLASSROOM, offer="whep two audio", reason="at most one audio"),
        400,
    ),
    "two video m-lines to WHIP": (
        Case("whip", offer="whip two video", reason="at most 1 video m-line"),
        400,
    ),
    "three video m-lines to WHEP": (
        Case("whep", token=CLASSROOM, offer="whep three video", reason="at most 2 video"),
        400,
    ),
    "recvonly offer to WHIP": (
        Case("whip", offer="whep", reason="is recvonly: a WHIP publisher must send"),
        400,
    ),
    "sendonly offer to WHEP": (
        Case("whep", token=CLASSROOM, offer="whip", reason="is sendonly: a WHEP player"),
        400,
    ),
    "no m-line at all": (
        Case("whep", token=CLASSROOM, body=session_part, reason="no m-lines"),
        400,
    ),
    "m=application only to WHIP": (
        Case("whip", offer="data channel only", reason="m=application is not"),
        400,
    ),
    "m=application only to WHEP": (
        Case("whep", token=CLASSROOM, offer="data channel only", reason="m=application"),
        400,
    ),
    "end-of-candidates without any candidate": (
        Case("whip", body=without("a=candidate"), reason="end-of-candidates but no candidate"),
        400,
    ),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # no keep-alive: a request's server-side handler task ends with it, so leaks show
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_request_gets_exact_status_and_leaks_nothing(
    name: str, relay: RelayUnderTest, offers: dict[str, str], http: aiohttp.ClientSession
) -> None:
    case, status = CASES[name]
    headers = {"Content-Type": case.content_type}
    if case.token is not None:
        room, role = case.token
        ttl = -120 if case.expired else 3600
        token = "not.a.jwt" if room == "garbage" else relay.token(room, role, ttl=ttl)
        headers["Authorization"] = f"Bearer {token}"
    tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
    url = f"{relay.base}/{case.path}/{case.room}{case.query}"
    async with http.post(
        url, data=case.body(offers[case.offer or case.path]), headers=headers
    ) as response:
        text = await response.text()
    assert response.status == status, text
    assert text.strip() and "\n" not in text.strip()  # one-line reason
    assert case.reason.lower() in text.lower()
    assert list(relay.registry) == []
    assert await settled(
        lambda: len(asyncio.all_tasks()) <= tasks_before and open_fds() <= fds_before
    )


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/whip/r1/nosuchsession", "teacher", 404),
        ("/whep/r1/nosuchsession", "classroom", 404),
        ("/whep/r1/nosuchsession", "teacher", 403),
    ],
)
async def test_delete_of_unknown_session(
    path: str, role: str, status: int, relay: RelayUnderTest, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {relay.token('r1', role)}"}
    async with http.delete(relay.base + path, headers=headers) as response:
        assert response.status == status


async def test_second_live_publisher_for_a_source_gets_409_and_first_keeps_going(
    relay: RelayUnderTest, http: aiohttp.ClientSession
) -> None:
    from tests.media import CounterVideoTrack
    from tests.peers import whip_publish

    token = relay.token("r1", "teacher")
    first = await whip_publish(relay.base, "r1", token, "camera", CounterVideoTrack(), None)
    try:
        deadline = time.monotonic() + 5
        room = relay.registry.find("r1")
        assert room is not None
        while time.monotonic() < deadline and not any(u.frames for u in room.upstreams.values()):
            await asyncio.sleep(0.05)
        offer = await make_offer(["video"], "sendonly")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with http.post(
            f"{relay.base}/whip/r1?source=camera", data=offer, headers=headers
        ) as r:
            assert r.status == 409
        assert len(room.publishers) == 1
    finally:
        await first.close()


def candidates_in_first_only(sdp: str) -> str:
    """As a browser under max-bundle writes it: candidates in the first m-section only."""
    sections = sdp.split("\r\nm=")
    rest = [
        "\r\n".join(x for x in s.split("\r\n") if not x.startswith("a=candidate:"))
        for s in sections[2:]
    ]
    return "\r\nm=".join([*sections[:2], *rest])


@pytest.mark.parametrize(("path", "role"), [("whip", "teacher"), ("whep", "classroom")])
@pytest.mark.parametrize(
    "transform", [trickle_offer, bundle_tagged_by_second, candidates_in_first_only]
)
async def test_valid_offers_of_every_form_get_201_and_a_complete_answer(
    path: str,
    role: str,
    transform: Callable[[str], str],
    relay: RelayUnderTest,
    offers: dict[str, str],
    http: aiohttp.ClientSession,
) -> None:
    """A trickle client's offer before gathering (candidates follow by PATCH), a BUNDLE group
    tagged by another m-line (RFC 9143 allows any), candidates in the first m-section only
    (browsers): each is accepted, and the answer carries the relay's candidates and a real
    address."""
    headers = {
        "Authorization": f"Bearer {relay.token('r1', role)}",
        "Content-Type": "application/sdp",
    }
    offer = transform(offers[path])
    async with http.post(f"{relay.base}/{path}/r1", data=offer, headers=headers) as response:
        answer = await response.text()
        assert response.status == 201, answer
        location = response.headers["Location"]
    description = SessionDescription.parse(answer)
    tag = next(g for g in description.group if g.semantic == "BUNDLE").items[0]
    first = next(m for m in description.media if m.rtp.muxId == tag)
    assert first.ice_candidates and first.host != "0.0.0.0" and first.port != 9
    async with http.delete(relay.base + location, headers=headers) as response:
        assert response.status == 200
    assert not any(room.publishers or room.players for room in relay.registry)


async def test_healthz_reports_ok(relay: RelayUnderTest, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{relay.base}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_a_publisher_still_connecting_is_not_replaced(
    relay: RelayUnderTest, http: aiohttp.ClientSession
) -> None:
    token = relay.token("r1", "teacher")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    first = await make_offer(["video"], "sendonly")
    second = await make_offer(["video"], "sendonly")
    async with http.post(f"{relay.base}/whip/r1?source=camera", data=first, headers=headers) as r:
        assert r.status == 201
        location = r.headers["Location"]
    # the first offer's peer is gone, so it never sends media: still, within the grace period
    async with http.post(f"{relay.base}/whip/r1?source=camera", data=second, headers=headers) as r:
        assert r.status == 409
    async with http.delete(relay.base + location, headers=headers) as r:
        assert r.status == 200
