"""A light classroom: it joins as any peer does (ICE, DTLS) but never decrypts its media.

SRTP encrypts only the payload: the RTP header (RFC 3550 §5.1) and its extensions stay in
clear (RFC 3711 §3.1). So the payload type tells video from audio, the sequence number tells
loss, and the marker bit ends a video frame (RFC 7741 §4.1 for VP8). A light classroom counts
those and skips everything a real receiver does per packet: SRTP, parsing, jitter buffer,
NACK and REMB; after its first RTP packet the worker's Poller reads its sockets in batches.
A light classroom costs an eighth of a full one, so the server stays the limit.

What it cannot tell: latency (the clip's stamp is inside the encrypted payload) and whether a
frame would decode. It sends a receiver report per stream every second or so (RFC 3550 §6.2),
as aiortc's receiver does, so the relay keeps hearing from it; it sends no NACK, PLI or REMB.

`_attach` is the one place that reaches into aiortc/aioice private state; `check_internals`
verifies that state is still there and fails loudly when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aioice
import aioice.ice
import aiortc
from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from relay.bench.poller import Handler, Poller

# first byte, marker + payload type, sequence number, timestamp, SSRC (RFC 3550 §5.1)
_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")  # profile, length in 32-bit words (RFC 3550 §5.3.1)
# Codecs that carry no media of their own: retransmissions, redundancy and FEC.
_NOT_MEDIA = frozenset({"rtx", "red", "ulpfec", "flexfec-03"})
# Seconds between receiver reports, varied over [0.5, 1.5] x this as aiortc's receiver does.
REPORT_INTERVAL = 1.0
SUPPORTED_AIORTC = ("1.16.",)
SUPPORTED_AIOICE = ("0.13.",)


class InternalsChanged(RuntimeError):
    """aiortc or aioice no longer has the private state the light classroom hooks into."""


def payload_kinds(sdp: str) -> dict[int, str]:
    """Payload type → "audio" or "video" for the media codecs of a session description."""
    kinds: dict[int, str] = {}
    kind = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=rtpmap:") and kind in ("audio", "video"):
            number, _, encoding = line[9:].partition(" ")
            if encoding.split("/", 1)[0].lower() not in _NOT_MEDIA:
                kinds[int(number)] = kind
    return kinds


def is_rtp(data: bytes) -> bool:
    """RTP, as opposed to STUN, DTLS or RTCP, by the first two bytes (RFC 7983 §7, RFC 5761 §4)."""
    return len(data) >= _HEADER.size and 127 < data[0] < 192 and not 191 < data[1] < 209


def payload_size(data: bytes) -> int:
    """Bytes after the RTP header and its extensions; 0 for a padded (probe) packet, whose
    padding length is encrypted. For SRTP this includes the authentication tag."""
    first = data[0]
    if first & 0x20:
        return 0
    size = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10 and len(data) >= size + _EXTENSION.size:
        size += _EXTENSION.size + 4 * _EXTENSION.unpack_from(data, size)[1]
    return max(len(data) - size, 0)


class StreamTally:
    """One SSRC's packets: loss from sequence numbers, video frames from marker bits.

    A frame is whole when no sequence number is missing between its first packet and its
    marker; a frame whose marker never came, or with a gap inside, is damaged (no NACK repairs
    it). A gap at a frame boundary is the previous frame's if its marker is missing, else the
    new frame's.
    """

    __slots__ = (
        "_ended",
        "_reported",
        "_timestamp",
        "_whole",
        "damaged",
        "first",
        "frames",
        "highest",
        "received",
    )

    def __init__(self) -> None:
        self.received = 0
        self.first = 0  # extended sequence number of the first packet
        self.highest = -1  # extended highest sequence number: cycles x 65536 + last
        self.frames = 0  # whole frames
        self.damaged = 0
        self._timestamp = -1
        self._whole = True
        self._ended = True
        self._reported = (0, 0)  # (expected, received) at the last receiver report

    def add(self, sequence: int, timestamp: int, marker: bool) -> bool:
        """Count one packet; True when it completes a whole frame."""
        self.received += 1
        if self.highest < 0:
            self.first = self.highest = sequence
            self._timestamp, self._whole, self._ended = timestamp, True, False
        else:
            step = (sequence - self.highest) & 0xFFFF
            if step == 0 or step >= 0x8000:
                return False  # a duplicate or a late packet: its frame was counted already
            self.highest += step
            if timestamp != self._timestamp:
                if not self._ended:
                    self.damaged += 1
                self._whole = step == 1 or not self._ended
                self._timestamp, self._ended = timestamp, False
            elif step > 1:
                self._whole = False
        if not marker or self._ended:
            return False
        self._ended = True
        if not self._whole:
            self.damaged += 1
            return False
        self.frames += 1
        return True

    @property
    def lost(self) -> int:
        """Packets expected but not received (RFC 3550 §6.4.1 cumulative number lost)."""
        return max(self.highest - self.first + 1 - self.received, 0)

    def report(self, ssrc: int) -> RtcpReceiverInfo:
        """The RR block for this stream; the fraction lost covers the time since the last one."""
        expected = self.highest - self.first + 1
        interval = expected - self._reported[0]
        lost_interval = interval - (self.received - self._reported[1])
        self._reported = (expected, self.received)
        fraction = (lost_interval << 8) // interval if interval > 0 and lost_interval > 0 else 0
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=self.lost,
            highest_sequence=self.highest & 0xFFFFFFFF,
            jitter=0,
            lsr=0,
            dlsr=0,
        )


class HeaderCounters:
    """What one light classroom received, with the keys of the full classroom's snapshot."""

    def __init__(self) -> None:
        self.joined_ns = 0
        self.answered_ns = 0  # signalling done: the server's answer applied
        self.first_ns = 0  # first whole video frame
        self.video_bytes = 0
        self.audio = 0
        self.kinds: dict[int, str] = {}  # payload type → kind, from the negotiated SDP
        self.streams: dict[str, dict[int, StreamTally]] = {"audio": {}, "video": {}}  # by SSRC

    def rtp(self, data: bytes) -> None:
        """Count one SRTP packet from its clear header."""
        _, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        kind = self.kinds.get(second & 0x7F)
        if kind is None:
            return
        streams = self.streams[kind]
        tally = streams.get(ssrc)
        if tally is None:
            tally = streams[ssrc] = StreamTally()
        whole = tally.add(sequence, timestamp, second > 127)
        if kind == "audio":
            self.audio += 1
            return
        self.video_bytes += payload_size(data)
        if whole and not self.first_ns:
            self.first_ns = time.monotonic_ns()

    def snapshot(self) -> dict[str, Any]:
        """Counters so far; "lost" counts damaged video frames, and there is no latency."""
        video = self.streams["video"].values()
        return {
            "join_s": (self.first_ns - self.joined_ns) / 1e9 if self.first_ns else None,
            "signalling_s": (self.answered_ns - self.joined_ns) / 1e9 if self.answered_ns else None,
            "frames": sum(t.frames for t in video),
            "video_bytes": self.video_bytes,
            "lost": sum(t.damaged for t in video),
            "packets_lost": sum(t.lost for t in video),
            "audio": self.audio,
            "latencies_ns": [],
        }


SendRtcp = Callable[[Any], Awaitable[None]]


def check_internals() -> None:
    """Fail loudly if aiortc/aioice changed under `_attach`."""
    versions = (aiortc.__version__, aioice.__version__)
    if not (versions[0].startswith(SUPPORTED_AIORTC) and versions[1].startswith(SUPPORTED_AIOICE)):
        raise InternalsChanged(
            f"relay/bench/light.py is verified on aiortc {SUPPORTED_AIORTC} and aioice "
            f"{SUPPORTED_AIOICE}, found {versions[0]} and {versions[1]}"
        )
    if "data_received" not in aioice.ice.StunProtocol.datagram_received.__code__.co_names:
        raise InternalsChanged("aioice's StunProtocol no longer hands data to data_received")
    if "_connection" not in aiortc.RTCIceTransport.__init__.__code__.co_names:
        raise InternalsChanged("aiortc's RTCIceTransport no longer holds _connection")
    if "_protocols" not in aioice.Connection.__init__.__code__.co_names:
        raise InternalsChanged("aioice's Connection no longer lists its sockets in _protocols")
    if "transport" not in aioice.ice.StunProtocol.connection_made.__code__.co_names:
        raise InternalsChanged("aioice's StunProtocol no longer keeps its transport")
    if not callable(getattr(RTCRtpReceiver, "_send_rtcp", None)):
        raise InternalsChanged("aiortc's RTCRtpReceiver lost _send_rtcp")


Take = Callable[[socket.socket, Handler], None]
"""Reads a socket from now on (and closes it in the end), each datagram to the handler."""


def _attach(pc: RTCPeerConnection, on_rtp: Callable[[bytes], None], take: Take) -> SendRtcp:
    """Route every RTP datagram of `pc` to `on_rtp` before aiortc sees it; returns a way to
    send RTCP. The only access to private state of aiortc 1.16 / aioice 0.13:

    - `RTCIceTransport._connection`: the aioice Connection of the (bundled) transport;
    - `Connection.data_received(data, component)`: where aioice's socket protocols hand every
      non-STUN datagram; replaced on the instance, it keeps DTLS and RTCP on aiortc's path;
    - `Connection._protocols`: its socket protocols, there once it has gathered; at the first
      RTP packet `_take_over` hands their sockets to `take`;
    - `RTCRtpReceiver._send_rtcp(packet)`: SRTCP-protects and sends one RTCP packet.
    """
    check_internals()
    connections = {t.receiver.transport.transport._connection for t in pc.getTransceivers()}
    if not connections or not all(isinstance(c, aioice.Connection) for c in connections):
        raise InternalsChanged("aiortc's ICE transport no longer holds an aioice Connection")
    for connection in connections:
        original = connection.data_received
        pending = [connection]  # until its first RTP packet

        def received(
            data: bytes, component: int, original: Any = original, pending: Any = pending
        ) -> None:
            if not is_rtp(data):
                original(data, component)
                return
            on_rtp(data)
            while pending:
                for protocol in pending.pop()._protocols:
                    _take_over(protocol, on_rtp, take)

        connection.data_received = received  # type: ignore[method-assign]
    send: SendRtcp = pc.getTransceivers()[0].receiver._send_rtcp
    return send


def _take_over(protocol: Any, on_rtp: Callable[[bytes], None], take: Take) -> None:
    """Have `take` read the socket of one of aioice's protocols instead of asyncio (public
    asyncio API: the transport's socket, pause_reading): RTP to `on_rtp`, the rest to the
    protocol as before. A TURN allocation has no socket of its own and stays as it is."""
    transport = protocol.transport
    shared = transport.get_extra_info("socket") if transport is not None else None
    if shared is None or not hasattr(transport, "pause_reading"):
        return
    original = protocol.datagram_received

    def received(data: bytes, addr: Any) -> None:
        if is_rtp(data):
            on_rtp(data)
        else:
            original(data, addr)

    take(shared.dup(), received)
    transport.pause_reading()


class LightReceiver:
    """Counts one peer connection's media from RTP headers and reports to the sender."""

    def __init__(self, poller: Poller) -> None:
        self.counters = HeaderCounters()
        self._poller = poller
        self._pc: RTCPeerConnection | None = None
        self._reports: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []  # the poller reads these for us

    def prepare(self, pc: RTCPeerConnection) -> None:
        """Hook the connection; call it before media can flow (after its transceivers exist)."""
        self._pc = pc
        send = _attach(pc, self._rtp, self._take)
        self._reports = asyncio.get_running_loop().create_task(self._report(send))

    def _take(self, own: socket.socket, handler: Handler) -> None:
        self._sockets.append(own)
        self._poller.add(own, handler)

    def _rtp(self, data: bytes) -> None:
        if not self.counters.kinds:
            self._learn_kinds()
        self.counters.rtp(data)

    def _learn_kinds(self) -> None:
        """The payload types of the negotiated codecs: the server sends what both sides listed."""
        description = self._pc.remoteDescription if self._pc is not None else None
        if description is not None:
            self.counters.kinds = payload_kinds(description.sdp)

    async def _report(self, send: SendRtcp) -> None:
        """A receiver report per stream, every REPORT_INTERVAL or so (RFC 3550 §6.2)."""
        ssrc = secrets.randbits(32)
        while True:
            await asyncio.sleep(REPORT_INTERVAL * (0.5 + random.random()))
            streams = self.counters.streams.values()
            reports = [t.report(s) for kind in streams for s, t in kind.items()][:31]
            if reports:
                with contextlib.suppress(ConnectionError):
                    await send(RtcpRrPacket(ssrc=ssrc, reports=reports))

    async def close(self) -> None:
        """Stop the reports and the reading of this connection's sockets."""
        if self._reports is not None:
            self._reports.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reports
            self._reports = None
        for own in self._sockets:
            self._poller.remove(own)
        self._sockets = []
