"""Every m-line order and mix the WHIP/WHEP drafts allow, through a real relay on loopback.

Each case builds an aiortc offer with its m-lines in its own order and direction, checks the
relay's answer (every m-line answered in order and turned around, the BUNDLE group's first
m-line with the relay's candidates and a real address, so the connection can start), and
measures what the receiving peer decodes: >= 25 fps on every video m-line, showing the source
its position among the video m-lines calls for, and audio where an audio m-line asks for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription

from tests.conftest import RelayUnderTest, settled
from tests.media import TAG_CAMERA, TAG_SCREEN, CounterVideoTrack, ToneAudioTrack
from tests.peers import (
    MediaSink,
    Playback,
    Publication,
    SignallingError,
    local_offer,
    new_peer_connection,
    post_sdp,
    whep_play,
    whip_publish,
)

logger = logging.getLogger(__name__)

ROOM = "shapes"
MIN_FPS = 25.0
# Opus frames decoded per second; the teacher sends 50 (20 ms each).
MIN_AUDIO_RATE = 40.0
WARM_UP_FRAMES = 5  # a join may start with a burst from the GOP cache: not measured
MEASURED_FRAMES = 50  # about 1.7 s at 30 fps
MEASURED_AUDIO_FRAMES = 85  # as long, when there is no video to measure
NEGOTIATION_TIMEOUT = 10.0
# What the relay answers for each m-line: it only receives on WHIP, only sends on WHEP.
ANSWERED = {"whip": "recvonly", "whep": "sendonly"}
# Video sources by position among a classroom's video m-lines while camera and screen are both
# live (relay.core.model.choose_feed): one slot shows the screen, two show camera then screen.
SLOT_TAGS = {1: [TAG_SCREEN], 2: [TAG_CAMERA, TAG_SCREEN]}


@dataclass(frozen=True, slots=True)
class Shape:
    """One offer: where it goes, its m-lines in order, their direction, and whether it is sent
    before gathering (a trickle client's: no candidates, no end-of-candidates)."""

    path: str  # whip | whep
    kinds: tuple[str, ...]
    direction: str
    trickle: bool = False

    @property
    def id(self) -> str:
        return "-".join(
            [self.path, ",".join(self.kinds), self.direction] + ["trickle"] * self.trickle
        )

    @property
    def audio(self) -> bool:
        return "audio" in self.kinds

    @property
    def videos(self) -> int:
        return self.kinds.count("video")


AV, VA, V, A = ("audio", "video"), ("video", "audio"), ("video",), ("audio",)
WHEP_SHAPES = [
    Shape("whep", AV, "recvonly"),
    Shape("whep", VA, "recvonly"),
    Shape("whep", V, "recvonly"),
    Shape("whep", A, "recvonly"),
    Shape("whep", ("video", "video", "audio"), "recvonly"),
    Shape("whep", ("audio", "video", "video"), "recvonly"),
    Shape("whep", ("video", "audio", "video"), "recvonly"),
    Shape("whep", VA, "sendrecv"),
    Shape("whep", ("video", "audio", "video"), "sendrecv"),
    # sent before gathering: still 201 with a complete answer, and aioice learns the player's
    # address from its checks (a peer-reflexive candidate), so it plays without any PATCH
    Shape("whep", VA, "recvonly", trickle=True),
]
WHIP_SHAPES = [
    Shape("whip", AV, "sendonly"),
    Shape("whip", VA, "sendonly"),
    Shape("whip", V, "sendonly"),
    Shape("whip", A, "sendonly"),
    Shape("whip", VA, "sendrecv"),
    Shape("whip", VA, "sendonly", trickle=True),  # as the trickle player above
]


@dataclass
class Peers:
    """Everything a case opened, closed (with DELETE) at the end whatever happened."""

    playbacks: list[Playback] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)

    async def close(self) -> list[int | None]:
        """DELETE every session and close every peer; the DELETE statuses."""
        statuses = [await playback.close() for playback in self.playbacks]
        return statuses + [await publication.close() for publication in self.publications]


@pytest.fixture
async def peers(relay: RelayUnderTest) -> AsyncIterator[Peers]:
    opened = Peers()
    yield opened
    assert set(await opened.close()) <= {200}
    assert await settled(lambda: not any(r.publishers or r.players for r in relay.registry))


# offers and answers


def trickle_offer(sdp: str) -> str:
    """The offer a trickle client sends at once: its candidates would follow by PATCH."""
    kept = [ln for ln in sdp.splitlines() if not ln.startswith(("a=candidate", "a=end-of-cand"))]
    return "\r\n".join(kept) + "\r\n"


def check_answer(answer: str, shape: Shape) -> None:
    """Every m-line answered in the offer's order and turned around; the BUNDLE group's first
    m-line carries the relay's candidates and a real address, or nothing would connect."""
    description = SessionDescription.parse(answer)
    assert tuple(m.kind for m in description.media) == shape.kinds
    assert [m.direction for m in description.media] == [ANSWERED[shape.path]] * len(shape.kinds)
    bundle = next(g for g in description.group if g.semantic == "BUNDLE")
    first = next(m for m in description.media if m.rtp.muxId == bundle.items[0])
    assert first.ice_candidates, f"no candidates on m={first.kind}, the BUNDLE group's first"
    assert first.host not in (None, "0.0.0.0") and first.port != 9, (first.host, first.port)


async def negotiate(pc: RTCPeerConnection, url: str, token: str, shape: Shape) -> str:
    """Offer `pc`'s m-lines, check and apply the answer; the session URL. Closes `pc` if any
    of it fails, so nothing leaks."""
    try:
        async with asyncio.timeout(NEGOTIATION_TIMEOUT):
            offer = await local_offer(pc)
            reply = await post_sdp(url, token, trickle_offer(offer) if shape.trickle else offer)
            if reply.status != 201 or reply.location is None:
                raise SignallingError(reply)
            check_answer(reply.body, shape)
            await pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
            return reply.location
    except BaseException:
        await pc.close()
        raise


async def play(relay: RelayUnderTest, shape: Shape) -> Playback:
    """A classroom whose offer has `shape`'s m-lines, in its order."""
    pc = new_peer_connection()
    for kind in shape.kinds:
        pc.addTransceiver(kind, direction=shape.direction)
    token = relay.token(ROOM, "classroom", "School")
    location = await negotiate(pc, f"{relay.base}/whep/{ROOM}", token, shape)
    sink = MediaSink()
    sink.attach(pc)
    return Playback(pc, location, token, sink)


async def publish(relay: RelayUnderTest, shape: Shape) -> Publication:
    """A teacher's camera whose offer has `shape`'s m-lines, in its order."""
    pc = new_peer_connection()
    tracks: dict[str, Callable[[], MediaStreamTrack]] = {
        "audio": ToneAudioTrack,
        "video": lambda: CounterVideoTrack(tag=TAG_CAMERA),
    }
    for kind in shape.kinds:
        pc.addTransceiver(tracks[kind](), direction=shape.direction)
    token = relay.token(ROOM, "teacher", "Ms Li")
    location = await negotiate(pc, f"{relay.base}/whip/{ROOM}?source=camera", token, shape)
    return Publication(pc, location, token)


# what the peer decodes


@dataclass(frozen=True, slots=True)
class Rates:
    """Decoded frames per second: one per video m-line, and the audio."""

    fps: list[float]
    audio: float


async def measure(playback: Playback, tags: list[int], audio: bool) -> Rates:
    """Rates over MEASURED_FRAMES video frames (or as long of audio), after a warm-up; every
    video m-line shows only its own tag meanwhile, in order."""
    loop = asyncio.get_running_loop()
    logs = playback.video[: len(tags)]
    await asyncio.gather(
        *(log.wait_frames(WARM_UP_FRAMES, tag) for log, tag in zip(logs, tags, strict=True))
    )
    if audio:
        await playback.audio.wait_frames(WARM_UP_FRAMES)
    start, first = loop.time(), [len(log.records) for log in logs]
    runs = await asyncio.gather(
        *(log.wait_frames(MEASURED_FRAMES, tag) for log, tag in zip(logs, tags, strict=True))
    )
    if not tags:
        await playback.audio.wait_frames(MEASURED_AUDIO_FRAMES)
    end = loop.time()
    for log, tag, since in zip(logs, tags, first, strict=True):
        assert {r.tag for r in log.records[since:]} == {tag}
        assert log.increasing(tag)
    heard = sum(1 for t in playback.audio.times if start < t <= end)
    return Rates([(len(r) - 1) / (r[-1].t - r[0].t) for r in runs], heard / (end - start))


def check_rates(rates: Rates, shape: Shape) -> None:
    """Every video m-line smooth; audio steady where it was asked for, silent elsewhere."""
    logger.info("%s: video fps %s, audio %.1f frames/s", shape.id, rates.fps, rates.audio)
    assert all(fps >= MIN_FPS for fps in rates.fps), rates
    if shape.audio:
        assert rates.audio >= MIN_AUDIO_RATE, rates
    else:
        assert rates.audio == 0, rates


# the cases


@pytest.mark.timeout(40)
@pytest.mark.parametrize("shape", WHEP_SHAPES, ids=lambda s: s.id)
async def test_classroom_offer_of_any_order_plays_every_m_line(
    shape: Shape, relay: RelayUnderTest, peers: Peers
) -> None:
    token = relay.token(ROOM, "teacher", "Ms Li")
    camera = CounterVideoTrack(tag=TAG_CAMERA)
    screen = CounterVideoTrack(tag=TAG_SCREEN)
    peers.publications += [
        await whip_publish(relay.base, ROOM, token, "camera", camera, ToneAudioTrack()),
        await whip_publish(relay.base, ROOM, token, "screen", screen, None),
    ]
    playback = await play(relay, shape)
    peers.playbacks.append(playback)
    tags = SLOT_TAGS.get(shape.videos, [])
    check_rates(await measure(playback, tags, shape.audio), shape)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("shape", WHIP_SHAPES, ids=lambda s: s.id)
async def test_teacher_offer_of_any_order_reaches_a_classroom(
    shape: Shape, relay: RelayUnderTest, peers: Peers
) -> None:
    peers.publications.append(await publish(relay, shape))
    token = relay.token(ROOM, "classroom", "School")
    playback = await whep_play(relay.base, ROOM, token)  # audio, then one video m-line
    peers.playbacks.append(playback)
    tags = [TAG_CAMERA] if shape.videos else []
    check_rates(await measure(playback, tags, shape.audio), shape)
