"""Config loading: precedence, unknown keys, conversion, validation and the base URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import (
    FIELDS,
    Config,
    ConfigError,
    ServerConfig,
    base_url,
    env_name,
    load_config,
)

SECRET = "s" * 32


def write_toml(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "ketang.toml"
    file.write_text(text)
    return file


def test_defaults_without_any_source() -> None:
    assert load_config(None, {}, {}) == Config()


def test_defaults_match_documented_values() -> None:
    config = Config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.storage.data_dir == Path("./data")
    assert config.auth.token_ttl == 7 * 24 * 3600
    assert config.media.max_sdp_bytes == 64 * 1024


@pytest.mark.parametrize(
    ("use_file", "env", "flags", "expected"),
    [
        (False, {}, {}, 8080),
        (True, {}, {}, 7001),
        (True, {"KETANG_PORT": "7002"}, {}, 7002),
        (True, {"KETANG_PORT": "7002"}, {"port": 7003}, 7003),
        (False, {}, {"port": 7003}, 7003),
        (True, {"KETANG_PORT": "7002"}, {"port": None}, 7002),
    ],
)
def test_later_sources_override_earlier_ones(
    tmp_path: Path, use_file: bool, env: dict[str, str], flags: dict[str, object], expected: int
) -> None:
    file = write_toml(tmp_path, "[server]\nport = 7001\n") if use_file else None
    assert load_config(file, env, flags).server.port == expected


def test_sources_merge_field_by_field(tmp_path: Path) -> None:
    file = write_toml(
        tmp_path, '[server]\nhost = "0.0.0.0"\nport = 7001\n[media]\nmax_sdp_bytes = 1000\n'
    )
    config = load_config(file, {"KETANG_PORT": "7002"}, {"data_dir": "/srv/k"})
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 7002
    assert config.media.max_sdp_bytes == 1000
    assert config.storage.data_dir == Path("/srv/k")


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"KETANG_HOST": "::"}, "host", "::"),
        ({"KETANG_SELF_SIGNED": "yes"}, "self_signed", True),
        ({"KETANG_SELF_SIGNED": "0"}, "self_signed", False),
        ({"KETANG_SELF_SIGNED": "TRUE"}, "self_signed", True),
        ({"KETANG_DATA_DIR": "/var/lib/k"}, "data_dir", Path("/var/lib/k")),
        ({"KETANG_REDIS_URL": "redis://r:6379/0"}, "redis_url", "redis://r:6379/0"),
        ({"KETANG_REDIS_URL": ""}, "redis_url", None),
        ({"KETANG_SECRET": SECRET}, "secret", SECRET),
        ({"KETANG_TOKEN_TTL": "60"}, "token_ttl", 60),
        ({"KETANG_KEYFRAME_MIN_INTERVAL": "0.2"}, "keyframe_min_interval", 0.2),
        ({"KETANG_VIDEO_QUEUE_FRAMES": "10"}, "video_queue_frames", 10),
        ({"KETANG_AUDIO_QUEUE_PACKETS": "5"}, "audio_queue_packets", 5),
        ({"KETANG_BEARER_TOKEN": "b"}, "bearer_token", "b"),
        ({"KETANG_PUBLIC_URL": "https://k.example/"}, "public_url", "https://k.example/"),
    ],
)
def test_environment_values_are_converted_to_field_types(
    env: dict[str, str], field: str, expected: object
) -> None:
    section = getattr(load_config(None, env, {}), FIELDS[field][0])
    assert getattr(section, field) == expected


def test_tls_paths_from_environment_become_paths() -> None:
    env = {"KETANG_TLS_CERT": "c.pem", "KETANG_TLS_KEY": "k.pem"}
    server = load_config(None, env, {}).server
    assert (server.tls_cert, server.tls_key) == (Path("c.pem"), Path("k.pem"))


def test_integer_file_value_is_accepted_for_float_field(tmp_path: Path) -> None:
    file = write_toml(tmp_path, "[media]\nkeyframe_min_interval = 1\n")
    assert load_config(file, {}, {}).media.keyframe_min_interval == 1.0


def test_config_path_variable_is_not_a_field() -> None:
    assert load_config(None, {"KETANG_CONFIG": "x.toml", "HOME": "/root"}, {}) == Config()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[media]\nfoo = 1\n", "unknown key [media] foo"),
        ("[server]\ndata_dir = 'x'\n", "unknown key [server] data_dir"),
        ("[bogus]\nport = 1\n", "unknown section [bogus]"),
        ("port = 1\n", "unknown section [port]"),
        ("[server]\nport = '80'\n", "[server] port: expected an integer"),
        ("[server]\nport = 8.5\n", "[server] port: expected an integer"),
        ("[server]\nself_signed = 'maybe'\n", "[server] self_signed: expected a boolean"),
        ("[server]\nhost = 1\n", "[server] host: expected a string"),
        ("[server\n", "config file"),
    ],
)
def test_bad_config_file_errors_name_key_and_file(tmp_path: Path, toml: str, message: str) -> None:
    file = write_toml(tmp_path, toml)
    with pytest.raises(ConfigError, match=r"config file .*ketang\.toml") as caught:
        load_config(file, {}, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_config(tmp_path / "missing.toml", {}, {})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KETANG_PROT": "1"}, "environment: unknown variable KETANG_PROT"),
        ({"KETANG_SERVER": "1"}, "environment: unknown variable KETANG_SERVER"),
        ({"KETANG_port": "1"}, "environment: unknown variable KETANG_port"),
        ({"KETANG_PORT": "http"}, "environment: KETANG_PORT: expected an integer, got 'http'"),
        ({"KETANG_SELF_SIGNED": "on"}, "environment: KETANG_SELF_SIGNED: expected a boolean"),
        (
            {"KETANG_KEYFRAME_MIN_INTERVAL": "nan"},
            "KETANG_KEYFRAME_MIN_INTERVAL: expected a finite",
        ),
        ({"KETANG_TOKEN_TTL": "1.5"}, "environment: KETANG_TOKEN_TTL: expected an integer"),
    ],
)
def test_bad_environment_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env, {})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"prot": 1}, "flags: unknown option prot"),
        ({"config": "x.toml"}, "flags: unknown option config"),
        ({"port": "x"}, "flag --port: expected an integer"),
        ({"port": True}, "flag --port: expected an integer"),
        ({"data_dir": 3}, "flag --data-dir: expected a path"),
    ],
)
def test_bad_flags_error(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, flags)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": 0}, "port must be 1..65535"),
        ({"port": 65536}, "port must be 1..65535"),
        ({"tls_cert": "c.pem"}, "tls_cert and tls_key must be given together"),
        ({"tls_key": "k.pem"}, "tls_cert and tls_key must be given together"),
        (
            {"tls_cert": "c.pem", "tls_key": "k.pem", "self_signed": True},
            "self_signed excludes tls_cert",
        ),
        ({"public_url": "k.example"}, "public_url must start with http"),
        ({"redis_url": "localhost:6379"}, "redis_url must start with redis://"),
        ({"secret": "short"}, "secret must be at least 32 bytes"),
        ({"token_ttl": 0}, "token_ttl must be positive"),
        ({"keyframe_min_interval": 0.0}, "keyframe_min_interval must be positive"),
        ({"video_queue_frames": -1}, "video_queue_frames must be positive"),
        ({"audio_queue_packets": 0}, "audio_queue_packets must be positive"),
        ({"max_sdp_bytes": 0}, "max_sdp_bytes must be positive"),
    ],
)
def test_validation_rejects_inconsistent_values(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid config") as caught:
        load_config(None, {}, flags)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "flags",
    [
        {"tls_cert": "c.pem", "tls_key": "k.pem"},
        {"self_signed": True},
        {"redis_url": "rediss://r:6380"},
        {"redis_url": "unix:///run/redis.sock"},
        {"port": 1},
        {"port": 65535},
    ],
)
def test_validation_accepts_consistent_values(flags: dict[str, object]) -> None:
    load_config(None, {}, flags)


def test_validation_reports_every_problem_on_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, {"port": 0, "token_ttl": 0})
    assert "port" in str(caught.value) and "token_ttl" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (ServerConfig(), "http://127.0.0.1:8080"),
        (ServerConfig(host="0.0.0.0", port=80), "http://0.0.0.0:80"),
        (ServerConfig(self_signed=True, port=8443), "https://127.0.0.1:8443"),
        (ServerConfig(tls_cert=Path("c"), tls_key=Path("k")), "https://127.0.0.1:8080"),
        (ServerConfig(host="::1"), "http://[::1]:8080"),
        (ServerConfig(public_url="https://ketang.example/edu/"), "https://ketang.example/edu"),
    ],
)
def test_base_url_prefers_public_url_else_scheme_host_port(
    server: ServerConfig, expected: str
) -> None:
    assert base_url(server) == expected


def test_env_name_is_prefix_plus_upper_field() -> None:
    assert env_name("keyframe_min_interval") == "KETANG_KEYFRAME_MIN_INTERVAL"
