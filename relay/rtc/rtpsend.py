"""The batch send path: every RTP packet of one fan-out pass, SRTP-protected and sent at once.

A fan-out pass (relay/rtc/sender.py `SendPass`) hands each classroom's frames here as *jobs*:
one job is every piece of one frame for one classroom. `Batch.send` then sends them all:

- natively (relay/rtc/_rtpsend.c), for classrooms reached on the process's one media socket:
  the packets are written, protected and handed to the kernel with sendmmsg(2), 64 a
  syscall, with no Python object made per packet;
- in Python, packet by packet, where the extension is not built, or for a classroom whose
  ICE pair is not on the media socket (through TURN, or `udp_mux = false`).

Both write the same bytes (`plain_packet` is the layout, tests/rtc/test_rtpsend.py holds them
to it) and protect them with the classroom's one libsrtp context, the one aiortc keyed from
the DTLS handshake, so a classroom can move from one path to the other at any packet.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import pylibsrtp

from relay.rtc import hooks

logger = logging.getLogger(__name__)

# (srtp context, host, port, first packet's RTP header, extensions, payload pieces, VP8
# PictureID or -1): the tuple the native path parses; see relay/rtc/_rtpsend.c
Job = tuple[int, str, int, bytes, bytes, tuple[bytes, ...], int]


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
    """Packet `index` of a job before SRTP: the job's header with its sequence number moved
    on by `index` (and the marker bit on the last piece), the extensions, the RFC 7741 §4.2
    VP8 descriptor (X=1, S on the first piece, 15-bit PictureID) unless `picture_id` is -1,
    and the piece."""
    sequence = (header[2] << 8 | header[3]) + index & 0xFFFF
    second = header[1] | 0x80 if index == len(chunks) - 1 else header[1]
    fixed = bytes((header[0], second, sequence >> 8, sequence & 0xFF)) + header[4:12]
    if picture_id < 0:
        return fixed + extensions + chunks[index]
    descriptor = bytes(
        (0x90 if index == 0 else 0x80, 0x80, 0x80 | picture_id >> 8 & 0x7F, picture_id & 0xFF)
    )
    return fixed + extensions + descriptor + chunks[index]


def plain_packets(job: Job) -> Iterator[bytes]:
    """Every packet of a job, before SRTP, in order."""
    _, _, _, header, extensions, chunks, picture_id = job
    for index in range(len(chunks)):
        yield plain_packet(header, extensions, chunks, picture_id, index)


@dataclass(frozen=True, slots=True)
class Route:
    """How one classroom's packets leave: its SRTP context and nominated ICE pair."""

    pair: object  # the aioice pair it was made for
    protect: Callable[[bytes], bytes]
    sendto: Callable[[bytes, tuple[str, int]], object]
    host: str
    port: int
    context: int  # the srtp_t address for the native path; 0 where unknown
    fd: int  # the media socket's descriptor when the pair is on it, else -1


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
    """Jobs collected during one pass, sent together by `send`."""

    __slots__ = ("_native", "_python", "native")

    def __init__(self, native: ModuleType | None) -> None:
        """`native`: the extension to send with (`NATIVE`), or None for Python only."""
        self.native = native
        self._native: dict[int, list[Job]] = {}
        self._python: list[tuple[Route, Job]] = []

    def add(
        self,
        route: Route,
        header: bytes,
        extensions: bytes,
        chunks: tuple[bytes, ...],
        picture_id: int,
    ) -> None:
        """One frame for one classroom: its header (that of the first piece), extensions,
        pieces and VP8 PictureID (-1: none)."""
        job = (route.context, route.host, route.port, header, extensions, chunks, picture_id)
        if self.native is not None and route.fd >= 0 and route.context:
            self._native.setdefault(route.fd, []).append(job)
        else:
            self._python.append((route, job))

    def send(self) -> tuple[int, int, int]:
        """Send everything collected; returns datagrams (sent natively, sent in Python,
        failed). Failures are a full socket buffer (the rest of a native batch is dropped,
        NACKs recover what matters) or a peer gone meanwhile; they never raise."""
        native = sent = failed = 0
        if self.native is not None:
            protect = hooks.srtp_protect_address()
            for fd, jobs in self._native.items():
                done, refused = self.native.send(fd, protect, jobs)
                native, failed = native + done, failed + refused
        for route, job in self._python:
            address = (route.host, route.port)
            for packet in plain_packets(job):
                try:
                    route.sendto(route.protect(packet), address)
                    sent += 1
                except (OSError, pylibsrtp.Error):  # a closed transport, an SRTP refusal
                    failed += 1
        self._native, self._python = {}, []
        return native, sent, failed
