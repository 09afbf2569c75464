"""A rural classroom behind a real constrained link: 400 kbit/s with 3 % random loss.

The classroom runs in its own network namespace (tests/netns.py), its downlink shaped with
tbf and iptables; the teacher, the relay and an unconstrained classroom run here on loopback.
The teacher sends a 960x540 VP8 lesson at about 1.2 Mbit/s, which the link cannot carry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from relay.bench.media import Clip, ClipAudioTrack, encode_audio, encode_video
from relay.core.codecs import VIDEO_TIME_BASE
from relay.rtc.session import PlaySession
from tests import netns
from tests.conftest import RelayUnderTest
from tests.e2e.processes import ClassroomProcess, gaps, start_classroom
from tests.peers import whip_publish

ROOM = "rural"
WIDTH, HEIGHT, FPS = 960, 540, 30
LINK_KBIT, LOSS = 400, 0.03
ARTIFACTS = Path("test-artifacts")


class LoopedClip(MediaStreamTrack):
    """A teacher's camera: pre-encoded VP8 frames in a loop, keyframe first, restarted there
    when the relay asks for a keyframe (a browser encoder would make one)."""

    kind = "video"

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self._frames = frames
        self._index = 0
        self._count = 0
        self._start: float | None = None

    def keyframe(self) -> None:
        self._index = 0

    @property
    def sent(self) -> int:
        """Frames handed to the sender so far."""
        return self._count

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        self._start = loop.time() if self._start is None else self._start
        await asyncio.sleep(max(self._start + self._count / FPS - loop.time(), 0))
        packet = av.Packet(self._frames[self._index])
        packet.pts, packet.time_base = self._count * 90_000 // FPS, VIDEO_TIME_BASE
        self._index = (self._index + 1) % len(self._frames)
        self._count += 1
        return packet


FREEZE = 0.15 + 1 / FPS  # an inter-frame gap this long is a freeze (W3C freezeCount)


def frozen(times: list[float], since: float, until: float) -> float:
    """Seconds of freezes in [since, until]."""
    return sum(g for g in gaps(times, since, until) if g > FREEZE)


def freezes(times: list[float], since: float, until: float) -> list[tuple[float, float]]:
    """(start, seconds) of every freeze in [since, until], start relative to `since`."""
    inside = [since, *(t for t in times if since <= t <= until), until]
    return [
        (round(a - since, 2), round(b - a, 2))
        for a, b in itertools.pairwise(inside)
        if b - a > FREEZE
    ]


def player(relay: RelayUnderTest, name: str) -> PlaySession:
    room = relay.registry.find(ROOM)
    assert room is not None
    return next(p for p in room.players.values() if p.name == name)


async def join(relay: RelayUnderTest, name: str, link: netns.Link | None) -> ClassroomProcess:
    """A classroom process: in the namespace behind `link`, or on loopback without one."""
    host = link.host_ip if link else "127.0.0.1"
    url = f"http://{host}:{relay.config.server.port}/whep/{ROOM}"
    token = relay.token(ROOM, "classroom", name)
    return await start_classroom(url, token, link.command([]) if link else None)


@pytest.mark.timeout(180)
async def test_a_constrained_classroom_settles_keeps_playing_and_climbs_back(
    relay_on_link: RelayUnderTest, link: netns.Link
) -> None:
    relay = relay_on_link
    frames = await asyncio.to_thread(encode_video, 4.0, WIDTH, HEIGHT, FPS, 1_200_000)
    camera = LoopedClip(frames)
    audio = ClipAudioTrack(_clip_audio())
    teacher = await whip_publish(
        relay.base, ROOM, relay.token(ROOM, "teacher"), "camera", camera, audio
    )
    sender = next(t.sender for t in teacher.pc.getTransceivers() if t.kind == "video")
    setattr(sender, "_send_keyframe", camera.keyframe)  # noqa: B010 (the encoder's PLI path)
    free = await join(relay, "unconstrained", None)
    link.shape(LINK_KBIT, loss=LOSS)
    classroom = await join(relay, "constrained", link)
    readers = [asyncio.ensure_future(c.read()) for c in (free, classroom)]
    try:
        for process in (free, classroom):
            await asyncio.wait_for(process.ready.wait(), 20)
        joined = time.monotonic()
        trace = asyncio.ensure_future(_trace(player(relay, "constrained"), joined))
        await asyncio.sleep(30)
        lifted = time.monotonic()
        tbf_drops, random_drops = link.drops()
        link.lift()
        constrained = player(relay, "constrained")
        assert constrained.rate is not None
        climbed = await _wait_for_layer(constrained, "source", timeout=30)
        await asyncio.sleep(4)  # the switch waits for the teacher's next keyframe
        report = _report(relay, classroom, free, joined, lifted, climbed)
        report["drops"] = {"tbf": tbf_drops, "random": random_drops}
        trace.cancel()
        report["trace"] = TRACE
        _save(report)
        assert tbf_drops > 0 and random_drops > 0  # the link really was constrained
        _check(report)
    finally:
        for process in (classroom, free):
            await process.stop()
        for reader in readers:
            reader.cancel()
        await teacher.close()


TRACE: list[tuple[float, ...]] = []


async def _trace(session: PlaySession, since: float) -> None:
    """What the estimator saw, twice a second: (t, sent, estimate, remb, loss %, queue ms)."""
    TRACE.clear()
    while True:
        await asyncio.sleep(0.5)
        assert session.rate is not None
        est, now = session.rate.estimator, time.monotonic()
        TRACE.append((
            round(now - since, 1),
            round(est.sent_rate() / 1000),
            round((est.estimate(now) or 0) / 1000),
            round((est.remb(now) or 0) / 1000),
            round(100 * est.loss(now), 1),
            round(1000 * (est.queue_delay(now) or 0)),
        ))  # fmt: skip


def _clip_audio() -> Clip:
    return Clip([], encode_audio(1.0), FPS, WIDTH, HEIGHT)


async def _wait_for_layer(session: PlaySession, layer: str, timeout: float) -> float | None:
    """Monotonic time at which the classroom's video slot reached `layer`, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert session.rate is not None
        if any(session.rate.layer(slot) == layer for slot in session.tracks):
            return time.monotonic()
        await asyncio.sleep(0.1)
    return None


def _timeline(session: PlaySession, since: float) -> list[tuple[float, str, str]]:
    assert session.rate is not None
    return [(round(c.at - since, 2), c.layer, c.reason) for c in session.rate.changes]


def _report(
    relay: RelayUnderTest,
    classroom: ClassroomProcess,
    free: ClassroomProcess,
    joined: float,
    lifted: float,
    climbed: float | None,
) -> dict[str, Any]:
    ended = time.monotonic() - 0.5  # frames of the last half second may still be in flight
    constrained = player(relay, "constrained")
    timeline = _timeline(constrained, joined)
    fitting = {"180p", "still", "paused"}
    settle = next((at for at, layer, _ in timeline if layer in fitting), math.inf)
    video = [t for t, _, _ in classroom.video]
    window = (joined + 10, joined + 30)
    sizes = sorted({(w, h) for t, w, h in classroom.video if t > (climbed or math.inf) + 3})
    return {
        "settle_s": settle,
        "timeline": timeline,
        "committed_while_limited": [
            layer
            for at, layer, reason in timeline
            if settle <= at <= lifted - joined and reason != "try"
        ],
        "max_video_gap_s": max(gaps(video, *window), default=math.inf),
        "max_audio_gap_s": max(gaps(classroom.audio, *window), default=math.inf),
        "audio_frames": sum(window[0] <= t <= window[1] for t in classroom.audio),
        "freeze_s_limited": round(frozen(video, joined, lifted), 2),
        "freezes": freezes(video, joined, ended),
        "freeze_s_window": round(frozen(video, *window), 2),
        "climb_s": None if climbed is None else round(climbed - lifted, 2),
        "sizes_after_climb": sizes,
        "unconstrained_timeline": _timeline(player(relay, "unconstrained"), joined),
        "unconstrained_max_gap_s": max(gaps([t for t, _, _ in free.video], joined + 1, ended)),
        "unconstrained_sizes": sorted({(w, h) for t, w, h in free.video if t > joined + 1}),
    }


def _save(report: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    (ARTIFACTS / "constrained-link.json").write_text(text)
    print(text)


def _check(report: dict[str, Any]) -> None:
    assert report["settle_s"] <= 10, report["timeline"]
    assert set(report["committed_while_limited"]) <= {"180p", "still", "paused"}, report
    assert report["max_video_gap_s"] <= 1.0, report
    assert report["max_audio_gap_s"] <= 1.0, report
    assert report["audio_frames"] >= 0.8 * 50 * 20, report
    assert report["climb_s"] is not None and report["climb_s"] <= 30, report["timeline"]
    assert report["sizes_after_climb"] == [(WIDTH, HEIGHT)], report
    assert [layer for _, layer, _ in report["unconstrained_timeline"]] == ["source"], report
    assert report["unconstrained_max_gap_s"] <= 1.0, report
    assert report["unconstrained_sizes"] == [(WIDTH, HEIGHT)], report
