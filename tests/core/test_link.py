from collections import Counter
from collections.abc import Hashable, Sequence

import pytest

from relay.core.allocator import HISTORY, AbrParams, Change
from relay.core.estimator import BandwidthEstimator, Report
from relay.core.ladder import parse_ladder
from relay.core.link import (
    ASSUMED_AUDIO_BITRATE,
    AUDIO_OVERHEAD,
    NACK_MEMORY,
    ClassroomLink,
    LinkView,
    NackCounter,
    Step,
    Tick,
    VideoFeed,
    audio_bitrate,
    demands,
)
from relay.core.model import SlotKey

LADDER = parse_ladder("640x360@500,320x180@150", still_fps=2.0)
CAM = SlotKey("c1", "video", 0)
SCR = SlotKey("c1", "video", 1)
CAMERA = VideoFeed(CAM, screen=False, bitrate=1_200_000, renditions=True)
SCREEN = VideoFeed(SCR, screen=True, bitrate=1_200_000, renditions=True)
DEFAULTS = AbrParams()


class RecordingEstimator(BandwidthEstimator):
    """The estimator, recording when its loss measurement restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts: list[float] = []

    def restart_loss(self, now: float) -> None:
        self.restarts.append(now)
        super().restart_loss(now)


class ScriptedEstimator(RecordingEstimator):
    """The estimator with its verdicts set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.bps: float | None = None
        self.is_congested = False
        self.roomy = True

    def estimate(self, now: float) -> float | None:
        return self.bps

    def congested(self, now: float, trying: bool = False) -> bool:
        return self.is_congested

    def room(self, now: float) -> bool:
        return self.roomy


def scripted(params: AbrParams = DEFAULTS) -> tuple[ClassroomLink, ScriptedEstimator]:
    """A camera-only link whose estimator the test scripts."""
    link = ClassroomLink((CAM,), LADDER, None, params)
    link.estimator = est = ScriptedEstimator()
    return link, est


def tick(
    *feeds: VideoFeed, audio: int | None = None, pending: frozenset[SlotKey] = frozenset()
) -> Tick:
    return Tick(0, 0, feeds, audio, pending)


def verdict(
    link: ClassroomLink, est: ScriptedEstimator, now: float, bps: float | None, congested: bool
) -> Step:
    """One tick of the camera alone under this verdict; room whenever not congested."""
    est.bps, est.is_congested, est.roomy = bps, congested, not congested
    return link.step(now, tick(CAMERA))


def reasons(step: Step) -> list[tuple[str, str]]:
    return [(c.layer, c.reason) for c in step.changes]


@pytest.mark.parametrize(
    ("nacks", "counted"),
    [
        ([(1, [10, 11])], 2),
        ([(1, [10, 11]), (1, [11, 12])], 3),  # 11 is asked for again: still missing
        ([(1, [10]), (2, [10])], 2),  # the same number on another stream is another packet
        ([(1, [7, 7, 7])], 1),
        ([(1, range(NACK_MEMORY)), (1, [0])], NACK_MEMORY),
        ([(1, range(NACK_MEMORY + 1)), (1, [0])], NACK_MEMORY + 2),  # 0 is forgotten
    ],
)
def test_each_nacked_sequence_number_counts_once_per_stream(
    nacks: list[tuple[int, Sequence[int]]], counted: int
) -> None:
    counter = NackCounter()
    for ssrc, lost in nacks:
        counter.add(ssrc, lost)
    assert counter.total == counted


@pytest.mark.parametrize(
    ("measured", "bitrate"),
    [
        (None, 0.0),  # no audio feed: nothing to take off the top
        (0, ASSUMED_AUDIO_BITRATE),  # not measured yet: Opus' default with its headers
        (32_000, 32_000 + AUDIO_OVERHEAD),
        (64_000, 64_000 + AUDIO_OVERHEAD),
    ],
)
def test_audio_takes_its_measured_rate_and_headers_or_the_opus_default(
    measured: int | None, bitrate: float
) -> None:
    assert audio_bitrate(measured) == bitrate


@pytest.mark.parametrize(
    ("feed", "cap", "expected"),
    [
        # an unmeasured teacher is taken for a 1.5 Mbit/s camera
        (VideoFeed(CAM, False, 0, True), None, "source:1500 360p:500 180p:150 paused:0"),
        # renditions at or above the teacher's rate are left out
        (VideoFeed(CAM, False, 400_000, True), None, "source:400 180p:150 paused:0"),
        (VideoFeed(SCR, True, 1_200_000, True), None, "source:1200 360p:500 180p:150 still:50"),
        # no ladder: the source or the floor, and no still without an encoder
        (VideoFeed(CAM, False, 1_200_000, False), None, "source:1200 paused:0"),
        (VideoFeed(SCR, True, 1_200_000, False), None, "source:1200 paused:0"),
        (VideoFeed(CAM, False, 1_200_000, True), "low", "180p:150 paused:0"),
        (VideoFeed(CAM, False, 1_200_000, True), "audio", "paused:0"),
    ],
)
def test_demands_follow_the_teacher_rate_the_ladder_and_the_cap(
    feed: VideoFeed, cap: str | None, expected: str
) -> None:
    (demand,) = demands([feed], LADDER, cap)
    assert (demand.slot, demand.screen) == (feed.slot, feed.screen)
    assert " ".join(f"{x.name}:{x.bitrate // 1000}" for x in demand.layers) == expected


@pytest.mark.parametrize(
    ("estimate", "audio", "layer"),
    [
        (600e3, None, "360p"),
        (300e3, None, "180p"),
        (300e3, 0, "180p"),  # 300 - 56 kbit/s of assumed audio still carries 180p
        (200e3, 0, "paused"),  # 200 - 56 kbit/s does not
        (100e3, None, "paused"),
    ],
)
def test_congestion_goes_down_to_what_fits_and_restarts_the_loss(
    estimate: float, audio: int | None, layer: str
) -> None:
    link, est = scripted()
    link.step(0.0, tick(CAMERA, audio=audio))
    est.bps, est.is_congested, est.roomy = estimate, True, False
    step = link.step(1.0, tick(CAMERA, audio=audio))
    assert step.changes == (Change(1.0, CAM, layer, "down"),)
    assert step.layers == {CAM: layer}
    assert step.congested
    assert step.went_down == {CAM}
    assert est.restarts == [1.0]


# ticks (now, estimate, congested) after a start at t=0 with hold, trial and backoff of 1 s
DOWN = [(1.0, 300e3, True)]
TRY = [*DOWN, (2.0, 300e3, False), (3.0, 300e3, False)]
REVERT = [*TRY, (3.5, 300e3, True)]
KEEP = [*TRY, (4.0, 300e3, False)]


@pytest.mark.parametrize(
    ("ticks", "last", "went_down", "restarts"),
    [
        (DOWN, [("180p", "down")], {CAM}, [1.0]),
        (TRY, [("360p", "try")], set(), [1.0]),  # going up ends it
        (REVERT, [("180p", "revert")], {CAM}, [1.0, 3.5]),
        (KEEP, [("360p", "keep")], set(), [1.0]),
    ],
)
def test_slots_that_went_down_stay_marked_until_they_go_up(
    ticks: list[tuple[float, float, bool]],
    last: list[tuple[str, str]],
    went_down: set[SlotKey],
    restarts: list[float],
) -> None:
    link, est = scripted(AbrParams(hold=1, trial=1, backoff=1))
    link.step(0.0, tick(CAMERA))
    steps = [verdict(link, est, now, bps, congested) for now, bps, congested in ticks]
    assert reasons(steps[-1]) == last
    assert steps[-1].went_down == went_down
    assert est.restarts == restarts


QUARTERS = [0.25 * i for i in range(1, 33)]  # 0.25 .. 8.0


@pytest.mark.parametrize(
    ("down_at", "pending", "restarts"),
    [
        # the keyframe of the lower layer comes at 2.0: loss restarts while it is awaited
        (1.0, (1.25, 2.0), [1.0, 1.25, 1.5, 1.75]),
        # it never comes: loss restarts for SWITCH_PATIENCE (3 s: 1.25 .. 4.25), then counts
        (1.0, (1.25, 9.0), [1.0] + [1.25 + 0.25 * i for i in range(13)]),
        # a second wait starts its own patience
        (1.0, (5.0, 5.5), [1.0, 5.0, 5.25]),
        # a switch that did not go down (the start) blinds nothing
        (None, (1.25, 2.0), []),
    ],
)
def test_loss_restarts_while_a_downswitch_waits_for_its_keyframe_up_to_switch_patience(
    down_at: float | None, pending: tuple[float, float], restarts: list[float]
) -> None:
    link, est = scripted()
    est.roomy = False  # no tries: nothing but the down changes the layer
    link.step(0.0, tick(CAMERA))
    for now in QUARTERS:
        est.bps, est.is_congested = 300e3, now == down_at
        waiting = frozenset({CAM}) if pending[0] <= now < pending[1] else frozenset()
        link.step(now, tick(CAMERA, pending=waiting))
    assert est.restarts == restarts


@pytest.mark.parametrize(
    ("slots", "feeds", "layers"),
    [
        ((CAM,), [CAMERA], {"video": "source"}),
        ((CAM, SCR), [CAMERA], {"camera": "source"}),
        ((CAM, SCR), [CAMERA, SCREEN], {"camera": "source", "screen": "source"}),
        ((CAM,), [], {}),
    ],
)
def test_view_names_video_slots_by_source_only_when_there_are_two(
    slots: tuple[SlotKey, ...], feeds: list[VideoFeed], layers: dict[str, str]
) -> None:
    link = ClassroomLink(slots, LADDER, None, AbrParams())
    link.step(0.0, tick(*feeds))
    assert link.view(0.0) == LinkView(layers, estimate=0.0, sent=0.0, loss=0.0, rtt=0.0)


# The long lesson: a tbf-like bottleneck whose capacity alternates between tight and roomy,
# so the controller goes down, tries, reverts and keeps all lesson long.
TICKS = 10_800  # 45 minutes
TICK = 0.25  # seconds, as the shell's
PACKET = 1000 * 8  # bits per packet
QUEUE = 0.3  # seconds of queue at the bottleneck before it drops (tbf latency 300ms)
BASE_RTT = 0.04
AUDIO = 32_000
TIGHT, ROOMY = 300e3, 3e6  # bits per second the bottleneck carries
TIGHT_FOR, ROOMY_FOR = 10.0, 20.0  # seconds of each phase
BITRATES = {x.name: x.bitrate for d in demands([CAMERA, SCREEN], LADDER, None) for x in d.layers}


class Bottleneck:
    """Sends what the layers need through a queue at the capacity, dropping past QUEUE."""

    def __init__(self) -> None:
        self.backlog = 0.0  # bits queued
        self.sent = self.dropped = 0.0  # packets, cumulative
        self.reported = (0.0, 0.0)  # sent, dropped at the last report

    def send(self, bps: float, capacity: float) -> None:
        self.backlog = max(self.backlog + (bps - capacity) * TICK, 0.0)
        drop = max(self.backlog - QUEUE * capacity, 0.0)
        self.backlog -= drop
        self.sent += bps * TICK / PACKET
        self.dropped += drop / PACKET

    def feedback(self, link: ClassroomLink, capacity: float, now: float) -> None:
        """The classroom's REMB and receiver report, with the RTT the queue adds."""
        sent, dropped = self.sent - self.reported[0], self.dropped - self.reported[1]
        self.reported = (self.sent, self.dropped)
        fraction = dropped / sent if sent else 0.0
        link.on_remb(frozenset({1}), capacity, now)
        link.on_report(1, Report(now, fraction, int(self.dropped), int(self.sent)))
        link.on_rtt(BASE_RTT + self.backlog / capacity, now)


def capacity(now: float) -> float:
    return TIGHT if now % (TIGHT_FOR + ROOMY_FOR) < TIGHT_FOR else ROOMY


def test_every_change_of_a_long_constrained_lesson_is_returned_once_and_reacted_to() -> None:
    link = ClassroomLink((CAM, SCR), LADDER, None, AbrParams())
    link.estimator = est = RecordingEstimator()
    net = Bottleneck()
    layers: dict[Hashable, str] = {}
    made: list[Change] = []
    for i in range(1, TICKS + 1):
        now = i * TICK
        net.send(AUDIO + AUDIO_OVERHEAD + sum(BITRATES[x] for x in layers.values()), capacity(now))
        if now % 1.0 == 0:  # the classroom reports once a second
            net.feedback(link, capacity(now), now)
        restarts, count = len(est.restarts), link.controller.changes_made
        # every switch's keyframe comes before the next tick, as a rendition's does
        sent = Tick(int(net.sent * PACKET / 8), int(net.sent), (CAMERA, SCREEN), AUDIO, frozenset())
        step = link.step(now, sent)
        assert len(step.changes) == link.controller.changes_made - count  # all, at once
        downs = [c for c in step.changes if c.reason in ("down", "revert")]
        assert est.restarts[restarts:] == [now] * len(downs)
        assert {c.slot for c in downs} <= step.went_down
        made += step.changes
        layers = step.layers
    counts = Counter(c.reason for c in made)
    assert len(made) > 1000 and min(counts[r] for r in ("down", "try", "revert", "keep")) > 150
    assert len(set(made)) == len(made) == link.controller.changes_made
    assert len(est.restarts) == counts["down"] + counts["revert"]
    assert link.history == made[-HISTORY:]
