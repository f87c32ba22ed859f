"""serve's health follows the current state: a poll that fails makes it unhealthy, the next one that
succeeds makes it healthy again (issue #21: after a passing EMFILE, /healthz stayed 503 until a restart)."""

from __future__ import annotations

import errno
import time
from types import SimpleNamespace

from nstrack.config import Config
from nstrack.model.replica import Replica
from nstrack.service import Service


class FlakyTracker:
    """What Service uses of a Tracker, polling as told: raise OSError(EMFILE) while ``fail`` is set."""

    def __init__(self) -> None:
        self.fail = False
        self.replica = Replica()
        self.rescan_seconds = 2.0
        self.stats = SimpleNamespace(last_scan_wall=time.time())
        self.mode = "tracepoint"

    def wait(self, timeout: float) -> None:
        pass

    def poll(self, timeout: float = 0.5) -> list[object]:
        if self.fail:
            raise OSError(errno.EMFILE, "Too many open files")
        self.stats.last_scan_wall = time.time()
        return []


def service_with(tracker: FlakyTracker) -> Service:
    svc = Service.__new__(Service)  # without loading BPF: the state health() reads, and _step's tracker
    svc.config = Config()
    svc.tracker = tracker  # type: ignore[assignment]
    import threading

    svc.lock = threading.RLock()
    svc.error = None
    svc.last_poll = time.monotonic()
    svc._next_holders = float("inf")  # no holder scan in this test
    svc._thread = SimpleNamespace(is_alive=lambda: True)  # type: ignore[assignment]
    svc.lifetimes = SimpleNamespace()  # type: ignore[assignment]
    svc._observe = lambda changes: None  # type: ignore[method-assign]
    return svc


def test_health_recovers_when_polls_succeed_again() -> None:
    tracker = FlakyTracker()
    svc = service_with(tracker)
    assert svc._step() and svc.health()[0]
    tracker.fail = True
    assert not svc._step()
    ok, why = svc.health()
    assert not ok and "EMFILE" not in why and "Too many open files" in why
    tracker.fail = False
    assert svc._step()
    ok, why = svc.health()
    assert ok, why
    assert svc.error is None
