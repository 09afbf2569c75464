"""Every Prometheus metric of the relay, behind small functions the rest of the code calls.

Names follow Prometheus conventions: `ketang_` prefix, base units, `_total` on counters.
Live-state series (rooms, classrooms) are produced at scrape time by `LiveCollector`, so they
vanish with the state they describe. The registry is per process by nature (one /metrics per
process), which is why the counters live at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

_INGEST_FRAMES = Counter(
    "ketang_ingest_frames", "Complete frames received from teachers", ["kind"], registry=REGISTRY
)
_INGEST_BYTES = Counter(
    "ketang_ingest_bytes", "Encoded bytes received from teachers", ["kind"], registry=REGISTRY
)
_DROPS = Counter(
    "ketang_dropped_frames",
    "Frames not forwarded to a classroom, by reason",
    ["reason"],
    registry=REGISTRY,
)
_KEYFRAME_REQUESTS = Counter(
    "ketang_keyframe_requests",
    "Keyframe requests (PLI) sent upstream to teachers after coalescing",
    ["source"],
    registry=REGISTRY,
)
_HTTP_ERRORS = Counter(
    "ketang_http_errors", "HTTP requests answered with an error", ["status"], registry=REGISTRY
)


def count_ingest(kind: str, size: int) -> None:
    """One complete frame of `size` bytes came from a teacher."""
    _INGEST_FRAMES.labels(kind).inc()
    _INGEST_BYTES.labels(kind).inc(size)


def count_drop(reason: str) -> None:
    """The packet path dropped a frame instead of raising."""
    _DROPS.labels(reason).inc()


def count_keyframe_request(source: str) -> None:
    """A PLI went to a teacher."""
    _KEYFRAME_REQUESTS.labels(source).inc()


def count_http_error(status: int) -> None:
    """A request got an error status."""
    _HTTP_ERRORS.labels(str(status)).inc()


@dataclass(frozen=True, slots=True)
class RoomSample:
    """What the scrape needs to know about one live room."""

    room: str
    live: bool
    publishers: int
    classrooms: int


class LiveCollector(Collector):
    """Gauges computed from live state at scrape time."""

    def __init__(self, sample: Callable[[], Iterable[RoomSample]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        rooms = list(self._sample())
        lessons = GaugeMetricFamily("ketang_lessons_live", "Rooms with a teacher publishing")
        lessons.add_metric([], sum(1 for r in rooms if r.live))
        classrooms = GaugeMetricFamily(
            "ketang_classrooms_connected", "Classrooms connected per room", labels=["room"]
        )
        for r in rooms:
            classrooms.add_metric([r.room], r.classrooms)
        yield lessons
        yield classrooms


def install_live_collector(sample: Callable[[], Iterable[RoomSample]]) -> Collector:
    """Register the live-state collector; returns it so the app can unregister on shutdown."""
    collector = LiveCollector(sample)
    REGISTRY.register(collector)
    return collector


def uninstall(collector: Collector) -> None:
    """Unregister a collector installed by `install_live_collector`."""
    REGISTRY.unregister(collector)


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)
