import pytest

from relay.core.errors import BadRequest
from relay.core.sdpfrag import MAX_CANDIDATES, parse_fragment

HOST = "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host"
MDNS = "a=candidate:2 1 UDP 2122194687 4f2c1d3e.local 61765 typ host"
RELAYED = "a=candidate:3 1 udp 41885439 203.0.113.5 3478 typ relay raddr 0.0.0.0 rport 0"


def test_a_fragment_gives_its_credentials_candidates_and_end() -> None:
    text = "\r\n".join(
        ["a=ice-ufrag:EsAw", "a=ice-pwd:P2uY", "m=audio 9 RTP/AVP 0", "a=mid:0", HOST, MDNS,
         RELAYED, "a=end-of-candidates", ""]
    )  # fmt: skip
    fragment = parse_fragment(text)
    assert (fragment.ufrag, fragment.pwd, fragment.end) == ("EsAw", "P2uY", True)
    assert [(c.mid, c.host, c.port) for c in fragment.candidates] == [
        ("0", "192.0.2.1", 61764),
        ("0", "4f2c1d3e.local", 61765),
        ("0", "203.0.113.5", 3478),
    ]


def test_an_empty_fragment_adds_nothing() -> None:
    fragment = parse_fragment("")
    assert fragment.candidates == () and not fragment.end and fragment.ufrag is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 65536 typ host", "port '65536' is not 1-65535"),
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 0 typ host", "port '0' is not 1-65535"),
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 -5 typ host", "port '-5' is not 1-65535"),
        ("a=candidate:1 1 udp 2122260223 example.com 5000 typ host", "is not an IP address"),
        ("a=candidate:1 1 tcp 2122260223 192.0.2.1 9 typ host tcptype active", "only UDP"),
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 5000 typ magic", "unknown candidate type"),
        ("a=candidate:1 one udp 2122260223 192.0.2.1 5000 typ host", "must be numbers"),
        ("a=candidate:1 1 udp", "not an ICE candidate"),
        ("a=candidate:" + "x" * 2000, "over 1024 characters"),
    ],
)
def test_a_candidate_that_cannot_be_sent_to_is_a_400(line: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_fragment(f"a=mid:0\r\n{line}\r\n")


def test_too_many_candidates_are_a_400() -> None:
    text = "\r\n".join([HOST] * (MAX_CANDIDATES + 1))
    with pytest.raises(BadRequest, match="over 64 candidates"):
        parse_fragment(text)
