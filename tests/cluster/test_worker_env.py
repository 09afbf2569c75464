"""A worker starts from its parent's resolved config, as KETANG_* variables."""

from __future__ import annotations

from pathlib import Path

from relay.cluster.workers import as_environment, worker_env
from relay.config import load_config

SETTINGS = {
    "KETANG_REDIS_URL": "redis://127.0.0.1:6390/0",
    "KETANG_WORKERS": "3",
    "KETANG_UDP_PORT": "9000",
    "KETANG_PUBLIC_IP": "203.0.113.7",
    "KETANG_LADDER": "640x360@500",
    "KETANG_SILENCE_SECONDS": "5.5",
    "KETANG_RECORD": "false",
}


def test_the_environment_gives_back_the_same_config(tmp_path: Path) -> None:
    config = load_config(None, SETTINGS, {"data_dir": str(tmp_path)})
    assert load_config(None, as_environment(config), {}) == config


def test_each_worker_gets_one_secret_and_ports_of_its_own(tmp_path: Path) -> None:
    config = load_config(None, SETTINGS, {"data_dir": str(tmp_path)})
    envs = [worker_env(config, i, b"s" * 32, {"PATH": "/bin", "KETANG_X": "y"}) for i in (0, 1)]
    workers = [load_config(None, env, {}) for env in envs]
    assert [w.ice.udp_port for w in workers] == [9000, 9001]
    assert all(w.cluster.workers == 1 and w.server.reuse_port for w in workers)
    assert workers[0].cluster.node_port != workers[1].cluster.node_port
    assert {w.auth.secret for w in workers} == {"s" * 32}
    assert all(env["PATH"] == "/bin" and "KETANG_X" not in env for env in envs)
