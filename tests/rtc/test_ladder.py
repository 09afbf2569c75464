"""The ladder shell with real VP8: a subscriber of its source, carrying out the policy's plans.

The policy's rules are tabled in tests/core/test_renditions.py; these check that the shell
does what a plan says, with libvpx on the worker thread and a stand-in teacher and classroom.
Frames carry literal times: the ladder takes `now` from its source, never from a clock.
"""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from relay.core.codecs import VIDEO_CLOCK_RATE, VP8_CHUNK_SIZE, is_vp8_keyframe, split
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame
from relay.core.ladder import parse_ladder
from relay.core.renditions import LINGER
from relay.rtc.ladder import Ladder
from tests.conftest import settled
from tests.media import TAG_CAMERA, make_frame, read_counter

SPECS = parse_ladder("640x360@500,320x180@150", still_fps=2.0)
WIDTH, HEIGHT = 640, 360
FRAME_TICKS = VIDEO_CLOCK_RATE // 30  # 30 fps

pytestmark = pytest.mark.timeout(30)


class Teacher(FrameSource):
    """The teacher's track as the ladder sees it: frames in, keyframe requests counted."""

    def __init__(self, gop_frames: int = 15) -> None:
        super().__init__(gop_frames)
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def send(self, data: bytes, index: int, now: float) -> None:
        keyframe = is_vp8_keyframe(data)
        frame = Frame(self, data, index * FRAME_TICKS, keyframe, split(data, VP8_CHUNK_SIZE))
        assert self.emit(frame, now) == 0


class Classroom:
    """A down track stand-in: keeps what it is pushed and which sources told it they ended."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.ended: list[FrameSource] = []

    def push(self, frame: Frame, now: float) -> None:
        self.frames.append(frame)

    def source_closed(self, source: FrameSource) -> None:
        self.ended.append(source)


@pytest.fixture(scope="module")
def vp8() -> list[bytes]:
    """Forty real teacher frames, 640x360, one keyframe first and inter frames after it."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height = WIDTH, HEIGHT
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, VIDEO_CLOCK_RATE)
    encoder.bit_rate = 1_000_000
    encoder.gop_size = 1000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    for index in range(40):
        picture = make_frame(WIDTH, HEIGHT, TAG_CAMERA, index, sweep=index * 8)
        picture.pts, picture.time_base = index * FRAME_TICKS, encoder.time_base
        out.extend(bytes(packet) for packet in encoder.encode(picture))
    assert len(out) == 40 and is_vp8_keyframe(out[0])
    assert not any(is_vp8_keyframe(data) for data in out[1:])
    return out


async def drained(ladder: Ladder) -> bool:
    """Every frame handed to the worker has come back."""
    return await settled(lambda: ladder._policy.queued == 0)


def decoded(frames: list[Frame]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("libvpx", "r")
    return [picture for f in frames for picture in decoder.decode(av.Packet(f.data))]


async def test_a_classroom_on_180p_gets_frames_encoded_once_for_it(vp8: list[bytes]) -> None:
    teacher = Teacher()
    ladder = Ladder(teacher, SPECS)
    low = ladder.renditions["180p"]
    classroom = Classroom()
    low.subscribe(classroom)
    for index, data in enumerate(vp8[:20]):
        teacher.send(data, index, index / 30)
        assert await drained(ladder)
    assert len(classroom.frames) == 20 and {f.origin for f in classroom.frames} == {low}
    assert classroom.frames[0].keyframe and not any(f.keyframe for f in classroom.frames[1:])
    pictures = decoded(classroom.frames)
    assert {(p.width, p.height) for p in pictures} == {(320, 180)}
    assert read_counter(pictures[-1]) == (TAG_CAMERA, 19)
    assert ladder.renditions["360p"].frames == 0  # nobody listens to it: never encoded
    assert teacher.keyframe_requests == 0
    teacher.close()


async def test_nobody_listening_costs_not_even_a_decode(vp8: list[bytes]) -> None:
    teacher = Teacher()
    ladder = Ladder(teacher, SPECS)
    for index, data in enumerate(vp8[:10]):
        teacher.send(data, index, index / 30)
    assert ladder._executor is None
    assert all(r.frames == 0 for r in ladder.renditions.values())
    teacher.close()


async def test_a_classroom_joining_mid_gop_starts_from_the_cached_gop(vp8: list[bytes]) -> None:
    teacher = Teacher(gop_frames=15)
    ladder = Ladder(teacher, SPECS)
    for index, data in enumerate(vp8[:6]):
        teacher.send(data, index, index / 30)
    classroom = Classroom()
    ladder.renditions["180p"].subscribe(classroom)
    for index, data in enumerate(vp8[6:12], start=6):
        teacher.send(data, index, index / 30)
        assert await drained(ladder)
    assert teacher.keyframe_requests == 0
    assert classroom.frames and classroom.frames[0].keyframe
    assert read_counter(decoded(classroom.frames)[-1]) == (TAG_CAMERA, 11)
    teacher.close()


async def test_without_a_cached_gop_the_teacher_is_asked_for_a_keyframe(vp8: list[bytes]) -> None:
    teacher = Teacher(gop_frames=0)
    ladder = Ladder(teacher, SPECS)
    for index, data in enumerate(vp8[:3]):
        teacher.send(data, index, index / 30)
    ladder.renditions["180p"].subscribe(Classroom())
    teacher.send(vp8[3], 3, 0.1)
    assert teacher.keyframe_requests == 1
    assert ladder._executor is None
    teacher.close()


async def test_the_worker_stops_once_the_last_listener_lingered_out(vp8: list[bytes]) -> None:
    teacher = Teacher()
    ladder = Ladder(teacher, SPECS)
    classroom = Classroom()
    ladder.renditions["180p"].subscribe(classroom)
    teacher.send(vp8[0], 0, 0.0)
    ladder.renditions["180p"].unsubscribe(classroom)
    teacher.send(vp8[1], 1, LINGER)
    assert ladder._executor is not None
    assert await drained(ladder)
    teacher.send(vp8[2], 2, LINGER + 0.033)
    assert ladder._executor is None
    # both were encoded, the second for nobody: the classroom had left before either came back
    assert ladder.renditions["180p"].frames == 2 and classroom.frames == []
    teacher.close()


async def test_the_ladder_ends_its_renditions_when_its_source_ends() -> None:
    teacher = Teacher()
    ladder = Ladder(teacher, SPECS)
    classroom = Classroom()
    ladder.renditions["180p"].subscribe(classroom)
    assert len(teacher) == 1  # the ladder is the teacher's subscriber
    teacher.close()
    assert classroom.ended == [ladder.renditions["180p"]]
    assert all(r.closed and len(r) == 0 for r in ladder.renditions.values())
    assert ladder.rendition("180p") is ladder.renditions["180p"]


async def test_a_ladder_without_renditions_does_not_subscribe() -> None:
    teacher = Teacher()
    ladder = Ladder(teacher, ())
    assert len(teacher) == 0 and ladder.rendition("180p") is None
