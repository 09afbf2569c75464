"""An append-only log of one track's encoded frames: what the recorder writes during a lesson.

Nothing is decoded or re-encoded while the lesson is live, and nothing needs closing: a record
is a fixed header plus the frame, appended with one write and flushed at least every
FLUSH_SECONDS. A relay killed mid-write leaves at most a torn last record, which the reader
drops; everything before it is remuxed into the library file afterwards (recorder/remux.py).

Layout: the 8-byte magic, then records of

    u32 length | u8 flags (bit 0 keyframe) | u32 generation | f64 arrival | u64 timestamp | data

little-endian. `generation` counts the teacher's publications of this source within the
lesson (a reconnect starts a new one, its RTP timestamps restarting at 0); `arrival` is the
second the frame arrived, counted from the lesson's start, which places each generation on
the lesson's timeline.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"KTLOG\x00\x01\n"
_RECORD = struct.Struct("<IBIdQ")
RECORD_OVERHEAD = _RECORD.size  # bytes a record adds to its frame
# Seconds of frames that may sit in the process's buffer: what a killed relay loses at most.
FLUSH_SECONDS = 1.0
# A frame larger than this is not a frame (a corrupt length after a torn write).
MAX_FRAME = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One logged frame."""

    generation: int
    arrival: float  # seconds since the lesson started
    timestamp: int  # RTP timestamp, in the codec clock, from 0 per generation
    keyframe: bool
    data: bytes


class PacketLogWriter:
    """Appends frames to one track's log; flushes by time, so a crash loses little."""

    def __init__(self, path: Path) -> None:
        fresh = not path.exists() or path.stat().st_size == 0
        self.path = path
        self._file: BinaryIO = path.open("ab")
        if fresh:
            self._file.write(MAGIC)
        self._flushed_at = 0.0
        self.bytes = path.stat().st_size
        self.frames = 0

    def append(self, record: Record) -> None:
        flags = 1 if record.keyframe else 0
        header = _RECORD.pack(
            len(record.data), flags, record.generation, record.arrival, record.timestamp
        )
        self._file.write(header + record.data)
        self.bytes += len(header) + len(record.data)
        self.frames += 1
        if record.arrival - self._flushed_at >= FLUSH_SECONDS:
            self._file.flush()
            self._flushed_at = record.arrival

    def flush(self) -> None:
        """Hand what is buffered to the OS: the writer thread does it every FLUSH_SECONDS, so a
        track that went quiet (its teacher gone) is on disk too."""
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and close; the file is closed even when the flush fails (a full disk)."""
        if not self._file.closed:
            try:
                self._file.flush()
            finally:
                self._file.close()


def read_log(path: Path) -> Iterator[Record]:
    """Every complete record of a log; a torn record at the end (a crash) is left out."""
    with path.open("rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a Ketang packet log")
        while True:
            header = file.read(_RECORD.size)
            if len(header) < _RECORD.size:
                return
            length, flags, generation, arrival, timestamp = _RECORD.unpack(header)
            if length > MAX_FRAME:
                return
            data = file.read(length)
            if len(data) < length:
                return
            yield Record(generation, arrival, timestamp, bool(flags & 1), data)
