"""The writer thread: a push never waits for the disk, a full queue drops and counts, and every
frame queued reaches its log once, in order."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitoring.metrics import REGISTRY
from recorder.packetlog import RECORD_OVERHEAD, PacketLogWriter, Record, read_log
from recorder.writer import LessonWriter, TrackWriter
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame

FRAME_BYTES = 100
QUEUED = FRAME_BYTES + RECORD_OVERHEAD  # what one synthetic frame costs in the queue


def frame(n: int, keyframe: bool = True, origin: object = None) -> Frame:
    """A synthetic frame that says which one it is."""
    data = n.to_bytes(4, "big") + bytes(FRAME_BYTES - 4)
    return Frame(origin, data, n * 960, keyframe)


def recorder_errors() -> float:
    return REGISTRY.get_sample_value("ketang_recorder_errors_total") or 0.0


class StalledDisk:
    """Opens logs whose appends wait until the test releases them: a disk that stopped."""

    def __init__(self) -> None:
        self.writing = threading.Event()  # the thread is inside an append
        self.release = threading.Event()

    def __call__(self, path: Path) -> PacketLogWriter:
        disk = self

        class StalledLog(PacketLogWriter):
            def append(self, record: Record) -> None:
                disk.writing.set()
                disk.release.wait(30)  # bounded, so a broken test fails instead of hanging
                super().append(record)

        return StalledLog(path)


def test_a_stalled_disk_never_stalls_a_push_and_a_full_queue_drops_and_counts_once(
    tmp_path: Path,
) -> None:
    disk, capacity, pushed = StalledDisk(), 50, 5000
    writer = LessonWriter(tmp_path / "l1", {"id": "l1"}, capacity * QUEUED, disk)
    track = TrackWriter(writer, "camera-audio", 0, started=10.0)
    errors = recorder_errors()
    track.push(frame(0), 10.0)
    assert disk.writing.wait(10)  # the thread is stuck writing frame 0
    for n in range(1, pushed):
        track.push(frame(n), 10.0 + n * 0.02)
    # every push has returned while the thread is still inside its first write
    assert writer.appended == 0 and not disk.release.is_set()
    assert track.dropped == pushed - capacity and writer.queued == capacity * QUEUED
    assert recorder_errors() == errors + 1  # one burst of drops, one error
    disk.release.set()
    writer.stop()
    writer.join(10)
    arrivals = [10.0 + n * 0.02 - 10.0 for n in range(capacity)]  # as the writer computes them
    expected = [Record(0, at, n * 960, True, frame(n).data) for n, at in enumerate(arrivals)]
    assert list(read_log(tmp_path / "l1" / "camera-audio.log")) == expected
    assert writer.appended == capacity and writer.queued == 0


def test_a_lesson_without_frames_touches_no_disk_and_the_first_frame_brings_its_meta(
    tmp_path: Path,
) -> None:
    silent = LessonWriter(tmp_path / "silent", {"id": "silent"})
    silent.stop()
    silent.join(10)
    assert not (tmp_path / "silent").exists() and not silent.wrote_media
    writer = LessonWriter(tmp_path / "l1", {"id": "l1"})
    TrackWriter(writer, "screen-video", 2, started=0.0).push(frame(7), 1.5)
    writer.update_meta({"id": "l1", "title": "Fractions"})
    writer.stop()
    writer.join(10)
    assert (tmp_path / "l1" / "meta.json").read_text() == '{"id": "l1", "title": "Fractions"}'
    (record,) = read_log(tmp_path / "l1" / "screen-video.log")
    assert (record.generation, record.arrival, record.timestamp) == (2, 1.5, 7 * 960)


@dataclass
class ScriptedQueue:
    """A queue the test fills and empties at will, without a thread."""

    full: bool = False
    directory: Path = Path("l1")
    taken: list[int] = field(default_factory=list)  # numbers of the frames queued

    def put(self, track: str, record: Record) -> bool:
        if self.full:
            return False
        self.taken.append(record.timestamp // 960)
        return True


class Camera(FrameSource):
    """A source that counts the keyframes asked of it."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked = 0

    def request_keyframe(self) -> None:
        self.asked += 1


# (keyframe, the queue has room) per frame, frame n being the n-th of the script
VIDEO = [
    (False, True),  # 0: before the first keyframe: useless, a keyframe is asked for
    (True, True),  # 1: the track starts
    (False, True),  # 2
    (False, False),  # 3: queue full: dropped, a burst begins
    (False, True),  # 4: room again, but an inter frame after a loss cannot be decoded
    (True, False),  # 5: still full
    (True, True),  # 6: the track resumes, the burst is over
    (False, True),  # 7
    (False, False),  # 8: full again
]


AUDIO = [(True, room) for _, room in VIDEO]


@pytest.mark.parametrize(
    ("track", "script", "step", "taken", "dropped", "asked", "bursts"),
    [
        ("camera-video", VIDEO, 1 / 30, [1, 2, 6, 7], 4, 2, 1),
        ("camera-video", VIDEO, 3.0, [1, 2, 6, 7], 4, 2, 3),  # drops 6 s apart: three bursts
        ("camera-audio", AUDIO, 1 / 30, [0, 1, 2, 4, 6, 7], 3, 0, 1),
        ("camera-audio", AUDIO, 3.0, [0, 1, 2, 4, 6, 7], 3, 0, 3),
    ],
)
def test_a_full_queue_drops_and_video_resumes_at_a_keyframe_it_asks_for(
    track: str,
    script: list[tuple[bool, bool]],
    step: float,
    taken: list[int],
    dropped: int,
    asked: int,
    bursts: int,
) -> None:
    camera, queue = Camera(), ScriptedQueue()
    writer = TrackWriter(queue, track, 0, started=0.0)
    camera.subscribe(writer)
    errors = recorder_errors()
    for n, (keyframe, room) in enumerate(script):
        queue.full = not room
        camera.emit(frame(n, keyframe, origin=camera), n * step)
    assert queue.taken == taken and writer.dropped == dropped
    assert camera.asked == asked and recorder_errors() == errors + bursts


def test_a_closed_source_ends_the_generation_of_its_track() -> None:
    camera = Camera()
    queue = ScriptedQueue()
    writer = TrackWriter(queue, "camera-audio", 0, started=0.0)
    camera.subscribe(writer)
    camera.emit(frame(0), 0.0)
    camera.close()
    writer.push(frame(1), 0.02)  # a frame still in flight when the teacher left
    assert writer.closed and queue.taken == [0] and len(camera) == 0
