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


KEY = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00"  # a VP8 key frame header (RFC 6386 §9.1)


@pytest.mark.parametrize(
    ("packets", "expected"),
    [
        # packet 11 never comes: the complete keyframe after it is released, 10 is dropped
        (
            [packet(10, 0), packet(12, 3000, True), packet(13, 6000, data=KEY),
             packet(14, 6000, True, b"k2")],
            [None, None, None, KEY + b"k2"],
        ),
        # an inter frame after the hole is not enough: it references the lost picture
        ([packet(10, 0), packet(12, 3000, True), packet(13, 6000, True)], [None, None, None]),
        # the keyframe itself still misses a packet: keep waiting
        (
            [packet(10, 0), packet(12, 3000, data=KEY), packet(14, 3000, True)],
            [None, None, None],
        ),
    ],
)  # fmt: skip
def test_a_lost_packet_stalls_only_until_the_next_complete_keyframe(
    packets: list[RtpPacket], expected: list[bytes | None]
) -> None:
    buffer = EagerJitterBuffer(capacity=128, is_video=True)
    assert released(buffer, packets) == expected
