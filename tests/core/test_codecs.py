import pytest

from relay.core.codecs import is_vp8_keyframe, split, vp8_size

# 640x360 key frame header: tag (show_frame, keyframe), start code, width, height
KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + b"\x00" * 8
INTER = bytes([0x31, 0x02, 0x00]) + b"\x00" * 15


@pytest.mark.parametrize(
    ("data", "keyframe"),
    [
        (KEY, True),
        (INTER, False),
        (b"", False),
        (KEY[:9], False),  # truncated before the size fields
        (bytes([0x10, 0x02, 0x00, 0x00, 0x01, 0x2A]) + b"\x00" * 8, False),  # bad start code
    ],
)
def test_keyframe_detection_reads_tag_and_start_code(data: bytes, keyframe: bool) -> None:
    assert is_vp8_keyframe(data) is keyframe


def test_keyframe_size_is_read_from_header() -> None:
    assert vp8_size(KEY) == (640, 360)
    assert vp8_size(INTER) is None


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(0, [b""]), (3, [b"abc"]), (5, [b"abc"]), (2, [b"ab", b"c"]), (1, [b"a", b"b", b"c"])],
)
def test_split_cuts_frames_into_payload_pieces(size: int, chunks: list[bytes]) -> None:
    data = b"" if size == 0 else b"abc"
    assert list(split(data, max(size, 1))) == chunks
