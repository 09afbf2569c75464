"""Trickle ICE fragments (RFC 8840 §9, as WHIP/WHEP PATCH bodies per RFC 9725 §4.3).

A client that sends its offer at once trickles its candidates afterwards as
`application/trickle-ice-sdpfrag`: ICE credentials, then per m-section its `a=mid` and
`a=candidate` lines, and `a=end-of-candidates` when gathering is over. New credentials mean an
ICE restart. Pure: text in, a checked `Fragment` out, or a 400 naming the bad line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from relay.core.errors import BadRequest

MEDIA_TYPE = "application/trickle-ice-sdpfrag"
# A fragment carries a handful of candidates; a browser gathers at most a few dozen.
MAX_CANDIDATES = 64
MAX_LINE = 1024  # an a=candidate line is about 100 bytes; longer is not a candidate
# RFC 8445 §5.1.1: candidates carry a transport, and we speak ICE over UDP only.
TRANSPORTS = ("udp",)
TYPES = ("host", "srflx", "prflx", "relay")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One remote candidate, checked: the attribute value after `a=candidate:`."""

    mid: str | None  # the m-section it was gathered for, if the fragment says
    line: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Fragment:
    """What one PATCH body says."""

    ufrag: str | None
    pwd: str | None
    candidates: tuple[Candidate, ...]
    end: bool  # a=end-of-candidates: the client's gathering is over


def parse_fragment(text: str) -> Fragment:
    """The fragment's credentials, candidates and end-of-candidates; 400 on anything else
    that would break ICE (a bad address, a port out of range, an unknown transport)."""
    ufrag = pwd = mid = None
    candidates: list[Candidate] = []
    end = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if len(line) > MAX_LINE:
            raise BadRequest(f"sdpfrag line {number} is over {MAX_LINE} characters")
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.partition(":")[2]
        elif line.startswith("a=ice-pwd:"):
            pwd = line.partition(":")[2]
        elif line.startswith("a=mid:"):
            mid = line.partition(":")[2]
        elif line.startswith("a=candidate:"):
            candidates.append(parse_candidate(line.partition(":")[2], mid, number))
        elif line == "a=end-of-candidates":
            end = True
    if len(candidates) > MAX_CANDIDATES:
        raise BadRequest(f"sdpfrag has over {MAX_CANDIDATES} candidates")
    return Fragment(ufrag, pwd, tuple(candidates), end)


def parse_candidate(value: str, mid: str | None, number: int = 0) -> Candidate:
    """One `candidate-attribute` (RFC 8839 §5.1) whose address can really be sent to."""
    bits = value.split()
    where = f"sdpfrag line {number}" if number else "candidate"
    if len(bits) < 8 or bits[6] != "typ":
        raise BadRequest(f"{where}: not an ICE candidate")
    if not bits[1].isdigit() or not bits[3].isdigit():
        raise BadRequest(f"{where}: component and priority must be numbers")
    if bits[2].lower() not in TRANSPORTS:
        raise BadRequest(f"{where}: transport {bits[2]!r} is not supported, only UDP")
    if bits[7] not in TYPES:
        raise BadRequest(f"{where}: unknown candidate type {bits[7]!r}")
    port = int(bits[5]) if bits[5].isdigit() else -1
    if not 1 <= port <= 65535:
        raise BadRequest(f"{where}: port {bits[5]!r} is not 1-65535")
    host = bits[4]
    if not host.endswith(".local"):  # mDNS names (RFC 8445 with draft-ietf-mmusic-mdns-ice)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadRequest(f"{where}: {host!r} is not an IP address") from None
    return Candidate(mid, value, host, port)
