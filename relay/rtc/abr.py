"""One classroom's adaptive bitrate, wired to its connection: RTCP in, down tracks pointed.

The decisions are pure (relay.core.link, joining relay.core.estimator and
relay.core.allocator). This shell taps the classroom's REMB, receiver reports and NACKs from
its senders and feeds them to the core; every TICK it hands over the relay's own send
counters, the feeds and the loop clock, and acts on the step that comes back. It points each
video down track at the chosen layer: the teacher's `Upstream` for "source", a `Rendition` of
its ladder, or nothing while paused. The down track's forwarder then switches at the next
keyframe of the new layer, which a rendition makes on request at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable

from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from monitoring import metrics
from relay.core.allocator import AbrParams, Change
from relay.core.codecs import VIDEO_CLOCK_RATE
from relay.core.estimator import BandwidthEstimator, Report
from relay.core.fanout import FrameSource
from relay.core.ladder import SOURCE
from relay.core.ladder import Rendition as RenditionSpec
from relay.core.link import ClassroomLink, LinkView, Tick, VideoFeed
from relay.core.model import SlotKey
from relay.rtc import hooks
from relay.rtc.downtrack import DownTrack
from relay.rtc.sender import RTX_BURST, SendCounters
from relay.rtc.upstream import Upstream

__all__ = ["TICK", "ClassroomRate", "LinkView"]

logger = logging.getLogger(__name__)

# Seconds between two decisions: fast enough to act on the first overuse REMB within a frame
# or so of it, cheap enough for hundreds of classrooms (a few dict operations each).
TICK = 0.25
# Seconds after a downswitch's keyframe before a second one: past the first one's packets.
SECOND_KEYFRAME_DELAY = 0.2


class ClassroomRate:
    """The link core of one classroom connection, wired to its senders and down tracks."""

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
        video = [slot for slot in tracks if slot.kind == "video"]
        self.link = ClassroomLink(video, renditions, cap, params)
        self.feeds: dict[SlotKey, Upstream | None] = {}
        self.jitter = 0.0  # seconds, the classroom's latest video interarrival jitter
        self._chosen: dict[SlotKey, FrameSource | None] = {}
        self._went_down: frozenset[Hashable] = frozenset()  # from the latest step
        self._senders = {hooks.sender_ssrcs(sender)[0]: sender for sender in senders.values()}
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        for sender in senders.values():
            hooks.on_rtcp(sender, self._on_rtcp)

    @property
    def estimator(self) -> BandwidthEstimator:
        """The link's estimator, for traces of what it saw."""
        return self.link.estimator

    @property
    def changes(self) -> list[Change]:
        """The classroom's rendition timeline, oldest first: its latest layer changes."""
        return self.link.history

    @property
    def nacks(self) -> int:
        """Distinct packets the classroom asked to be resent so far."""
        return self.link.nacks.total

    def view(self, now: float) -> LinkView:
        """The link's layers and estimate now."""
        return self.link.view(now)

    def layer(self, slot: SlotKey) -> str | None:
        """The layer a video slot carries now, or None without a feed."""
        return self.link.layer(slot)

    def start(self) -> None:
        """Begin deciding every TICK seconds; the connection is being set up."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """Stop deciding; the connection is closing."""
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
            due = self._loop.time() + TICK
            await asyncio.sleep(TICK)
            now = self._loop.time()
            try:
                # how late this tick ran is the relay's own lag: delay measured now includes it
                self.link.on_loop_lag(max(now - due, 0.0), now)
                self.decide(now)
            except Exception:  # a bug here must not stop the classroom's media
                logger.exception("rate decision failed")

    def decide(self, now: float) -> None:
        """One step of the core, then act on it: count and log each change it made, and
        point the video down tracks at their layers."""
        step = self.link.step(now, self._tick())
        self.counters.congested = step.congested
        self._went_down = step.went_down
        for change in step.changes:
            metrics.count_switch(change.reason)
            self._log(now, change)
        for slot, name in step.layers.items():
            assert isinstance(slot, SlotKey)
            upstream = self.feeds.get(slot)
            if upstream is not None:
                self._point(slot, _layer_source(upstream, name))

    def _tick(self) -> Tick:
        """The send counters, the feeds and the switches still waiting for a keyframe."""
        video = tuple(
            VideoFeed(slot, u.feed.source == "screen", u.bitrate, _has_renditions(u))
            for slot, u in self.feeds.items()
            if slot.kind == "video" and u is not None
        )
        audio = [u.bitrate for s, u in self.feeds.items() if s.kind == "audio" and u is not None]
        pending = frozenset(
            slot
            for slot, track in self.tracks.items()
            if slot.kind == "video" and track.forwarder.target is not None
        )
        counters = self.counters
        return Tick(
            counters.octets, counters.packets, video, sum(audio) if audio else None, pending
        )

    def _log(self, now: float, change: Change) -> None:
        est = self.link.estimator
        logger.info(
            "classroom %s %s: %s (%s) at %.0f kbit/s, loss %.1f%%, queue %s ms",
            getattr(change.slot, "session", "?"),
            getattr(change.slot, "index", "?"),
            change.layer,
            change.reason,
            (est.estimate(now) or 0) / 1000,
            100 * est.loss(now),
            round(1000 * (est.queue_delay(now) or 0)),
        )

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
            self.link.on_remb(frozenset(ssrcs), bitrate, now)
        elif isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                self._on_report(report, now)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.link.on_nacks(packet.media_ssrc, packet.lost)

    def _on_report(self, report: RtcpReceiverInfo, now: float) -> None:
        """One report block: loss and jitter of one of our streams, and the RTT."""
        sender = self._senders.get(report.ssrc)
        if sender is None:
            return
        if sender.kind == "video":  # RFC 3550 §6.4.1: in timestamp units
            self.jitter = report.jitter / VIDEO_CLOCK_RATE
        fraction = report.fraction_lost / 256
        block = Report(now, fraction, report.packets_lost, report.highest_sequence)
        self.link.on_report(report.ssrc, block)
        rtt = hooks.report_rtt(sender, report.lsr, report.dlsr)
        if rtt is not None:
            self.link.on_rtt(rtt, now)


def _has_renditions(upstream: Upstream) -> bool:
    return bool(upstream.ladder and upstream.ladder.renditions)


def _layer_source(upstream: Upstream, name: str) -> FrameSource | None:
    """The object that produces a layer: the teacher's track, a rendition, or none (paused)."""
    if name == SOURCE:
        return upstream
    ladder = upstream.ladder
    return ladder.rendition(name) if ladder is not None else None
