"""Recorded lessons made without a relay: packet logs of real VP8 and Opus, published."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from recorder.library import Catalog
from recorder.packetlog import PacketLogWriter, Record
from recorder.remux import publish
from relay.bench.media import encode_audio, encode_video
from relay.core.codecs import is_vp8_keyframe

FPS = 30


@cache
def media(seconds: float) -> tuple[list[bytes], list[bytes]]:
    return encode_video(seconds, 640, 360, FPS, 600_000), encode_audio(seconds)


def record(directory: Path, seconds: float = 4.0, **meta: Any) -> Path:
    """A recording directory as the recorder leaves it: meta.json and one log per track."""
    directory.mkdir(parents=True)
    video, audio = media(seconds)
    with_video = PacketLogWriter(directory / "camera-video.log")
    for n, frame in enumerate(video):
        with_video.append(Record(0, n / FPS, n * 90_000 // FPS, is_vp8_keyframe(frame), frame))
    with_video.close()
    with_audio = PacketLogWriter(directory / "camera-audio.log")
    for n, packet in enumerate(audio):
        with_audio.append(Record(0, n * 0.02, n * 960, True, packet))
    with_audio.close()
    fields = {"id": directory.name, "room": "r1", "teacher": "Ms Wang", "started": time.time()}
    (directory / "meta.json").write_text(json.dumps(fields | meta), encoding="utf-8")
    return directory


def add_lesson(catalog: Catalog, work: Path, lesson_id: str, **meta: Any) -> dict[str, Any]:
    """Record and publish one lesson into the catalog's store."""
    recording = record(work / "recordings" / lesson_id, **meta)
    published = publish(recording, catalog.store.entry(lesson_id))
    catalog.add(published)
    return published
