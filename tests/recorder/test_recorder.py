"""The recorder as the room drives it: lessons open, tracks subscribe, finished lessons are
published into the library, and what a crash left is recovered."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from monitoring.metrics import REGISTRY
from recorder.library import Catalog, LocalStore
from recorder.packetlog import MAGIC, PacketLogWriter, Record
from recorder.recorder import Generations, Recorder
from recorder.writer import TrackWriter
from relay.core.codecs import is_vp8_keyframe
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame
from tests.recorder.lessons import FPS, media, record

ROOT = Path(__file__).resolve().parents[2]

START = 100.0  # the loop time the lesson starts at
QUALITY = [{"classroom": "Hope Primary", "attended_minutes": 0.1, "poor": False}]
INFO = {"title": "Fractions", "subject": "math", "grade": "5", "school": "Hope Primary"}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(LocalStore(tmp_path / "library"))


def recorder_errors() -> float:
    return REGISTRY.get_sample_value("ketang_recorder_errors_total") or 0.0


def teach(video: TrackWriter | None, audio: TrackWriter | None, seconds: float, at: float) -> None:
    """Real VP8 and Opus pushed as an upstream would, arriving from loop time `at` on."""
    frames, packets = media(seconds)
    assert video is not None and audio is not None
    for n, data in enumerate(frames):
        frame = Frame(None, data, n * 90_000 // FPS, is_vp8_keyframe(data))
        video.push(frame, at + n / FPS)
    for n, data in enumerate(packets):
        audio.push(Frame(None, data, n * 960, True), at + n * 0.02)


async def published(recorder: Recorder) -> None:
    """Wait for every writer thread and publishing the recorder started."""
    await asyncio.gather(*recorder.publishing)


@pytest.mark.parametrize(
    ("calls", "generations"),
    [
        ([("camera", "video"), ("camera", "audio")], [0, 0]),
        ([("camera", "video"), ("camera", "audio"), ("camera", "video")], [0, 0, 1]),
        ([("camera", "video"), ("screen", "video"), ("camera", "video")], [0, 0, 1]),
        ([("camera", "audio"), ("camera", "audio"), ("camera", "video")], [0, 1, 1]),
        ([("camera", "video")] * 3 + [("camera", "audio")], [0, 1, 2, 2]),
    ],
)
def test_a_kind_asked_for_again_starts_the_sources_next_generation(
    calls: list[tuple[str, str]], generations: list[int]
) -> None:
    counter = Generations()
    assert [counter.next(source, kind) for source, kind in calls] == generations


async def test_a_finished_lesson_is_published_with_its_details_and_its_logs_removed(
    tmp_path: Path, catalog: Catalog
) -> None:
    recorder = Recorder(tmp_path, catalog)
    recording = recorder.open("r1", "Ms Wang", record_media=True, loop_time=START)
    teach(recording.track("camera", "video"), recording.track("camera", "audio"), 2.0, START)
    recording.finish(INFO, QUALITY)
    await published(recorder)
    meta = catalog.get(recording.id)
    assert meta["title"] == "Fractions" and meta["teacher"] == "Ms Wang" and meta["room"] == "r1"
    assert meta["files"]["camera"]["video_frames"] == 2 * FPS and meta["quality"] == QUALITY
    with av.open(str(catalog.store.path(recording.id, "camera.webm"))) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * FPS
    assert not list((tmp_path / "recordings").iterdir()) and not recorder.active
    kept = json.loads((tmp_path / "quality" / f"{recording.id}.json").read_text())
    assert kept["classrooms"] == QUALITY and kept["school"] == "Hope Primary"
    assert recording.dropped == 0 and recording.write_errors == 0


async def test_a_teacher_reconnect_continues_the_same_file_after_the_gap(
    tmp_path: Path, catalog: Catalog
) -> None:
    recorder = Recorder(tmp_path, catalog)
    recording = recorder.open("r1", "Ms Wang", record_media=True, loop_time=START)
    first = [recording.track("camera", "video"), recording.track("camera", "audio")]
    teach(first[0], first[1], 1.0, START)
    for track in first:
        assert track is not None
        track.source_closed(FrameSource(0))  # the teacher's connection dropped
    second = [recording.track("camera", "video"), recording.track("camera", "audio")]
    assert [t.generation for t in first + second if t is not None] == [0, 0, 1, 1]
    teach(second[0], second[1], 1.0, START + 2.0)  # back after a second away, RTP time from 0 again
    recording.finish(INFO, [])
    await published(recorder)
    camera = catalog.get(recording.id)["files"]["camera"]
    assert camera["video_frames"] == 2 * FPS
    assert camera["duration"] == pytest.approx(3.0, abs=0.1)  # the gap kept as time


@pytest.mark.parametrize("record_media", [True, False])
async def test_a_lesson_without_media_leaves_nothing_but_its_quality_summary(
    tmp_path: Path, catalog: Catalog, record_media: bool
) -> None:
    recorder = Recorder(tmp_path, catalog)
    recording = recorder.open("r1", "Ms Wang", record_media=record_media, loop_time=START)
    track = recording.track("camera", "video")
    assert (track is not None) == record_media
    recording.finish(INFO, QUALITY)
    await published(recorder)
    assert not (tmp_path / "recordings").exists() and not catalog.lessons
    kept = json.loads((tmp_path / "quality" / f"{recording.id}.json").read_text())
    assert kept["classrooms"] == QUALITY


def full_disk_after(records: int) -> Callable[[Path], PacketLogWriter]:
    """Logs that take `records` records each, then fail as a full disk does."""

    class FullDisk(PacketLogWriter):
        def append(self, record: Record) -> None:
            if self.frames >= records:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().append(record)

    return FullDisk


async def test_a_full_disk_is_logged_per_track_counted_once_and_what_was_written_published(
    tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(tmp_path, catalog, open_log=full_disk_after(30))
    recording = recorder.open("r1", "Ms Wang", record_media=True, loop_time=START)
    errors = recorder_errors()
    teach(recording.track("camera", "video"), recording.track("camera", "audio"), 2.0, START)
    recording.finish(INFO, [])
    await published(recorder)
    assert recording.write_errors == 2 and recorder_errors() == errors + 1
    assert recording.problem is not None
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2 and not any(r.exc_info for r in failures)
    camera = catalog.get(recording.id)["files"]["camera"]
    assert camera["video_frames"] == 30 and camera["audio_frames"] == 30


async def test_recover_publishes_what_a_crash_left(tmp_path: Path, catalog: Catalog) -> None:
    record(tmp_path / "recordings" / "crashed-1", seconds=1.0, title="Fractions")
    await Recorder(tmp_path, catalog).recover()
    assert catalog.get("crashed-1")["title"] == "Fractions"
    assert not (tmp_path / "recordings" / "crashed-1").exists()


@pytest.mark.parametrize("logs", [{}, {"camera-video.log": MAGIC}], ids=["no logs", "empty log"])
async def test_recover_removes_a_recording_without_media_quietly(
    tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture, logs: dict[str, bytes]
) -> None:
    directory = tmp_path / "recordings" / "silent-1"
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text('{"id": "silent-1", "room": "r1"}')
    for name, data in logs.items():
        (directory / name).write_bytes(data)
    caplog.set_level(logging.DEBUG)
    await Recorder(tmp_path, catalog).recover()
    assert not directory.exists() and not catalog.lessons
    assert not any(r.exc_info or r.levelno >= logging.WARNING for r in caplog.records)


async def test_recover_leaves_the_directory_of_a_live_lesson_alone(
    tmp_path: Path, catalog: Catalog
) -> None:
    recorder = Recorder(tmp_path, catalog)
    recording = recorder.open("r1", "Ms Wang", record_media=True, loop_time=START)
    live = tmp_path / "recordings" / recording.id
    live.mkdir(parents=True)  # as its writer thread makes it at the first frame
    await recorder.recover()
    assert live.exists()
    await recorder.close()
    assert not live.exists() and not recorder.active


def test_the_recorder_imports_only_the_pure_kernel_of_the_relay() -> None:
    script = (
        "import sys, recorder.recorder, recorder.command, recorder.writer;"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'relay'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    modules = set(out.stdout.split())
    assert out.returncode == 0, out.stderr
    assert all(m in ("relay", "relay.core") or m.startswith("relay.core.") for m in modules)
