"""Build real namespaces for tests and always tear them down (processes, fds, bind mounts)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nstrack.kernel.tracker import Tracker
from nstrack.model.replica import Change

HELPER_SOURCE = Path(__file__).with_name("nshelper.c")
HELPER_BUILT = Path(__file__).resolve().parents[2] / "build" / "nshelper"  # by `make setup`
NS_FILE_UNSHARE = {"pid": "pid_for_children", "time": "time_for_children"}

# Kernels free net and user namespaces from workqueues and pid namespaces after RCU: allow for that
# (generously: the VM matrix runs under software emulation).
ASYNC_FREE_GRACE = 20.0


def stop_child(proc: subprocess.Popen[Any], close_stdin: bool = False, timeout: float = 20) -> None:
    """Stop a process this test started (never any other): ask, wait, then kill."""
    if proc.poll() is None:
        if close_stdin and proc.stdin is not None:
            proc.stdin.close()
        else:
            proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Made:
    type: str
    how: str
    inum: int
    member_pid: int
    creator_tgid: int
    proc: subprocess.Popen[str]

    @property
    def ns_file(self) -> str:
        return NS_FILE_UNSHARE.get(self.type, self.type) if self.how == "unshare" else self.type

    @property
    def path(self) -> str:
        return f"/proc/{self.member_pid}/ns/{self.ns_file}"

    def end_process(self) -> None:
        stop_child(self.proc, close_stdin=True, timeout=10)


_helper: list[str] = []


def helper() -> str:
    """The nshelper binary: `make setup`'s, or built here (into a temporary folder: the VM guests see the
    project read-only) when that one is missing or older than its source."""
    if _helper:
        return _helper[0]
    own = Path(tempfile.gettempdir()) / f"nstrack-nshelper-{os.getuid()}"
    source_time = HELPER_SOURCE.stat().st_mtime
    for path in (HELPER_BUILT, own):
        if path.is_file() and path.stat().st_mtime >= source_time:
            _helper.append(str(path))
            return str(path)
    errors = []
    for cc in ("cc", "clang", "gcc"):
        try:
            r = subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(own), str(HELPER_SOURCE)],
                               capture_output=True, text=True, check=False)
        except FileNotFoundError:
            errors.append(f"{cc}: not installed")
            continue
        if r.returncode == 0:
            _helper.append(str(own))
            return str(own)
        errors.append(f"{cc}: {r.stderr.strip()[-300:]}")
    raise RuntimeError(f"cannot build {HELPER_SOURCE} (`make setup` builds it): " + "; ".join(errors))


@contextmanager
def make_namespace(how: str, type_: str) -> Iterator[Made]:
    proc = subprocess.Popen([helper(), how, type_], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        parent = proc.pid
        member = inum = None
        for _ in range(2 if how == "clone" else 1):
            line = proc.stdout.readline().split()
            if not line:
                raise RuntimeError(f"nshelper {how} {type_} failed (exit {proc.wait()})")
            if line[0] == "parent":
                parent, member = int(line[1]), int(line[2])
            elif line[0] == "child":
                inum = int(line[1])
            else:
                member, inum = int(line[0]), int(line[1])
        assert member is not None and inum is not None
        yield Made(type_, how, inum, member, parent, proc)
    finally:
        stop_child(proc, close_stdin=True, timeout=10)


@contextmanager
def nsfs_fd(made: Made) -> Iterator[int]:
    fd = os.open(made.path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def bind_mount(made: Made) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="nstrack-test-") as d:
        target = os.path.join(d, f"{made.type}-{made.inum}")
        Path(target).touch()
        subprocess.run(["mount", "--bind", made.path, target], check=True)
        try:
            yield target
        finally:
            subprocess.run(["umount", "-l", target], check=False)


class Recorder:
    """Pumps a tracker and keeps every change it reports."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.changes: list[Change] = []

    def pump(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        while True:
            self.changes.extend(self.tracker.poll(0.05))
            if time.monotonic() >= end:
                return

    def wait_for(self, pred: Callable[[Change], bool], timeout: float) -> list[Change]:
        end = time.monotonic() + timeout
        while True:
            hits = [c for c in self.changes if pred(c)]
            if hits or time.monotonic() >= end:
                return hits
            self.changes.extend(self.tracker.poll(0.1))

    def mark(self) -> int:
        self.pump()
        return len(self.changes)

    def since(self, mark: int) -> list[Change]:
        return self.changes[mark:]

