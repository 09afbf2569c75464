"""Server-made renditions of one teacher video source: decoded once, encoded once per rung.

A `Ladder` subscribes to one teacher video source. While no classroom listens to any of its
renditions it costs nothing: teacher frames are not even decoded. Once one does, a worker
thread decodes every teacher frame and encodes it for each rendition someone listens to (or
listened to within `LINGER` seconds, so a classroom flapping between two rungs does not restart
encoders). The cost therefore grows with the number of renditions in use, never with the
number of classrooms: each `Rendition` is a `FrameSource` that fans its frames out exactly as
the teacher's track does.

What the worker does with each frame is decided by the pure `relay.core.renditions`; this
module carries it out: the worker thread, the libvpx codecs, the logs and metrics.

libvpx releases the GIL while it works (PyAV calls it without the GIL), so the event loop keeps
forwarding while the worker encodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from monitoring import metrics
from relay.core.codecs import VIDEO_CLOCK_RATE, VP8_CHUNK_SIZE, split
from relay.core.fanout import FrameSource
from relay.core.forwarder import Frame
from relay.core.ladder import Rendition as RenditionSpec
from relay.core.renditions import LINGER, Drop, Idle, Job, LadderPolicy, Resync, Submit

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
# A rendition makes a keyframe at least this often, besides on request: a classroom that lost
# a packet for good on a weak link recovers within it even if its player never asks (aiortc's
# does not), and two seconds of 180p cost a keyframe of a few kilobytes.
KEYFRAME_SECONDS = 2.0
ASSUMED_FPS = 30  # the teacher's frame rate, for the keyframe interval in frames


class Rendition(FrameSource):
    """One rung of a ladder as classrooms see it: a source of encoded frames."""

    def __init__(self, spec: RenditionSpec, policy: LadderPolicy) -> None:
        # no GOP replay: a classroom switching here gets a fresh keyframe on request at once,
        # instead of a burst of cached frames into a link that is already short (0, not None:
        # the newest frame is still offered to a joiner when it is itself a keyframe)
        super().__init__(0)
        self.spec = spec
        self.name = spec.name
        self._policy = policy

    @property
    def bitrate(self) -> int:
        """Bits per second this rendition needs on a link: its CBR encoder's target."""
        return self.spec.bitrate

    def request_keyframe(self) -> None:
        """Ask the encoder for a keyframe: cheap, local, never reaches the teacher."""
        self._policy.request_keyframe(self.name)


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
    """The renditions of one teacher video source and the worker that makes them.

    A subscriber of that source like any classroom: it takes every teacher frame in `push`,
    asks the pure `LadderPolicy` what to do with it and carries that out.
    """

    def __init__(self, source: FrameSource, specs: tuple[RenditionSpec, ...]) -> None:
        self._source = source
        # LINGER is read when the ladder is made, so a test can shorten it for its ladders
        self._policy = LadderPolicy(tuple(s.name for s in specs), LINGER)
        self.renditions = {s.name: Rendition(s, self._policy) for s in specs}
        self._loop = asyncio.get_running_loop()
        self._executor: ThreadPoolExecutor | None = None
        self._work = _Work()
        if specs:  # without renditions there is nothing to decode for: not even a subscriber
            source.subscribe(self)

    def rendition(self, name: str) -> Rendition | None:
        """The rendition a classroom's layer names, or None when this ladder has no such rung."""
        return self.renditions.get(name)

    def push(self, frame: Frame, now: float) -> None:
        """A teacher frame arrived (event loop): carry out what the policy plans for it."""
        listened = [name for name, rendition in self.renditions.items() if len(rendition)]
        match self._policy.plan(frame, listened, self._source.gop, now):
            case Submit(job):
                self._submit(job)
            case Resync(jobs=()):
                self._source.request_keyframe()
            case Resync(jobs):
                for job in jobs:
                    self._submit(job)
            case Drop():
                metrics.count_drop("rendition_backlog")
            case Idle(stop_worker=True):
                self._stop_worker()

    def _submit(self, job: Job) -> None:
        """Queue one frame at the worker thread, starting the thread if none runs."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ladder")
        specs = [self.renditions[name].spec for name in job.encode]
        frame = job.frame
        future = self._loop.run_in_executor(
            self._executor,
            _process,
            self._work,
            frame.data,
            frame.timestamp,
            specs,
            set(job.keyframes),
            set(job.keep),
        )
        future.add_done_callback(self._delivered)

    def _delivered(self, future: asyncio.Future[Encoded]) -> None:
        """Back on the event loop: fan the encoded frames out."""
        error = None if future.cancelled() else future.exception()
        fan_out = self._policy.delivered(error is None)
        if error is not None:
            logger.warning("rendition worker of %s failed: %s", self._source, error)
            metrics.count_drop("rendition_error")
        elif fan_out and not future.cancelled():
            self._emit(future.result())

    def _emit(self, encoded: Encoded) -> None:
        """Fan each rendition's frames out; a failing subscriber costs only itself a frame."""
        now = self._loop.time()
        for name, data, timestamp, keyframe in encoded:
            rendition = self.renditions[name]
            frame = Frame(rendition, data, timestamp, keyframe, split(data, VP8_CHUNK_SIZE))
            if rendition.emit(frame, now):
                logger.debug("a subscriber of rendition %s failed", name)
                metrics.count_drop("subscriber_error")

    def _stop_worker(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # the old thread finishes its queue with its own codec state; a restart gets new
            executor.submit(self._work.retire, set())
            executor.shutdown(wait=False)
            self._work = _Work()

    def source_closed(self, source: FrameSource) -> None:
        """The teacher's track ended (the Subscriber side of `close`)."""
        self.close()

    def close(self) -> None:
        """The teacher's track ended: detach listeners and let the worker finish."""
        self._policy.close()
        self._source.unsubscribe(self)
        for rendition in self.renditions.values():
            rendition.close()
        self._stop_worker()
