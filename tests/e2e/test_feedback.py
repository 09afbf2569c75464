"""Classroom feedback stays at the relay: NACKs answered from its history, PLIs coalesced."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

from monitoring.metrics import REGISTRY
from relay.rtc.downtrack import DownTrack
from relay.rtc.sender import PacketLoop
from relay.rtc.session import PlaySession
from tests.conftest import RelayUnderTest, open_fds, settled
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Publication, whep_play, whip_publish

ROOM = "feedback"


class TeacherFeedback:
    """Counts the NACKs and keyframe requests that reach the teacher's video sender."""

    def __init__(self, publication: Publication) -> None:
        self.nacks = 0
        self.plis = 0
        sender = next(t.sender for t in publication.pc.getTransceivers() if t.kind == "video")
        handle: Callable[[Any], Any] = sender._handle_rtcp_packet
        send_keyframe: Callable[[], None] = sender._send_keyframe

        async def counting_handle(packet: Any) -> None:
            if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self.nacks += 1
            await handle(packet)

        def counting_keyframe() -> None:
            self.plis += 1
            send_keyframe()

        # instance overrides, to observe what aiortc's sender is handed
        setattr(sender, "_handle_rtcp_packet", counting_handle)  # noqa: B010
        setattr(sender, "_send_keyframe", counting_keyframe)  # noqa: B010


def retransmitted() -> float:
    """Packets the relay resent on NACK so far (the counter is per process)."""
    return REGISTRY.get_sample_value("ketang_retransmitted_packets_total") or 0.0


def lossy(session: PlaySession, loss: float, seed: int = 7) -> list[int]:
    """Drop a share of the relay's video RTP towards one classroom at its UDP socket (audio,
    RTCP, STUN and DTLS pass: Opus is never resent); returns a counter. The classroom's own
    transport on the media socket, so no other link is touched; its packets take the Python
    send path then (tests/rtc/test_rtpsend.py holds it to the native one)."""
    ice = session.pc.getTransceivers()[0].sender.transport.transport
    udp = ice._connection._nominated[1].protocol.transport
    sendto = udp.sendto
    rng = random.Random(seed)
    dropped = [0]
    opus = re.search(r"a=rtpmap:(\d+) opus/", session.pc.localDescription.sdp)
    audio = int(opus.group(1)) if opus else -1

    def maybe_sendto(data: bytes, address: Any = None) -> None:
        is_rtp = len(data) > 1 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223  # RFC 5761 §4
        if is_rtp and data[1] & 0x7F != audio and rng.random() < loss:
            dropped[0] += 1
            return
        sendto(data, address)

    setattr(udp, "sendto", maybe_sendto)  # noqa: B010 (fault injection on one link)
    # off the native batch path, whose packets never pass through `sendto`
    setattr(udp, "media_fd", -1)  # noqa: B010
    for packet_loop in session.loops.values():
        packet_loop.reroute()
    return dropped


async def publish(relay: RelayUnderTest) -> tuple[Publication, TeacherFeedback]:
    token = relay.token(ROOM, "teacher")
    video = CounterVideoTrack(tag=TAG_CAMERA)
    publication = await whip_publish(relay.base, ROOM, token, "camera", video, ToneAudioTrack())
    return publication, TeacherFeedback(publication)


@pytest.mark.timeout(60)
async def test_classroom_nacks_are_answered_by_the_relay_not_the_teacher(
    relay: RelayUnderTest,
) -> None:
    publication, teacher = await publish(relay)
    classroom = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom"))
    try:
        await classroom.wait_frames(0, 10, TAG_CAMERA)
        room = relay.registry.find(ROOM)
        assert room is not None
        resent = retransmitted()
        dropped = lossy(next(iter(room.players.values())), loss=0.05)
        frames = await classroom.wait_frames(0, 150, TAG_CAMERA, timeout=20)
        assert dropped[0] >= 5  # the link really lost packets
        # the relay resent what the classroom lost, from its own history, not the teacher's
        assert retransmitted() - resent >= 0.8 * dropped[0]
        assert teacher.nacks == 0
        # and the picture came out whole and in order (a frame missing a packet never decodes)
        numbers = [f.number for f in frames]
        assert numbers == sorted(numbers) and classroom.video[0].unreadable == 0
    finally:
        await classroom.close()
        await publication.close()


@pytest.mark.timeout(60)
async def test_many_classrooms_joining_at_once_cost_the_teacher_few_keyframes(
    relay: RelayUnderTest,
) -> None:
    publication, teacher = await publish(relay)
    classrooms = []
    try:
        await asyncio.sleep(1.0)
        before = teacher.plis
        loop = asyncio.get_running_loop()
        started = loop.time()
        tokens = [relay.token(ROOM, "classroom", f"school {i}") for i in range(12)]
        classrooms = list(await asyncio.gather(*(whep_play(relay.base, ROOM, t) for t in tokens)))
        await asyncio.gather(*(c.wait_frames(0, 30, TAG_CAMERA) for c in classrooms))
        elapsed = loop.time() - started
        min_interval = relay.config.media.keyframe_min_interval
        assert teacher.plis - before <= elapsed / min_interval + 1
    finally:
        await asyncio.gather(*(c.close() for c in classrooms))
        await publication.close()


def overflow_drops() -> float:
    return REGISTRY.get_sample_value("ketang_dropped_frames_total", {"reason": "overflow"}) or 0.0


def stalled(packet_loop: PacketLoop) -> Callable[[], None]:
    """Make one classroom's transport take no frames, as one not connected cannot; returns
    the function that lets it take them again."""
    setattr(packet_loop, "drain", lambda *args: None)  # noqa: B010 (fault injection on one link)
    return lambda: delattr(packet_loop, "drain")


@pytest.mark.timeout(60)
async def test_a_slow_classroom_drops_its_own_backlog_and_never_slows_the_others(
    relay: RelayUnderTest,
) -> None:
    publication, _ = await publish(relay)
    token = relay.token(ROOM, "classroom")
    fast = await whep_play(relay.base, ROOM, token)
    slow = await whep_play(relay.base, ROOM, token)
    try:
        await asyncio.gather(fast.wait_frames(0, 10, TAG_CAMERA), slow.wait_frames(0, 10))
        room = relay.registry.find(ROOM)
        assert room is not None
        slow_session = room.players[slow.location.rsplit("/", 1)[1]]
        overflows = overflow_drops()
        resumes = [stalled(packet_loop) for packet_loop in slow_session.loops.values()]
        await asyncio.sleep(4.0)
        assert overflow_drops() > overflows  # the backlog was dropped, not kept
        now = asyncio.get_running_loop().time()
        assert fast.video[0].fps(now, 3.0) >= 25.0
        assert fast.video[0].max_gap(since=now - 3.0) < 0.2
        video = next(t for s, t in slow_session.tracks.items() if s.kind == "video")
        audio = next(t for s, t in slow_session.tracks.items() if s.kind == "audio")
        # the slow classroom's queues stay bounded instead of growing without end
        assert len(video.forwarder) <= relay.config.media.video_queue_frames
        assert len(audio.forwarder) <= relay.config.media.audio_queue_packets
        # and once it takes frames again it plays on, from a keyframe
        for resume in resumes:
            resume()
        await slow.wait_frames(0, 30, TAG_CAMERA)
    finally:
        await fast.close()
        await slow.close()
        await publication.close()


@pytest.mark.timeout(90)
async def test_classrooms_coming_and_going_leave_nothing_behind(relay: RelayUnderTest) -> None:
    publication, _ = await publish(relay)
    token = relay.token(ROOM, "classroom")
    try:
        warm = await whep_play(relay.base, ROOM, token)
        await warm.wait_frames(0, 5, TAG_CAMERA)
        await warm.close()
        await asyncio.sleep(0.5)
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        for _ in range(3):
            batch = [await whep_play(relay.base, ROOM, token) for _ in range(5)]
            await asyncio.gather(*(c.wait_frames(0, 5, TAG_CAMERA) for c in batch))
            await asyncio.gather(*(c.close() for c in batch))
        room = relay.registry.find(ROOM)
        assert room is not None and room.players == {}
        # the recorder and the ladder stay subscribed; no classroom's down track does
        subscribers = [s for u in room.upstreams.values() for s in u.subscribers]
        assert not any(isinstance(s, DownTrack) for s in subscribers)
        assert await settled(lambda: open_fds() <= fds and len(asyncio.all_tasks()) <= tasks)
    finally:
        await publication.close()
