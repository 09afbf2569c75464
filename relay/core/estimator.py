"""One classroom's available bandwidth, from what its receiver sends back.

aiortc has no transport-cc, so the signals are those of RFC 4585/3550 and REMB:

- REMB: the receiver's delay-based estimate (draft-alvestrand-rmcat-remb). It reacts to a
  growing queue before packets drop, but it can only rise to about 1.5 x what it receives
  (libwebrtc's AIMD), so it says "no congestion" rather than "this much fits";
- receiver-report loss and NACKs: random loss on a rural wireless link is not congestion, but
  heavy loss is, and the rate that got through then bounds what fits;
- the rate the relay actually sent, measured from its own packet counters.

The estimate is the lower of REMB and a loss-based bound (draft-ietf-rmcat-gcc-02 §6). Besides
the number it answers the two questions the allocator asks: is the link congested now, and is
there room to try more.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

# Per draft-ietf-rmcat-gcc-02 §6: above 10 % loss the link is overused.
LOSS_HIGH = 0.10
# Random loss up to this much (a lossy rural radio link) still allows trying an upgrade;
# congestion then shows as REMB falling or loss rising past LOSS_HIGH.
LOSS_PROBE = 0.05
# Seconds of history for the sent rate and the NACK-based loss; one RTCP interval or more.
WINDOW = 1.0
# A REMB older than this is no longer evidence (receivers send one at least every second).
REMB_STALE = 3.0
# A loss report this old no longer describes the link; reports within it are pooled, so a
# one-second report of a 50-packet audio stream cannot swing the verdict alone.
LOSS_STALE = 3.0
# After a layer change, NACKs for packets sent before it keep arriving for about an RTT plus
# the queue: they say nothing about the new rate.
NACK_GRACE = 1.0
# A receiver report's fraction lost covers the interval since the receiver's previous report
# (RFC 3550 §6.4.1), up to 1.5 s (aiortc sends every 0.5-1.5 s, browsers about every second):
# one that arrives sooner than this after a change still describes the old rate.
REPORT_SPAN = 1.5
# The difference of two reports covers just the time between them; the first may come this
# soon after a change, once the old rate's queue on the link has drained (tbf's 300 ms).
QUEUE_DRAIN = 0.5
# Fewer packets than this in a window say too little about loss to act on (1 of 20 is 5 %).
MIN_PACKETS = 30
# After a loss-based decrease, let the receiver's reports catch up before deciding again:
# reports pooled over LOSS_STALE still describe the old rate and would cut the new one too.
DECREASE_HOLD = LOSS_STALE + 1.0
# Margin kept below the delivered rate after heavy loss, as GCC's 0.85 on overuse.
DELIVERED_SHARE = 0.85
# A REMB this far below its recent peak is an overuse cut (libwebrtc's AIMD cuts to 0.85 x
# the received rate); smaller wobbles are noise (Jitsi ignores changes under 15 %).
REMB_FALL = 0.9
# REMB at least this far above the sent rate means its estimator saw no queue building
# (it may exceed the received rate by up to 1.5x): there is room to try the next layer.
REMB_ROOM = 1.25
# Seconds after a layer went down in which a falling REMB is not taken as congestion: the
# receiver's estimate still reacts to the old layer's queue draining (AIMD cut it to 0.85x
# of what arrived then), and acting on it paused cameras on links that carry 180p.
REMB_SETTLE = 2.0
# Queueing delay (smoothed RTT over the lowest RTT seen) that confirms a falling REMB: a
# REMB estimator reacts to delay trends, and without a standing queue its dips are noise.
QUEUE_DELAY = 0.05
# During a try, a standing queue this long already says the link is full: a try on a link with
# room adds none (0-1 ms in the constrained-link test after the limit lifts), while a try that
# overloads it shows 30-50 ms in the first receiver report, a second before loss does.
TRY_QUEUE = 0.025
# Seconds over which the lowest RTT is the path's base RTT (a minimum filter, as BBR keeps).
BASE_RTT_WINDOW = 30.0
# Seconds over which the relay's own event-loop lag is discounted from the queueing delay. A
# receiver report processed late by a busy relay reads as RTT, and packets sent late and in a
# burst read as a delay trend to the classroom's REMB estimator: with 50 classrooms on a
# loopback relay both moved every classroom down together. The link did not queue; the relay did.
LAG_WINDOW = 3.0
# Loss-based bound growth per second while loss stays low, per GCC §6 (1.05 per report).
GROWTH = 1.05


class RateMeter:
    """Bits per second of a stream of sizes, over windows of about a second, smoothed."""

    __slots__ = ("_bytes", "_start", "rate")

    def __init__(self) -> None:
        self._bytes = 0
        self._start: float | None = None
        self.rate = 0.0  # 0 until the first window closed

    def add(self, size: int, now: float) -> None:
        """Count `size` bytes seen at `now`."""
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        if elapsed >= WINDOW:
            measured = 8 * self._bytes / elapsed
            self.rate = measured if not self.rate else 0.5 * self.rate + 0.5 * measured
            self._bytes, self._start = 0, now
        self._bytes += size


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative send counters of one classroom at one moment."""

    now: float
    octets: int  # payload and header octets sent, retransmissions included
    packets: int
    nacked: int  # packets the classroom asked to be retransmitted


@dataclass(frozen=True, slots=True)
class Report:
    """One RTCP report block (RFC 3550 §6.4.1) as the estimator needs it."""

    at: float
    fraction: float  # lost since the previous report, 0..1
    lost: int  # cumulative packets lost
    highest: int  # extended highest sequence number received


class BandwidthEstimator:
    """Available bitrate for one classroom's connection, in bits per second."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()
        self._rembs: dict[frozenset[int], tuple[float, float]] = {}  # ssrcs -> (bps, at)
        self._remb_peak: deque[tuple[float, float]] = deque()  # (at, total) for the trend
        self._reports: dict[int, deque[Report]] = {}
        self._loss_bound: float | None = None
        self._loss_since = -math.inf
        self._held_until = -1.0
        self._last_update: float | None = None
        self.rtt: float | None = None
        self._rtt_floor: deque[tuple[float, float]] = deque()  # (at, rtt), rising
        self._lags: deque[tuple[float, float]] = deque()  # (at, lag), falling: a maximum filter

    # inputs

    def on_remb(self, ssrcs: frozenset[int], bitrate: float, now: float) -> None:
        """A REMB for these media SSRCs (one receiver may send one per stream, or one for all)."""
        self._rembs[ssrcs] = (bitrate, now)
        self._remb_peak.append((now, self._remb_total(now) or 0.0))

    def on_report(self, ssrc: int, report: Report) -> None:
        """A receiver report block about one of our streams."""
        history = self._reports.setdefault(ssrc, deque(maxlen=8))
        if history and history[-1].highest == report.highest:
            return  # the same report, routed to a second sender of this connection
        history.append(report)

    def on_rtt(self, rtt: float, now: float) -> None:
        """Round-trip time from one report's LSR/DLSR; lightly smoothed, so a queue that
        builds or drains shows within a report or two."""
        self.rtt = rtt if self.rtt is None else 0.5 * self.rtt + 0.5 * rtt
        floor = self._rtt_floor
        while floor and (floor[-1][1] >= rtt or now - floor[0][0] > BASE_RTT_WINDOW):
            floor.pop() if floor[-1][1] >= rtt else floor.popleft()
        floor.append((now, rtt))

    def on_loop_lag(self, lag: float, now: float) -> None:
        """How late the relay's event loop ran a timer just now (the shell's tick): the part
        of any delay measured now that is the relay's, not the link's."""
        lags = self._lags
        while lags and (lags[-1][1] <= lag or now - lags[0][0] > LAG_WINDOW):
            lags.pop() if lags[-1][1] <= lag else lags.popleft()
        lags.append((now, lag))

    def relay_lag(self, now: float) -> float:
        """The worst event-loop lag of the last LAG_WINDOW seconds."""
        while self._lags and now - self._lags[0][0] > LAG_WINDOW:
            self._lags.popleft()
        return self._lags[0][1] if self._lags else 0.0

    def queue_delay(self, now: float) -> float | None:
        """How much the smoothed RTT exceeds the lowest recent one, less the relay's own
        recent lag: the queue standing on the link."""
        if self.rtt is None or not self._rtt_floor:
            return None
        return max(self.rtt - self._rtt_floor[0][1] - self.relay_lag(now), 0.0)

    def restart_loss(self, now: float) -> None:
        """The sent rate just changed for a reason (a layer went down, or a switch is still
        waiting for its keyframe): loss measured before describes the old rate, not this
        one, so it no longer counts."""
        self._loss_since = now
        if self._samples:
            self._samples = deque([self._samples[-1]])

    def on_sample(self, sample: Sample) -> None:
        """The send counters, once per controller tick; updates the loss-based bound."""
        self._samples.append(sample)
        while len(self._samples) > 2 and sample.now - self._samples[1].now >= WINDOW:
            self._samples.popleft()
        while self._remb_peak and sample.now - self._remb_peak[0][0] > 2 * WINDOW:
            self._remb_peak.popleft()
        self._update_bound(sample.now)

    # outputs

    def sent_rate(self) -> float:
        """Bits per second sent over the last window (0 before two samples)."""
        if not self._samples:
            return 0.0
        first, last = self._samples[0], self._samples[-1]
        elapsed = last.now - first.now
        return 8 * (last.octets - first.octets) / elapsed if elapsed > 0 else 0.0

    def loss(self, now: float) -> float:
        """Recent loss share: the worse of the receiver reports and the NACK rate."""
        return max(self._report_loss(now), self._nack_loss())

    def _report_loss(self, now: float) -> float:
        """Packets lost over packets expected, pooled over every stream's recent reports;
        a lone report per stream counts with its own fraction, unless that may still cover
        time before the last change."""
        lost = expected = 0
        fractions = []
        for history in self._reports.values():
            since = self._loss_since + QUEUE_DRAIN
            fresh = [r for r in history if now - r.at <= LOSS_STALE and r.at >= since]
            if len(fresh) >= 2:
                lost += fresh[-1].lost - fresh[0].lost
                expected += fresh[-1].highest - fresh[0].highest
            elif fresh and fresh[0].at >= self._loss_since + REPORT_SPAN:
                fractions.append(fresh[0].fraction)
        if expected >= MIN_PACKETS:
            return max(lost, 0) / expected
        return max(fractions, default=0.0)

    def remb(self, now: float) -> float | None:
        """The receiver's own estimate, if it sent a fresh one."""
        return self._remb_total(now)

    def estimate(self, now: float) -> float | None:
        """Bits per second the link carries, as far as the signals tell; None before any.

        Never below what just got through (sent minus lost, with GCC's margin): a REMB far
        under the delivered rate is an estimator that has not caught up, not the link."""
        bounds = [b for b in (self._remb_total(now), self._loss_bound) if b is not None]
        if not bounds:
            return None
        loss = self.loss(now)
        if loss > LOSS_HIGH:  # what "got through" is then inflated by retransmissions
            return min(bounds)
        return max(min(bounds), self.sent_rate() * (1 - loss) * DELIVERED_SHARE)

    def congested(self, now: float, trying: bool = False) -> bool:
        """True when the link carries less than is sent: heavy loss, or a REMB that fell
        below the sent rate while a queue stands (RTT grew). A REMB merely below it is not
        enough: REMB trails any rise of the sent rate (a teacher starting, a try) by seconds.
        During a try a falling REMB is enough: sending more on a link with room never makes
        it fall, and waiting for the next receiver report to show the queue costs a second
        of overload, which a classroom sees as a freeze."""
        if self.loss(now) > LOSS_HIGH:
            return True
        queue = self.queue_delay(now)
        if trying and queue is not None and queue >= TRY_QUEUE:
            return True
        remb, sent = self._remb_total(now), self.sent_rate()
        if remb is None or remb >= sent or not self._remb_peak:
            return False
        if now - self._loss_since < REMB_SETTLE:
            return False
        if not trying and (queue is None or queue < QUEUE_DELAY):
            return False
        return remb < REMB_FALL * max(p for _, p in self._remb_peak)

    def room(self, now: float) -> bool:
        """True when nothing says the link is full, so trying the next layer is reasonable."""
        if self.loss(now) > LOSS_PROBE or self.congested(now):
            return False
        remb, sent, queue = self._remb_total(now), self.sent_rate(), self.queue_delay(now)
        if remb is None or remb >= REMB_ROOM * sent:
            return True
        # REMB grows only slowly near the received rate (libwebrtc's "near max" additive
        # increase); a path with no standing queue is not full either
        return queue is not None and queue < QUEUE_DELAY / 2

    # internals

    def _remb_total(self, now: float) -> float | None:
        fresh = [bps for bps, at in self._rembs.values() if now - at <= REMB_STALE]
        return sum(fresh) if fresh else None

    def _nack_loss(self) -> float:
        if not self._samples:
            return 0.0
        first, last = self._samples[0], self._samples[-1]
        if first.now < self._loss_since + NACK_GRACE:
            return 0.0  # NACKs still arriving for packets sent before the change
        packets = last.packets - first.packets
        return min((last.nacked - first.nacked) / packets, 1.0) if packets >= MIN_PACKETS else 0.0

    def _update_bound(self, now: float) -> None:
        """GCC's loss-based controller: cut to what got through on heavy loss, grow on low."""
        elapsed = 0.0 if self._last_update is None else now - self._last_update
        self._last_update = now
        if now < self._held_until:
            return
        loss, sent = self.loss(now), self.sent_rate()
        if loss > LOSS_HIGH and sent > 0:
            delivered = sent * (1 - loss) * DELIVERED_SHARE
            self._loss_bound = min(self._loss_bound or delivered, delivered)
            self._held_until = now + DECREASE_HOLD
        elif loss <= LOSS_PROBE and self._loss_bound is not None:
            # GCC holds between 2 and 10 %, but a rural radio link loses a few percent at any
            # rate: holding there would keep one bad second's cut for good
            self._loss_bound *= GROWTH**elapsed
            if self._loss_bound > 4 * max(sent, 1.0):
                self._loss_bound = None  # far above anything sent: no longer a bound
