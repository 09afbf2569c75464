"""The light classroom: counting from clear RTP headers, on literal packets, and a spot check
that it counts the frames a full receiver counts in a real lesson."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from relay.bench.classrooms import Counters
from relay.bench.light import (
    HeaderCounters,
    StreamTally,
    check_internals,
    is_rtp,
    payload_kinds,
    payload_size,
)
from relay.bench.runner import BenchOptions, run

SDP = """v=0
m=audio 9 UDP/TLS/RTP/SAVPF 96 0
a=rtpmap:96 opus/48000/2
a=rtpmap:0 PCMU/8000
m=video 9 UDP/TLS/RTP/SAVPF 97 98 99
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=rtpmap:99 red/90000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
"""


def rtp(
    sequence: int,
    timestamp: int = 0,
    marker: bool = False,
    payload_type: int = 97,
    ssrc: int = 1234,
    payload: bytes = b"x" * 100,
    first: int = 0x80,
    extension: bytes = b"",
) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", first, second, sequence, timestamp, ssrc) + extension + payload


def test_payload_kinds_are_the_media_codecs_of_each_section() -> None:
    assert payload_kinds(SDP) == {96: "audio", 0: "audio", 97: "video"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (rtp(1), True),
        (rtp(1, marker=True, payload_type=100), True),
        (b"\x80\xc8" + b"\x00" * 26, False),  # RTCP sender report
        (b"\x81\xcd" + b"\x00" * 14, False),  # RTCP transport feedback
        (b"\x16\xfe\xfd" + b"\x00" * 20, False),  # DTLS
        (b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12, False),  # STUN
        (b"\x80\x61", False),  # too short for a header
    ],
)
def test_is_rtp_tells_rtp_from_what_shares_its_socket(data: bytes, expected: bool) -> None:
    assert is_rtp(data) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (rtp(1, payload=b"x" * 100), 100),
        (rtp(1, first=0x82, payload=b"c" * 8 + b"x" * 100), 100),  # two CSRCs
        (rtp(1, first=0x90, extension=b"\xbe\xde\x00\x02" + b"e" * 8), 100),
        (rtp(1, first=0xA0), 0),  # padded: a probe, its padding length is encrypted
    ],
)
def test_payload_size_skips_the_header_and_its_extensions(data: bytes, expected: int) -> None:
    assert payload_size(data) == expected


# (sequence, timestamp, marker) per packet → (whole frames, damaged frames, packets lost)
@pytest.mark.parametrize(
    ("packets", "expected"),
    [
        ([(1, 0, True), (2, 3000, False), (3, 3000, True)], (2, 0, 0)),
        ([(1, 0, False), (3, 0, True)], (0, 1, 1)),  # a gap inside the frame
        ([(1, 0, False), (3, 3000, True)], (1, 1, 1)),  # the first frame's end is lost
        ([(1, 0, True), (3, 3000, True)], (1, 1, 1)),  # the second frame's start is lost
        ([(1, 0, True), (2, 3000, True), (2, 3000, True)], (2, 0, 0)),  # a duplicate
        ([(1, 0, True), (3, 6000, True), (2, 3000, True)], (1, 1, 0)),  # late: not counted
        ([(65535, 0, True), (0, 3000, True), (1, 6000, True)], (3, 0, 0)),  # wraps around
    ],
)
def test_stream_tally_counts_whole_and_damaged_frames(
    packets: list[tuple[int, int, bool]], expected: tuple[int, int, int]
) -> None:
    tally = StreamTally()
    for sequence, timestamp, marker in packets:
        tally.add(sequence, timestamp, marker)
    assert (tally.frames, tally.damaged, tally.lost) == expected


def test_receiver_report_covers_loss_since_the_previous_one() -> None:
    tally = StreamTally()
    for sequence in (65534, 65535, 2, 3):  # 0 and 1 lost, across the wrap
        tally.add(sequence, sequence, True)
    first = tally.report(42)
    assert (first.ssrc, first.packets_lost, first.highest_sequence) == (42, 2, 65536 + 3)
    assert first.fraction_lost == 2 * 256 // 6
    tally.add(4, 4, True)
    second = tally.report(42)
    assert (second.fraction_lost, second.packets_lost) == (0, 2)


def test_header_counters_report_what_a_full_classroom_reports() -> None:
    counters = HeaderCounters()
    counters.kinds = payload_kinds(SDP)
    for sequence in range(10):
        counters.rtp(rtp(sequence, timestamp=sequence // 2 * 3000, marker=sequence % 2 == 1))
    for sequence in range(5):
        counters.rtp(rtp(sequence, payload_type=96, ssrc=99))
    counters.rtp(rtp(0, payload_type=98, ssrc=7))  # retransmission: not media
    snapshot = counters.snapshot()
    assert snapshot.keys() >= Counters().snapshot().keys()
    assert (snapshot["frames"], snapshot["lost"], snapshot["audio"]) == (5, 0, 5)
    assert snapshot["video_bytes"] == 1000
    assert snapshot["join_s"] is not None


def test_the_aiortc_internals_it_hooks_are_there() -> None:
    check_internals()


@pytest.mark.timeout(150)
async def test_light_and_full_classrooms_count_the_same_frames(tmp_path: Path) -> None:
    fps = {}
    for receiver in ("full", "light"):
        options = BenchOptions(
            counts=(2,),
            seconds=4.0,
            warmup=1.0,
            clip_seconds=2.0,
            width=640,
            height=360,
            bitrate=500_000,
            workers=1,
            workdir=tmp_path / receiver,
            receiver=receiver,
        )
        results = await run(options, lambda _label, _fraction: None)
        (row,) = results["servers"]["ketang"]["rows"]
        fps[receiver] = row["fps_mean"]
    print(f"\nframes per second per classroom: {fps}")
    assert fps["full"] > 20
    assert fps["light"] == pytest.approx(fps["full"], rel=0.1)
