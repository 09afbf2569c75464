"""`ketang serve --workers N`: N relay processes on this machine, each a node of the cluster.

One process uses one core; N workers use N. They share the HTTP port (SO_REUSEPORT: the
kernel spreads new connections over them, and any node accepts any request for any room),
and each has its own media port (`udp_port + i`) and a loopback port for the other nodes
(pulls of a lesson, forwarded requests). A worker starts with its parent's resolved config as
KETANG_* variables, so the two cannot disagree. A worker that dies is started again after
RESTART_SECONDS: its classrooms reconnect meanwhile through the others.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from relay.config import FIELDS, Config, env_name

logger = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
# Seconds a worker has to finish its lessons' recordings after SIGTERM before it is killed.
STOP_SECONDS = 30.0


@dataclass
class Worker:
    """One worker process and what makes it distinct."""

    index: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "relay", "serve"]
        self.process = subprocess.Popen(command, env=self.env)
        logger.info("worker %d started (pid %d)", self.index, self.process.pid)


def as_environment(config: Config) -> dict[str, str]:
    """Every setting as KETANG_* variables: what a worker process is started with, so it
    runs with exactly its parent's resolved config (an unset optional is "")."""
    env = {}
    for name, (section, _) in FIELDS.items():
        value = getattr(getattr(config, section), name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        env[env_name(name)] = text
    return env


def loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a worker's node address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_env(
    config: Config, index: int, secret: bytes, base: Mapping[str, str]
) -> dict[str, str]:
    """Worker `index`'s environment: the parent's config, one signing secret, its own ports."""
    env = {k: v for k, v in base.items() if not k.startswith("KETANG_")}
    env |= as_environment(config)
    udp = config.ice.udp_port
    env |= {
        "KETANG_SECRET": secret.decode(),
        "KETANG_WORKERS": "1",
        "KETANG_REUSE_PORT": "true",
        "KETANG_UDP_PORT": str(udp + index if udp else 0),
        "KETANG_NODE_PORT": str(loopback_port()),
        "KETANG_NODE_URL": "",
    }
    return env


def run_workers(config: Config, secret: bytes, base: Mapping[str, str]) -> int:
    """Start the workers and keep them running until SIGINT or SIGTERM; returns 0."""
    workers = [
        Worker(i, worker_env(config, i, secret, base)) for i in range(config.cluster.workers)
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for worker in workers:
        worker.start()
    while not stopping:
        time.sleep(RESTART_SECONDS)
        for worker in workers:
            if not stopping and worker.process is not None and worker.process.poll() is not None:
                logger.warning("worker %d exited with %s", worker.index, worker.process.returncode)
                worker.start()
    _stop_all(workers)
    return 0


def _stop_all(workers: list[Worker]) -> None:
    """SIGTERM every worker, then wait; kill the ones that outstay STOP_SECONDS."""
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
