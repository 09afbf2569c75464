"""Retransmissions to one classroom are budgeted against the media it was sent."""

from __future__ import annotations

import pytest

from relay.rtc.rtpsend import PyStream
from relay.rtc.sender import RTX_BURST, RTX_SHARE, SendCounters


class Sent(PyStream):
    """A stream whose counters a test sets."""

    def __init__(self) -> None:
        super().__init__(
            ssrc=1,
            payload_type=96,
            origin=0,
            vp8=False,
            sequence=0,
            picture_id=0,
            before=b"",
            after=None,
        )

    def add(self, packets: int, wire: int) -> None:
        self.packets += packets
        self.wire += wire


@pytest.mark.parametrize(
    ("media", "resends", "allowed"),
    [
        # 10 packets of 1000 bytes earn 3000 bytes: three 1000-byte resends, not a fourth
        ([1000] * 10, [1000] * 4, [True, True, True, False]),
        # a small resend still fits where a large one did not
        ([1000] * 10, [2500, 600, 500], [True, False, True]),
        # nothing sent, nothing to resend with
        ([], [100], [False]),
    ],
)
def test_resends_are_capped_at_a_share_of_the_media_sent(
    media: list[int], resends: list[int], allowed: list[bool]
) -> None:
    counters, stream = SendCounters(), Sent()
    counters.watch(stream)
    for size in media:
        stream.add(1, size)
    assert [counters.spend_on_resend(size) for size in resends] == allowed
    sent = sum(size for size, ok in zip(resends, allowed, strict=True) if ok)
    assert counters.octets == sum(media) + sent
    assert counters.packets == len(media) + sum(allowed)


def test_unspent_allowance_is_capped_so_old_quiet_time_cannot_fund_a_storm() -> None:
    counters, stream = SendCounters(), Sent()
    counters.watch(stream)
    for _ in range(1000):
        stream.add(1, 1200)
        assert counters.rtx_allowance <= RTX_BURST  # read between sends, as NACKs do
    assert counters.rtx_allowance == RTX_BURST < 1000 * 1200 * RTX_SHARE
