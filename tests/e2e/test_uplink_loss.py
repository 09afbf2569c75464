"""A packet the teacher's uplink loses must not freeze every classroom.

The loss is made on the teacher's side, in plaintext before SRTP: one video packet is
dropped, and so are the retransmissions the relay's NACKs bring, as many as the test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiortc.rtp import RtpPacket

from tests.conftest import RelayUnderTest
from tests.e2e.test_feedback import TeacherFeedback
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, Publication, whep_play, whip_publish

ROOM = "uplink"


class UplinkLoss:
    """Drops the next video packet the teacher sends once armed, and the first `resends`
    retransmissions of it (RTX packets whose payload starts with its sequence number)."""

    def __init__(self, publication: Publication, resends: int) -> None:
        sender = next(t.sender for t in publication.pc.getTransceivers() if t.kind == "video")
        transport = sender.transport
        send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        self.armed = False
        self.lost: int | None = None
        self.resends_dropped = 0
        self.resends_passed = 0

        async def lossy_send(data: bytes) -> None:
            if len(data) > 1 and not 192 <= data[1] <= 223:  # RTP, not RTCP (RFC 5761 §4)
                packet = RtpPacket.parse(data)
                if packet.ssrc == sender._ssrc and self.armed and self.lost is None:
                    self.lost = packet.sequence_number
                    return
                if packet.ssrc == sender._rtx_ssrc and self._is_resend(packet.payload):
                    if self.resends_dropped < resends:
                        self.resends_dropped += 1
                        return
                    self.resends_passed += 1
            await send(data)

        setattr(transport, "_send_rtp", lossy_send)  # noqa: B010 (fault injection on one link)

    def _is_resend(self, payload: bytes) -> bool:
        return self.lost is not None and int.from_bytes(payload[:2], "big") == self.lost


async def lesson(relay: RelayUnderTest) -> tuple[Publication, TeacherFeedback, list[Playback]]:
    token = relay.token(ROOM, "teacher")
    video = CounterVideoTrack(tag=TAG_CAMERA)
    publication = await whip_publish(relay.base, ROOM, token, "camera", video, ToneAudioTrack())
    classrooms = [
        await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", name))
        for name in ("east", "west")
    ]
    await asyncio.gather(*(c.wait_frames(0, 30, TAG_CAMERA) for c in classrooms))
    return publication, TeacherFeedback(publication), classrooms


async def lose_one_packet(
    publication: Publication, classrooms: list[Playback], resends: int
) -> tuple[UplinkLoss, float]:
    """Drop one video packet (and `resends` of its retransmissions); wait 3 s of lesson after;
    returns the loss and when it happened."""
    loss = UplinkLoss(publication, resends)
    loss.armed = True
    while loss.lost is None:
        await asyncio.sleep(0.005)
    lost_at = asyncio.get_running_loop().time()
    await asyncio.gather(*(c.wait_frames(0, 60, TAG_CAMERA, timeout=10) for c in classrooms))
    return loss, lost_at


@pytest.mark.timeout(60)
async def test_a_packet_lost_for_good_costs_classrooms_less_than_a_second(
    relay: RelayUnderTest,
) -> None:
    publication, teacher, classrooms = await lesson(relay)
    try:
        unreadable = [c.video[0].unreadable for c in classrooms]
        loss, lost_at = await lose_one_packet(publication, classrooms, resends=1000)
        # a keyframe was asked for: aiortc alone would NACK once and wait for its 512-packet
        # ring to overflow (tens of seconds at this stream's rate). How many NACK rounds come
        # first depends on how busy the loop is (STUCK_PLI is 3 rounds; a slow one skips to the
        # PLI): tests/rtc/test_jitter.py drives those rounds on a clock.
        assert loss.resends_dropped >= 1 and loss.resends_passed == 0
        assert teacher.plis >= 1
        for classroom, before in zip(classrooms, unreadable, strict=True):
            log = classroom.video[0]
            assert log.max_gap(since=lost_at - 1) < 1.0
            assert log.increasing(TAG_CAMERA)
            assert log.unreadable == before  # no broken picture was decoded
    finally:
        await asyncio.gather(*(c.close() for c in classrooms))
        await publication.close()


@pytest.mark.timeout(60)
async def test_a_lost_retransmission_is_asked_for_again(relay: RelayUnderTest) -> None:
    publication, teacher, classrooms = await lesson(relay)
    try:
        loss, lost_at = await lose_one_packet(publication, classrooms, resends=1)
        assert loss.resends_dropped == 1 and loss.resends_passed >= 1
        assert teacher.plis == 0  # the packet came back: no keyframe was needed
        for classroom in classrooms:
            log = classroom.video[0]
            assert log.max_gap(since=lost_at - 1) < 0.5
            # every frame arrived, the held ones released together when the packet came
            numbers = [r.number for r in log.records if r.t >= lost_at - 1]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    finally:
        await asyncio.gather(*(c.close() for c in classrooms))
        await publication.close()
