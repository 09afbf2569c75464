"""Every hook Ketang has into aiortc's private state, in one place, pinned to aiortc 1.16.

aiortc decodes everything it receives and ignores keyframe requests for pre-encoded media. A
forwarding relay needs these things aiortc has no public API for:

1. complete, depayloaded frames taken *before* the decoder (`tap_frames`): we replace `put` on
   the receiver's decoder queue; the jitter buffer, NACK, RR and REMB keep working;
2. keyframe requests (PLI/FIR) a classroom sends to one of our senders (`on_keyframe_request`):
   aiortc's sender just sets a flag its encoder would read, so we take the call instead;
3. a PLI sent upstream on demand (`request_keyframe`), a NACK repeated for packets still
   missing (`send_nack`), and the receiver's timestamp mapping for frames our jitter buffer
   releases beyond the one per packet aiortc takes (`map_timestamp`);
4. our own packet loop in place of the sender's (`install_packet_loop`): aiortc's loop builds,
   extends and serializes an RtpPacket object per packet per classroom; ours does per frame
   (or once per upstream frame) all it can, and keeps the sender's NACK history, RTCP sender
   reports and stop() working through `SenderInternals`;
5. a synchronous path from RTP bytes to the socket (`srtp_route`): the classroom's SRTP
   context and nominated ICE pair, and pylibsrtp's `srtp_protect` for the native batch send
   path (relay/rtc/rtpsend.py);
6. every RTCP packet a classroom sends to one of our senders (`on_rtcp`): REMB, receiver
   reports and NACKs are the inputs of the relay's bandwidth estimate;
7. host candidates on the process's one media socket (`share_host_sockets`): aioice binds a
   socket per connection and interface, on a random port (relay/rtc/udpmux.py);
8. cheaper joins (`use_process_certificate`, `defer_bitrate_estimators`): aiortc makes a DTLS
   certificate and an OpenSSL context per connection, and a 0.7 ms bandwidth estimator per
   video receiver, even for a classroom's send-only transceivers that never receive video.

`check_aiortc()` runs at start-up and in tests/rtc/test_hooks.py: if aiortc changes under these
hooks, it fails loudly instead of letting media silently stop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import time
from collections.abc import Awaitable, Callable
from types import CodeType
from typing import Any

import aioice
import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
from aiortc import RTCCertificate, clock
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, RtpPacket

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = ("1.16.",)

# name-mangled private attributes we rely on (aiortc 1.16.0, rtcrtpreceiver.py, rtcrtpsender.py)
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_TIMESTAMP_MAPPER = "_RTCRtpReceiver__timestamp_mapper"
_SENDER_FIELDS = (
    "_RTCRtpSender__rtp_started",
    "_RTCRtpSender__rtp_exited",
    "_RTCRtpSender__mid",
    "_RTCRtpSender__rtp_header_extensions_map",
    "_RTCRtpSender__rtx_payload_type",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__rtt",
    "_RTCRtpSender__lsr",
    "_RTCRtpSender__lsr_time",
)

_CERTIFICATES = "_RTCPeerConnection__certificates"
# aiortc 1.16.0 jitterbuffer.py: the ring our jitter buffer reads
_JITTER_RING = ("_packets", "_origin", "_capacity", "_is_video")

FrameSink = Callable[[Any, Any], None]
"""Receives (RTCRtpCodecParameters, JitterFrame) for every complete frame, on the event loop."""


class AiortcChanged(RuntimeError):
    """aiortc no longer has the private state these hooks need."""


def check_aiortc() -> None:
    """Fail loudly if the installed aiortc is not the version these hooks were verified on."""
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        raise AiortcChanged(
            f"relay/rtc/hooks.py is verified on aiortc {SUPPORTED_AIORTC}, "
            f"found {aiortc.__version__}"
        )
    _require(
        RTCRtpReceiver.__init__,
        (_DECODER_QUEUE, _RTX_SSRC, _JITTER_BUFFER, _TIMESTAMP_MAPPER),
        "RTCRtpReceiver state",
    )
    for method in ("_send_rtcp_pli", "_send_rtcp_nack", "getSynchronizationSources"):
        if not hasattr(RTCRtpReceiver, method):
            raise AiortcChanged(f"aiortc RTCRtpReceiver lost {method}")
    _require(RTCRtpSender._handle_rtcp_packet, ("_send_keyframe", "_retransmit"), "RTCP handling")
    _require(RTCRtpSender.send, ("_run_rtp",), "RTCRtpSender.send")
    _require(RTCRtpSender.__init__, _SENDER_FIELDS, "RTCRtpSender state")
    _require(RTCDtlsTransport._send_rtp, ("_tx_srtp", "_state", "transport", "_send"), "SRTP send")
    _require(aioice.Connection.sendto, ("_nominated", "protocol", "remote_addr"), "ICE send")
    _require(RTCDtlsTransport._handle_rtcp_data, ("_handle_rtcp_packet",), "RTCP routing")
    _require(aioice.ice.StunProtocol.send_data, ("transport", "sendto"), "ICE send")
    _require(RTCRtpSender.__init__, ("_ssrc", "_rtx_ssrc"), "RTCRtpSender SSRCs")
    _require(JitterBuffer.__init__, _JITTER_RING, "JitterBuffer ring")
    _require(aioice.Connection.__init__, ("_protocols",), "ICE sockets")
    _require(aiortc.RTCIceTransport.__init__, ("_connection",), "ICE connection")
    _require(RTCRtpReceiver._handle_rtp_packet, ("_data",), "depayloaded RTP payload")
    _require(aioice.Connection.gather_candidates, ("get_component_candidates",), "gathering")
    _require(aioice.Connection.get_component_candidates, ("_protocols",), "host sockets")
    _require(  # relay/rtc/udpmux.py MuxProtocol hands non-STUN datagrams on as aioice does
        aioice.ice.StunProtocol.datagram_received,
        ("receiver", "data_received", "local_candidate", "component"),
        "non-STUN datagrams",
    )
    _require(
        aioice.Connection.gather_candidates,
        ("_local_candidates_start", "_local_candidates", "_local_candidates_end", "_components"),
        "gathering",
    )
    _require(aiortc.RTCPeerConnection.__init__, (_CERTIFICATES,), "certificates")
    _require(RTCDtlsTransport.start, ("_create_ssl_context",), "DTLS context")
    _require(RTCRtpReceiver.__init__, ("RemoteBitrateEstimator",), "bandwidth estimator")
    _require(RTCRtpReceiver._handle_rtp_packet, ("add",), "bandwidth estimator")
    if not hasattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator"):
        raise AiortcChanged("aiortc.rtcrtpreceiver no longer imports RemoteBitrateEstimator")


def _require(function: Callable[..., Any], names: tuple[str, ...], what: str) -> None:
    """Every name must still be used by the aiortc function our hooks stand in for."""
    used = _names(function.__code__)
    missing = [name for name in names if name not in used]
    if missing:
        raise AiortcChanged(f"aiortc {what} no longer uses {', '.join(missing)}")


def _names(code: CodeType) -> set[str]:
    """Names a function's code uses, its comprehensions and inner functions included."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            names |= _names(constant)
    return names


class _TapQueue:
    """Stands in for the decoder queue's `put`: frames go to the sink, never to the decoder."""

    __slots__ = ("_put", "_sink")

    def __init__(self, original: queue.Queue[Any], sink: FrameSink) -> None:
        self._put = original.put
        self._sink = sink

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> None:
        if item is None:  # shutdown sentinel: let the idle decoder thread exit
            self._put(item, *args, **kwargs)
            return
        codec, frame = item
        self._sink(codec, frame)


def tap_frames(receiver: RTCRtpReceiver, sink: FrameSink) -> None:
    """Route the receiver's complete encoded frames to `sink` instead of its decoder thread."""
    decoder_queue: queue.Queue[Any] = getattr(receiver, _DECODER_QUEUE)
    setattr(decoder_queue, "put", _TapQueue(decoder_queue, sink))


def release_frames_early(receiver: RTCRtpReceiver, buffer: Any) -> None:
    """Give the receiver a jitter buffer of ours (same capacity) for lower ingest latency."""
    setattr(receiver, _JITTER_BUFFER, buffer)


def jitter_buffer_of(receiver: RTCRtpReceiver) -> Any:
    """The receiver's current jitter buffer (to copy its capacity and kind)."""
    return getattr(receiver, _JITTER_BUFFER)


class JitterRing(JitterBuffer):
    """aiortc's JitterBuffer with its private ring readable by name, for a subclass that
    releases frames by rules of its own (relay/rtc/jitter.py)."""

    @property
    def ring(self) -> list[RtpPacket | None]:
        """Packets by sequence number modulo the capacity; None where one is missing."""
        ring: list[RtpPacket | None] = self._packets
        return ring

    @property
    def origin(self) -> int | None:
        """Sequence number of the oldest packet not yet released."""
        origin: int | None = self._origin
        return origin

    @property
    def ring_size(self) -> int:
        return int(self._capacity)

    @property
    def video(self) -> bool:
        return bool(self._is_video)


# A process's DTLS certificate is made anew after this many seconds (aiortc's are valid for
# 30 days; browsers check only the fingerprint, which each answer carries).
CERTIFICATE_SECONDS = 24 * 3600
_certificate: tuple[float, RTCCertificate] | None = None


def _process_certificate() -> RTCCertificate:
    """One certificate for every connection of the process, as Janus and mediasoup keep, with
    its OpenSSL context made once: 0.8 ms less CPU per join, which adds up when fifty
    classrooms join at once."""
    global _certificate
    now = time.monotonic()
    if _certificate is None or now - _certificate[0] > CERTIFICATE_SECONDS:
        certificate = RTCCertificate.generateCertificate()
        make_context = certificate._create_ssl_context
        contexts: dict[tuple[str, ...], Any] = {}

        def cached_context(srtp_profiles: list[Any]) -> Any:
            key = tuple(profile.openssl_profile for profile in srtp_profiles)
            if key not in contexts:  # one context serves many connections (OpenSSL SSL_CTX)
                contexts[key] = make_context(srtp_profiles)
            return contexts[key]

        setattr(certificate, "_create_ssl_context", cached_context)
        _certificate = (now, certificate)
    return _certificate[1]


def use_process_certificate(pc: aiortc.RTCPeerConnection) -> None:
    """Make a new connection use the process's certificate; call before any transceiver."""
    setattr(pc, _CERTIFICATES, [_process_certificate()])


class _DeferredEstimator:
    """aiortc's receive-side bandwidth estimator, made at the first packet that feeds it."""

    __slots__ = ("_real",)

    def __init__(self) -> None:
        self._real: Any = None

    def add(self, **packet: Any) -> Any:
        if self._real is None:
            self._real = _REMOTE_ESTIMATOR()
        return self._real.add(**packet)


_REMOTE_ESTIMATOR = RemoteBitrateEstimator


def defer_bitrate_estimators() -> None:
    """Receivers make their bandwidth estimator at their first video packet, not when made:
    a classroom's send-only transceivers have receivers that never get one."""
    setattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator", _DeferredEstimator)


HostSockets = Callable[[aioice.Connection, int], list[aioice.ice.StunProtocol]]
"""Makes an ICE agent's host protocols for one component, with their local candidates set."""


def _ice_connections(pc: aiortc.RTCPeerConnection) -> set[aioice.Connection]:
    transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
    return {transport._connection for transport in transports}


def share_host_sockets(pc: aiortc.RTCPeerConnection, sockets: HostSockets) -> None:
    """Make the connection's ICE agents take their host candidates from `sockets` instead of
    binding sockets of their own. Call it after the remote description is applied (BUNDLE
    has chosen the transport then) and before the local one (which gathers)."""
    for connection in _ice_connections(pc):
        gather_host_candidates_from(connection, sockets)


def gather_host_candidates_from(connection: aioice.Connection, sockets: HostSockets) -> None:
    """One ICE agent's part of `share_host_sockets`: its gathering asks `sockets`, and does
    not list the machine's interfaces per connection as aioice does (0.3 ms a join): the
    shared socket read them once."""

    async def gather(
        component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        protocols = sockets(connection, component)
        connection._protocols += protocols
        return [protocol.local_candidate for protocol in protocols]

    async def gather_all() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in connection._components:
            connection._local_candidates += await gather(component, [])
        connection._local_candidates_end = True

    setattr(connection, "get_component_candidates", gather)
    setattr(connection, "gather_candidates", gather_all)


class Heard:
    """When the last datagram of any kind (media, RTCP, STUN) came from a peer."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


def watch_inbound(pc: aiortc.RTCPeerConnection, clock: Callable[[], float]) -> Heard:
    """Note the time of every datagram the connection's ICE sockets receive, so a peer that
    vanished is noticed in seconds, not after aioice's 30 s of failed consent checks. Call it
    once the local description is set (the sockets exist then)."""
    heard = Heard()
    for connection in _ice_connections(pc):
        for protocol in connection._protocols:
            original = protocol.datagram_received

            def received(data: Any, addr: Any, original: Any = original) -> None:
                heard.at = clock()
                original(data, addr)

            setattr(protocol, "datagram_received", received)
    return heard


def rtp_payload(packet: RtpPacket) -> bytes:
    """The packet's depacketized payload as the jitter buffer keeps it."""
    payload: bytes = packet._data  # type: ignore[attr-defined]
    return payload


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the remote end of `sender` sends PLI or FIR."""
    setattr(sender, "_send_keyframe", callback)


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The SSRCs a sender stamps on its media and on its retransmissions (RTX)."""
    return int(sender._ssrc), int(sender._rtx_ssrc)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC of the media (not RTX) stream the receiver currently gets."""
    rtx: dict[int, int] = getattr(receiver, _RTX_SSRC)
    for source in receiver.getSynchronizationSources():
        if source.source not in rtx:
            return int(source.source)
    return None


def request_keyframe(receiver: RTCRtpReceiver) -> asyncio.Task[None] | None:
    """Send a PLI upstream for the receiver's media stream; None if no stream is known yet."""
    ssrc = media_ssrc(receiver)
    if ssrc is None:
        return None
    return asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))


def send_nack(receiver: RTCRtpReceiver, ssrc: int, lost: list[int]) -> asyncio.Task[None]:
    """Send a NACK upstream for these sequence numbers of the media stream `ssrc`."""
    return asyncio.ensure_future(receiver._send_rtcp_nack(ssrc, lost))


def map_timestamp(receiver: RTCRtpReceiver, timestamp: int) -> int:
    """The RTP timestamp as the receiver maps the frames it releases (unwrapped, from 0)."""
    mapped: int = getattr(receiver, _TIMESTAMP_MAPPER).map(timestamp)
    return mapped


class SenderInternals:
    """The private state of one RTCRtpSender that a replacement packet loop must keep up."""

    __slots__ = ("_sender",)

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender

    def started(self) -> None:
        """Tell stop() the loop runs (it waits for this before cancelling)."""
        getattr(self._sender, "_RTCRtpSender__rtp_started").set()

    def exited(self) -> None:
        """Tell stop() the loop has ended."""
        getattr(self._sender, "_RTCRtpSender__rtp_exited").set()

    @property
    def rtx_payload_type(self) -> int | None:
        """The negotiated RTX payload type, known once send() ran."""
        value: int | None = getattr(self._sender, "_RTCRtpSender__rtx_payload_type")
        return value

    def extension_block(self, abs_send_time: int) -> bytes:
        """Header extensions (mid, abs-send-time) as they follow the fixed RTP header."""
        extensions = HeaderExtensions()
        extensions.mid = getattr(self._sender, "_RTCRtpSender__mid")
        extensions.abs_send_time = abs_send_time
        mapping = getattr(self._sender, "_RTCRtpSender__rtp_header_extensions_map")
        profile, value = mapping.set(extensions)
        return struct.pack("!HH", profile, len(value) >> 2) + value if value else b""

    def extension_parts(self) -> tuple[bytes, bytes | None]:
        """The sender's extension block, encoded once: what comes before abs-send-time's 3
        bytes and what follows them (None: abs-send-time not negotiated, the first part is the
        whole block). Encoding through aiortc per frame per classroom cost more than the rest
        of the frame's header."""
        low, high = self.extension_block(0), self.extension_block(0xFFFFFF)
        changed = [i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b]
        if not changed:
            return low, None
        at = changed[0]
        if changed != [at, at + 1, at + 2]:
            raise AiortcChanged("abs-send-time is not 3 bytes in aiortc's extension block")
        return low[:at], low[at + 3 :]

    def account(self, packets: int, octets: int, rtp_timestamp: int, ntp_time: int) -> None:
        """Feed the sender reports aiortc's RTCP loop sends (RFC 3550 §6.4.1)."""
        sender = self._sender
        setattr(sender, "_RTCRtpSender__ntp_timestamp", ntp_time)
        setattr(sender, "_RTCRtpSender__rtp_timestamp", rtp_timestamp)
        count = getattr(sender, "_RTCRtpSender__packet_count")
        setattr(sender, "_RTCRtpSender__packet_count", count + packets)
        total = getattr(sender, "_RTCRtpSender__octet_count")
        setattr(sender, "_RTCRtpSender__octet_count", total + octets)


def ntp_time() -> int:
    """Now, as a 64-bit NTP timestamp (what sender reports carry)."""
    now: int = clock.current_ntp_time()
    return now


def abs_send_time(ntp: int) -> int:
    """The 24-bit abs-send-time of an NTP timestamp (6.18 fixed-point seconds)."""
    return (ntp >> 14) & 0x00FFFFFF


PacketLoop = Callable[[SenderInternals, Any], Awaitable[None]]
Retransmit = Callable[[int], Awaitable[None]]


def install_packet_loop(sender: RTCRtpSender, run: PacketLoop, retransmit: Retransmit) -> None:
    """Make the sender run `run(internals, codec)` instead of its own loop, and NACKs call
    `retransmit(sequence_number)` instead of its own history."""
    internals = SenderInternals(sender)
    setattr(sender, "_run_rtp", lambda codec: run(internals, codec))
    setattr(sender, "_retransmit", retransmit)


# pylibsrtp 1.0 (its cffi binding of the libsrtp 2.x it ships): the function the native send
# path calls, and the srtp_t a Session holds
_SRTP_PROTECT_TYPE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
_srtp_protect_address: int | None = None


def srtp_protect_address() -> int:
    """The address of `srtp_protect` in pylibsrtp's libsrtp, 0 if its binding is not the one
    the native path was written for (then RTP is sent in Python)."""
    global _srtp_protect_address
    if _srtp_protect_address is None:
        _srtp_protect_address = 0
        try:
            from pylibsrtp._binding import ffi, lib

            if ffi.typeof(lib.srtp_protect).cname == _SRTP_PROTECT_TYPE:
                _srtp_protect_address = int(
                    ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))
                )
        except (ImportError, AttributeError, TypeError):
            logger.warning("pylibsrtp's binding changed: the native send path is off")
    return _srtp_protect_address


def srtp_context(session: Any) -> int:
    """The srtp_t of a pylibsrtp Session, for the native send path; 0 if unknown."""
    from pylibsrtp._binding import ffi

    handle = getattr(session, "_srtp", None)
    return int(ffi.cast("uintptr_t", handle[0])) if handle is not None else 0


RouteParts = tuple[
    Callable[[bytes], bytes], Callable[[bytes, tuple[str, int]], object], tuple[str, int], int, int
]


def nominated_pair(transport: Any) -> Any:
    """The ICE pair a DTLS transport sends on now; None while it is not connected. Cheap: a
    sender checks per pass that the route it made for this pair still holds."""
    if transport._state is not DtlsState.CONNECTED:
        return None
    return transport.transport._connection._nominated.get(1)


def srtp_route(transport: Any, pair: Any) -> RouteParts:
    """How to send RTP on a DTLS transport's nominated `pair`, without aiortc's four
    coroutine layers (DTLS transport, ICE transport, aioice connection, STUN protocol) it
    awaits per packet: the SRTP protect function, the pair's `sendto` and remote address, the
    SRTP context's address, and the socket descriptor when the pair is on the process's media
    socket (-1 otherwise)."""
    session = transport._tx_srtp
    sending = pair.protocol.transport
    fd = getattr(sending, "media_fd", -1)  # relay/rtc/udpmux.py MuxTransport
    return session.protect, sending.sendto, pair.remote_addr, srtp_context(session), fd


def report_rtt(sender: RTCRtpSender, lsr: int, dlsr: int) -> float | None:
    """Round trip of one report block about `sender`'s stream (RFC 3550 §6.4.1), in seconds,
    from the time aiortc sent its last sender report; None if the block is about another.
    aiortc smooths its own RTT too slowly (0.85 per report) to show a queue build up."""
    if lsr != getattr(sender, "_RTCRtpSender__lsr") or not dlsr:
        return None
    sent_at: float | None = getattr(sender, "_RTCRtpSender__lsr_time")
    return None if sent_at is None else time.time() - sent_at - dlsr / 65536


RtcpSink = Callable[[Any], None]
"""Receives every RTCP packet aiortc routes to one sender (RR, SR, REMB, NACK, PLI)."""


def on_rtcp(sender: RTCRtpSender, sink: RtcpSink) -> None:
    """Show `sink` each RTCP packet routed to `sender` before aiortc handles it: aiortc reads
    only RTT and NACKs from them for pre-encoded media, and drops REMB on an unused encoder."""
    handle: Callable[[Any], Awaitable[None]] = sender._handle_rtcp_packet

    async def tapped(packet: Any) -> None:
        try:
            sink(packet)
        except Exception:  # feedback parsing must never break the sender's RTCP handling
            logger.exception("RTCP tap failed")
        await handle(packet)

    setattr(sender, "_handle_rtcp_packet", tapped)
