"""Facts about encoded media that the forwarding path needs without decoding."""

from __future__ import annotations

from fractions import Fraction

# RTP clock rates, per RFC 7741 §4 (VP8, 90 kHz) and RFC 7587 §4.1 (Opus, always 48 kHz).
VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = Fraction(1, AUDIO_CLOCK_RATE)

# Per RFC 6386 §9.1: a key frame's 3-byte frame tag is followed by this start code.
_VP8_START_CODE = b"\x9d\x01\x2a"


# aiortc's packetizer keeps RTP payloads at 1300 bytes (codecs/vpx.py PACKET_MAX); a VP8
# payload descriptor with a 15-bit PictureID takes 4 of them (RFC 7741 §4.2).
VP8_DESCRIPTOR_SIZE = 4
VP8_CHUNK_SIZE = 1300 - VP8_DESCRIPTOR_SIZE


def split(data: bytes, size: int) -> tuple[bytes, ...]:
    """The frame cut into RTP-sized pieces; done once per upstream frame, shared by classrooms."""
    return tuple(data[i : i + size] for i in range(0, len(data), size)) or (b"",)


def vp8_descriptor(first: bool, picture_id: int) -> bytes:
    """RFC 7741 §4.2 descriptor: X=1, S on the frame's first packet, PID 0, I=1 with M=1."""
    return bytes(
        (0x90 if first else 0x80, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF)
    )


def is_vp8_keyframe(data: bytes) -> bool:
    """True for a VP8 key frame: tag bit 0 clear and the start code present (RFC 6386 §9.1)."""
    return len(data) >= 10 and not data[0] & 1 and data[3:6] == _VP8_START_CODE


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 key frame (RFC 6386 §9.1), or None for an inter frame."""
    if not is_vp8_keyframe(data):
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height
