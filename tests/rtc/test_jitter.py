"""The ingest jitter buffer releases a frame with its last packet, not with the next frame."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from relay.rtc.jitter import EagerJitterBuffer


def packet(seq: int, ts: int, marker: bool = False, data: bytes = b"") -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data or f"{seq}.".encode()  # type: ignore[attr-defined]
    return p


def released(buffer: EagerJitterBuffer, packets: list[RtpPacket]) -> list[bytes | None]:
    out = []
    for p in packets:
        _, frame = buffer.add(p)
        out.append(None if frame is None else frame.data)
    return out


@pytest.mark.parametrize(
    ("packets", "expected"),
    [
        # a three-packet frame comes out with its marker packet
        ([packet(10, 0), packet(11, 0), packet(12, 0, True)], [None, None, b"10.11.12."]),
        # reordered inside the frame: released when the last hole fills
        ([packet(10, 0), packet(12, 0, True), packet(11, 0)], [None, None, b"10.11.12."]),
        # consecutive one-packet frames each leave at once
        ([packet(1, 0, True), packet(2, 3000, True)], [b"1.", b"2."]),
        # sequence numbers wrap around
        ([packet(65535, 0), packet(0, 0, True)], [None, b"65535.0."]),
    ],
)
def test_video_frame_is_released_with_its_marker_packet(
    packets: list[RtpPacket], expected: list[bytes | None]
) -> None:
    assert released(EagerJitterBuffer(capacity=512, is_video=True), packets) == expected


def test_incomplete_frame_waits_for_the_lost_packet() -> None:
    buffer = EagerJitterBuffer(capacity=512, is_video=True)
    assert released(buffer, [packet(10, 0), packet(12, 0, True), packet(13, 3000, True)]) == [
        None,
        None,
        None,
    ]
    assert released(buffer, [packet(11, 0)]) == [b"10.11.12."]


def test_audio_packets_pass_straight_through_even_out_of_order() -> None:
    buffer = EagerJitterBuffer(capacity=16, is_video=False)
    assert released(buffer, [packet(5, 960), packet(4, 0), packet(6, 1920)]) == [
        b"5.",
        b"4.",
        b"6.",
    ]
