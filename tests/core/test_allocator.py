import itertools
from collections.abc import Hashable

import pytest

from relay.core.allocator import HISTORY, AbrParams, RateController, SlotDemand, allocate
from relay.core.ladder import layers, parse_ladder

LADDER = parse_ladder("640x360@500,320x180@150", still_fps=2.0)
SOURCE_BPS = 1_500_000


def camera(cap: str | None = None) -> SlotDemand:
    return SlotDemand("cam", False, layers(SOURCE_BPS, LADDER, screen=False, cap=cap))


def screen(cap: str | None = None) -> SlotDemand:
    return SlotDemand("scr", True, layers(SOURCE_BPS, LADDER, screen=True, cap=cap))


@pytest.mark.parametrize(
    ("budget", "demands", "expected"),
    [
        (5e6, [camera()], {"cam": "source"}),
        (600e3, [camera()], {"cam": "360p"}),
        (200e3, [camera()], {"cam": "180p"}),
        (100e3, [camera()], {"cam": "paused"}),
        (100e3, [screen()], {"scr": "still"}),
        # the screen share outranks the camera
        (2.1e6, [camera(), screen()], {"scr": "source", "cam": "360p"}),
        (700e3, [camera(), screen()], {"scr": "360p", "cam": "180p"}),
        # lowest rungs do not both fit: the camera pauses first ...
        (250e3, [camera(), screen()], {"scr": "180p", "cam": "paused"}),
        # ... then the screen share drops to its still
        (60e3, [camera(), screen()], {"scr": "still", "cam": "paused"}),
        (0, [camera(), screen()], {"scr": "still", "cam": "paused"}),
        # caps bound the best layer
        (5e6, [camera(cap="low"), screen(cap="360p")], {"scr": "360p", "cam": "180p"}),
        (5e6, [camera(cap="audio")], {"cam": "paused"}),
    ],
)
def test_allocate(budget: float, demands: list[SlotDemand], expected: dict[str, str]) -> None:
    assert allocate(budget, demands) == expected


Tick = tuple[float, float | None, bool, bool]  # now, estimate, congested, room


def drive(
    ctl: RateController, ticks: list[Tick], demands: list[SlotDemand]
) -> list[dict[Hashable, str]]:
    return [
        ctl.update(now, demands, estimate, 50e3, congested, room).layers
        for now, estimate, congested, room in ticks
    ]


def test_starts_at_what_fits_and_goes_down_at_once_on_congestion() -> None:
    ctl = RateController(AbrParams())
    out = drive(ctl, [(0.0, None, False, True), (1.0, 340e3, True, False)], [camera()])
    assert out == [{"cam": "source"}, {"cam": "180p"}]
    assert [(c.layer, c.reason) for c in ctl.history] == [("source", "start"), ("180p", "down")]


def test_congestion_that_the_estimate_still_covers_changes_nothing() -> None:
    ctl = RateController(AbrParams())
    out = drive(ctl, [(0.0, None, False, True), (1.0, 5e6, True, False)], [camera()])
    assert out[-1] == {"cam": "source"}


def test_upgrade_is_tried_after_hold_and_kept_after_trial() -> None:
    ctl = RateController(AbrParams(hold=3, trial=3, backoff=3))
    ticks: list[Tick] = [(0.0, 250e3, True, False)]  # settle at 180p
    ticks += [(t, 310e3, False, True) for t in (1.0, 3.0, 4.0, 6.0, 7.0, 8.0)]
    out = drive(ctl, ticks, [camera()])
    # room from t=1, backoff after the downgrade until t=3: try at t=4, kept at t=7
    assert [o["cam"] for o in out] == ["180p", "180p", "180p", "360p", "360p", "360p", "360p"]
    assert [(c.at, c.reason) for c in ctl.history][-2:] == [(4.0, "try"), (7.0, "keep")]
    assert ctl.trying is None


def test_failed_tries_revert_at_once_and_back_off() -> None:
    ctl = RateController(AbrParams(hold=1, trial=3, backoff=3, backoff_max=60))
    demands = [camera()]
    drive(ctl, [(0.0, 250e3, True, False)], demands)
    tries: list[float] = []
    now = 0.0
    while now < 60:
        now += 0.25
        layer = ctl.current["cam"]
        congested = layer == "360p" and ctl.trying is not None and now - tries[-1] >= 0.5
        out = ctl.update(now, demands, 310e3, 50e3, congested, not congested).layers
        if out["cam"] == "360p" and layer != "360p":
            tries.append(now)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    # each failure waits 1.5x longer than the one before (plus the hold and the 0.5 s try)
    assert len(tries) >= 4
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    assert ctl.current["cam"] == "180p" or ctl.trying == "cam"
    assert ctl.failures == len(tries) - (ctl.trying is not None)


def test_backoff_is_capped() -> None:
    ctl = RateController(AbrParams(hold=0, trial=1, backoff=10, backoff_max=12))
    demands = [camera()]
    drive(ctl, [(0.0, 250e3, True, False)], demands)
    now, tries = 0.0, list[float]()
    while now < 200:
        now += 0.5
        trying = ctl.trying is not None
        ctl.update(now, demands, 310e3, 50e3, trying, not trying)
        if ctl.trying is not None:
            tries.append(now)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert max(gaps) <= 12 + 1


def test_screen_share_is_upgraded_before_the_camera() -> None:
    ctl = RateController(AbrParams(hold=1, trial=1, backoff=1))
    demands = [camera(), screen()]
    drive(ctl, [(0.0, 250e3, True, False)], demands)
    assert ctl.current == {"cam": "paused", "scr": "180p"}
    now = 0.0
    while ctl.current["scr"] != "source" and now < 60:
        now += 0.5
        ctl.update(now, demands, None, 50e3, False, True)
    assert ctl.current["cam"] == "paused"
    while ctl.current["cam"] != "source" and now < 120:
        now += 0.5
        ctl.update(now, demands, None, 50e3, False, True)
    steps = [(c.slot, c.layer) for c in ctl.history if c.reason == "try"]
    assert steps == [
        ("scr", "360p"),
        ("scr", "source"),
        ("cam", "180p"),
        ("cam", "360p"),
        ("cam", "source"),
    ]


def test_a_cap_applies_at_once_and_slots_that_leave_are_forgotten() -> None:
    ctl = RateController(AbrParams())
    drive(ctl, [(0.0, None, False, True)], [camera(), screen()])
    decision = ctl.update(1.0, [camera(cap="low")], None, 50e3, False, True)
    assert decision.layers == {"cam": "180p"}
    assert [(c.slot, c.layer, c.reason) for c in decision.changes] == [("cam", "180p", "cap")]


def test_no_room_no_try() -> None:
    ctl = RateController(AbrParams(hold=1))
    demands = [camera()]
    drive(ctl, [(0.0, 250e3, True, False)], demands)
    out = drive(ctl, [(t, 220e3, False, False) for t in range(1, 30)], demands)
    assert {o["cam"] for o in out} == {"180p"}


def test_the_congestion_of_a_failed_try_does_not_push_below_the_layer_before_it() -> None:
    ctl = RateController(AbrParams(hold=1, trial=3, backoff=3))
    demands = [camera()]
    drive(ctl, [(0.0, 250e3, True, False)], demands)
    drive(ctl, [(t, 250e3, False, True) for t in (4.0, 5.0, 6.0)], demands)
    assert ctl.trying == "cam"
    # the try overloads the link: the estimate dips under the layer that was fine before it
    out = drive(ctl, [(6.5, 150e3, True, False), (7.0, 150e3, True, False)], demands)
    assert out == [{"cam": "180p"}, {"cam": "180p"}]
    # congestion that outlasts the try's aftermath is the link's own: go down
    assert drive(ctl, [(13.0, 150e3, True, False)], demands) == [{"cam": "paused"}]


# one cycle of ticks (estimate, congested, room): congestion (down, or revert and down),
# then room: try 180p, keep it, try 360p
CYCLE: list[tuple[float | None, bool, bool]] = [
    (100e3, True, False),
    (None, False, True),
    (None, False, True),
    (None, False, True),
]


@pytest.mark.parametrize("cycles", [10, HISTORY, 1000])
def test_update_reports_its_changes_even_after_the_history_is_full(cycles: int) -> None:
    ctl = RateController(AbrParams(hold=0, trial=0, backoff=0, aftermath=0))
    decisions = []
    for i in range(len(CYCLE) * cycles):
        estimate, congested, room = CYCLE[i % len(CYCLE)]
        decisions.append(ctl.update(0.25 * i, [camera()], estimate, 50e3, congested, room))
    assert all(d.changes for d in decisions)  # every tick of the cycle changes something
    made = [c for d in decisions for c in d.changes]
    # start, down, try, keep, try; then revert, down, try, keep, try per cycle
    assert len(made) == ctl.changes_made == 5 * cycles
    assert list(ctl.history) == made[-HISTORY:]
    assert [c.reason for c in decisions[-1].changes] == ["try"]
