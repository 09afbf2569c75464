"""Signed access tokens: HS256 JWTs that grant one role in one room (admins may hold room "*")."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import jwt

from relay.config import MIN_SECRET_BYTES, AuthConfig, ConfigError
from relay.core.errors import BadRequest, Forbidden, Unauthorized

ALGORITHM = "HS256"
ROLES = frozenset({"teacher", "classroom", "admin", "node"})
# The room of an admin token that is valid in every room.
ALL_ROOMS = "*"
# Safe in URL paths, file names and Redis keys without escaping.
_ROOM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CLAIMS = ("room", "role", "name", "exp", "iat")
SECRET_FILE = "secret"
# Clock skew tolerated between hosts, per RFC 7519 §4.1.4 ("usually no more than a few minutes").
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: its holder's role and name in one room (or "*")."""

    # Room the token is for; "*" only for admin tokens.
    room: str
    # One of ROLES.
    role: str
    # Display name: the school/classroom or the teacher.
    name: str
    # Expiry, seconds since the epoch.
    exp: float
    # Names this very token without keeping it (a hash): sessions remember their creator by it.
    id: str = ""


def validate_room(room: str) -> str:
    """The room name unchanged, or BadRequest: names end up in URLs, paths and Redis keys."""
    if not _ROOM_PATTERN.fullmatch(room):
        raise BadRequest(f"bad room name {room!r}: use 1-64 of A-Z a-z 0-9 _ . - (not first)")
    return room


def validate_role(role: str) -> str:
    """The role unchanged, or BadRequest naming the allowed ones."""
    if role not in ROLES:
        raise BadRequest(f"bad role {role!r}: use one of {', '.join(sorted(ROLES))}")
    return role


def load_secret(auth: AuthConfig, data_dir: Path) -> bytes:
    """Signing key: auth.secret, else <data_dir>/secret, created once so all processes agree."""
    if auth.secret is not None:
        return auth.secret.encode()
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create_secret(path)
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"secret file {path}: shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _create_secret(path: Path) -> None:
    """Write a fresh secret to `path` unless another process wins; none sees it half-written.

    The key goes to a private temporary file (O_CREAT|O_EXCL, 0600), then is hard-linked into
    place: link fails if `path` exists, so the first process to link wins and all read its key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()


def issue(
    secret: bytes, room: str, role: str, name: str, ttl: float, now: float | None = None
) -> str:
    """A signed token granting `role` in `room` for `ttl` seconds from `now` (default: clock)."""
    validate_role(role)
    if not (room == ALL_ROOMS and role == "admin"):
        validate_room(room)
    iat = int(time.time() if now is None else now)
    claims = {"room": room, "role": role, "name": name, "iat": iat, "exp": iat + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _decode(secret: bytes, token: str) -> dict[str, object]:
    """Claims of a token with a good signature and expiry, or Unauthorized saying what is wrong."""
    if not token:
        raise Unauthorized("missing token")
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(_CLAIMS)},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("bad token signature") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("malformed token") from None
    return claims


def token_id(token: str) -> str:
    """A token's fingerprint: equal for the same token, useless to anyone who reads it."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _grant(claims: dict[str, object], token: str) -> Grant:
    """Typed claims, or Unauthorized: a well-signed token with odd claims came from a bug."""
    room, role, name, exp = (claims[k] for k in ("room", "role", "name", "exp"))
    if not (isinstance(room, str) and isinstance(name, str) and isinstance(role, str)):
        raise Unauthorized("malformed token")
    if role not in ROLES or not isinstance(exp, int | float):
        raise Unauthorized("malformed token")
    return Grant(room=room, role=role, name=name, exp=float(exp), id=token_id(token))


def read(secret: bytes, token: str) -> Grant:
    """The grant of a valid token, whatever its room and role (callers check those)."""
    return _grant(_decode(secret, token), token)


def verify(secret: bytes, token: str, room: str, roles: Collection[str]) -> Grant:
    """The grant of `token` if it may act in `room` as one of `roles`; else 401/403 errors."""
    grant = _grant(_decode(secret, token), token)
    if grant.role not in roles:
        raise Forbidden(f"role {grant.role!r} may not do this")
    if grant.room != room and not (grant.role == "admin" and grant.room == ALL_ROOMS):
        raise Forbidden(f"token is for room {grant.room!r}, not {room!r}")
    return grant
