"""Every Prometheus metric of the relay, behind small functions the rest of the code calls.

Names follow Prometheus conventions: `ketang_` prefix, base units, `_total` on counters.
Live-state series (rooms, classrooms) are produced at scrape time by `LiveCollector`, so they
vanish with the state they describe. The registry is per process by nature (one /metrics per
process), which is why the counters live at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.core.snapshot import RoomSnapshot

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes

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
_FORWARDED_PACKETS = Counter(
    "ketang_forwarded_packets", "RTP packets sent to classrooms", ["kind"], registry=REGISTRY
)
_FORWARDED_BYTES = Counter(
    "ketang_forwarded_bytes",
    "Bytes sent to classrooms on the wire (IP/UDP/SRTP included)",
    ["kind"],
    registry=REGISTRY,
)
_RETRANSMITTED = Counter(
    "ketang_retransmitted_packets", "Packets resent to classrooms on NACK", registry=REGISTRY
)
_SEND_FAILED = Counter(
    "ketang_send_failed_packets",
    "RTP packets to classrooms the media socket refused (its buffer full) or SRTP would not "
    "protect; the classrooms recover them by NACK or at the next keyframe",
    registry=REGISTRY,
)
_SWITCHES = Counter(
    "ketang_rendition_switches",
    "Layer changes decided for classroom video slots, by reason (down, try, keep, revert, ...)",
    ["reason"],
    registry=REGISTRY,
)
_LADDER_SECONDS = Histogram(
    "ketang_ladder_frame_seconds",
    "Worker time to decode one teacher frame and encode it for every active rendition",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
_RECORDER_BYTES = Counter(
    "ketang_recorder_bytes", "Bytes the recorder wrote to lesson logs", registry=REGISTRY
)
_RECORDER_ERRORS = Counter(
    "ketang_recorder_errors",
    "Recorder failures (writes, publishing) that cost recorded media",
    registry=REGISTRY,
)
_JOIN_SECONDS = Histogram(
    "ketang_join_seconds",
    "From a classroom's WHEP request to its first video frame sent",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
    registry=REGISTRY,
)
_EXPIRED = Counter(
    "ketang_sessions_expired",
    "Sessions the relay ended itself: ICE/DTLS never completed (setup), or the peer went "
    "silent (silent)",
    ["kind", "reason"],
    registry=REGISTRY,
)
_LIMITED = Counter(
    "ketang_limited_requests",
    "Requests and messages refused by a limit (429/503, dropped page messages, timeouts)",
    ["limit"],
    registry=REGISTRY,
)
_MUX_DROPS = Counter(
    "ketang_media_socket_dropped_datagrams",
    "Datagrams on the one media socket that belong to no session (a closed one's late "
    "packets, or a stranger's)",
    ["reason"],
    registry=REGISTRY,
)
_LOOP_LAG = Gauge(
    "ketang_event_loop_lag_seconds",
    "How late the event loop ran a timer, last probe (work that blocks the loop delays media)",
    registry=REGISTRY,
)
# series that exist from the start at 0, so rates and alerts have data before the first event
for _source in ("camera", "screen"):
    _KEYFRAME_REQUESTS.labels(_source)
for _reason in ("start", "down", "try", "keep", "revert", "cap"):
    _SWITCHES.labels(_reason)
for _kind in ("whip", "whep"):
    for _why in ("setup", "silent"):
        _EXPIRED.labels(_kind, _why)
_VIDEO_PACKETS, _AUDIO_PACKETS = (
    _FORWARDED_PACKETS.labels("video"),
    _FORWARDED_PACKETS.labels("audio"),
)
_VIDEO_BYTES, _AUDIO_BYTES = _FORWARDED_BYTES.labels("video"), _FORWARDED_BYTES.labels("audio")
# per teacher frame: the labelled children looked up once, not twice a frame
_INGEST = {
    kind: (_INGEST_FRAMES.labels(kind), _INGEST_BYTES.labels(kind)) for kind in ("audio", "video")
}


def count_ingest(kind: str, size: int) -> None:
    """One complete frame of `size` bytes came from a teacher."""
    frames, octets = _INGEST[kind]
    frames.inc()
    octets.inc(size)


def count_drop(reason: str) -> None:
    """The packet path dropped a frame instead of raising."""
    _DROPS.labels(reason).inc()


def count_mux_drop(reason: str) -> None:
    """The media socket dropped a datagram no session owns."""
    _MUX_DROPS.labels(reason).inc()


def count_keyframe_request(source: str) -> None:
    """A PLI went to a teacher."""
    _KEYFRAME_REQUESTS.labels(source).inc()


def count_http_error(status: int) -> None:
    """A request got an error status."""
    _HTTP_ERRORS.labels(str(status)).inc()


def count_forwarded(video: bool, packets: int, wire_bytes: int) -> None:
    """One frame went out to one classroom (per frame, not per packet: the hot path)."""
    (_VIDEO_PACKETS if video else _AUDIO_PACKETS).inc(packets)
    (_VIDEO_BYTES if video else _AUDIO_BYTES).inc(wire_bytes)


def count_retransmission() -> None:
    _RETRANSMITTED.inc()


def count_send_failures(packets: int) -> None:
    """Packets of one fan-out pass the socket or SRTP refused."""
    _SEND_FAILED.inc(packets)


def count_switch(reason: str) -> None:
    """The rate controller changed one classroom slot's layer."""
    _SWITCHES.labels(reason).inc()


def observe_ladder(seconds: float) -> None:
    _LADDER_SECONDS.observe(seconds)


def count_recorded(size: int) -> None:
    _RECORDER_BYTES.inc(size)


def count_recorder_error() -> None:
    _RECORDER_ERRORS.inc()


def observe_join(seconds: float) -> None:
    _JOIN_SECONDS.observe(seconds)


def count_session_expired(kind: str, reason: str) -> None:
    """The relay ended a session whose peer never connected or stopped sending."""
    _EXPIRED.labels(kind, reason).inc()


def count_limited(limit: str) -> None:
    """A limit refused a request or a message."""
    _LIMITED.labels(limit).inc()


def set_loop_lag(seconds: float) -> None:
    _LOOP_LAG.set(seconds)


class _ClusterCollector(Collector):
    """`ketang_cluster_nodes`, only once this process is a node of a cluster: a single
    process has no such series (a gauge at 0 would read as a cluster with no node)."""

    nodes: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.nodes is not None:
            yield GaugeMetricFamily(
                "ketang_cluster_nodes",
                "Nodes of the cluster this node sees alive in the directory (itself included)",
                value=self.nodes,
            )


_CLUSTER = _ClusterCollector()
REGISTRY.register(_CLUSTER)


def set_cluster_nodes(count: int) -> None:
    """This node's last look at the directory found `count` live nodes."""
    _CLUSTER.nodes = count


def clear_cluster_nodes() -> None:
    """This process is no node of a cluster (any more): the series goes."""
    _CLUSTER.nodes = None


# classroom page QoE fields: metric name, help, counter or gauge
_QOE = {
    "freezeCount": ("ketang_classroom_freezes_total", "Video freezes the classroom page saw", True),
    "totalFreezesDuration": (
        "ketang_classroom_freeze_seconds_total",
        "Seconds of frozen video the classroom page saw",
        True,
    ),
    "framesPerSecond": ("ketang_classroom_fps", "Frames per second the page decodes", False),
    "frameHeight": ("ketang_classroom_frame_height_pixels", "Height of the picture shown", False),
    "frameWidth": ("ketang_classroom_frame_width_pixels", "Width of the picture shown", False),
    "concealmentRatio": (
        "ketang_classroom_audio_concealment_ratio",
        "Share of audio samples the page had to conceal",
        False,
    ),
    "jitterBufferDelay": (
        "ketang_classroom_jitter_buffer_seconds",
        "Average time a frame waited in the page's jitter buffer",
        False,
    ),
}
_CLASSROOM_GAUGES = (
    ("estimate", "ketang_classroom_bandwidth_estimate_bits_per_second", "Estimated bandwidth"),
    ("sent", "ketang_classroom_sent_bits_per_second", "Bits per second sent to the classroom"),
    ("rtt", "ketang_classroom_rtt_seconds", "Round-trip time to the classroom"),
    ("loss", "ketang_classroom_loss_ratio", "Packet loss towards the classroom (0-1)"),
    ("jitter", "ketang_classroom_jitter_seconds", "Interarrival jitter the classroom reports"),
)


class LiveCollector(Collector):
    """Gauges computed from live state at scrape time: they vanish with what they describe."""

    def __init__(self, sample: Callable[[], Iterable[RoomSnapshot]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        rooms = list(self._sample())
        lessons = GaugeMetricFamily("ketang_lessons_live", "Rooms with a teacher publishing")
        lessons.add_metric([], sum(1 for r in rooms if r.live))
        classrooms = GaugeMetricFamily(
            "ketang_classrooms_connected", "Classrooms connected per room", labels=["room"]
        )
        for r in rooms:
            classrooms.add_metric([r.room], len(r.classrooms))
        yield lessons
        yield classrooms
        yield from _teacher_metrics(rooms)
        yield from _classroom_metrics(rooms)


def _teacher_metrics(rooms: list[RoomSnapshot]) -> Iterator[Metric]:
    uplink = GaugeMetricFamily(
        "ketang_teacher_uplink_bits_per_second",
        "Bits per second the relay receives from the teacher, per source",
        labels=["room", "source"],
    )
    loss = GaugeMetricFamily(
        "ketang_teacher_loss_ratio",
        "Packet loss on the teacher's uplink as the teacher's page reports it (0-1)",
        labels=["room"],
    )
    for room in rooms:
        for source in room.sources:
            uplink.add_metric([room.room, source.source], source.bitrate)
        if "fractionLost" in room.uplink:
            loss.add_metric([room.room], room.uplink["fractionLost"])
    yield uplink
    yield loss


def _classroom_metrics(rooms: list[RoomSnapshot]) -> Iterator[Metric]:
    labels = ["room", "classroom"]
    gauges = {
        key: GaugeMetricFamily(name, text, labels=labels) for key, name, text in _CLASSROOM_GAUGES
    }
    layer = GaugeMetricFamily(
        "ketang_classroom_layer_info",
        "The layer each classroom video slot carries (source, 360p, 180p, still, paused)",
        labels=[*labels, "slot", "layer"],
    )
    nacks = CounterMetricFamily(
        "ketang_classroom_nacks", "Packets the classroom asked to be resent", labels=labels
    )
    plis = CounterMetricFamily(
        "ketang_classroom_picture_losses",
        "Keyframe requests (PLI/FIR) from the classroom",
        labels=labels,
    )
    qoe = {
        key: (CounterMetricFamily if counter else GaugeMetricFamily)(
            name.removesuffix("_total"), text, labels=labels
        )
        for key, (name, text, counter) in _QOE.items()
    }
    for room in rooms:
        for c in room.classrooms:
            values = [room.room, c.label]
            for key, family in gauges.items():
                family.add_metric(values, getattr(c, key))
            for slot, name in c.layers.items():
                layer.add_metric([*values, slot, name], 1)
            nacks.add_metric(values, c.nacks)
            plis.add_metric(values, c.plis)
            for key, page in qoe.items():
                if key in c.qoe:
                    page.add_metric(values, c.qoe[key])
    yield from gauges.values()
    yield layer
    yield nacks
    yield plis
    yield from qoe.values()


def install_live_collector(sample: Callable[[], Iterable[RoomSnapshot]]) -> Collector:
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
