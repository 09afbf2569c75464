"""A recorded lesson's packet logs into library files, without re-encoding anything.

Each source becomes one WebM (VP8 + Opus, what the teacher's browser sent): `camera.webm` and,
if the teacher shared the screen, `screen.webm`. They play and seek in Chrome and VLC; the
library page plays the screen share large and the camera beside it, in step, using each file's
`offset` (its first frame's second in the lesson). Frames are placed on the lesson's timeline
by generation: a teacher who reconnected continues the same file after the gap.
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from recorder.packetlog import Record, read_log
from relay.core.codecs import AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE, vp8_size

_TIME_BASE = Fraction(1, 1000)  # WebM's millisecond clock
SOURCES = ("camera", "screen")
POSTER_AT = 0.1  # share of the lesson where the poster frame is taken
Progress = Callable[[float], None]


class EmptyRecording(ValueError):
    """A recording with no frame to publish: nothing was lost, there is nothing to keep."""


@dataclass(frozen=True, slots=True)
class Timed:
    """A frame placed on the lesson's timeline, in seconds."""

    at: float
    kind: str
    record: Record


def timeline(records: Iterator[Record], clock_rate: int, video: bool) -> Iterator[Timed]:
    """Frames in lesson seconds: each generation starts at its first frame's arrival and keeps
    its own RTP spacing; video waits for a keyframe at every generation's start."""
    start: dict[int, tuple[float, int]] = {}
    last = -1.0
    kind = "video" if video else "audio"
    for record in records:
        if record.generation not in start:
            if video and not record.keyframe:
                continue
            start[record.generation] = (max(record.arrival, last + 0.001), record.timestamp)
        base, first = start[record.generation]
        at = base + (record.timestamp - first) / clock_rate
        if at <= last:
            continue  # a duplicate or reordered frame: a muxer needs rising timestamps
        last = at
        yield Timed(at, kind, record)


def _tracks(recording: Path, source: str) -> list[Iterator[Timed]]:
    tracks = []
    for kind, clock in (("video", VIDEO_CLOCK_RATE), ("audio", AUDIO_CLOCK_RATE)):
        log = recording / f"{source}-{kind}.log"
        if log.exists():
            tracks.append(timeline(read_log(log), clock, kind == "video"))
    return tracks


def remux_source(recording: Path, source: str, out: Path) -> dict[str, Any] | None:
    """Write one source's WebM; its offset, duration and frame counts, or None if empty."""
    frames = list(heapq.merge(*_tracks(recording, source), key=lambda t: t.at))
    video = [f for f in frames if f.kind == "video"]
    if not frames or (source == "screen" and not video):
        return None
    offset = frames[0].at
    container = av.open(str(out), "w", format="webm")
    streams: dict[str, Any] = {}
    if video:
        size = vp8_size(video[0].record.data) or (640, 360)
        stream = container.add_stream("libvpx", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        streams["video"] = stream
    if any(f.kind == "audio" for f in frames):
        streams["audio"] = container.add_stream("libopus", rate=48000)
    for timed in frames:
        packet = av.Packet(timed.record.data)
        packet.stream = streams[timed.kind]
        packet.pts = packet.dts = round((timed.at - offset) * 1000)
        packet.time_base = _TIME_BASE
        packet.is_keyframe = timed.record.keyframe
        container.mux(packet)
    container.close()
    return {
        "file": out.name,
        "offset": round(offset, 3),
        "duration": round(frames[-1].at - offset, 3),
        "video_frames": len(video),
        "audio_frames": len(frames) - len(video),
        "width": streams["video"].width if video else 0,
        "height": streams["video"].height if video else 0,
        "bytes": out.stat().st_size,
    }


def poster(media: Path, out: Path, at: float) -> bool:
    """A JPEG of the frame at `at` seconds (or the last before it); False without video."""
    with av.open(str(media)) as container:
        if not container.streams.video:
            return False
        stream = container.streams.video[0]
        container.seek(int(at * av.time_base), any_frame=False)
        frame = next(container.decode(stream), None)
        if frame is None:
            return False
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = frame.width, frame.height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = Fraction(1, 25)
        picture = frame.reformat(format="yuvj420p")
        data = b"".join(bytes(p) for p in encoder.encode(picture)) + b"".join(
            bytes(p) for p in encoder.encode(None)
        )
        out.write_bytes(data)
        return True


def publish(recording: Path, destination: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Remux a finished (or crashed) recording into a library entry; returns its meta."""
    report = progress or (lambda share: None)
    meta = json.loads((recording / "meta.json").read_text(encoding="utf-8"))
    work = destination.with_name(destination.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = {}
    for index, source in enumerate(SOURCES):
        entry = remux_source(recording, source, work / f"{source}.webm")
        if entry is not None:
            files[source] = entry
        report((index + 1) / (len(SOURCES) + 1))
    if not files:
        shutil.rmtree(work)
        raise EmptyRecording(f"recording {recording.name} holds no media")
    main = files.get("camera") or files["screen"]
    duration = max(f["offset"] + f["duration"] for f in files.values())
    has_poster = poster(work / main["file"], work / "poster.jpg", duration * POSTER_AT)
    meta.update({
        "duration": round(duration, 3),
        "files": files,
        "sources": sorted(files),
        "poster": "poster.jpg" if has_poster else None,
        "size": sum(f["bytes"] for f in files.values()),
    })  # fmt: skip
    (work / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), "utf-8")
    shutil.rmtree(destination, ignore_errors=True)
    work.rename(destination)  # the entry appears whole or not at all
    report(1.0)
    return dict(meta)
