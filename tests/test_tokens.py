"""Tokens: issue/verify rules, error messages, and the shared secret file."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import jwt
import pytest

from relay.config import AuthConfig, ConfigError
from relay.core.errors import BadRequest, Forbidden, Unauthorized
from relay.tokens import Grant, issue, load_secret, token_id, validate_room, verify

SECRET = b"k" * 32
OTHER_SECRET = b"o" * 32
DAY = 86400


def test_issued_token_verifies_to_its_grant() -> None:
    now = time.time()
    token = issue(SECRET, "r1", "teacher", "Ms Li", DAY, now=now)
    assert verify(SECRET, token, "r1", {"teacher"}) == Grant(
        "r1", "teacher", "Ms Li", int(now) + DAY, token_id(token)
    )
    assert token_id(token) != token_id(issue(SECRET, "r1", "teacher", "Ms Li", DAY, now=now + 1))


def test_token_carries_issued_at_claim() -> None:
    payload = issue(SECRET, "r1", "classroom", "Grade 3", DAY, now=1000.0).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims == {
        "room": "r1",
        "role": "classroom",
        "name": "Grade 3",
        "iat": 1000,
        "exp": 87400,
    }


def test_expired_token_is_unauthorized() -> None:
    token = issue(SECRET, "r1", "classroom", "c", 60, now=time.time() - 3600)
    with pytest.raises(Unauthorized, match="token expired"):
        verify(SECRET, token, "r1", {"classroom"})


def test_recently_expired_token_is_within_clock_skew_leeway() -> None:
    token = issue(SECRET, "r1", "node", "edge-1", 60, now=time.time() - 65)
    assert verify(SECRET, token, "r1", {"node"}).role == "node"


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return ".".join([header, payload, flipped + signature[1:]])


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "missing token"),
        ("not-a-jwt", "malformed token"),
        ("a.b.c", "malformed token"),
        (issue(OTHER_SECRET, "r1", "teacher", "t", DAY), "bad token signature"),
        (_tamper(issue(SECRET, "r1", "teacher", "t", DAY)), "bad token signature"),
    ],
)
def test_unusable_token_is_unauthorized_with_reason(token: str, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        verify(SECRET, token, "r1", {"teacher"})


def test_token_without_required_claims_is_malformed() -> None:
    token = jwt.encode({"room": "r1", "exp": time.time() + DAY}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="malformed token"):
        verify(SECRET, token, "r1", {"teacher"})


@pytest.mark.parametrize(
    ("room", "role", "want_room", "want_roles", "message"),
    [
        ("r1", "teacher", "r2", {"teacher"}, "token is for room 'r1', not 'r2'"),
        ("r1", "classroom", "r1", {"teacher"}, "role 'classroom' may not do this"),
        ("r1", "admin", "r2", {"admin"}, "token is for room 'r1', not 'r2'"),
        ("*", "admin", "r1", {"teacher", "classroom"}, "role 'admin' may not do this"),
    ],
)
def test_wrong_room_or_role_is_forbidden(
    room: str, role: str, want_room: str, want_roles: set[str], message: str
) -> None:
    token = issue(SECRET, room, role, "n", DAY)
    with pytest.raises(Forbidden, match=message):
        verify(SECRET, token, want_room, want_roles)


@pytest.mark.parametrize("room", ["r1", "other.room", "Z-9"])
def test_admin_token_for_all_rooms_is_accepted_in_any_room(room: str) -> None:
    token = issue(SECRET, "*", "admin", "ops", DAY)
    assert verify(SECRET, token, room, {"admin", "teacher"}).room == "*"


def test_admin_token_for_one_room_is_accepted_there() -> None:
    token = issue(SECRET, "r1", "admin", "ops", DAY)
    assert verify(SECRET, token, "r1", {"admin"}).role == "admin"


@pytest.mark.parametrize(
    ("room", "role"),
    [
        ("*", "teacher"),
        ("", "teacher"),
        ("-lead", "classroom"),
        ("a/b", "classroom"),
        ("x" * 65, "admin"),
        ("r1", "student"),
    ],
)
def test_issue_rejects_bad_room_or_role(room: str, role: str) -> None:
    with pytest.raises(BadRequest):
        issue(SECRET, room, role, "n", DAY)


@pytest.mark.parametrize("room", ["a", "Room_1", "g3.class-2", "x" * 64])
def test_validate_room_accepts_safe_names(room: str) -> None:
    assert validate_room(room) == room


def test_configured_secret_takes_precedence_over_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("f" * 43)
    assert load_secret(AuthConfig(secret="e" * 32), tmp_path) == b"e" * 32


def test_secret_file_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    first = load_secret(AuthConfig(), data_dir)
    assert stat.S_IMODE((data_dir / "secret").stat().st_mode) == 0o600
    assert load_secret(AuthConfig(), data_dir) == first
    assert len(first) >= 32
    assert [p.name for p in data_dir.iterdir()] == ["secret"]


def test_existing_secret_file_is_reused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x" * 40 + "\n")
    assert load_secret(AuthConfig(), tmp_path) == b"x" * 40


def test_too_short_secret_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("short\n")
    with pytest.raises(ConfigError, match="secret file"):
        load_secret(AuthConfig(), tmp_path)


def test_tokens_from_generated_secret_verify_after_reload(tmp_path: Path) -> None:
    token = issue(load_secret(AuthConfig(), tmp_path), "r1", "teacher", "t", DAY)
    assert verify(load_secret(AuthConfig(), tmp_path), token, "r1", {"teacher"}).name == "t"
