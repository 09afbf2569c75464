import pytest

from relay.rtc.sdp import advertise, normalize_offer

ANSWER = (
    "v=0\r\nm=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n"
    "a=candidate:2 1 udp 2130706431 fd00::5 50001 typ host\r\n"
    "a=candidate:3 1 udp 1694498815 192.0.2.9 50000 typ srflx raddr 10.0.0.5 rport 50000\r\n"
)


@pytest.mark.parametrize(
    ("public_ip", "keep", "candidates", "connection"),
    [
        (None, False, ["10.0.0.5 50000 typ host", "fd00::5", "srflx"], "c=IN IP4 10.0.0.5"),
        ("203.0.113.7", False, ["203.0.113.7 50000 typ host", "fd00::5", "srflx"],
         "c=IN IP4 203.0.113.7"),
        ("203.0.113.7", True,
         ["203.0.113.7 50000 typ host", "2130705431 10.0.0.5 50000 typ host", "fd00::5", "srflx"],
         "c=IN IP4 203.0.113.7"),
    ],
)  # fmt: skip
def test_host_candidates_carry_the_public_address_port_for_port(
    public_ip: str | None, keep: bool, candidates: list[str], connection: str
) -> None:
    lines = advertise(ANSWER, public_ip, keep).splitlines()
    found = [line for line in lines if line.startswith("a=candidate:")]
    assert len(found) == len(candidates)
    assert all(want in line for want, line in zip(candidates, found, strict=True))
    assert connection in lines


OFFER = (
    "v=0\r\na=group:BUNDLE 1 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n"
    "a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
)


def test_an_offer_is_put_in_the_form_aiortc_answers() -> None:
    lines = normalize_offer(OFFER).splitlines()
    assert "a=group:BUNDLE 0 1" in lines  # in m-line order
    audio = lines[lines.index("m=audio 9 UDP/TLS/RTP/SAVPF 111") :]
    assert "a=sendrecv" in audio  # RFC 3264's default direction, written out
    assert audio[-2:] == ["a=candidate:1 1 udp 1 192.0.2.1 5000 typ host", "a=end-of-candidates"]
