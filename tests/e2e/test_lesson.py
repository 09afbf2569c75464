"""A whole lesson through a real relay with real aiortc peers on loopback.

Teacher → relay → three classrooms that decode and read the frame counter drawn into every
frame: one joins before the teacher, one at the start (with two video slots), one late. The
screen share starts and stops, and the teacher's connection drops and comes back; everyone
keeps playing on the connections they have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relay.runtime import STALE_PUBLISHER_SECONDS
from tests.conftest import RelayUnderTest
from tests.media import TAG_CAMERA, TAG_SCREEN, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, Publication, whep_play, whip_publish

ROOM = "lesson1"
MIN_FPS = 25.0
JOIN_DEADLINE = 1.0  # seconds from a classroom's POST to its first decoded frame


class Lesson:
    """The teacher's side of the test lesson, able to drop and come back."""

    def __init__(self, relay: RelayUnderTest) -> None:
        self.relay = relay
        self.token = relay.token(ROOM, "teacher", "Ms Li")
        self.camera: Publication | None = None
        self.screen: Publication | None = None
        self.camera_track = CounterVideoTrack(tag=TAG_CAMERA)

    async def start_camera(self) -> None:
        # a fresh track continuing the numbers, as a browser republishing would
        start = self.camera_track.next_number
        self.camera_track = CounterVideoTrack(tag=TAG_CAMERA, start=start + 1000)
        self.camera = await whip_publish(
            self.relay.base, ROOM, self.token, "camera", self.camera_track, ToneAudioTrack()
        )

    async def start_screen(self) -> None:
        track = CounterVideoTrack(tag=TAG_SCREEN, fps=30)
        self.screen = await whip_publish(self.relay.base, ROOM, self.token, "screen", track, None)

    async def close(self) -> None:
        for publication in (self.camera, self.screen):
            if publication is not None:
                await publication.drop()


async def join(relay: RelayUnderTest, name: str, video_slots: int = 1) -> Playback:
    return await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", name), video_slots)


def assert_smooth(playback: Playback, slot: int, tag: int, seconds: float = 2.0) -> None:
    """At least MIN_FPS of `tag` frames over the last `seconds`, numbers increasing."""
    log = playback.video[slot]
    now = asyncio.get_running_loop().time()
    assert log.fps(now, seconds, tag) >= MIN_FPS, f"slot {slot} fps {log.fps(now, seconds, tag)}"
    assert log.increasing(tag)


@pytest.fixture
async def lesson(relay: RelayUnderTest) -> AsyncIterator[Lesson]:
    teacher = Lesson(relay)
    yield teacher
    await teacher.close()


@pytest.mark.timeout(120)
async def test_lesson_reaches_every_classroom_through_joins_shares_and_reconnects(
    relay: RelayUnderTest, lesson: Lesson
) -> None:
    loop = asyncio.get_running_loop()
    early = await join(relay, "Early School")
    playbacks = [early]
    try:
        # the teacher starts: the classroom that waited gets the camera
        await lesson.start_camera()
        both = await join(relay, "Two-Slot School", video_slots=2)
        playbacks.append(both)
        await early.wait_frames(0, 60, TAG_CAMERA)
        await both.wait_frames(0, 60, TAG_CAMERA)
        assert_smooth(early, 0, TAG_CAMERA)
        assert_smooth(both, 0, TAG_CAMERA)

        # a late classroom sees a picture within a second of asking
        asked = loop.time()
        late = await join(relay, "Late School")
        playbacks.append(late)
        first = (await late.wait_frames(0, 1, TAG_CAMERA))[0]
        assert first.t - asked < JOIN_DEADLINE
        await late.wait_frames(0, 60, TAG_CAMERA)
        assert_smooth(late, 0, TAG_CAMERA)

        # screen share: single-slot classrooms switch to it, the two-slot one gets both
        await lesson.start_screen()
        for playback in (early, late):
            await playback.wait_frames(0, 60, TAG_SCREEN)
            assert_smooth(playback, 0, TAG_SCREEN)
        await both.wait_frames(1, 60, TAG_SCREEN)
        assert_smooth(both, 1, TAG_SCREEN)
        assert_smooth(both, 0, TAG_CAMERA)

        # the share stops: back to the camera
        assert lesson.screen is not None
        await lesson.screen.close()
        lesson.screen = None
        for playback in (early, late):
            await playback.wait_frames(0, 60, TAG_CAMERA)
            assert_smooth(playback, 0, TAG_CAMERA)

        # the teacher's connection dies and the teacher publishes again
        assert lesson.camera is not None
        before = [p.video[0].records[-1].number for p in playbacks]
        heard = [p.audio.count for p in playbacks]
        await lesson.camera.drop()
        await lesson.start_camera()
        for playback, last, sounds in zip(playbacks, before, heard, strict=True):
            frames = await playback.wait_frames(0, 60, TAG_CAMERA)
            assert frames[0].number > last
            assert_smooth(playback, 0, TAG_CAMERA)
            # 60 frames are 2 s: the new publication's audio (50 packets a second) came too
            assert playback.audio.count - sounds >= 50

        # audio flowed throughout, without a gap longer than the reconnect
        for playback in playbacks:
            assert playback.audio.max_gap(since=first.t) < 3.0
    finally:
        for playback in playbacks:
            await playback.close()
    await lesson.close()
    assert await until_empty(relay)


@pytest.mark.timeout(60)
async def test_silent_publisher_is_replaced_when_the_teacher_publishes_again(
    relay: RelayUnderTest, lesson: Lesson
) -> None:
    classroom = await join(relay, "School")
    try:
        await lesson.start_camera()
        await classroom.wait_frames(0, 30, TAG_CAMERA)
        # the old connection stays up but carries nothing, as after a frozen uplink
        assert lesson.camera is not None
        stale = lesson.camera
        for transceiver in stale.pc.getTransceivers():
            transceiver.sender.replaceTrack(None)
        await asyncio.sleep(STALE_PUBLISHER_SECONDS + 0.5)
        await lesson.start_camera()
        frames = await classroom.wait_frames(0, 30, TAG_CAMERA)
        assert frames[0].number >= 1000  # numbers of the new publication
        room = relay.registry.find(ROOM)
        assert room is not None and len(room.publishers) == 1
        await stale.drop()
    finally:
        await classroom.close()


async def until_empty(relay: RelayUnderTest, timeout: float = 5.0) -> bool:
    """True once no room has a session left (the teacher's sessions end asynchronously; the
    room itself stays for its lesson's reconnect grace)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def busy() -> bool:
        return any(room.publishers or room.players for room in relay.registry)

    while busy() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return not busy()
