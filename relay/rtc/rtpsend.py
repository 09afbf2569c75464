"""The batch send path: every RTP packet of one fan-out pass, SRTP-protected and sent at once.

Each classroom's down track has a *stream* (its RTP numbering, NACK history and route). A
fan-out pass (relay/rtc/sender.py `SendPass`) hands each stream the frames queued for it, and
`Batch.send` then sends them all:

- natively (relay/rtc/_rtpsend.c `Stream` and `send_pass`), for streams routed on a UDP
  socket of the process: per frame and classroom no Python object is made; the packets are
  written, protected and handed to the kernel with sendmmsg(2), one frame's pieces for one
  classroom as one UDP segmentation offload send;
- in Python, packet by packet, where the extension is not built (`PyStream`, its twin), or
  for a stream whose ICE pair is not a plain socket of ours (through TURN).

Both write the same bytes (`plain_packet` is the layout; tests/rtc/test_rtpsend.py holds both
to it) and protect them with the classroom's one libsrtp context, the one aiortc keyed from
the DTLS handshake, so a stream can move from one path to the other at any packet.
"""

from __future__ import annotations

import importlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import pylibsrtp

from relay.core.codecs import VP8_DESCRIPTOR_SIZE, vp8_descriptor
from relay.core.forwarder import OutFrame
from relay.rtc import hooks

logger = logging.getLogger(__name__)

HISTORY_SIZE = 128  # packets kept for retransmission, as aiortc's sender keeps
# Bytes each packet adds on the wire beyond the RTP packet: IPv4 + UDP headers (28) and the
# SRTP authentication tag (10, RFC 3711 §5.2 with HMAC-SHA1-80); links are shaped on these.
WIRE_OVERHEAD = 38
RTP_HEADER = struct.Struct("!BBHLL")  # RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, seq, ts, SSRC


def _load_native() -> ModuleType | None:
    """The compiled extension with the SRTP function it calls, or None to send in Python."""
    if hooks.srtp_protect_address() == 0:
        logger.info("pylibsrtp's srtp_protect is not reachable: sending RTP in Python")
        return None
    try:
        return importlib.import_module("relay.rtc._rtpsend")
    except ImportError:
        logger.info("relay.rtc._rtpsend is not built: sending RTP in Python")
        return None


NATIVE = _load_native()


def plain_packet(
    header: bytes, extensions: bytes, chunks: tuple[bytes, ...], picture_id: int, index: int
) -> bytes:
    """Packet `index` of a frame before SRTP: the frame's header with its sequence number
    moved on by `index` (and the marker bit on the last piece), the extensions, the RFC 7741
    §4.2 VP8 descriptor (X=1, S on the first piece, 15-bit PictureID) unless `picture_id` is
    -1, and the piece."""
    sequence = (header[2] << 8 | header[3]) + index & 0xFFFF
    second = header[1] | 0x80 if index == len(chunks) - 1 else header[1]
    fixed = bytes((header[0], second, sequence >> 8, sequence & 0xFF)) + header[4:12]
    if picture_id < 0:
        return fixed + extensions + chunks[index]
    return fixed + extensions + vp8_descriptor(index == 0, picture_id) + chunks[index]


class Stream(Protocol):
    """One classroom's RTP stream of one track, native or `PyStream`: its numbering (next
    sequence number and VP8 PictureID, first packet of the last keyframe or -1, timestamp of
    the last frame) and what it sent (media packets, payload octets, bytes on the wire)."""

    sequence: int
    picture_id: int
    resend_floor: int
    timestamp: int
    packets: int
    octets: int
    wire: int

    def packets_of(self, frames: list[OutFrame], abs_send_time: int) -> list[bytes]: ...
    def packet(self, sequence: int) -> bytes | None: ...
    def route(self, context: int, host: str, port: int, fd: int) -> bool: ...


class PyStream:
    """The Python twin of relay/rtc/_rtpsend.c `Stream`: the same numbering, history and
    bytes, for machines where the extension is not built."""

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        origin: int,
        vp8: bool,
        sequence: int,
        picture_id: int,
        before: bytes,
        after: bytes | None,
    ) -> None:
        self._ssrc = ssrc
        self._payload_type = payload_type
        self._origin = origin
        self._vp8 = vp8
        self.sequence = sequence & 0xFFFF
        self.picture_id = picture_id & 0x7FFF
        self.resend_floor = -1
        self.timestamp = 0
        self.packets = self.octets = self.wire = 0
        self._before, self._after = before, after
        # sequence number -> (frame header, abs-send-time, pieces, PictureID, piece index)
        self._history: list[tuple[bytes, int, tuple[bytes, ...], int, int] | None]
        self._history = [None] * HISTORY_SIZE

    def _extensions(self, abs_send_time: int) -> bytes:
        if self._after is None:
            return self._before
        return self._before + abs_send_time.to_bytes(3, "big") + self._after

    def packets_of(self, frames: list[OutFrame], abs_send_time: int) -> list[bytes]:
        """The frames as plain RTP packets, numbered on from the stream's state."""
        abs_send_time &= 0xFFFFFF
        extensions = self._extensions(abs_send_time)
        out = []
        for frame in frames:
            chunks = frame.chunks or (frame.data,)
            count = len(chunks)
            sequence, timestamp = self.sequence, (self._origin + frame.timestamp) & 0xFFFFFFFF
            picture_id = self.picture_id if self._vp8 else -1
            if self._vp8:
                if frame.keyframe:
                    self.resend_floor = sequence  # what came before it is no longer needed
                self.picture_id = (self.picture_id + 1) & 0x7FFF
            self.sequence, self.timestamp = (sequence + count) & 0xFFFF, timestamp
            first_byte = 0x90 if extensions else 0x80
            fields = (self._payload_type, sequence, timestamp, self._ssrc)
            header = RTP_HEADER.pack(first_byte, *fields)
            for index in range(count):
                out.append(plain_packet(header, extensions, chunks, picture_id, index))
                entry = (header, abs_send_time, chunks, picture_id, index)
                self._history[(sequence + index) % HISTORY_SIZE] = entry
            octets = len(frame.data) + VP8_DESCRIPTOR_SIZE * count * (picture_id >= 0)
            self.packets += count
            self.octets += octets
            self.wire += octets + count * (RTP_HEADER.size + len(extensions) + WIRE_OVERHEAD)
        return out

    def packet(self, sequence: int) -> bytes | None:
        """The plain packet last sent with this sequence number, if still kept."""
        entry = self._history[sequence % HISTORY_SIZE]
        if entry is None:
            return None
        header, abs_send_time, chunks, picture_id, index = entry
        if (header[2] << 8 | header[3]) + index & 0xFFFF != sequence & 0xFFFF:
            return None
        return plain_packet(header, self._extensions(abs_send_time), chunks, picture_id, index)

    def route(self, context: int, host: str, port: int, fd: int) -> bool:
        """The Python twin sends through the route's Python callables only."""
        return False


def make_stream(native: ModuleType | None, **fields: Any) -> Stream:
    """A stream on the native path when it is built, else its Python twin."""
    if native is None:
        return PyStream(**fields)
    stream: Stream = native.Stream(**fields)
    return stream


@dataclass(frozen=True, slots=True)
class Route:
    """How one classroom's packets leave: its SRTP context and nominated ICE pair."""

    pair: object  # the aioice pair it was made for
    protect: Callable[[bytes], bytes]
    sendto: Callable[[bytes, tuple[str, int]], object]
    host: str
    port: int
    context: int  # the srtp_t address for the native path; 0 where unknown
    fd: int  # the socket's descriptor when the pair is a plain UDP socket of ours, else -1


def route_of(transport: object, known: Route | None = None) -> Route | None:
    """The route of a classroom's DTLS transport, None while it is not connected; `known`
    is returned again while it still holds (the same pair is nominated)."""
    pair = hooks.nominated_pair(transport)
    if pair is None:
        return None
    if known is not None and known.pair is pair:
        return known
    protect, sendto, (host, port), context, fd = hooks.srtp_route(transport, pair)
    return Route(pair, protect, sendto, host, port, context, fd)


class Batch:
    """The frames of one pass, per stream, sent together by `send`."""

    __slots__ = ("_native", "_python", "native")

    def __init__(self, native: ModuleType | None) -> None:
        """`native`: the extension to send with (`NATIVE`), or None for Python only."""
        self.native = native
        self._native: list[tuple[Stream, list[OutFrame]]] = []
        self._python: list[tuple[Stream, Route, list[OutFrame]]] = []

    def add(self, stream: Stream, route: Route, native: bool, frames: list[OutFrame]) -> None:
        """A stream's frames; `native`: its route is set on a native stream (`Stream.route`)."""
        if native and self.native is not None and not isinstance(stream, PyStream):
            self._native.append((stream, frames))
        else:
            self._python.append((stream, route, frames))

    def send(self, abs_send_time: int) -> tuple[int, int, int]:
        """Send everything collected; returns datagrams (sent natively, sent in Python,
        failed). Failures are a full socket buffer (the rest of a native batch is dropped,
        NACKs recover what matters) or a peer gone meanwhile; they never raise."""
        native = sent = failed = 0
        if self.native is not None and self._native:
            protect = hooks.srtp_protect_address()
            native, failed = self.native.send_pass(protect, abs_send_time & 0xFFFFFF, self._native)
        for stream, route, frames in self._python:
            address = (route.host, route.port)
            for packet in stream.packets_of(frames, abs_send_time):
                try:
                    route.sendto(route.protect(packet), address)
                    sent += 1
                except (OSError, pylibsrtp.Error):  # a closed transport, an SRTP refusal
                    failed += 1
        self._native, self._python = [], []
        return native, sent, failed
