"""The `ketang` command line: token printing, a real `serve`, errors and `python -m relay`."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from relay.cli import main, print_links
from relay.config import Config
from relay.tokens import load_secret, verify
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's KETANG_* settings out of these tests."""
    for name in list(os.environ):
        if name.startswith("KETANG_"):
            monkeypatch.delenv(name)


def _secret(data_dir: Path) -> bytes:
    return load_secret(Config().auth, data_dir)


def test_token_prints_one_verifiable_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "r1", "--role", "classroom", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    grant = verify(_secret(tmp_path), out.strip(), "r1", {"classroom"})
    assert (grant.role, grant.name) == ("classroom", "classroom")


def test_token_name_and_ttl_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "r1", "--role", "teacher", "--name", "Ms Li", "--ttl", "60"]
    assert main([*argv, "--data-dir", str(tmp_path)]) == 0
    grant = verify(_secret(tmp_path), capsys.readouterr().out.strip(), "r1", {"teacher"})
    assert grant.name == "Ms Li"


def test_admin_token_for_all_rooms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "*", "--role", "admin", "--data-dir", str(tmp_path)]) == 0
    assert verify(_secret(tmp_path), capsys.readouterr().out.strip(), "any", {"admin"})


def test_token_uses_secret_from_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KETANG_SECRET", "e" * 32)
    assert main(["token", "r1", "--role", "teacher", "--data-dir", str(tmp_path)]) == 0
    assert verify(b"e" * 32, capsys.readouterr().out.strip(), "r1", {"teacher"})
    assert not (tmp_path / "secret").exists()


@pytest.mark.parametrize("before_command", [True, False])
def test_config_file_option_works_before_or_after_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], before_command: bool
) -> None:
    file = tmp_path / "k.toml"
    file.write_text(f"[storage]\ndata_dir = '{tmp_path / 'd'}'\n")
    command = ["token", "r1", "--role", "teacher"]
    option = ["--config", str(file)]
    assert main([*option, *command] if before_command else [*command, *option]) == 0
    assert (tmp_path / "d" / "secret").exists()


def test_config_file_from_environment_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "k.toml"
    file.write_text(f"[storage]\ndata_dir = '{tmp_path / 'd'}'\n")
    monkeypatch.setenv("KETANG_CONFIG", str(file))
    assert main(["token", "r1", "--role", "teacher"]) == 0
    assert (tmp_path / "d" / "secret").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "r1", "--role", "student"], "invalid choice: 'student'"),
        (["token", "r1"], "--role"),
        (["token", "bad/room", "--role", "teacher"], "bad room name 'bad/room'"),
        (["token", "*", "--role", "teacher"], "bad room name '*'"),
        (["token", "r1", "--role", "teacher", "--ttl", "0"], "token_ttl must be positive"),
        (["token", "r1", "--role", "teacher", "--config", "/nonexistent.toml"], "nonexistent"),
        (["serve", "--port", "0"], "port must be 1..65535"),
        (["serve", "--self-signed", "--tls-cert", "c", "--tls-key", "k"], "self_signed excludes"),
        ([], "required: COMMAND"),
    ],
)
def test_errors_exit_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--data-dir", str(tmp_path)] if argv else argv) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^ketang: error: .*{re.escape(message)}", err, re.MULTILINE), err


def test_unknown_environment_variable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KETANG_PROT", "1")
    assert main(["token", "r1", "--role", "teacher", "--data-dir", str(tmp_path)]) == 2
    assert "ketang: error: environment: unknown variable KETANG_PROT" in capsys.readouterr().err


def test_print_links_gives_working_tokens(tmp_path: Path) -> None:
    out = io.StringIO()
    secret = b"s" * 32
    print_links(Config(), secret, out=out)
    text = out.getvalue()
    base = "http://127.0.0.1:8080"
    links = dict(re.findall(rf"{base}(/\w+(?:/demo)?)\?token=(\S+)", text))
    (admin,) = re.findall(rf"{base}/admin\?token=(\S+)", text)
    granted = verify(secret, admin, "any-room", {"admin"})
    assert granted.room == "*"
    assert granted.exp - time.time() <= 12 * 3600 + 5  # not the week a classroom link gets
    assert verify(secret, links["/teach/demo"], "demo", {"teacher"}).role == "teacher"
    classrooms = re.findall(rf"{base}/class/demo\?token=(\S+)", text)
    names = {verify(secret, c, "demo", {"classroom"}).name for c in classrooms}
    assert names == {"Classroom 1", "Classroom 2"}
    assert f"{base}/whip/demo?source=camera" in text


def test_serve_runs_the_relay_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--udp-port", "0"]
    command += ["--data-dir", str(tmp_path), "--public-url", "https://k.example"]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as relay:
        try:
            health = _poll_json(f"http://127.0.0.1:{port}/healthz", timeout=20)
            assert health["status"] == "ok"
        finally:
            relay.send_signal(signal.SIGTERM)
            out, _ = relay.communicate(timeout=20)
    assert relay.returncode == 0
    # a service's output (not a terminal) names the relay but carries no token
    assert "Ketang relay at https://k.example" in out and "token=" not in out
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def _poll_json(url: str, timeout: float) -> dict[str, object]:
    """GET `url` until it answers, as a client waiting for a starting server would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: dict[str, object] = json.load(response)
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    command = [sys.executable, "-m", "relay", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_python_m_relay_tokens_agree_across_invocations(tmp_path: Path) -> None:
    first = _run_module("token", "r1", "--role", "teacher", "--data-dir", str(tmp_path))
    second = _run_module("token", "r1", "--role", "classroom", "--data-dir", str(tmp_path))
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    secret = _secret(tmp_path)
    assert verify(secret, first.stdout.strip(), "r1", {"teacher"}).role == "teacher"
    assert verify(secret, second.stdout.strip(), "r1", {"classroom"}).role == "classroom"


def test_python_m_relay_bad_role_exits_2() -> None:
    result = _run_module("token", "r1", "--role", "nobody")
    assert result.returncode == 2
    assert "ketang: error:" in result.stderr and result.stdout == ""
