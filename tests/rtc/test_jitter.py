"""The ingest jitter buffer releases a frame with its last packet, not with the next frame."""

from __future__ import annotations

import time

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
    assert (
        released(EagerJitterBuffer(capacity=512, is_video=True, clock=time.monotonic), packets)
        == expected
    )


def test_incomplete_frame_waits_for_the_lost_packet() -> None:
    buffer = EagerJitterBuffer(capacity=512, is_video=True, clock=time.monotonic)
    assert released(buffer, [packet(10, 0), packet(12, 0, True), packet(13, 3000, True)]) == [
        None,
        None,
        None,
    ]
    assert released(buffer, [packet(11, 0)]) == [b"10.11.12."]


def test_audio_packets_pass_straight_through_even_out_of_order() -> None:
    buffer = EagerJitterBuffer(capacity=16, is_video=False, clock=time.monotonic)
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
        # ... but a later complete keyframe does not wait for it
        (
            [packet(10, 0), packet(12, 3000, data=KEY), packet(14, 3000, True),
             packet(15, 6000, True), packet(16, 9000, data=KEY), packet(17, 9000, True, b"k3")],
            [None, None, None, None, None, KEY + b"k3"],
        ),
    ],
)  # fmt: skip
def test_a_lost_packet_stalls_only_until_the_next_complete_keyframe(
    packets: list[RtpPacket], expected: list[bytes | None]
) -> None:
    buffer = EagerJitterBuffer(capacity=128, is_video=True, clock=time.monotonic)
    assert released(buffer, packets) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_blocked_buffer_nacks_again_then_asks_for_a_keyframe() -> None:
    """Packet 11 is lost and its retransmissions too: what the buffer asks for, and when."""
    clock = Clock()
    nacks: list[tuple[float, list[int]]] = []
    buffer = EagerJitterBuffer(
        capacity=128,
        is_video=True,
        on_missing=lambda ssrc, lost: nacks.append((clock.now, lost)),
        clock=clock,
    )
    plis = []
    # (time, packet): a frame of 10-12 missing 11, then one-packet inter frames every 33 ms
    arrivals = [(0.0, packet(10, 0)), (0.0, packet(12, 0, True))] + [
        (0.033 * n, packet(12 + n, 3000 * n, True)) for n in range(1, 45)
    ]
    for at, p in arrivals:
        clock.now = at
        pli, frame = buffer.add(p)
        assert frame is None
        if pli:
            plis.append(round(at, 3))
    # repeated about every RENACK_INTERVAL until STUCK_PLI, each naming the hole
    assert [(round(at, 3), lost) for at, lost in nacks] == [
        (0.132, [11]), (0.264, [11])
    ]  # fmt: skip
    # then a keyframe request, repeated after PLI_REPEAT if none came
    assert plis == [0.33, 1.353]


def test_frames_held_up_by_a_late_packet_all_come_out_when_it_arrives() -> None:
    buffer = EagerJitterBuffer(capacity=128, is_video=True, clock=time.monotonic)
    held = [packet(10, 0), packet(12, 0, True), packet(13, 3000, True), packet(14, 6000, True)]
    assert released(buffer, held) == [None, None, None, None]
    assert buffer.missing() == [11]
    assert released(buffer, [packet(11, 0)]) == [b"10.11.12."]
    rest = [buffer.next_complete(), buffer.next_complete(), buffer.next_complete()]
    assert [None if f is None else f.data for f in rest] == [b"13.", b"14.", None]
    assert buffer.missing() == []


def test_a_released_keyframe_ends_the_keyframe_requests() -> None:
    clock = Clock()
    buffer = EagerJitterBuffer(capacity=128, is_video=True, clock=clock)
    assert released(buffer, [packet(10, 0), packet(12, 0, True)]) == [None, None]
    clock.now = 0.4
    assert buffer.add(packet(13, 3000, True))[0] is True
    assert released(buffer, [packet(14, 6000, data=KEY), packet(15, 6000, True)]) == [
        None,
        KEY + b"15.",
    ]
    clock.now = 2.0  # a later hole starts its own count: no keyframe request at once
    assert released(buffer, [packet(17, 9000, True)]) == [None]
    assert buffer.add(packet(18, 12000, True))[0] is False
