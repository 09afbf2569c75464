"""One classroom connection's link: its feedback in, the layer of each video slot out.

`ClassroomLink` joins the estimator (relay.core.estimator) and the rate controller
(relay.core.allocator) with the rules between them: what the slots demand, how much the
audio takes off the top, when loss measured so far stops counting (a layer went down, or a
switch still waits for its keyframe), and which slots went down, whose next keyframe the
shell sends twice. The shell feeds it RTCP and, every tick, the send counters and the feeds;
it acts on the returned `Step`.

Pure: no I/O and no clock; `now` comes in with every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from relay.core.allocator import AbrParams, Change, RateController, SlotDemand
from relay.core.estimator import BandwidthEstimator, Report, Sample
from relay.core.ladder import Rendition, layers
from relay.core.model import SOURCES, SlotKey

# Until the teacher's rate is measured (its first second), assume a typical browser camera.
ASSUMED_SOURCE_BITRATE = 1_500_000
# Opus at the browser default (32 kbit/s) plus 50 packets a second of RTP/UDP/IP/SRTP headers.
ASSUMED_AUDIO_BITRATE = 56_000
AUDIO_OVERHEAD = 50 * 8 * 50  # 50 packets a second, 50 header bytes each
# Seconds a layer switch may wait for its keyframe and still blind the loss measurement:
# longer than a rendition's keyframe takes (at once) or a coalesced teacher keyframe.
SWITCH_PATIENCE = 3.0
# NACKed sequence numbers remembered per stream to count repeats once: the sender's history.
NACK_MEMORY = 128
# Changes after which a slot's new layer is lower than before (the link was overloaded then).
DOWNWARDS = frozenset({"down", "revert"})
# Changes after which it is not; "keep" confirms a try and leaves the slot as it was.
UPWARDS = frozenset({"start", "try", "cap"})


@dataclass(frozen=True, slots=True)
class VideoFeed:
    """One video slot with a teacher source on it, as the tick sees it."""

    slot: SlotKey
    screen: bool  # the source is a screen share (outranks the camera, floors at a still)
    bitrate: int  # bits per second the teacher sends, 0 while not yet measured
    renditions: bool  # the source has a ladder of renditions to choose from


@dataclass(frozen=True, slots=True)
class Tick:
    """What the shell measured for one decision."""

    octets: int  # cumulative octets sent to the classroom, retransmissions included
    packets: int  # cumulative packets sent
    video: tuple[VideoFeed, ...]  # the video slots that carry a source, in assignment order
    audio: int | None  # bits per second of the audio feeds, 0 unmeasured, None without any
    pending: frozenset[SlotKey]  # video slots whose down track waits for a switch's keyframe


@dataclass(frozen=True, slots=True)
class Step:
    """What one tick decided, for the shell to act on."""

    layers: dict[Hashable, str]  # video slot -> the layer it should carry now
    changes: tuple[Change, ...]  # exactly the changes this tick made, each reported once
    congested: bool  # the estimator's verdict: resend lost packets only once
    went_down: frozenset[Hashable]  # slots whose last change was downwards: the next
    # retarget of these happens on an overloaded link and deserves a second keyframe


@dataclass(frozen=True, slots=True)
class LinkView:
    """One classroom's link right now, as the pages, the metrics and the quality history
    show it."""

    layers: dict[str, str]  # video slot ("video"; "camera"/"screen" with two) -> layer
    estimate: float  # bits per second, 0 before any feedback
    sent: float  # bits per second
    loss: float  # 0..1
    rtt: float  # seconds, 0 before the first receiver report


class NackCounter:
    """Distinct packets a classroom asked to be resent: receivers repeat what is still
    missing in every NACK until it arrives, and a repeat is not another loss."""

    def __init__(self) -> None:
        self.total = 0  # distinct NACKed packets so far
        self._seen: dict[int, deque[int]] = {}

    def add(self, ssrc: int, lost: Iterable[int]) -> None:
        """Count the sequence numbers of one NACK that were not asked for before."""
        seen = self._seen.setdefault(ssrc, deque(maxlen=NACK_MEMORY))
        for sequence in lost:
            if sequence not in seen:
                seen.append(sequence)
                self.total += 1


def slot_names(video_slots: Sequence[SlotKey]) -> dict[SlotKey, str]:
    """Display names of a connection's video slots: its sources' names with two, else
    "video", as the pages and metrics label them."""
    if len(video_slots) > 1:
        return {slot: SOURCES[slot.index] for slot in video_slots}
    return {slot: "video" for slot in video_slots}


def audio_bitrate(measured: int | None) -> float:
    """Bits per second the audio takes off the top of the link: measured plus its headers,
    or the Opus default until measured, nothing without audio."""
    if measured is None:
        return 0.0
    return float(measured + AUDIO_OVERHEAD) if measured else float(ASSUMED_AUDIO_BITRATE)


def demands(
    feeds: Sequence[VideoFeed], renditions: tuple[Rendition, ...], cap: str | None
) -> list[SlotDemand]:
    """The layers each video slot may get, under the classroom's cap."""
    out = []
    for feed in feeds:
        ladder = renditions if feed.renditions else ()
        bitrate = feed.bitrate or ASSUMED_SOURCE_BITRATE
        out.append(SlotDemand(feed.slot, feed.screen, layers(bitrate, ladder, feed.screen, cap)))
    return out


class ClassroomLink:
    """Estimator and rate controller of one classroom connection, and the rules between."""

    def __init__(
        self,
        video_slots: Sequence[SlotKey],
        renditions: tuple[Rendition, ...],
        cap: str | None,
        params: AbrParams,
    ) -> None:
        self.names = slot_names(video_slots)
        self.renditions = renditions
        self.cap = cap
        self.estimator = BandwidthEstimator()
        self.controller = RateController(params)
        self.nacks = NackCounter()
        self._went_down: set[Hashable] = set()
        self._switching_since: float | None = None

    # inputs, from the classroom's RTCP

    def on_remb(self, ssrcs: frozenset[int], bitrate: float, now: float) -> None:
        """A REMB for these media SSRCs."""
        self.estimator.on_remb(ssrcs, bitrate, now)

    def on_report(self, ssrc: int, report: Report) -> None:
        """A receiver report block about one of the connection's streams."""
        self.estimator.on_report(ssrc, report)

    def on_rtt(self, rtt: float, now: float) -> None:
        """A round trip measured from one report block."""
        self.estimator.on_rtt(rtt, now)

    def on_loop_lag(self, lag: float, now: float) -> None:
        """The relay's event loop ran the shell's tick `lag` seconds late."""
        self.estimator.on_loop_lag(lag, now)

    def on_nacks(self, ssrc: int, lost: Iterable[int]) -> None:
        """One generic NACK: its sequence numbers count towards the loss once each."""
        self.nacks.add(ssrc, lost)

    # decisions

    def step(self, now: float, tick: Tick) -> Step:
        """One decision: counters into the estimator, estimate into the controller, layers
        and changes out, each change's reaction (loss restart, went-down) already applied."""
        estimator = self.estimator
        estimator.on_sample(Sample(now, tick.octets, tick.packets, self.nacks.total))
        if self._switch_pending(now, tick.pending):
            # the old layer is still sent until the new one's keyframe: what it loses now
            # says nothing about the layer being switched to
            estimator.restart_loss(now)
        wanted = demands(tick.video, self.renditions, self.cap)
        congested = estimator.congested(now, trying=self.controller.trying is not None)
        decision = self.controller.update(
            now,
            wanted,
            estimator.estimate(now),
            audio_bitrate(tick.audio),
            congested,
            estimator.room(now),
        )
        for change in decision.changes:
            self._react(now, change)
        return Step(decision.layers, decision.changes, congested, frozenset(self._went_down))

    def _react(self, now: float, change: Change) -> None:
        """A layer went down on an overloaded link: its loss so far described the old rate,
        and its keyframe is likely lost; going up again ends that."""
        if change.reason in DOWNWARDS:
            self.estimator.restart_loss(now)
            self._went_down.add(change.slot)
        elif change.reason in UPWARDS:
            self._went_down.discard(change.slot)

    def _switch_pending(self, now: float, pending: frozenset[SlotKey]) -> bool:
        """True while a video slot waits (not too long) for the keyframe of a lower layer.
        A try upwards is not waited for: the lower rate's loss before it takes effect only
        understates the congestion the try may cause, which should show as early as it can."""
        if not any(slot in self._went_down for slot in pending):
            self._switching_since = None
            return False
        if self._switching_since is None:
            self._switching_since = now
        return now - self._switching_since <= SWITCH_PATIENCE

    # outputs

    @property
    def history(self) -> list[Change]:
        """The layer changes kept for the timeline, oldest first; bounded, display only."""
        return list(self.controller.history)

    def layer(self, slot: Hashable) -> str | None:
        """The layer a video slot carries now, or None without a feed."""
        return self.controller.current.get(slot)

    def view(self, now: float) -> LinkView:
        """The link's layers, estimate, sent rate, loss and RTT now."""
        current = self.controller.current
        shown = {name: current[slot] for slot, name in self.names.items() if slot in current}
        est = self.estimator
        return LinkView(
            shown, est.estimate(now) or 0.0, est.sent_rate(), est.loss(now), est.rtt or 0.0
        )
