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

# The codecs we forward: VP8 video (RFC 7741) with RTX for NACK recovery, Opus audio (RFC 7587).
FORWARDED = {"video": ("video/vp8",), "audio": ("audio/opus",)}


@dataclass(frozen=True, slots=True)
class OfferShape:
    """What a checked offer asks for, in m-line order."""

    audio: int
    video: int

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k for k, n in (("audio", self.audio), ("video", self.video)) if n)


def parse_offer(text: str) -> SessionDescription:
    """Parse SDP text; any parser failure is a 400 with its reason."""
    if not text.strip().startswith("v=0"):
        raise BadRequest("malformed SDP: it must start with v=0")
    try:
        return SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever its string handling hits
        raise BadRequest(f"malformed SDP: {exc or type(exc).__name__}") from None


def check_offer(text: str, *, sending: bool) -> OfferShape:
    """Validate a WHIP (sending=True) or WHEP (sending=False) offer and return its shape."""
    description = parse_offer(text)
    if not description.media:
        raise BadRequest("SDP offer has no m-lines")
    for media in description.media:
        _check_media(media, sending)
    if not any(media.ice_candidates for media in description.media):
        raise BadRequest(
            "offer has no ICE candidates: this server does not support trickle ICE, "
            "send the offer after ICE gathering completes"
        )
    counts = {k: sum(1 for m in description.media if m.kind == k) for k in ("audio", "video")}
    if counts["audio"] > 1:
        raise BadRequest("at most one audio m-line is supported")
    max_video = 1 if sending else MAX_VIDEO_SLOTS
    if counts["video"] > max_video:
        raise BadRequest(f"at most {max_video} video m-line(s) are supported here")
    return OfferShape(counts["audio"], counts["video"])


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
    if media.ice is None or not media.ice.usernameFragment or media.dtls is None:
        raise BadRequest(f"m={media.kind} lacks ICE credentials or a DTLS fingerprint")


def codec_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """The codecs our transceivers accept: the forwarded codec, plus RTX for video."""
    keep = (*FORWARDED[kind], "video/rtx")
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None  # aiortc knows both kinds
    return [c for c in capabilities.codecs if c.mimeType.lower() in keep]
