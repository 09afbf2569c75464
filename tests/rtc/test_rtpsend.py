"""The batch send path: the native streams and their Python twins send the same bytes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pylibsrtp import Policy, Session

from relay.core.forwarder import OutFrame
from relay.rtc import hooks, rtpsend
from relay.rtc.rtpsend import Batch, PyStream, Route, Stream

KEY = bytes(range(30))  # SRTP master key (16) and salt (14), as DTLS would export them
# abs-send-time between mid's element and padding, in RFC 8285 one-byte form, as aiortc
# encodes a sender's block: what comes before the 3 bytes of time and what follows them
BEFORE = bytes.fromhex("bede0002") + bytes((0x12,))
AFTER = bytes((0x20, 0x30, 0, 0))
PIECES = (os.urandom(1296), os.urandom(1296), os.urandom(377))

needs_native = pytest.mark.skipif(rtpsend.NATIVE is None, reason="the native path is not built")


def session(inbound: bool = False) -> Session:
    kind = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key=KEY, ssrc_type=kind))


def video(native: Any, ssrc: int = 0x1111, sequence: int = 65534) -> Stream:
    fields = dict(ssrc=ssrc, payload_type=96, origin=0xFFFFFF00, vp8=True, sequence=sequence)
    return rtpsend.make_stream(native, picture_id=0x7FFF, before=BEFORE, after=AFTER, **fields)


def audio(native: Any) -> Stream:
    fields = dict(ssrc=0x2222, payload_type=111, origin=7, vp8=False, sequence=4000)
    return rtpsend.make_stream(native, picture_id=0, before=b"", after=None, **fields)


def frames() -> list[OutFrame]:
    """A keyframe in three pieces (its sequence numbers wrap past 65535, its timestamp past
    2^32), an inter frame in one piece and one whose chunks were not cut."""
    return [
        OutFrame(b"".join(PIECES), 90_000, PIECES, True),
        OutFrame(b"x" * 900, 93_000, (b"x" * 900,), False),
        OutFrame(b"y" * 20, 96_000, (), False),
    ]


def state(stream: Stream) -> tuple[int, ...]:
    return (
        stream.sequence,
        stream.picture_id,
        stream.resend_floor,
        stream.timestamp,
        stream.packets,
        stream.octets,
        stream.wire,
    )


@needs_native
def test_native_streams_number_write_and_keep_packets_as_their_python_twins() -> None:
    for make in (video, audio):
        native, twin = make(rtpsend.NATIVE), make(None)
        assert isinstance(twin, PyStream) and not isinstance(native, PyStream)
        for abs_send_time in (0x123456, 0xFFFFFF, 1 << 24 | 5):
            assert native.packets_of(frames(), abs_send_time) == twin.packets_of(
                frames(), abs_send_time
            )
            assert state(native) == state(twin)
        first = (65534 + 3) & 0xFFFF if make is video else 4003
        for sequence in (first, (first + 4) & 0xFFFF, 65535, 4000, 12345):
            assert native.packet(sequence) == twin.packet(sequence)
        assert native.packet(12345) is None


def test_the_layout_numbers_pieces_marks_the_last_and_describes_vp8() -> None:
    stream = video(None, sequence=65535)
    first, second, third, *_ = stream.packets_of(frames(), 0xABCDEF)
    assert first[:4] == bytes((0x90, 96, 0xFF, 0xFF)) and third[1] == 96 | 0x80
    assert second[2:4] == b"\x00\x00"
    assert first[4:8] == (0xFFFFFF00 + 90_000 & 0xFFFFFFFF).to_bytes(4, "big")
    assert first[8:12] == (0x1111).to_bytes(4, "big")
    assert first[12:24] == BEFORE + bytes.fromhex("abcdef") + AFTER
    assert first[24:28] == bytes((0x90, 0x80, 0x80 | 0x7F, 0xFF))  # S bit on the first piece
    assert second[24:28] == bytes((0x80, 0x80, 0x80 | 0x7F, 0xFF))
    assert (stream.picture_id, stream.resend_floor) == (2, 65535)  # 3 frames; the keyframe's
    (opus,) = audio(None).packets_of([OutFrame(b"opus", 960, (), True)], 1)
    assert (
        opus
        == bytes((0x80, 111 | 0x80, 4000 >> 8, 4000 & 0xFF))
        + (967).to_bytes(4, "big")
        + (0x2222).to_bytes(4, "big")
        + b"opus"
    )


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:  # a pass of 300 packets must fit: SO_RCVBUFFORCE where allowed (root)
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    yield sock
    sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    yield sock
    sock.close()


def routed(stream: Stream, protector: Session, out: socket.socket, to: socket.socket) -> Route:
    host, port = to.getsockname()
    context = hooks.srtp_context(protector)
    route = Route(None, protector.protect, out.sendto, host, port, context, out.fileno())
    assert stream.route(context, host, port, out.fileno()) is not isinstance(stream, PyStream)
    return route


def one_pass(native: Any) -> list[tuple[Stream, list[OutFrame]]]:
    """What one pass sends: the frames above to a classroom's video and audio streams, then a
    keyframe of 40 pieces (more than one offload send) to 7 classrooms (more than a native
    batch's 256 packet slots)."""
    keyframe = (*PIECES[:2] * 20, PIECES[2][:5])
    work = [(video(native), frames()), (audio(native), frames()[1:])]
    for n in range(7):
        stream = video(native, ssrc=0x3000 + n, sequence=100 * n)
        work.append((stream, [OutFrame(b"".join(keyframe), 3000, keyframe, True)]))
    return work


@needs_native
def test_native_and_python_paths_send_byte_identical_datagrams(
    receiver: socket.socket, sender: socket.socket
) -> None:
    total = 5 + 2 + 7 * 41
    received = []
    for native in (rtpsend.NATIVE, None):
        protector = session()  # the same keys each time: the same ciphertext
        batch = Batch(native)
        for stream, work in one_pass(native):
            batch.add(stream, routed(stream, protector, sender, receiver), True, work)
        sent = batch.send(0x123456)
        assert sent == ((total, 0, 0) if native else (0, total, 0))
        received.append([receiver.recv(2048) for _ in range(total)])
    assert received[0] == received[1]
    # and what they sent is the documented layout, under SRTP a classroom can open
    plain = [p for stream, work in one_pass(None) for p in stream.packets_of(work, 0x123456)]
    opened = session(inbound=True)
    assert [opened.unprotect(packet) for packet in received[0]] == plain


@needs_native
def test_a_native_stream_on_a_python_route_sends_the_same_packets(
    receiver: socket.socket, sender: socket.socket
) -> None:
    """Through TURN (or with the extension switched off) a native stream's packets go out in
    Python, numbered by the same stream: a classroom may move between paths at any packet."""
    native, twin = video(rtpsend.NATIVE), video(None)
    protect_native, protect_twin = session(), session()
    for stream, protector in ((native, protect_native), (twin, protect_twin)):
        route = routed(stream, protector, sender, receiver)
        for path in (rtpsend.NATIVE, None, rtpsend.NATIVE):
            batch = Batch(path)
            batch.add(stream, route, not isinstance(stream, PyStream), frames())
            batch.send(77)
    first, second = ([receiver.recv(2048) for _ in range(15)] for _ in range(2))
    assert first == second


@needs_native
def test_the_native_path_refuses_malformed_frames_and_sends_what_came_before(
    receiver: socket.socket, sender: socket.socket
) -> None:
    assert rtpsend.NATIVE is not None
    protect = hooks.srtp_protect_address()
    protector = session()
    stream = audio(rtpsend.NATIVE)
    routed(stream, protector, sender, receiver)
    good = OutFrame(b"x" * 100, 960, (), True)
    for wrong in ("not a frame", (b"x", 1, [b"x"], True), (b"x", 1, (b"x", 7), True)):
        with pytest.raises(TypeError):
            rtpsend.NATIVE.send_pass(protect, 0, [(stream, [good, wrong])])
    assert len(receiver.recv(2048)) == 12 + 100 + 10  # header, payload, SRTP tag
    too_long = OutFrame(b"x" * 4000, 1920, (b"x" * 4000,), True)
    assert rtpsend.NATIVE.send_pass(protect, 0, [(stream, [too_long])]) == (0, 1)
    with pytest.raises(TypeError):
        rtpsend.NATIVE.send_pass(protect, 0, [("not a stream", [good])])
    unrouted = audio(rtpsend.NATIVE)
    with pytest.raises(ValueError, match="no native route"):
        rtpsend.NATIVE.send_pass(protect, 0, [(unrouted, [good])])


def test_without_the_extension_rtp_goes_out_in_python() -> None:
    """A machine without a compiler installs no extension; the relay picks Python itself."""
    code = (
        "import sys; sys.modules['relay.rtc._rtpsend'] = None\n"
        "from relay.rtc import rtpsend; print(rtpsend.NATIVE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_pip_install_built_the_native_path_here() -> None:
    """This machine has gcc and the Python headers: `pip install` must have built it, so the
    suite's media tests ran the native path (the tests above hold Python to it)."""
    assert rtpsend.NATIVE is not None
    assert hooks.srtp_protect_address() != 0
