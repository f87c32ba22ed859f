"""The long-running side of `nstrack serve`: a live tracker, holder scans, and what scrapes read.

One thread owns the kernel side (polls events, rescans, scans holders every ``holders_seconds``);
HTTP threads only read state under ``lock``. Nothing here renders: views/ does.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .config import Config
from .kernel.probe import Findings
from .kernel.tracker import Tracker, settle_after_start
from .model.holders import Entry, aggregate
from .model.records import boot_ns
from .model.replica import Change

log = logging.getLogger(__name__)

LIFETIME_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, float("inf"))


@dataclass
class Lifetimes:
    """Histogram of the lifetimes of destroyed namespaces, per type (only those seen being created)."""

    buckets: dict[str, list[int]] = field(default_factory=dict)
    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # seconds
    counts: Counter[str] = field(default_factory=Counter)

    def observe(self, type_: str, seconds: float) -> None:
        b = self.buckets.setdefault(type_, [0] * len(LIFETIME_BUCKETS))
        for i, le in enumerate(LIFETIME_BUCKETS):
            if seconds <= le:
                b[i] += 1
        self.sums[type_] += seconds
        self.counts[type_] += 1

    def observe_many(self, type_: str, lifetimes_ns: list[int]) -> None:
        """Many lifetimes of one type (in ns) at once: as many ``observe`` calls, counted per bucket by
        bisection."""
        lives = sorted(max(0, x) for x in lifetimes_ns)
        n = len(lives)
        b = self.buckets.setdefault(type_, [0] * len(LIFETIME_BUCKETS))
        for i, le in enumerate(LIFETIME_BUCKETS):
            b[i] += bisect_right(lives, le * 1e9)
        self.sums[type_] += sum(lives) / 1e9
        self.counts[type_] += n


    def add_counts(self, type_: str, counts: list[int], sum_ns: int) -> None:
        """Lifetimes counted elsewhere (BPF): how many per bucket (not cumulative; one per bound of
        LIFETIME_BUCKETS, the last for those above every finite bound) and their sum in ns."""
        b = self.buckets.setdefault(type_, [0] * len(LIFETIME_BUCKETS))
        total = 0
        for i, k in enumerate(counts):
            total += k
            b[i] += total
        self.sums[type_] += sum_ns / 1e9
        self.counts[type_] += total


class Service:
    def __init__(self, config: Config, findings: Findings) -> None:
        self.config = config
        self.findings = findings
        self.tracker = Tracker(findings, rescan_seconds=config.rescan_seconds, ringbuf_bytes=config.ringbuf_bytes,
                               defer_events=True)
        self.tracker.replica.tombstone_seconds = config.tombstone_seconds
        self.tracker.replica.keep_brief_lives = True  # for self.lifetimes (_observe)
        self.lock = threading.RLock()
        self.entries: list[Entry] = []  # holders, from the last holder scan
        self.entries_complete = False
        self.entries_reasons: list[str] = []
        self.entries_at = 0.0  # time.time() of that scan
        self.entries_version = 0  # bumped when the entries change (renderers may cache on it)
        self.render_cache: dict[str, tuple[int, list[Entry], list[str]]] = {}  # views/http.py
        self.ls_cache: dict[tuple[object, ...], str] = {}  # views/http.py /ls
        self._holder_inputs: tuple[object, ...] | None = None
        self.holder_scan_seconds = 0.0
        self.lifetimes = Lifetimes()
        self.started_at = time.time()
        self.last_poll = 0.0  # time.monotonic()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nstrack-tracker", daemon=True)
        self._next_holders = 0.0
        self.caps: set[str] | None = None  # effective capabilities after the drop (None: not dropped)

    @property
    def mode(self) -> str:
        return self.tracker.mode

    def start(self) -> None:
        """Load, attach and scan; then drop capabilities (unless keep_caps); then start the thread.

        Must run before any other thread exists: capabilities are per thread and new threads inherit
        the creating thread's.
        """
        with self.lock:
            self.tracker.start()
            self._scan_holders()
            settle_after_start()
            self.last_poll = time.monotonic()
        if not self.config.keep_caps:
            from .kernel.caps import RUNTIME_CAPS, drop_to
            from .kernel.host import effective_caps

            self.caps = drop_to(set(RUNTIME_CAPS) & effective_caps())
            log.info("capabilities after attaching: %s", ", ".join(sorted(self.caps)) or "none")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self.lock:
            self.tracker.close()

    def _observe(self, changes: list[Change]) -> None:
        for c in changes:
            ns = c.ns
            # ("paired": BPF counted its lifetime, below)
            if c.kind == "destroyed" and ns.created_ns is not None and ns.destroyed_ns is not None and c.via != "paired":
                self.lifetimes.observe(ns.type, max(0.0, (ns.destroyed_ns - ns.created_ns) / 1e9))
        replica = self.tracker.replica
        brief = replica.brief_lives
        if brief:
            replica.brief_lives = []
            for type_, lives in brief:
                self.lifetimes.observe_many(type_, lives)
        counted = replica.brief_life_counts
        if counted:
            replica.brief_life_counts = []
            for type_, buckets, sum_ns in counted:
                self.lifetimes.add_counts(type_, buckets, sum_ns)

    def catch_up(self) -> None:
        """Bring the replica up to date before a read (creations may wait for a rescan: Tracker)."""
        with self.lock:
            if self.tracker.behind:
                self._observe(self.tracker.catch_up())

    def _scan_holders(self) -> None:
        t0 = time.perf_counter()
        self.catch_up()  # creators of what the holder scan finds come from the replica
        s = self.tracker.scan(holders=True)
        # The scanner hands back the very same lists when the kernel's answer is unchanged; with the
        # replica unchanged too, the aggregation would come out the same.
        inputs = (s.namespaces, s.tasks, s.files, s.mounts, self.tracker.replica.version)
        last = self._holder_inputs
        if last is None or any(a is not b for a, b in zip(inputs[:3], last[:3])) or inputs[3:] != last[3:]:
            self.entries = aggregate(s.namespaces, s.tasks, s.files, s.mounts, replica=self.tracker.replica)
            self.entries_version += 1
        self._holder_inputs = inputs
        self.entries_complete = s.complete
        self.entries_reasons = s.incomplete_reasons
        self.entries_at = time.time()
        self.holder_scan_seconds = time.perf_counter() - t0
        self._next_holders = time.monotonic() + self.config.holders_seconds

    def refresh_holders(self, max_age: float = 1.0) -> None:
        """Rescan holders now unless the last scan is younger than ``max_age`` (for /namespaces)."""
        with self.lock:
            self.catch_up()  # also when the holders are recent: the replica may not be
            if time.time() - self.entries_at > max_age:
                self._scan_holders()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._step():
                self._stop.wait(1.0)

    def _step(self) -> bool:
        """One poll of the tracker (and the holder scan when due). A failure is reported by health until
        a later step succeeds: a passing fault (EMFILE while clients hold every fd) heals by itself."""
        try:
            self.tracker.wait(2.0)  # blocks without the lock (scrapes never wait); wakes for events and rescans
            with self.lock:
                self._observe(self.tracker.poll(0))
                if time.monotonic() >= self._next_holders:
                    self._scan_holders()
                self.tracker.replica.expire(boot_ns())
                self.last_poll = time.monotonic()
                if self.error is not None:
                    log.info("tracking recovered after: %s", self.error)
                    self.error = None
            return True
        except Exception as exc:
            log.exception("tracker failed")
            with self.lock:
                self.error = f"{type(exc).__name__}: {exc}"
            return False

    def health(self) -> tuple[bool, str]:
        with self.lock:
            if self.error:
                return False, f"tracker error: {self.error}"
            if not self._thread.is_alive():
                return False, "tracker thread not running"
            idle = time.monotonic() - self.last_poll
            if idle > 5.0:
                return False, f"no event poll for {idle:.1f} s"
            st = self.tracker.stats
            limit = 3 * self.tracker.rescan_seconds + 5
            if st.last_scan_wall and time.time() - st.last_scan_wall > limit:
                return False, f"last rescan {time.time() - st.last_scan_wall:.0f} s ago (limit {limit:.0f} s)"
            return True, f"tracking in {self.mode} mode; last rescan {time.time() - st.last_scan_wall:.1f} s ago"
