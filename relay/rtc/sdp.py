"""Checks on an SDP offer before any peer connection exists, so bad input allocates nothing.

Every failure is a one-line reason a WHIP/WHEP client author can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import MediaDescription, SessionDescription

from relay.core.errors import BadRequest, ProtocolError
from relay.core.model import MAX_VIDEO_SLOTS
from relay.core.sdpfrag import parse_candidate

# The codecs we forward: VP8 video (RFC 7741) with RTX for NACK recovery, Opus audio (RFC 7587).
FORWARDED = {"video": ("video/vp8",), "audio": ("audio/opus",)}


@dataclass(frozen=True, slots=True)
class OfferShape:
    """What a checked offer asks for: the kind of each m-line, in m-line order."""

    kinds_in_order: tuple[str, ...]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.kinds_in_order)


def parse_offer(text: str) -> SessionDescription:
    """Parse SDP text; any parser failure is a 400 with its reason."""
    if not text.strip().startswith("v=0"):
        raise BadRequest("malformed SDP: it must start with v=0")
    try:
        return SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever its string handling hits
        raise BadRequest(f"malformed SDP: {exc or type(exc).__name__}") from None


def check_offer(text: str, *, sending: bool) -> OfferShape:
    """Validate a WHIP (sending=True) or WHEP (sending=False) offer and return its shape.

    An offer without ICE candidates is fine: a trickle client (RFC 8838) sends them later, and
    aioice learns the client's address from its connectivity checks anyway.
    """
    description = parse_offer(text)
    if not description.media:
        raise BadRequest("SDP offer has no m-lines")
    for media in description.media:
        _check_media(media, sending)
    kinds = tuple(media.kind for media in description.media)
    if kinds.count("audio") > 1:
        raise BadRequest("at most one audio m-line is supported")
    max_video = 1 if sending else MAX_VIDEO_SLOTS
    if kinds.count("video") > max_video:
        raise BadRequest(f"at most {max_video} video m-line(s) are supported here")
    _check_mids(description)
    _check_end_of_candidates(description)
    return OfferShape(kinds)


def _check_mids(description: SessionDescription) -> None:
    """Every m-line has a mid of its own, and BUNDLE names only those (RFC 8843 §7.2): aiortc
    maps transceivers and transports by mid and breaks on duplicates or dangling ones."""
    mids = [media.rtp.muxId for media in description.media]
    if any(not mid for mid in mids):
        raise BadRequest("every m-line needs an a=mid (RFC 8843 §9.1)")
    if len(set(mids)) != len(mids):
        raise BadRequest(f"two m-lines share a mid: {', '.join(mids)}")
    for group in description.group:
        unknown = [item for item in group.items if item not in mids]
        if unknown:
            raise BadRequest(f"a=group:{group.semantic} names no m-line with mid {unknown[0]!r}")


def _check_end_of_candidates(description: SessionDescription) -> None:
    """An offer that ends its candidates without listing one leaves aioice nothing to check
    and no component to gather for: say so instead of answering with a dead session."""
    media = description.media
    if any(m.ice_candidates_complete for m in media) and not any(m.ice_candidates for m in media):
        raise BadRequest(
            "the offer has a=end-of-candidates but no candidate: list the candidates, or "
            "trickle them by PATCH and leave out end-of-candidates"
        )


def _check_media(media: MediaDescription, sending: bool) -> None:
    """One m-line: kind, direction, codec, transport parameters."""
    if media.kind not in FORWARDED:
        raise BadRequest(f"m={media.kind} is not supported: only audio and video")
    wanted = {"sendonly", "sendrecv"} if sending else {"recvonly", "sendrecv"}
    direction = media.direction or "sendrecv"
    if direction not in wanted:
        role = "a WHIP publisher must send" if sending else "a WHEP player must receive"
        raise BadRequest(f"m={media.kind} is {direction}: {role}")
    mimes = {codec.mimeType.lower() for codec in media.rtp.codecs}
    if not mimes & set(FORWARDED[media.kind]):
        raise ProtocolError(
            f"no usable codec in m={media.kind}: offered {sorted(mimes) or 'none'}, "
            f"this relay forwards {', '.join(FORWARDED[media.kind])}"
        )
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        raise BadRequest(f"m={media.kind} lacks ICE credentials")
    if media.dtls is None or not media.dtls.fingerprints:
        raise BadRequest(f"m={media.kind} lacks a DTLS fingerprint (WebRTC is DTLS-SRTP only)")
    _check_addresses(media)
    for codec in media.rtp.codecs:
        if codec.mimeType.lower() in (*FORWARDED[media.kind], "video/rtx") and not codec.clockRate:
            raise BadRequest(f"m={media.kind}: {codec.mimeType} has no clock rate")


def _check_addresses(media: MediaDescription) -> None:
    """The connection address and every UDP candidate must be something one can send to: a
    port out of range or a bogus address would break the session's socket later."""
    if media.host is not None:
        parse_candidate(f"0 1 udp 1 {media.host} 9 typ host", None)  # a 400 names the address
    for candidate in media.ice_candidates:
        if candidate.protocol.lower() == "udp":
            line = f"{candidate.foundation} {candidate.component} udp {candidate.priority} "
            parse_candidate(line + f"{candidate.ip} {candidate.port} typ {candidate.type}", None)


def codec_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """The codecs our transceivers accept: the forwarded codec, plus RTX for video."""
    keep = (*FORWARDED[kind], "video/rtx")
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None  # aiortc knows both kinds
    return [c for c in capabilities.codecs if c.mimeType.lower() in keep]


def normalize_offer(text: str) -> str:
    """The offer as aiortc 1.16 needs it to answer every valid one: its BUNDLE group in m-line
    order, and every m-section's candidates (and end-of-candidates) also in the last one.

    - Our transceivers are created in m-line order and aiortc keeps only the first one's
      transport for the bundle: under another tag (RFC 9143 allows any) it stops that
      transport and answers without candidates.
    - aiortc adds the bundle's remote candidates from the last m-section mapped to it
      (rtcpeerconnection.py, `iceCandidates`), while browsers list them in the first only
      (RFC 8843 §7.1.3): the relay would learn a Chrome classroom's address only from its
      connectivity checks.
    """
    lines = _with_directions(text.splitlines())
    sections = [i for i, line in enumerate(lines) if line.startswith("m=")]
    mids = [_mid(lines, start) for start in sections]
    lines = [_bundle_in_order(line, mids) for line in lines]
    if len(sections) < 2:
        return "\r\n".join(lines) + "\r\n"
    head, tail = lines[: sections[-1]], lines[sections[-1] :]
    ended = "a=end-of-candidates" in lines
    tail = [line for line in tail if line != "a=end-of-candidates"]
    found = [line for line in head if line.startswith("a=candidate:")]
    tail += [line for line in dict.fromkeys(found) if line not in tail]
    tail += ["a=end-of-candidates"] if ended else []
    return "\r\n".join([*head, *tail]) + "\r\n"


DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")


def _with_directions(lines: list[str]) -> list[str]:
    """`a=sendrecv` in every m-section that has no direction: RFC 3264 §5.1's default, which
    aiortc's answer does not apply (it fails on the missing attribute)."""
    out: list[str] = []
    pending = False  # inside an m-section that has not shown a direction yet
    for line in lines:
        if line.startswith("m="):
            if pending:
                out.append("a=sendrecv")
            pending = True
        elif line.strip() in DIRECTIONS:
            pending = False
        out.append(line)
    if pending:
        out.append("a=sendrecv")
    return out


def _mid(lines: list[str], start: int) -> str | None:
    """The a=mid of the m-section starting at line `start`."""
    for line in lines[start + 1 :]:
        if line.startswith("m="):
            return None
        if line.startswith("a=mid:"):
            return line.partition(":")[2].strip()
    return None


def _bundle_in_order(line: str, mids: list[str | None]) -> str:
    """An `a=group:BUNDLE` line with its mids in m-line order; any other line unchanged."""
    if not line.startswith("a=group:BUNDLE"):
        return line
    grouped = line.split()[1:]
    ordered = [m for m in mids if m in grouped] + [m for m in grouped if m not in mids]
    return " ".join(["a=group:BUNDLE", *(m for m in ordered if m is not None)])


def advertise(answer: str, public_ip: str | None, keep_private: bool = False) -> str:
    """The answer with its host candidates (and `c=`) on `public_ip`: behind 1:1 NAT the
    relay's sockets see a private address that no classroom can reach, while the NAT maps
    the public one, port for port, onto it. The private candidates stay with `keep_private`
    (classrooms on the relay's own LAN), at a lower priority."""
    if public_ip is None:
        return answer
    family = "IP6" if ":" in public_ip else "IP4"
    out: list[str] = []
    for line in answer.splitlines():
        bits = line.split()
        same_family = len(bits) >= 8 and (":" in bits[4]) == (family == "IP6")
        if line.startswith("a=candidate:") and same_family and bits[7] == "host":
            public = [*bits[:4], public_ip, *bits[5:]]
            out.append(" ".join(public))
            if keep_private:
                out.append(" ".join([*bits[:3], str(max(int(bits[3]) - 1000, 0)), *bits[4:]]))
        elif line.startswith("c=IN "):
            out.append(f"c=IN {family} {public_ip}")
        else:
            out.append(line)
    return "\r\n".join(out) + "\r\n"
