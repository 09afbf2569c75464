"""Server-made renditions of one teacher video source: decoded once, encoded once per rung.

A `Ladder` belongs to one video `Upstream`. While no classroom listens to any of its
renditions it costs nothing: teacher frames are not even decoded. Once one does, a worker
thread decodes every teacher frame and encodes it for each rendition someone listens to (or
listened to within `LINGER` seconds, so a classroom flapping between two rungs does not restart
encoders). The cost therefore grows with the number of renditions in use, never with the
number of classrooms: each `Rendition` fans its frames out to its listeners exactly as an
`Upstream` does.

libvpx releases the GIL while it works (PyAV calls it without the GIL), so the event loop keeps
forwarding while the worker encodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import TYPE_CHECKING

import av
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from monitoring import metrics
from relay.core.codecs import VIDEO_CLOCK_RATE, VP8_CHUNK_SIZE, split
from relay.core.forwarder import Frame
from relay.core.keyframes import GopCache
from relay.core.ladder import Rendition as RenditionSpec

if TYPE_CHECKING:
    from relay.rtc.downtrack import DownTrack
    from relay.rtc.upstream import Upstream

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
# Seconds a rendition keeps encoding after its last listener left: a classroom trying the next
# rung and reverting within seconds would otherwise restart the encoder (and a keyframe) twice.
LINGER = 10.0
# A rendition makes a keyframe at least this often, besides on request: a classroom that lost
# a packet for good on a weak link recovers within it even if its player never asks (aiortc's
# does not), and two seconds of 180p cost a keyframe of a few kilobytes.
KEYFRAME_SECONDS = 2.0
ASSUMED_FPS = 30  # the teacher's frame rate, for the keyframe interval in frames
# Teacher frames waiting for the worker before new ones skip encoding (still decoded, so the
# decoder never loses its references): about 130 ms at 30 fps.
MAX_BACKLOG = 4
# Beyond this many waiting frames the worker is hopelessly behind: drop, resync at a keyframe.
MAX_QUEUE = 30


class Rendition:
    """One rung of a ladder as classrooms see it: a source of encoded frames."""

    def __init__(self, ladder: Ladder, spec: RenditionSpec) -> None:
        self.ladder = ladder
        self.spec = spec
        self.name = spec.name
        self.listeners: set[DownTrack] = set()
        # no GOP replay: a classroom switching here gets a fresh keyframe on request at once,
        # instead of a burst of cached frames into a link that is already short
        self.gop = GopCache(0)
        self.last_listened = -1e9
        self.frames = 0
        self.keyframe_wanted = True  # a new encoder starts with one anyway

    @property
    def bitrate(self) -> int:
        """Bits per second this rendition needs on a link: its CBR encoder's target."""
        return self.spec.bitrate

    def request_keyframe(self) -> None:
        """Ask the encoder for a keyframe: cheap, local, never reaches the teacher."""
        self.keyframe_wanted = True

    def emit(self, data: bytes, timestamp: int, keyframe: bool, now: float) -> None:
        """Fan one encoded frame out to the listening down tracks (on the event loop)."""
        frame = Frame(self, data, timestamp, keyframe, split(data, VP8_CHUNK_SIZE))
        self.frames += 1
        self.gop.add(frame)
        for listener in tuple(self.listeners):
            listener.push(frame, now)

    def close(self) -> None:
        for listener in tuple(self.listeners):
            listener.origin_closed(self)
        self.listeners.clear()


class _Work:
    """The worker thread's codec state; only ever touched on that thread."""

    def __init__(self) -> None:
        self.decoder: av.codec.context.CodecContext | None = None
        self.encoders: dict[str, VideoCodecContext] = {}
        self.last_encoded: dict[str, int] = {}
        self.keyframe_due: set[str] = set()  # asked for, not yet encoded (the still skips)

    def decode(self, data: bytes, timestamp: int) -> list[av.VideoFrame]:
        if self.decoder is None:
            self.decoder = av.CodecContext.create("libvpx", "r")
        packet = av.Packet(data)
        packet.pts, packet.time_base = timestamp, _TIME_BASE
        return list(self.decoder.decode(packet))  # type: ignore[attr-defined]

    def encode(
        self, spec: RenditionSpec, picture: av.VideoFrame, timestamp: int, keyframe: bool
    ) -> list[tuple[bytes, bool]]:
        if keyframe:
            self.keyframe_due.add(spec.name)
        if spec.fps is not None:
            previous = self.last_encoded.get(spec.name)
            if previous is not None and timestamp - previous < VIDEO_CLOCK_RATE / spec.fps:
                return []
        width, height = fit_within(picture.width, picture.height, spec.width, spec.height)
        encoder = self.encoders.get(spec.name)
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            encoder = self.encoders[spec.name] = _new_encoder(spec, width, height)
            self.keyframe_due.add(spec.name)
        scaled = picture.reformat(width=width, height=height, format="yuv420p")
        scaled.pts, scaled.time_base = timestamp, _TIME_BASE
        if spec.name in self.keyframe_due:
            scaled.pict_type = PictureType.I
            self.keyframe_due.discard(spec.name)
        self.last_encoded[spec.name] = timestamp
        return [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(scaled)]

    def retire(self, keep: set[str]) -> None:
        for name in [n for n in self.encoders if n not in keep]:
            del self.encoders[name]
            self.last_encoded.pop(name, None)
            self.keyframe_due.discard(name)


def fit_within(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The largest even size inside the rung's box with the teacher's aspect ratio: a 4:3
    camera or a 16:10 screen is scaled down, never stretched or enlarged."""
    scale = min(box_width / width, box_height / height, 1.0)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _new_encoder(spec: RenditionSpec, width: int, height: int) -> VideoCodecContext:
    """A realtime CBR libvpx encoder, configured as aiortc's own (codecs/vpx.py) is."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.bit_rate = spec.bitrate
    codec.pix_fmt = "yuv420p"
    codec.time_base = _TIME_BASE
    codec.gop_size = max(round(KEYFRAME_SECONDS * (spec.fps or ASSUMED_FPS)), 1)
    codec.qmin, codec.qmax = 2, 56
    codec.thread_count = 1
    codec.options = {
        "bufsize": str(spec.bitrate),
        "cpu-used": "8",  # fastest realtime preset: the relay encodes for a whole room
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": str(spec.bitrate),  # minrate = maxrate = bit_rate selects CBR
        "maxrate": str(spec.bitrate),
        "overshoot-pct": "15",
        "undershoot-pct": "100",
        "static-thresh": "1",
        "error-resilient": "1",
    }
    return codec


Encoded = list[tuple[str, bytes, int, bool]]  # (rendition, data, timestamp, keyframe)


def _process(
    work: _Work,
    data: bytes,
    timestamp: int,
    specs: list[RenditionSpec],
    wanted: set[str],
    keep: set[str],
) -> Encoded:
    """Worker thread: decode one teacher frame, encode it for each rendition in `specs`."""
    started = time.perf_counter()
    work.retire(keep)
    out: Encoded = []
    for picture in work.decode(data, timestamp):
        for spec in specs:
            for encoded, key in work.encode(spec, picture, timestamp, spec.name in wanted):
                out.append((spec.name, encoded, timestamp, key))
    metrics.observe_ladder(time.perf_counter() - started)
    return out


class Ladder:
    """The renditions of one teacher video source and the worker that makes them."""

    def __init__(self, upstream: Upstream, specs: tuple[RenditionSpec, ...]) -> None:
        self.upstream = upstream
        self.renditions = {s.name: Rendition(self, s) for s in specs}
        self._loop = asyncio.get_running_loop()
        self._executor: ThreadPoolExecutor | None = None
        self._work = _Work()
        self._queued = 0
        self._synced = False  # the decoder has seen a keyframe and every frame since
        self._closed = False

    def rendition(self, name: str) -> Rendition | None:
        return self.renditions.get(name)

    def active(self, now: float) -> list[Rendition]:
        """Renditions someone listens to now or did within LINGER seconds."""
        live = []
        for rendition in self.renditions.values():
            if rendition.listeners:
                rendition.last_listened = now
            if now - rendition.last_listened <= LINGER:
                live.append(rendition)
        return live

    def feed(self, frame: Frame, now: float) -> None:
        """A teacher frame arrived (event loop): hand it to the worker if renditions run."""
        active = self.active(now)
        if not active or self._closed:
            self._synced = False  # frames skipped: the decoder must restart at a keyframe
            if self._executor is not None and not active:
                self._stop_worker()
            return
        if not self._synced:
            if not frame.keyframe:
                self._resync()
                return
            self._synced = True
        if self._queued >= MAX_QUEUE:
            metrics.count_drop("rendition_backlog")
            self._synced = False
            return
        self._submit(frame, active)

    def _resync(self) -> None:
        """Start the decoder from the upstream's cached GOP, or ask the teacher for a keyframe."""
        cached = self.upstream.gop.replay()
        if not cached:
            self.upstream.request_keyframe()
            return
        self._synced = True
        *earlier, last = cached
        active = self.active(self._loop.time())
        for frame in earlier:
            self._submit(frame, [])  # decode only, to rebuild the reference frames
        self._submit(last, active)

    def _submit(self, frame: Frame, active: list[Rendition]) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ladder")
        encode = active if self._queued < MAX_BACKLOG else []
        wanted = {r.name for r in encode if r.keyframe_wanted}
        for rendition in encode:
            rendition.keyframe_wanted = False
        specs = [r.spec for r in encode]
        keep = {r.name for r in active}
        self._queued += 1
        future = self._loop.run_in_executor(
            self._executor,
            _process,
            self._work,
            frame.data,
            frame.timestamp,
            specs,
            wanted,
            keep,
        )
        future.add_done_callback(self._delivered)

    def _delivered(self, future: asyncio.Future[Encoded]) -> None:
        """Back on the event loop: fan the encoded frames out."""
        self._queued -= 1
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.warning("rendition worker of %s failed: %s", self.upstream.feed, error)
            metrics.count_drop("rendition_error")
            self._synced = False
            return
        now = self._loop.time()
        for name, data, timestamp, keyframe in future.result():
            rendition = self.renditions[name]
            if not self._closed:
                rendition.emit(data, timestamp, keyframe, now)

    def _stop_worker(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # the old thread finishes its queue with its own codec state; a restart gets new
            executor.submit(self._work.retire, set())
            executor.shutdown(wait=False)
            self._work = _Work()

    def close(self) -> None:
        """The teacher's track ended: detach listeners and let the worker finish."""
        self._closed = True
        for rendition in self.renditions.values():
            rendition.close()
        self._stop_worker()
