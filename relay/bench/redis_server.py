"""A private redis-server for a benchmark's cluster: a free loopback port, no persistence.

`--peer ketang-workers2` runs its relay processes as nodes of a cluster, which needs Redis.
The bench starts Debian's redis-server for the run, pinned to the server's cores (it is part
of what a cluster costs), and never touches the machine's own Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

# Seconds a fresh redis-server may take to answer PING; it usually takes a few milliseconds.
START_TIMEOUT = 10.0
# Seconds it may take to exit on SIGTERM: it saves nothing (--save "" --appendonly no).
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_ping(port: int) -> bool:
    """True when a Redis on the port replies +PONG (plain RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class BenchRedis:
    """One redis-server process for one server under test."""

    def __init__(self, workdir: Path, cores: set[int]) -> None:
        self._workdir, self._cores = workdir, cores
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        """Run it on the given cores and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: redis-server)")
        self._workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self._port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self._workdir)]
        with (self._workdir / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                preexec_fn=lambda: os.sched_setaffinity(0, self._cores),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self._port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: see {self._workdir / 'redis.log'}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM and reap; kill it if it outstays STOP_TIMEOUT."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
