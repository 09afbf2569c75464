import pytest

from relay.core.estimator import BandwidthEstimator, Report, Sample

SSRCS = frozenset({1111})


def report(est: BandwidthEstimator, fraction: float, now: float, ssrc: int = 1111) -> None:
    """A lone report block with this fraction lost."""
    est.on_report(ssrc, Report(now, fraction, 0, int(now * 1000)))


def feed(
    est: BandwidthEstimator,
    bps: float,
    seconds: float,
    start: float = 0.0,
    nack_share: float = 0.0,
    tick: float = 0.25,
) -> float:
    """Send at `bps` for `seconds` (1200-byte packets), NACKing a share; returns the end time."""
    steps = round(seconds / tick)
    base = est._samples[-1] if est._samples else Sample(start, 0, 0, 0)
    octets, packets, nacked = base.octets, base.packets, base.nacked
    now = start
    for _ in range(steps):
        now += tick
        sent = bps * tick / 8
        octets += int(sent)
        packets += int(sent / 1200)
        nacked += int(sent / 1200 * nack_share)
        est.on_sample(Sample(now, octets, packets, nacked))
    return now


def test_a_fresh_estimator_answers_without_samples() -> None:
    est = BandwidthEstimator()  # the scrape or a page may ask before the controller's first tick
    assert (est.sent_rate(), est.loss(0.0), est.estimate(0.0)) == (0.0, 0.0, None)


def test_nothing_known_before_feedback() -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_000_000, 1.0)
    assert est.estimate(now) is None
    assert not est.congested(now)
    assert est.room(now)
    assert est.sent_rate() == pytest.approx(1_000_000, rel=0.01)


def test_heavy_loss_bounds_the_estimate_by_what_got_through() -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_600_000, 1.0)
    report(est, 0.70, now)
    now = feed(est, 1_600_000, 0.25, start=now)
    assert est.congested(now)
    # 1.6 Mbit/s with 70 % lost: 480 kbit/s got through; 85 % of that
    assert est.estimate(now) == pytest.approx(1_600_000 * 0.3 * 0.85, rel=0.02)


def test_stale_reports_do_not_cut_twice() -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_600_000, 1.0)
    report(est, 0.70, now)
    now = feed(est, 1_600_000, 0.25, start=now)
    first = est.estimate(now)
    now = feed(est, 200_000, 1.0, start=now)  # the allocator went down; old report still fresh
    assert est.estimate(now) == first


def test_nack_rate_counts_as_loss() -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_000_000, 1.5, nack_share=0.2)
    assert est.loss(now) == pytest.approx(0.2, abs=0.03)
    assert est.congested(now)


@pytest.mark.parametrize(
    ("sent", "remb", "loss", "congested", "room"),
    [
        (200_000, 310_000, 0.0, False, True),  # REMB at its 1.5x cap: nothing seen
        (200_000, 310_000, 0.03, False, True),  # random loss alone is not congestion
        (200_000, 230_000, 0.0, False, False),  # close to the sent rate: no room
        (550_000, 340_000, 0.0, False, False),  # REMB trailing a raise is no congestion
        (1_000_000, 900_000, 0.04, False, False),  # nor with some random loss
        (200_000, 310_000, 0.12, True, False),  # heavy loss
        (1_600_000, 1_500_000, 0.0, False, False),  # a first REMB a bit under: not congested
    ],
)
def test_congestion_and_room_from_remb_and_loss(
    sent: float, remb: float, loss: float, congested: bool, room: bool
) -> None:
    est = BandwidthEstimator()
    now = feed(est, sent, 1.5)
    est.on_remb(SSRCS, remb, now)
    report(est, loss, now)
    assert est.congested(now) is congested
    assert est.room(now) is room


@pytest.mark.parametrize(
    ("rtts", "congested"),
    [
        ([], False),  # no RTT known: a REMB dip alone is not enough
        ([0.02, 0.02, 0.25, 0.3, 0.3, 0.3], True),  # a queue built up
        ([0.02, 0.02, 0.021, 0.02], False),  # no queue: a REMB dip is noise
    ],
)
def test_falling_remb_is_congestion_when_a_queue_stands(rtts: list[float], congested: bool) -> None:
    est = BandwidthEstimator()
    now = feed(est, 550_000, 1.0)
    for rtt in rtts:
        now = feed(est, 550_000, 0.5, start=now)
        est.on_rtt(rtt, now)
    est.on_remb(SSRCS, 700_000, now)
    now = feed(est, 550_000, 0.5, start=now)
    est.on_remb(SSRCS, 500_000, now)  # overuse: the receiver cut its estimate
    assert est.congested(now) is congested
    # during a try the fall alone counts: more sent on a link with room never lowers REMB
    assert est.congested(now, trying=True)


def test_rembs_per_stream_add_up_and_expire() -> None:
    est = BandwidthEstimator()
    now = feed(est, 500_000, 1.0)
    est.on_remb(frozenset({1}), 300_000, now)
    est.on_remb(frozenset({2}), 200_000, now)
    est.on_remb(frozenset({2}), 250_000, now)
    assert est.remb(now) == 550_000
    assert est.remb(now + 10) is None


def test_rtt_is_smoothed() -> None:
    est = BandwidthEstimator()
    est.on_rtt(0.1, 0.0)
    est.on_rtt(0.2, 1.0)
    assert est.rtt == pytest.approx(0.15)
    assert est.queue_delay(1.0) == pytest.approx(0.05)


def test_loss_bound_grows_back_and_lapses_when_loss_stops() -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_000_000, 1.0)
    report(est, 0.5, now)
    now = feed(est, 1_000_000, 0.25, start=now)
    bound = est.estimate(now)
    assert bound is not None
    report(est, 0.0, now + 2)
    now = feed(est, 300_000, 10.0, start=now)
    grown = est.estimate(now)
    assert grown is not None and grown > bound * 1.15
    report(est, 0.0, now + 60)
    feed(est, 300_000, 60.0, start=now)
    assert est.estimate(now + 60) is None


def pooled(est: BandwidthEstimator, now: float, fraction: float, lost: int, highest: int) -> None:
    """A report block with its fraction and cumulative counts."""
    est.on_report(1111, Report(now, fraction, lost, highest))


@pytest.mark.parametrize(
    ("reports", "counted"),
    [
        # one report soon after: covers mostly the second before the change
        ([(0.5, 0.4)], False),
        # one report later still covers up to 1.5 s back, the queue draining included
        ([(1.2, 0.4)], False),
        # two reports after the span: their difference is the new rate's loss alone
        ([(1.2, 0.0), (2.2, 0.4)], True),
    ],
)
def test_reports_right_after_a_change_describe_the_old_rate(
    reports: list[tuple[float, float]], counted: bool
) -> None:
    est = BandwidthEstimator()
    now = feed(est, 1_600_000, 1.0)
    est.restart_loss(now)
    changed = now
    lost = highest = 0
    for after, share in reports:
        now = feed(est, 200_000, changed + after - now, start=now)
        highest += 100
        lost += round(100 * share)
        pooled(est, now, share, lost, highest)
    now = feed(est, 200_000, 0.25, start=now)
    assert (est.loss(now) > 0.3) is counted
    assert est.congested(now) is counted


def test_a_remb_still_falling_just_after_a_downswitch_is_not_congestion() -> None:
    est = BandwidthEstimator()
    now = feed(est, 550_000, 1.0)
    for rtt in (0.02, 0.3, 0.3):
        now = feed(est, 550_000, 0.5, start=now)
        est.on_rtt(rtt, now)
    est.on_remb(SSRCS, 700_000, now)
    est.restart_loss(now)  # the layer went down
    now = feed(est, 550_000, 0.5, start=now)
    est.on_remb(SSRCS, 500_000, now)
    assert not est.congested(now)
    now = feed(est, 550_000, 1.75, start=now)
    est.on_remb(SSRCS, 500_000, now)
    est.on_remb(SSRCS, 700_000, now - 0.5)  # the peak within the trend window
    est.on_remb(SSRCS, 480_000, now)
    assert est.congested(now)


@pytest.mark.parametrize(
    ("rtts", "trying", "congested"),
    [
        ([0.02, 0.02, 0.05, 0.07], True, True),  # a queue building during a try: revert
        ([0.02, 0.02, 0.05, 0.07], False, False),  # the same without a try: not enough alone
        ([0.02, 0.02, 0.021, 0.02], True, False),  # a try on a link with room
    ],
)
def test_a_queue_building_during_a_try_is_congestion(
    rtts: list[float], trying: bool, congested: bool
) -> None:
    est = BandwidthEstimator()
    now = feed(est, 500_000, 1.0)
    for rtt in rtts:
        now = feed(est, 500_000, 0.5, start=now)
        est.on_rtt(rtt, now)
    assert est.congested(now, trying=trying) is congested


def lagging(lag: float, lag_age: float) -> tuple[BandwidthEstimator, float]:
    """Receiver reports that read as a 280 ms queue, and the relay's loop `lag` seconds late
    `lag_age` seconds before their last one (later ticks on time)."""
    est = BandwidthEstimator()
    now = feed(est, 550_000, 1.0)
    for rtt in (0.02, 0.02, 0.3, 0.3, 0.3, 0.3):
        now = feed(est, 550_000, 0.5, start=now)
        est.on_rtt(rtt, now)
    est.on_loop_lag(lag, now - lag_age)
    est.on_loop_lag(0.001, now)  # later ticks on time do not hide the recent lag
    return est, now


@pytest.mark.parametrize(
    ("lag", "lag_age", "congested"),
    [
        (0.0, 0.0, True),  # the link queued: a falling REMB with 280 ms standing
        (0.3, 0.5, False),  # the relay lagged 300 ms: its own queue, not the link's
        (0.3, 4.0, True),  # a lag 4 s ago no longer explains the queue standing now
        (0.1, 0.5, True),  # 100 ms of lag explains 100 of the 280 ms, not all of it
    ],
)
def test_the_relays_own_loop_lag_is_not_a_queue_on_the_link(
    lag: float, lag_age: float, congested: bool
) -> None:
    est, now = lagging(lag, lag_age)
    est.on_remb(SSRCS, 700_000, now)
    now = feed(est, 550_000, 0.5, start=now)
    est.on_remb(SSRCS, 500_000, now)  # the classroom's REMB fell (late, bunched packets)
    assert est.congested(now) is congested
    assert est.relay_lag(now) == (max(lag, 0.001) if lag_age + 0.5 <= 3.0 else 0.001)


def test_a_try_is_not_reverted_for_the_relays_own_lag() -> None:
    est, now = lagging(0.3, 0.5)
    assert not est.congested(now, trying=True)  # 280 ms of "queue", all of it the relay's
    est, now = lagging(0.0, 0.0)
    assert est.congested(now, trying=True)  # the same queue on the link reverts the try


def test_loss_is_congestion_whatever_the_relays_lag() -> None:
    est = BandwidthEstimator()
    now = feed(est, 500_000, 2.0, nack_share=0.2)
    est.on_loop_lag(0.5, now)
    report(est, 0.2, now)
    assert est.congested(now)
