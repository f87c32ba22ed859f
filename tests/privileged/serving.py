"""Start `nstrack serve` on a free loopback port for a test, and always stop it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from .scenario import stop_child


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, port: int, proc: subprocess.Popen[str], log: IO[str] | None = None) -> None:
        self.port, self.proc = port, proc
        self.base = f"http://127.0.0.1:{port}"
        self._log = log

    def log_tail(self, lines: int = 40) -> str:
        """The last lines serve wrote (stdout and stderr), for assertion messages."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return "".join(self._log.readlines()[-lines:])

    def get(self, path: str, accept: str | None = None) -> tuple[int, str, str]:
        req = urllib.request.Request(self.base + path, headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()

    def json(self, path: str) -> Any:
        code, _, body = self.get(path)
        assert code == 200, (path, code, body)
        return json.loads(body)

    def metric(self, series: str) -> float:
        _, _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{series} not exported")


@contextmanager
def serve(*args: str) -> Iterator[Served]:
    port = free_port()
    # its output to a file, not a pipe: a pipe nobody reads would block serve once full
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nstrack", "serve", "--listen", f"127.0.0.1:{port}", *args],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        served = Served(port, proc, log)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"nstrack serve exited {proc.returncode}: {served.log_tail()}")
                try:
                    if served.get("/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nstrack serve did not become healthy in 60 s: {served.log_tail()}")
                time.sleep(0.2)
            yield served
        finally:
            stop_child(proc)
