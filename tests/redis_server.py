"""A private redis-server for tests: its own free loopback port, never the machine's 6379."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Seconds a fresh redis-server may take to answer PING; it usually takes a few milliseconds.
START_TIMEOUT = 10.0
# Seconds it may take to exit on SIGTERM (it saves nothing: --save "" --appendonly no).
STOP_TIMEOUT = 10.0
MACHINE_PORT = 6379  # the machine's own Redis, which tests must never touch


def redis_server_path() -> str | None:
    """The redis-server binary, if installed (`make test` installs it)."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(port: int) -> bool:
    """True when a Redis on the port replies +PONG, in plain RESP without a client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process with no persistence: `stop()` loses everything, and `start()`
    again brings it back empty on the same port, as a Redis restart does."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        if self.port == MACHINE_PORT:
            raise ValueError("tests never use the machine's Redis on 6379")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Run it and wait until it answers PING, for at most START_TIMEOUT."""
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=log)
        self._wait_until_ready()

    def stop(self) -> None:
        """SIGTERM and wait for the exit: from now on connections are refused."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            assert self._process is not None
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)
