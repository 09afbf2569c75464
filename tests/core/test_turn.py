import base64
import hashlib
import hmac

import pytest

from relay.core.turn import IceServer, ice_servers, turn_credentials


def test_credentials_follow_coturns_rest_scheme() -> None:
    username, password = turn_credentials("s3cret", "East", now=1000.0, ttl=600)
    assert username == "1600:East"
    expected = hmac.new(b"s3cret", b"1600:East", hashlib.sha1).digest()
    assert password == base64.b64encode(expected).decode()


@pytest.mark.parametrize(
    ("turn", "secret", "name", "expected_users"),
    [
        ((), "s", "East", [None]),  # STUN only
        (("turn:t:3478",), None, "East", [None]),  # TURN without a secret is not offered
        (("turn:t:3478", "turns:t:443?transport=tcp"), "s", "East", [None, "60:East", "60:East"]),
        (("turn:t:3478",), "s", "a:b c" + "x" * 100, [None, "60:a_b_c" + "x" * 27]),
        (("turn:t:3478",), "s", "双峰村小学", [None, "60:_____"]),
    ],
)
def test_a_client_gets_stun_as_is_and_turn_with_its_own_credentials(
    turn: tuple[str, ...], secret: str | None, name: str, expected_users: list[str | None]
) -> None:
    servers = ice_servers(("stun:s:3478",), turn, secret, name, now=0.0, ttl=60)
    assert servers[0] == IceServer("stun:s:3478")
    assert [s.username for s in servers] == expected_users
