"""The batch send path: the native extension and its Python twin send the same bytes."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pylibsrtp import Policy, Session

from relay.rtc import hooks, rtpsend
from relay.rtc.rtpsend import Batch, Job, Route, plain_packets

KEY = bytes(range(30))  # SRTP master key (16) and salt (14), as DTLS would export them


def session(inbound: bool = False) -> Session:
    kind = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key=KEY, ssrc_type=kind))


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


def route(protector: Session, sender: socket.socket, address: tuple[str, int]) -> Route:
    return Route(
        pair=None,
        protect=protector.protect,
        sendto=sender.sendto,
        host=address[0],
        port=address[1],
        context=hooks.srtp_context(protector),
        fd=sender.fileno(),
    )


def header(sequence: int, timestamp: int, ssrc: int, extensions: bool, payload_type: int) -> bytes:
    return struct.pack(
        "!BBHLL", 0x90 if extensions else 0x80, payload_type, sequence, timestamp, ssrc
    )


# abs-send-time and mid in RFC 8285 one-byte form, as the relay's senders write them
EXTENSIONS = bytes.fromhex("bede0002") + bytes((0x12, 0xAB, 0xCD, 0xEF, 0x20, 0x30, 0, 0))
PIECES = (os.urandom(1296), os.urandom(1296), os.urandom(377))


Frames = list[tuple[bytes, bytes, tuple[bytes, ...], int]]


def lesson() -> Frames:
    """What one pass sends: a VP8 frame in three pieces (its sequence numbers wrap past
    65535), an Opus frame, a one-piece VP8 frame without extensions, then keyframes of 40
    pieces (more than one offload send each) for 7 classrooms (more than a native batch's
    256 packet slots)."""
    keyframe = (*PIECES[:2] * 20, os.urandom(5))
    return [
        (header(65534, 90_000, 0x1111, True, 96), EXTENSIONS, PIECES, 0x7FFF),
        (header(4000, 48_000, 0x2222, True, 111), EXTENSIONS, (os.urandom(120),), -1),
        (header(1, 93_000, 0x1111, False, 96), b"", (os.urandom(900),), 0),
    ] + [(header(100 * n, 96_000, 0x3000 + n, True, 96), EXTENSIONS, keyframe, n) for n in range(7)]


def send(batch: Batch, out: Route, frames: Frames) -> tuple[int, int, int]:
    for frame_header, extensions, chunks, picture_id in frames:
        batch.add(out, frame_header, extensions, chunks, picture_id)
    return batch.send()


def receive(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(2048) for _ in range(count)]


@pytest.mark.skipif(rtpsend.NATIVE is None, reason="the native path is not built")
def test_native_and_python_paths_send_byte_identical_packets(
    receiver: socket.socket, sender: socket.socket
) -> None:
    address = receiver.getsockname()
    frames = lesson()
    native_out, python_out = session(), session()  # same keys: same ciphertext, same index
    total = 5 + 7 * 41
    natively_sent = send(Batch(rtpsend.NATIVE), route(native_out, sender, address), frames)
    assert natively_sent == (total, 0, 0)
    natively = receive(receiver, total)
    assert send(Batch(None), route(python_out, sender, address), frames) == (0, total, 0)
    in_python = receive(receiver, total)
    assert natively == in_python
    # and what they sent is the documented layout, under SRTP a classroom can open
    jobs: list[Job] = [(0, *address, h, e, c, p) for h, e, c, p in frames]
    plain = [packet for job in jobs for packet in plain_packets(job)]
    opened = session(inbound=True)
    assert [opened.unprotect(packet) for packet in natively] == plain


def test_the_layout_numbers_pieces_marks_the_last_and_describes_vp8() -> None:
    job: Job = (0, "127.0.0.1", 9, header(65535, 7, 9, False, 96), b"", (b"a", b"b"), 0x1234)
    first, second = plain_packets(job)
    assert first[:4] == bytes((0x80, 96, 0xFF, 0xFF)) and second[:4] == bytes(
        (0x80, 96 | 0x80, 0, 0)
    )
    assert first[12:17] == bytes((0x90, 0x80, 0x80 | 0x12, 0x34)) + b"a"  # S bit on the first
    assert second[12:17] == bytes((0x80, 0x80, 0x80 | 0x12, 0x34)) + b"b"
    audio: Job = (0, "127.0.0.1", 9, header(5, 7, 9, True, 111), EXTENSIONS, (b"opus",), -1)
    (only,) = plain_packets(audio)
    assert only == bytes((0x90, 111 | 0x80, 0, 5)) + only[4:12] + EXTENSIONS + b"opus"


@pytest.mark.skipif(rtpsend.NATIVE is None, reason="the native path is not built")
def test_the_native_path_refuses_malformed_jobs_and_sends_what_came_before(
    receiver: socket.socket, sender: socket.socket
) -> None:
    assert rtpsend.NATIVE is not None
    host, port = receiver.getsockname()
    protect = hooks.srtp_protect_address()
    context = hooks.srtp_context(out := session())
    good = (context, host, port, header(1, 1, 1, False, 96), b"", (b"x" * 100,), -1)
    bad_header = (context, host, port, b"short", b"", (b"x",), -1)
    with pytest.raises(ValueError):
        rtpsend.NATIVE.send(sender.fileno(), protect, [good, bad_header])
    assert len(receive(receiver, 1)[0]) == 12 + 100 + 10  # header, payload, auth tag
    for wrong in (
        (context, "not an address", port, header(2, 1, 1, False, 96), b"", (b"x",), -1),
        (context, host, port, header(3, 1, 1, False, 96), b"", [b"x"], -1),
        (context, host, port, header(4, 1, 1, False, 96), b"", (b"x" * 4000,), -1),
        "not a job",
    ):
        try:
            sent, failed = rtpsend.NATIVE.send(sender.fileno(), protect, [wrong])
        except (TypeError, ValueError):
            continue
        assert (sent, failed) == (0, 1)  # too long for a datagram: counted, not sent
    del out  # alive until here: the jobs point at its SRTP context


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
    suite's media tests ran the native path (the byte-identity test holds Python to it)."""
    assert rtpsend.NATIVE is not None
    assert hooks.srtp_protect_address() != 0
