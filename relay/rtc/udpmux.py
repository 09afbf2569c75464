"""One UDP socket for every peer connection of the process (an ICE UDP mux).

aioice binds a socket on a random port per peer connection and interface, so an operator had
to open every UDP port. Here the process binds one socket, `[ice] udp_port`, and each peer
connection's ICE agent gets, per host address, a `MuxProtocol` whose sends go out that socket.
Datagrams coming in are handed to the right connection as LiveKit, mediasoup's WebRtcServer
and Jitsi Videobridge do:

1. by the remote address, once one is known (every media packet: one dict lookup);
2. a STUN binding request from an unknown address, by its USERNAME: `local-ufrag:remote-ufrag`
   (RFC 8445 §7.2.2) names the connection, which then owns that address;
3. the addresses a connection sends its own checks to belong to it, so their responses find it.

Anything else is dropped and counted: a stale peer of a closed session, or a stranger.
The socket is IPv4 only, bound on every interface; candidates carry each interface's address
(and `public_ip` rewrites them in the answer, relay/rtc/sdp.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from aioice import Candidate, stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, get_host_addresses

from monitoring import metrics

logger = logging.getLogger(__name__)

Address = tuple[str, int]

# Bytes of kernel buffer asked for each way: one socket carries every classroom, so a burst of
# a keyframe to 300 classrooms (about 300 x 40 packets) must fit; the kernel caps it at
# net.core.{r,w}mem_max unless the process may force it (root), see docs/deploy.md.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
# RFC 7983 §7: a first byte of 0-3 is STUN (DTLS is 20-63, RTP and RTCP 128-191).
_STUN_FIRST_BYTE_MAX = 3
_STUN_HEADER_BYTES = 20


class MuxTransport(asyncio.DatagramTransport):
    """What one connection's protocol takes for its own socket: it sends on the shared one,
    and closing it only detaches the protocol."""

    def __init__(self, mux: UdpMux, protocol: MuxProtocol, sockname: Address) -> None:
        super().__init__()
        self._mux = mux
        self._protocol = protocol
        self._sockname = sockname
        self._closing = False
        # the shared socket's own bound method: the media path pays no extra call
        self.sendto: Callable[..., None] = mux.raw_sendto()
        # its descriptor, for the native batch send path (relay/rtc/rtpsend.py)
        self.media_fd = mux.fd

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._sockname if name == "sockname" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._mux.detach(self._protocol)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class MuxProtocol(StunProtocol):
    """A connection's ICE protocol for one host address on the shared socket."""

    mux: UdpMux

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        # DTLS, RTP and RTCP (a first byte above 3, RFC 7983 §7) go straight to the agent:
        # aioice would try each as STUN first and take the parser's exception as the answer
        if isinstance(data, bytes) and data and data[0] > _STUN_FIRST_BYTE_MAX:
            self.receiver.data_received(data, self.local_candidate.component)
            return
        super().datagram_received(data, addr)

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        self.mux.claim((addr[0], addr[1]), self)  # answers from a peer we check come back here
        super().send_stun(message, addr)


class UdpMux(asyncio.DatagramProtocol):
    """The process's one media socket and its demultiplexing tables."""

    def __init__(self, port: int) -> None:
        self.requested_port = port
        self.port = 0
        self.addresses: list[str] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._by_addr: dict[Address, MuxProtocol] = {}
        self._by_ufrag: dict[str, list[MuxProtocol]] = {}

    async def open(self) -> None:
        """Bind the socket; the host addresses are read once, as aioice would per connection."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("0.0.0.0", self.requested_port), family=socket.AF_INET
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        self.addresses = get_host_addresses(use_ipv4=True, use_ipv6=False)
        _grow_buffers(transport.get_extra_info("socket"))
        logger.info("media on UDP port %d for %s", self.port, ", ".join(self.addresses))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def raw_sendto(self) -> Callable[..., None]:
        """The socket's own `sendto` (bound method), for protocols made while it is open."""
        assert self._transport is not None, "the media socket is not open"
        return self._transport.sendto

    @property
    def fd(self) -> int:
        """The socket's file descriptor; -1 when closed."""
        sock = None if self._transport is None else self._transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    @property
    def connections(self) -> int:
        """ICE agents with a protocol on the socket (for tests and metrics)."""
        return len(self._by_ufrag)

    # the ICE agents' side

    def host_protocols(self, connection: Connection, component: int) -> list[StunProtocol]:
        """An ICE agent's host candidates: one protocol per host address, all on the shared
        socket (relay/rtc/hooks.py puts this in place of aioice binding sockets of its own)."""
        protocols: list[StunProtocol] = []
        for address in self.addresses:
            protocol = MuxProtocol(connection)
            protocol.mux = self
            protocol.connection_made(MuxTransport(self, protocol, (address, self.port)))
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", address),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=address,
                port=self.port,
                type="host",
            )
            protocols.append(protocol)
            self._by_ufrag.setdefault(connection.local_username, []).append(protocol)
        return protocols

    def claim(self, addr: Address, protocol: MuxProtocol) -> None:
        """`addr` is a peer of `protocol`'s connection from now on."""
        if self._by_addr.get(addr) is not protocol:
            self._by_addr[addr] = protocol

    def detach(self, protocol: MuxProtocol) -> None:
        """Forget a closed protocol: its addresses and its connection's ufrag."""
        for addr in [a for a, p in self._by_addr.items() if p is protocol]:
            del self._by_addr[addr]
        ufrag = protocol.receiver.local_username
        siblings = [p for p in self._by_ufrag.get(ufrag, ()) if p is not protocol]
        if siblings:
            self._by_ufrag[ufrag] = siblings
        else:
            self._by_ufrag.pop(ufrag, None)

    # the socket's side

    def datagram_received(self, data: bytes, addr: Address) -> None:
        protocol = self._by_addr.get(addr)
        if data and data[0] <= _STUN_FIRST_BYTE_MAX and len(data) >= _STUN_HEADER_BYTES:
            protocol = self._stun_owner(data, addr) or protocol
        if protocol is None:
            metrics.count_mux_drop("unknown peer")
            return
        protocol.datagram_received(data, addr)

    def _stun_owner(self, data: bytes, addr: Address) -> MuxProtocol | None:
        """The protocol a binding request's USERNAME names (and now owning `addr`); None for
        other STUN messages, which go by address."""
        try:
            message = stun.parse_message(data)
        except ValueError:
            return None
        username = message.attributes.get("USERNAME")
        if message.message_class != stun.Class.REQUEST or not isinstance(username, str):
            return None
        protocols = self._by_ufrag.get(username.split(":", 1)[0])
        if not protocols:
            return None
        current = self._by_addr.get(addr)
        owner = current if current in protocols else protocols[0]
        self.claim(addr, owner)
        return owner

    def error_received(self, exc: Exception) -> None:
        # an ICMP error for one peer (port unreachable) says nothing about the others
        logger.debug("media socket: %r", exc)


def _grow_buffers(sock: socket.socket | None) -> None:
    """Ask for SOCKET_BUFFER_BYTES each way, forcing past the sysctl cap where allowed."""
    if sock is None:
        return
    forced = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
    for option, force in forced.items():
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except OSError:  # not root (CAP_NET_ADMIN): the kernel caps the plain option
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
