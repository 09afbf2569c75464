"""One classroom's adaptive bitrate: its RTCP in, the layer of each video slot out.

The pure parts decide (relay.core.estimator, relay.core.allocator); this shell feeds them the
classroom's REMB, receiver reports and NACKs (tapped from its senders), the relay's own send
counters and the loop clock, and points each video down track at the chosen layer: the
teacher's `Upstream` for "source", a `Rendition` of its ladder, or nothing while paused. The
down track's forwarder then switches at the next keyframe of the new layer, which a rendition
makes on request at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from monitoring import metrics
from relay.core.allocator import AbrParams, Change, RateController, SlotDemand
from relay.core.codecs import VIDEO_CLOCK_RATE
from relay.core.estimator import BandwidthEstimator, Report, Sample
from relay.core.ladder import SOURCE, layers
from relay.core.ladder import Rendition as RenditionSpec
from relay.core.model import SOURCES, SlotKey
from relay.rtc import hooks
from relay.rtc.downtrack import DownTrack, FrameSource
from relay.rtc.sender import RTX_BURST, SendCounters
from relay.rtc.upstream import Upstream

logger = logging.getLogger(__name__)

# Seconds between two decisions: fast enough to act on the first overuse REMB within a frame
# or so of it, cheap enough for hundreds of classrooms (a few dict operations each).
TICK = 0.25
# Until the teacher's rate is measured (its first second), assume a typical browser camera.
ASSUMED_SOURCE_BITRATE = 1_500_000
# Opus at the browser default (32 kbit/s) plus 50 packets a second of RTP/UDP/IP/SRTP headers.
ASSUMED_AUDIO_BITRATE = 56_000
AUDIO_OVERHEAD = 50 * 8 * 50  # 50 packets a second, 50 header bytes each
# Seconds a layer switch may wait for its keyframe and still blind the loss measurement:
# longer than a rendition's keyframe takes (at once) or a coalesced teacher keyframe.
SWITCH_PATIENCE = 3.0
# Seconds after a downswitch's keyframe before a second one: past the first one's packets.
SECOND_KEYFRAME_DELAY = 0.2
# NACKed sequence numbers remembered per stream to count repeats once: the sender's history.
NACK_MEMORY = 128


@dataclass(frozen=True, slots=True)
class LinkView:
    """One classroom's link right now, as the pages, the metrics and the quality history show
    it."""

    layers: dict[str, str]  # video slot ("video"; "camera"/"screen" with two) -> layer
    estimate: float  # bits per second, 0 before any feedback
    sent: float  # bits per second
    loss: float  # 0..1
    rtt: float  # seconds, 0 before the first receiver report


class ClassroomRate:
    """Estimator and rate controller of one classroom connection, wired to its senders."""

    def __init__(
        self,
        tracks: dict[SlotKey, DownTrack],
        senders: dict[SlotKey, RTCRtpSender],
        counters: SendCounters,
        renditions: tuple[RenditionSpec, ...],
        cap: str | None,
        params: AbrParams,
    ) -> None:
        self.tracks = tracks
        self.counters = counters
        self.renditions = renditions
        self.cap = cap
        self.estimator = BandwidthEstimator()
        self.controller = RateController(params)
        self.feeds: dict[SlotKey, Upstream | None] = {}
        self._chosen: dict[SlotKey, FrameSource | None] = {}
        self._senders = {sender._ssrc: sender for sender in senders.values()}
        self._nacked = 0
        self.jitter = 0.0  # seconds, the classroom's latest video interarrival jitter
        self._switching_since: float | None = None
        self._went_down: set[Hashable] = set()  # slots whose last change was downwards
        self._nack_seen: dict[int, deque[int]] = {}
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        for sender in senders.values():
            hooks.on_rtcp(sender, self._on_rtcp)

    @property
    def changes(self) -> list[Change]:
        """Every layer change so far, oldest first: the classroom's rendition timeline."""
        return list(self.controller.changes)

    @property
    def nacks(self) -> int:
        """Distinct packets the classroom asked to be resent so far."""
        return self._nacked

    def view(self, now: float) -> LinkView:
        """The link's layers and estimate now."""
        slots = [s for s in self.tracks if s.kind == "video"]
        layers = {
            SOURCES[s.index] if len(slots) > 1 else "video": self.controller.current[s]
            for s in slots
            if s in self.controller.current
        }
        est = self.estimator
        return LinkView(
            layers, est.estimate(now) or 0.0, est.sent_rate(), est.loss(now), est.rtt or 0.0
        )

    def layer(self, slot: SlotKey) -> str | None:
        """The layer a video slot carries now, or None without a feed."""
        return self.controller.current.get(slot)

    def start(self) -> None:
        """Begin deciding every TICK seconds; the connection is being set up."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def assign(self, slot: SlotKey, upstream: Upstream | None) -> None:
        """The room model put `upstream` (or nothing) on this slot."""
        self.feeds[slot] = upstream
        if slot.kind == "audio" or upstream is None:
            self._point(slot, upstream)
            return
        self.decide(self._loop.time())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.decide(self._loop.time())
            except Exception:  # a bug here must not stop the classroom's media
                logger.exception("rate decision failed")

    def decide(self, now: float) -> None:
        """One step: counters into the estimator, estimate into the controller, layers out."""
        estimator = self.estimator
        counters = self.counters
        estimator.on_sample(Sample(now, counters.octets, counters.packets, self._nacked))
        if self._switch_pending(now):
            # the old layer is still sent until the new one's keyframe: what it loses now
            # says nothing about the layer being switched to
            estimator.restart_loss(now)
        demands = self._demands()
        seen = len(self.controller.changes)
        congested = estimator.congested(now, trying=self.controller.trying is not None)
        counters.congested = congested
        choice = self.controller.update(
            now,
            demands,
            estimator.estimate(now),
            self._audio_bitrate(),
            congested,
            estimator.room(now),
        )
        for change in list(self.controller.changes)[seen:]:
            metrics.count_switch(change.reason)
            if change.reason in ("down", "revert"):
                estimator.restart_loss(now)
                self._went_down.add(change.slot)
            elif change.reason in ("start", "try", "cap"):
                self._went_down.discard(change.slot)
            logger.info(
                "classroom %s %s: %s (%s) at %.0f kbit/s, loss %.1f%%, queue %s ms",
                getattr(change.slot, "session", "?"),
                getattr(change.slot, "index", "?"),
                change.layer,
                change.reason,
                (estimator.estimate(now) or 0) / 1000,
                100 * estimator.loss(now),
                round(1000 * (estimator.queue_delay() or 0)),
            )
        for slot, name in choice.items():
            assert isinstance(slot, SlotKey)
            upstream = self.feeds.get(slot)
            if upstream is not None:
                self._point(slot, _layer_source(upstream, name))

    def _switch_pending(self, now: float) -> bool:
        """True while a video slot waits (not too long) for the keyframe of a lower layer.
        A try upwards is not waited for: the lower rate's loss before it takes effect only
        understates the congestion the try may cause, which should show as early as it can."""
        down = self._went_down
        waiting = any(
            track.forwarder.target is not None
            for slot, track in self.tracks.items()
            if slot.kind == "video" and slot in down
        )
        if not waiting:
            self._switching_since = None
            return False
        if self._switching_since is None:
            self._switching_since = now
        return now - self._switching_since <= SWITCH_PATIENCE

    def _demands(self) -> list[SlotDemand]:
        demands = []
        for slot, upstream in self.feeds.items():
            if slot.kind != "video" or upstream is None:
                continue
            renditions = self.renditions if upstream.ladder and upstream.ladder.renditions else ()
            screen = upstream.feed.source == "screen"
            bitrate = upstream.bitrate or ASSUMED_SOURCE_BITRATE
            choices = layers(bitrate, renditions, screen, self.cap)
            demands.append(SlotDemand(slot, screen, choices))
        return demands

    def _audio_bitrate(self) -> float:
        audio = [u for s, u in self.feeds.items() if s.kind == "audio" and u is not None]
        if not audio:
            return 0.0
        measured = sum(u.bitrate for u in audio)
        return measured + AUDIO_OVERHEAD if measured else ASSUMED_AUDIO_BITRATE

    def _point(self, slot: SlotKey, source: FrameSource | None) -> None:
        """Retarget the slot's down track, if that changes anything."""
        if slot in self._chosen and self._chosen[slot] is source:
            return
        self._chosen[slot] = source
        track = self.tracks.get(slot)
        if track is None:
            return
        track.retarget(source)  # replays the layer's GOP, or asks it for a keyframe
        if source is not None and slot in self._went_down:
            self._second_keyframe(source)

    def _second_keyframe(self, source: FrameSource) -> None:
        """Going down happens on a link that is overloaded right then: the new layer's first
        keyframe is the packet most likely lost in the full queue, and without it the picture
        stays frozen until the classroom asks again. A second one shortly after costs a few
        kilobytes (a rendition's keyframe, or a coalesced teacher PLI)."""
        self.counters.rtx_allowance = RTX_BURST  # its lost packets are worth resending
        self._loop.call_later(SECOND_KEYFRAME_DELAY, source.request_keyframe)

    def _on_rtcp(self, packet: object) -> None:
        """Feedback from the classroom, as aiortc routes it to one of our senders."""
        now = self._loop.time()
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            self.estimator.on_remb(frozenset(ssrcs), bitrate, now)
        elif isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                sender = self._senders.get(report.ssrc)
                if sender is None:
                    continue
                fraction = report.fraction_lost / 256
                if sender.kind == "video":  # RFC 3550 §6.4.1: in timestamp units
                    self.jitter = report.jitter / VIDEO_CLOCK_RATE
                block = Report(now, fraction, report.packets_lost, report.highest_sequence)
                self.estimator.on_report(report.ssrc, block)
                rtt = hooks.report_rtt(sender, report.lsr, report.dlsr)
                if rtt is not None:
                    self.estimator.on_rtt(rtt, now)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self._count_nacks(packet.media_ssrc, packet.lost)

    def _count_nacks(self, ssrc: int, lost: list[int]) -> None:
        """Count each NACKed packet once: receivers repeat what is still missing."""
        seen = self._nack_seen.setdefault(ssrc, deque(maxlen=NACK_MEMORY))
        for sequence in lost:
            if sequence not in seen:
                seen.append(sequence)
                self._nacked += 1


def _layer_source(upstream: Upstream, name: Hashable) -> FrameSource | None:
    """The object that produces a layer: the teacher's track, a rendition, or none (paused)."""
    if name == SOURCE:
        return upstream
    ladder = upstream.ladder
    return ladder.rendition(str(name)) if ladder is not None else None
