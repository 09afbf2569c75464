"""The benchmark's synthetic lesson: media encoded once in advance, stamped per frame.

The publisher must cost almost nothing, so the clip is encoded before the run and replayed as
`av.Packet`s (aiortc only packetizes them). Each video frame carries a trailer with its frame
number and the time it was handed to the sender, so classrooms can count lost frames and
measure latency without decoding. VP8 decoders are never fed these frames: the benchmark's
classrooms only reassemble them.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from relay.core.codecs import AUDIO_TIME_BASE, VIDEO_TIME_BASE

# magic, frame number, CLOCK_MONOTONIC nanoseconds when handed to the sender
_TRAILER = struct.Struct("!4sIq")
_MAGIC = b"KtBn"
OPUS_FRAME_SECONDS = 0.02  # RFC 7587 §4.2: 20 ms is the default Opus frame duration


@dataclass(frozen=True, slots=True)
class Clip:
    """A looped lesson: VP8 frames (the first a keyframe) and 20 ms Opus packets."""

    video: list[bytes]
    audio: list[bytes]
    fps: int
    width: int
    height: int

    @property
    def video_bitrate(self) -> float:
        """Average video bits per second over the clip."""
        return sum(map(len, self.video)) * 8 * self.fps / len(self.video)


def stamp(frame: bytes, number: int, sent_ns: int) -> bytes:
    """The frame with its trailer appended."""
    return frame + _TRAILER.pack(_MAGIC, number, sent_ns)


def read_stamp(data: bytes) -> tuple[int, int] | None:
    """(frame number, sent_ns) from a stamped frame, or None if it carries no trailer."""
    if len(data) < _TRAILER.size:
        return None
    magic, number, sent_ns = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    return (number, sent_ns) if magic == _MAGIC else None


def _picture(width: int, height: int, index: int, rng: np.random.Generator) -> av.VideoFrame:
    """A scrolling checkerboard with a moving block and light noise: realistic for VP8."""
    xx, yy = np.meshgrid(np.arange(width), np.arange(height))
    luma = ((xx // 40 + yy // 40) % 2 * 120 + xx * 100 // width).astype(np.uint8)
    luma = np.roll(luma, index * 4, axis=1)
    left = (index * 8) % (width - 100)
    luma[height // 2 - 50 : height // 2 + 50, left : left + 100] = 255
    luma += rng.integers(0, 12, luma.shape, dtype=np.uint8)
    planes = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    planes[:height] = luma
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def encode_video(seconds: float, width: int, height: int, fps: int, bitrate: int) -> list[bytes]:
    """VP8 frames with one keyframe at the start (the publisher restarts there on PLI)."""
    count = max(int(seconds * fps), 1)
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate, encoder.framerate = bitrate, Fraction(fps)
    encoder.time_base = Fraction(1, fps)
    encoder.gop_size = count
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(1)
    frames: list[bytes] = []
    for index in range(count):
        picture = _picture(width, height, index, rng)
        picture.pts = index
        frames += [bytes(p) for p in encoder.encode(picture)]
    frames += [bytes(p) for p in encoder.encode(None)]
    return frames


def encode_audio(seconds: float) -> list[bytes]:
    """Opus packets of a 440 Hz tone, 20 ms each."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.bit_rate = 32_000  # a teacher's voice, as browsers send it
    samples = int(48_000 * OPUS_FRAME_SECONDS)
    packets: list[bytes] = []
    for index in range(max(int(seconds / OPUS_FRAME_SECONDS), 1)):
        t = (np.arange(samples) + index * samples) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48_000, index * samples
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets


def make_clip(
    seconds: float, width: int = 1280, height: int = 720, fps: int = 30, bitrate: int = 1_500_000
) -> Clip:
    """The benchmark lesson: 720p30 VP8 at ~1.5 Mbit/s plus Opus, by default."""
    return Clip(
        encode_video(seconds, width, height, fps, bitrate), encode_audio(1.0), fps, width, height
    )


class _Paced(MediaStreamTrack):
    """Releases one item per period on a fixed schedule, like a live source."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self._period = period
        self._start: float | None = None
        self.count = 0

    async def _tick(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self.count * self._period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.count += 1
        return self.count - 1


class ClipVideoTrack(_Paced):
    """Replays the clip's VP8 frames, stamped; restarts at the keyframe when asked."""

    kind = "video"

    def __init__(self, clip: Clip) -> None:
        super().__init__(1 / clip.fps)
        self._frames = clip.video
        self._index = 0
        self._ticks_per_frame = 90_000 // clip.fps
        self.keyframe_requests = 0

    def keyframe(self) -> None:
        """A receiver lost the picture: the next frame is the clip's keyframe."""
        self._index = 0
        self.keyframe_requests += 1

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        number = await self._tick()
        data = stamp(self._frames[self._index], number, time.monotonic_ns())
        self._index = (self._index + 1) % len(self._frames)
        packet = av.Packet(data)
        packet.pts, packet.time_base = number * self._ticks_per_frame, VIDEO_TIME_BASE
        return packet


class ClipAudioTrack(_Paced):
    """Replays the clip's Opus packets every 20 ms."""

    kind = "audio"

    def __init__(self, clip: Clip) -> None:
        super().__init__(OPUS_FRAME_SECONDS)
        self._packets = clip.audio

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        number = await self._tick()
        packet = av.Packet(self._packets[number % len(self._packets)])
        packet.pts, packet.time_base = number * 960, AUDIO_TIME_BASE
        return packet
