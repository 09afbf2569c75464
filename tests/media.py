"""Synthetic media for end-to-end tests: video frames that carry a readable counter, and a tone.

Each video frame draws a code of black/white cells over the top two thirds of the picture:

    cells 0-3    marker 1,0,1,1 (a blank, black or white picture never matches)
    cells 4-6    source tag, 3 bits, most significant first
    cells 7-30   frame number, 24 bits, most significant first
    cell  31     even parity over tag and number

The grid is 8 x 6 cells laid out in fractions of the picture, so a rendition scaled to any size
still reads. Cells are 40x40 px at 320x240: VP8 at a low bitrate keeps their centres intact.
The bottom third holds a sweeping bar so the encoder produces real inter frames.
"""

from __future__ import annotations

import asyncio
import fractions
import math

import av
import numpy as np
import numpy.typing as npt
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

GRID_COLS = 8
GRID_ROWS = 6
CODE_ROWS = 4
TAG_BITS = 3
NUMBER_BITS = 24
NUMBER_MODULUS = 1 << NUMBER_BITS
MAX_TAG = (1 << TAG_BITS) - 1
MARKER = (1, 0, 1, 1)
TAG_CAMERA = 1
TAG_SCREEN = 2

BLACK = 16  # limited-range luma, per BT.601
WHITE = 235
GREY = 128
# A cell reads as a bit only when its centre is this far from mid grey; anything closer is noise.
MARGIN = 40

VIDEO_CLOCK = 90_000  # RTP clock for video, per RFC 7741 §4.1
AUDIO_RATE = 48_000  # Opus always runs at 48 kHz, per RFC 7587 §4.1
AUDIO_PTIME = 0.020

Bits = list[int]
Luma = npt.NDArray[np.uint8]


def encode_bits(tag: int, number: int) -> Bits:
    """The 32 cell values for one frame, in reading order."""
    if not 0 <= tag <= MAX_TAG:
        raise ValueError(f"tag {tag} does not fit in {TAG_BITS} bits")
    number %= NUMBER_MODULUS
    payload = _to_bits(tag, TAG_BITS) + _to_bits(number, NUMBER_BITS)
    return [*MARKER, *payload, sum(payload) % 2]


def decode_bits(bits: Bits) -> tuple[int, int] | None:
    """(tag, number) from cell values, or None when the marker or parity says it is not a code."""
    marker, payload, parity = bits[:4], bits[4:-1], bits[-1]
    if tuple(marker) != MARKER or sum(payload) % 2 != parity:
        return None
    return _from_bits(payload[:TAG_BITS]), _from_bits(payload[TAG_BITS:])


def _to_bits(value: int, width: int) -> Bits:
    """Most significant bit first, so the drawing reads left to right like the number."""
    return [(value >> i) & 1 for i in reversed(range(width))]


def _from_bits(bits: Bits) -> int:
    """Inverse of _to_bits."""
    value = 0
    for bit in bits:
        value = (value << 1) | bit
    return value


def _edges(size: int, parts: int) -> npt.NDArray[np.int64]:
    """Cell boundaries as fractions of the picture, rounded to pixels."""
    return np.round(np.arange(parts + 1) * size / parts).astype(np.int64)


def draw_luma(width: int, height: int, tag: int, number: int, sweep: int) -> Luma:
    """The Y plane for one frame: the code on top, a bar at `sweep` pixels below."""
    cells = np.full((GRID_ROWS, GRID_COLS), GREY, dtype=np.uint8)
    bits = np.array(encode_bits(tag, number), dtype=np.uint8).reshape(CODE_ROWS, GRID_COLS)
    cells[:CODE_ROWS] = np.where(bits == 1, WHITE, BLACK)
    rows = np.diff(_edges(height, GRID_ROWS))
    cols = np.diff(_edges(width, GRID_COLS))
    luma: Luma = np.repeat(np.repeat(cells, rows, axis=0), cols, axis=1)
    top = int(_edges(height, GRID_ROWS)[CODE_ROWS])
    bar = max(width // 20, 2)
    x = sweep % width
    luma[top:, x : x + bar] = WHITE
    return luma


def make_frame(width: int, height: int, tag: int, number: int, sweep: int = 0) -> av.VideoFrame:
    """A yuv420p frame carrying (tag, number); chroma is neutral."""
    luma = draw_luma(width, height, tag, number, sweep)
    chroma = np.full((height // 2, width), GREY, dtype=np.uint8)
    return av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")


def _luma_of(frame: av.VideoFrame) -> Luma:
    """The Y plane as a (height, width) array, without copying when the frame is planar YUV."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    rows: Luma = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def _sample_points(size: int, parts: int) -> npt.NDArray[np.int64]:
    """Three points inside each cell's middle, so one ringing pixel cannot flip a bit."""
    edges = np.arange(parts)[:, None] + np.array([0.3, 0.5, 0.7])[None, :]
    points: npt.NDArray[np.int64] = (edges * size / parts).astype(np.int64).ravel()
    return np.minimum(points, size - 1)


def read_counter(frame: av.VideoFrame) -> tuple[int, int] | None:
    """(tag, number) drawn by make_frame, or None when the frame does not carry a clean code."""
    luma = _luma_of(frame)
    height, width = luma.shape
    ys = _sample_points(height, GRID_ROWS)[: CODE_ROWS * 3]
    xs = _sample_points(width, GRID_COLS)
    samples = luma[np.ix_(ys, xs)].astype(np.float32)
    means = samples.reshape(CODE_ROWS, 3, GRID_COLS, 3).mean(axis=(1, 3)).ravel()
    if np.any(np.abs(means - GREY) < MARGIN):
        return None
    return decode_bits([int(m > GREY) for m in means])


class _Pacer:
    """Wall-clock pacing on the loop clock, so a slow frame does not shift every later one."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.index = -1
        self._start = 0.0

    async def tick(self) -> int:
        """Sleep until the next slot and return its index (0 for the first, at once)."""
        loop = asyncio.get_running_loop()
        self.index += 1
        if self.index == 0:
            self._start = loop.time()
        else:
            await asyncio.sleep(self._start + self.index * self.period - loop.time())
        return self.index


class CounterVideoTrack(VideoStreamTrack):
    """A camera that films its own frame counter, so a receiver can tell order, loss and source."""

    def __init__(
        self,
        tag: int = TAG_CAMERA,
        start: int = 0,
        fps: float = 30.0,
        width: int = 320,
        height: int = 240,
    ) -> None:
        super().__init__()
        encode_bits(tag, 0)  # reject a bad tag now, not inside the sender's task
        self.tag = tag
        self.next_number = start
        self.width = width
        self.height = height
        self._pacer = _Pacer(1.0 / fps)

    async def recv(self) -> av.VideoFrame:
        """The next numbered frame, paced to the frame rate."""
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.tick()
        frame = make_frame(self.width, self.height, self.tag, self.next_number, sweep=index * 8)
        frame.pts = round(index * self._pacer.period * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.next_number += 1
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A steady sine tone in 20 ms frames at 48 kHz, which aiortc encodes as Opus."""

    def __init__(self, hz: float = 440.0, level: float = 0.3) -> None:
        super().__init__()
        self.hz = hz
        self.level = level
        self._pacer = _Pacer(AUDIO_PTIME)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of tone, phase-continuous with the last."""
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.tick()
        samples = round(AUDIO_RATE * AUDIO_PTIME)
        t = (index * samples + np.arange(samples)) / AUDIO_RATE
        wave = (np.sin(2 * math.pi * self.hz * t) * self.level * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame
