"""Configuration: a frozen dataclass tree, loaded once from defaults, file, environment and flags.

Field names are unique across sections, so each has one flat name everywhere: the TOML key in its
section (`[server] port = 8080`), the environment variable `KETANG_PORT`, and the flag `--port`.
Nothing here reads `os.environ`; the entry point passes the environment in.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.core.ladder import LadderError, Rendition, parse_ladder

ENV_PREFIX = "KETANG_"
# Names the entry point reads itself; load_config lets them pass.
ENV_RESERVED = frozenset({"KETANG_CONFIG"})
# HS256 keys shorter than the hash output are weak; per RFC 7518 §3.2.
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration value is unknown, unconvertible or invalid; the message is one line."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    # Address the HTTP server binds to.
    host: str = "127.0.0.1"
    # TCP port of the HTTP server.
    port: int = 8080
    # PEM certificate chain for HTTPS; needs tls_key.
    tls_cert: Path | None = None
    # PEM private key for HTTPS; needs tls_cert.
    tls_key: Path | None = None
    # Serve HTTPS with a generated self-signed certificate (browsers need a secure context).
    self_signed: bool = False
    # Base URL printed in links, e.g. behind a reverse proxy; None derives it from scheme/host/port.
    public_url: str | None = None
    # Share the HTTP port with other processes (SO_REUSEPORT): the workers of `--workers N`
    # do, and the kernel spreads new connections over them.
    reuse_port: bool = False


@dataclass(frozen=True, slots=True)
class StorageConfig:
    # Holds the secret, recordings and the library; relative paths are from the working directory.
    data_dir: Path = Path("./data")
    # Redis for the room directory, node registry and events; None keeps all state in process.
    redis_url: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # Token signing secret (at least 32 bytes); None means read or generate <data_dir>/secret.
    secret: str | None = None
    # Default token lifetime in seconds: 7 days, since schools bookmark classroom links.
    token_ttl: int = 604800


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Minimum seconds between two upstream keyframe requests for one source; mediasoup's
    # keyFrameRequestDelay and JVB's 200 ms throttle do the same, we favour the teacher's uplink.
    keyframe_min_interval: float = 0.5
    # Per-classroom video queue bound in frames: about 1 s at 30 fps.
    video_queue_frames: int = 30
    # Per-classroom audio queue bound in packets: about 1 s of 20 ms Opus.
    audio_queue_packets: int = 50
    # Frames kept since the teacher's last keyframe (0.5 s at 30 fps) and replayed to a joining
    # classroom, so it starts at once instead of waiting for a new keyframe (Galène and Janus
    # replay cached keyframes too); older GOPs are not replayed and a keyframe is requested.
    gop_cache_frames: int = 15
    # Largest SDP offer accepted, in bytes; larger bodies get 413.
    max_sdp_bytes: int = 65536
    # Renditions the relay makes of each teacher video source for classrooms whose link cannot
    # carry the teacher's own stream: WIDTHxHEIGHT@KBITS, highest first, comma-separated. Each
    # is decoded and encoded once per room, only while some classroom uses it. Empty: none.
    ladder: str = "640x360@500,320x180@150"
    # Frame rate of the screen share's last resort (the lowest rendition's size), sent when not
    # even the lowest rendition fits: slides change rarely, a still beats no picture.
    still_fps: float = 2.0
    # `ladder` and `still_fps` parsed, once, when the config is built (not a setting).
    renditions: tuple[Rendition, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        try:
            renditions = parse_ladder(self.ladder, self.still_fps)
        except LadderError as error:
            raise ConfigError(f"invalid config: {error}") from None
        object.__setattr__(self, "renditions", renditions)


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    # Record every lesson into the course library (the teacher's original media, no re-encoding).
    record: bool = True
    # Rooms never recorded, comma-separated (e.g. a staff meeting room).
    record_skip_rooms: str = ""
    # Seconds a lesson that lost its last source stays open: a teacher who reconnects within
    # this continues the same recording instead of starting a second one.
    reconnect_grace: float = 30.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # When set, GET /metrics requires `Authorization: Bearer <bearer_token>`.
    bearer_token: str | None = None
    # Grafana's address, for the admin page to link to its dashboards (hidden when unset).
    grafana_url: str | None = None


@dataclass(frozen=True, slots=True)
class IceConfig:
    # STUN/TURN servers offered to clients in `Link` headers (RFC 9725 §4.6), comma-separated
    # stun:, stuns:, turn: or turns: URLs. Empty: clients use none (the relay is reachable).
    stun_urls: str = ""
    # The address classrooms reach this relay on when it sits behind 1:1 NAT (a cloud VM sees
    # only its private address): its host candidates carry this one instead, as Janus's
    # nat_1_1_mapping does. None: the addresses of the machine's own interfaces.
    public_ip: str | None = None
    # With public_ip, also keep the private host candidates (classrooms on the same LAN).
    keep_private_ip: bool = False
    # UDP port of the one socket that carries every peer connection's media in this process
    # (each worker of a cluster its own): open it in the firewall beside the HTTP port.
    # 0 lets the system choose a free one (tests; the log says which).
    udp_port: int = 8081
    # false: every peer connection binds sockets of its own on random ports, as aioice does
    # alone; only for measuring the one socket against them.
    udp_mux: bool = True
    # TURN servers for classrooms that cannot reach the relay over UDP (a school firewall
    # letting out only TCP 443), comma-separated turn:/turns: URLs, e.g.
    # "turn:turn.example.org:3478?transport=udp,turns:turn.example.org:443?transport=tcp".
    turn_urls: str = ""
    # coturn's static-auth-secret (use-auth-secret): the relay mints credentials from it.
    turn_secret: str | None = None
    # Seconds a minted TURN credential stays valid: a school day, so a projector page that
    # reconnects in the afternoon still can; a leaked one is worthless by the next morning.
    turn_ttl: int = 43200

    @property
    def servers(self) -> tuple[str, ...]:
        return _urls(self.stun_urls)

    @property
    def turn(self) -> tuple[str, ...]:
        return _urls(self.turn_urls)


def _urls(text: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in text.split(",") if u.strip())


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    # With redis_url: the base URL other nodes reach this node on, for pulling its lessons
    # (e.g. http://10.0.0.5:8080); None derives it from host and port, which suits nodes on
    # one machine (host 127.0.0.1) or a host bound to its own address.
    node_url: str | None = None
    # Relay processes on this machine, each a node of the cluster with its own media port
    # (udp_port + i) and a loopback port for the other nodes; they share the HTTP port.
    # Above 1 it needs redis_url.
    workers: int = 1
    # A second HTTP listener on 127.0.0.1 for the other nodes of this machine (a worker's
    # own address, where the shared port could reach any worker); None: none.
    node_port: int | None = None
    # The base URL classrooms reach this node on directly (its own public name). Nodes that
    # have one take new classrooms from busier nodes by 307 (RFC 9725 §4.5); None: never.
    public_node_url: str | None = None
    # Sessions a node may serve beyond the least busy node with a public_node_url before it
    # sends new classrooms there; classrooms of one lesson then spread over the nodes.
    placement_gap: int = 20


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    # Live and negotiating sessions one token may hold: a school's page that reconnects, or
    # a second projector on the same link, stays under it; a leaked token cannot flood a room.
    sessions_per_token: int = 6
    # Sessions one room may hold in one process; beyond, new joins get 503 with Retry-After.
    sessions_per_room: int = 600
    # Seconds a new session may take to complete ICE and DTLS before it is ended.
    setup_seconds: float = 15.0
    # Seconds without any packet from a connected peer after which it is taken as gone (a
    # browser sends RTCP about every second and ICE consent checks every 4-6 s, RFC 7675).
    silence_seconds: float = 8.0
    # Event WebSockets one token may hold open at once.
    sockets_per_token: int = 4
    # Messages per second a page may send on its event WebSocket (a burst of 3 s is allowed).
    page_messages_per_second: float = 5.0
    # Seconds a client may take to send a request body (slow bodies hold a connection).
    body_seconds: float = 10.0
    # Seconds an HTTP connection may stay idle, or take to send its request headers.
    idle_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class Config:
    # HTTP listener and the URLs it advertises.
    server: ServerConfig = field(default_factory=ServerConfig)
    # Where state and files live.
    storage: StorageConfig = field(default_factory=StorageConfig)
    # Token signing.
    auth: AuthConfig = field(default_factory=AuthConfig)
    # Media path bounds.
    media: MediaConfig = field(default_factory=MediaConfig)
    # The Prometheus endpoint.
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Lesson recording and the course library.
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    # ICE servers offered to clients.
    ice: IceConfig = field(default_factory=IceConfig)
    # What one token, one room and one connection may use.
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # This process as a node of a cluster (with storage.redis_url).
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def _section_classes() -> dict[str, type[Any]]:
    """Section name to dataclass, read from Config so the two cannot drift apart."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _field_types() -> dict[str, tuple[str, object]]:
    """Flat field name to (section, type hint): the one table every source is checked against."""
    table: dict[str, tuple[str, object]] = {}
    for section, cls in _section_classes().items():
        hints = typing.get_type_hints(cls)
        for setting in dataclasses.fields(cls):
            if setting.init:  # derived fields are not settings
                table[setting.name] = (section, hints[setting.name])
    return table


SECTIONS = _section_classes()
FIELDS = _field_types()


def _to_int(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return int(raw.strip())
    raise ValueError


def _to_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError
    value = float(raw.strip()) if isinstance(raw, str) else raw
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError
    return float(value)


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
        return _BOOLS[raw.strip().lower()]
    raise ValueError


def _to_str(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError


def _to_path(raw: object) -> Path:
    if isinstance(raw, str | Path) and str(raw):
        return Path(raw)
    raise ValueError


_CONVERTERS: dict[object, tuple[Callable[[object], object], str]] = {
    int: (_to_int, "an integer"),
    float: (_to_float, "a finite number"),
    bool: (_to_bool, "a boolean (1/0/true/false/yes/no)"),
    str: (_to_str, "a string"),
    Path: (_to_path, "a path"),
}


def _convert(name: str, raw: object, where: str, typed: bool = False) -> object:
    """Value of field `name` from a raw value; "" clears optional fields (handy in env).

    Text is parsed into numbers and booleans unless the source is `typed` (TOML), where
    `port = "80"` is more likely a mistake than a wish.
    """
    hint = FIELDS[name][1]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and raw == "":
        return None
    target = args[0] if args else hint
    convert, expected = _CONVERTERS[target]
    try:
        if typed and isinstance(raw, str) and target not in (str, Path):
            raise ValueError
        return convert(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: expected {expected}, got {raw!r}") from None


def _read_toml(file: Path) -> dict[str, Any]:
    """Parsed TOML file, with I/O and syntax problems turned into ConfigError."""
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"config file {file}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {file}: {error}") from None


def _from_file(file: Path) -> dict[str, object]:
    """Flat field values from a TOML file with one table per section."""
    values: dict[str, object] = {}
    for section, table in _read_toml(file).items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"config file {file}: unknown section [{section}]")
        for key, raw in table.items():
            if FIELDS.get(key, ("",))[0] != section:
                raise ConfigError(f"config file {file}: unknown key [{section}] {key}")
            where = f"config file {file}: [{section}] {key}"
            values[key] = _convert(key, raw, where, typed=True)
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    """Flat field values from KETANG_* variables; other variables are not ours and are skipped."""
    values: dict[str, object] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in ENV_RESERVED:
            continue
        key = var.removeprefix(ENV_PREFIX).lower()
        if key not in FIELDS or var != env_name(key):
            raise ConfigError(f"environment: unknown variable {var}")
        values[key] = _convert(key, raw, f"environment: {var}")
    return values


def _from_flags(flags: Mapping[str, object]) -> dict[str, object]:
    """Flat field values from command-line flags; None means the flag was not given."""
    values: dict[str, object] = {}
    for key, raw in flags.items():
        if key not in FIELDS:
            raise ConfigError(f"flags: unknown option {key}")
        if raw is not None:
            values[key] = _convert(key, raw, f"flag --{key.replace('_', '-')}")
    return values


def env_name(key: str) -> str:
    """Environment variable for a field, so help texts and errors name it the same way."""
    return ENV_PREFIX + key.upper()


def _build(values: Mapping[str, object]) -> Config:
    """Config from defaults overlaid with flat field values."""
    sections: dict[str, object] = {}
    for section, cls in SECTIONS.items():
        mine = {k: v for k, v in values.items() if FIELDS[k][0] == section}
        sections[section] = cls(**mine)
    return Config(**sections)  # type: ignore[arg-type]


def load_config(file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> Config:
    """Config from defaults < TOML file < KETANG_* environment < flags, then validated."""
    values: dict[str, object] = {}
    if file is not None:
        values.update(_from_file(file))
    values.update(_from_env(env))
    values.update(_from_flags(flags))
    config = _build(values)
    validate(config)
    return config


def load(file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> Config:
    """Config for a command: the file from its --config flag, else $KETANG_CONFIG, then the
    environment and its other flags."""
    named = file or env.get("KETANG_CONFIG") or None
    return load_config(Path(named) if named else None, env, flags)


def _server_problems(server: ServerConfig) -> list[str]:
    problems = []
    if not 1 <= server.port <= 65535:
        problems.append(f"port must be 1..65535, got {server.port}")
    if (server.tls_cert is None) != (server.tls_key is None):
        problems.append("tls_cert and tls_key must be given together")
    if server.self_signed and server.tls_cert is not None:
        problems.append("self_signed excludes tls_cert/tls_key")
    if server.public_url is not None and not server.public_url.startswith(("http://", "https://")):
        problems.append(
            f"public_url must start with http:// or https://, got {server.public_url!r}"
        )
    return problems


def _cluster_problems(config: Config) -> list[str]:
    cluster = config.cluster
    problems = []
    if cluster.workers < 1:
        problems.append(f"workers must be at least 1, got {cluster.workers}")
    elif cluster.workers > 1 and config.storage.redis_url is None:
        problems.append("workers above 1 need redis_url: the workers are nodes of a cluster")
    if cluster.node_port is not None and not 1 <= cluster.node_port <= 65535:
        problems.append(f"node_port must be 1..65535, got {cluster.node_port}")
    return problems


def _storage_problems(storage: StorageConfig) -> list[str]:
    url = storage.redis_url
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        return [f"redis_url must start with redis://, rediss:// or unix://, got {url!r}"]
    return []


def _auth_problems(auth: AuthConfig) -> list[str]:
    problems = []
    if auth.secret is not None and len(auth.secret.encode()) < MIN_SECRET_BYTES:
        problems.append(f"secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)")
    if auth.token_ttl <= 0:
        problems.append(f"token_ttl must be positive, got {auth.token_ttl}")
    return problems


def _positive(section: object) -> list[str]:
    """Every number of a section must be positive."""
    numbers = {
        k: v
        for k, v in dataclasses.asdict(section).items()  # type: ignore[call-overload]
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return [
        f"{name} must be positive, got {value}" for name, value in numbers.items() if value <= 0
    ]


def _ice_problems(ice: IceConfig) -> list[str]:
    schemes = ("stun:", "stuns:", "turn:", "turns:")
    problems = []
    if not 0 <= ice.udp_port <= 65535:
        problems.append(f"udp_port must be 0-65535, got {ice.udp_port}")
    if ice.public_ip is not None:
        try:
            ipaddress.ip_address(ice.public_ip)
        except ValueError:
            problems.append(f"public_ip must be an IP address, got {ice.public_ip!r}")
    if ice.turn and ice.turn_secret is None:
        problems.append("turn_urls need turn_secret (coturn's static-auth-secret)")
    urls: list[tuple[str, str, tuple[str, ...]]] = [("stun_urls", u, schemes) for u in ice.servers]
    urls += [("turn_urls", u, ("turn:", "turns:")) for u in ice.turn]
    return problems + [
        f"{name}: {url!r} is not a {' or '.join(allowed)} URL"
        for name, url, allowed in urls
        if not url.startswith(allowed) or any(c in url for c in '<>" ,;')
    ]


def validate(config: Config) -> None:
    """Raise ConfigError naming every broken rule, so one restart fixes them all."""
    problems = [
        *_server_problems(config.server),
        *_storage_problems(config.storage),
        *_auth_problems(config.auth),
        *_positive(config.media),
        *_ice_problems(config.ice),
        *_positive(config.limits),
        *_cluster_problems(config),
    ]
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def base_url(server: ServerConfig) -> str:
    """Base URL for printed links: public_url if set, else derived from scheme, host and port."""
    if server.public_url is not None:
        return server.public_url.rstrip("/")
    scheme = "https" if server.tls_cert is not None or server.self_signed else "http"
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{scheme}://{host}:{server.port}"
