"""One scan of every namespace and its holders, the code shared by start-up, rescans and snapshots.

- 6.18+: the in-kernel walk of every namespace list (complete), from the ``scan_tasks`` iterator.
- older kernels: tasks, nsfs fds, sockets, nsfs bind mounts and owner links (complete only for what
  something in that list holds; the result says so).
- no BPF: /proc, like lsns (marked incomplete).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

from ..model.records import (
    FileRecord, MountRecord, NSRecord, TaskRecord, boot_ns, decode_files, decode_ns_records, decode_tasks,
)
from .libbpf import BPFError, BPFLink, BPFObject
from .mounts import nsfs_mounts
from .owners import openable_paths, resolve_links
from .objects import bpf_object
from .procscan import proc_scan


class Scan:
    """One scan's result (a plain class: `nstrack ls` starts faster without the dataclasses module)."""

    __slots__ = ("start_ns", "seconds", "namespaces", "tasks", "complete", "method", "files", "mounts",
                 "holders_scanned", "incomplete_reasons")

    def __init__(self, start_ns: int, seconds: float, namespaces: list[NSRecord], tasks: list[TaskRecord],
                 complete: bool, method: str, files: list[FileRecord] | None = None,
                 mounts: list[MountRecord] | None = None, holders_scanned: bool = False,
                 incomplete_reasons: list[str] | None = None) -> None:
        self.start_ns = start_ns  # CLOCK_BOOTTIME ns when the scan began
        self.seconds = seconds
        self.namespaces = namespaces
        self.tasks = tasks
        self.complete = complete
        self.method = method  # "ns-lists", "tasks" or "procfs"
        self.files = files if files is not None else []
        self.mounts = mounts if mounts is not None else []
        self.holders_scanned = holders_scanned
        self.incomplete_reasons = incomplete_reasons if incomplete_reasons is not None else []


def _read(link: BPFLink) -> bytes:
    for attempt in range(3):
        try:
            return link.read_iter()
        except BPFError as exc:  # a task that exits mid-read can make the kernel answer EAGAIN
            if exc.errno != errno.EAGAIN or attempt == 2:
                raise
    raise AssertionError("unreachable")


class Scanner:
    """Loads the scan iterators once; ``scan()`` may be called any number of times."""

    def __init__(self, scan_ringbuf_bytes: int = 1 << 23, quick: bool = False) -> None:
        """``quick``: also load the digest-only walk, for ``scan(quick=True)`` (the tracker's rescans)."""
        self._quick = quick
        # The list walk is tried first: it loads wherever bpf_loop exists and finds out in the kernel
        # whether the 6.18+ lists are there (scan_has_lists); 5.10 refuses the object with it.
        self.has_lists = True
        try:
            obj = self._load(scan_ringbuf_bytes)
        except BPFError:
            self.has_lists = False
            obj = self._load(scan_ringbuf_bytes)
        try:
            self._rb = obj.ring_buffer("scan_rb")  # read with read_all()
            self._tasks = obj.program("scan_tasks").attach_iter()
            self._files = obj.program("scan_files").attach_iter()
            # the walk runs once, on the iterator's first task: visit only one (this process's leader)
            self._lists = self._digest = None
            if self.has_lists:
                self._lists = obj.program("scan_lists").attach_iter(tid=os.getpid())
                if quick:
                    self._digest = obj.program("scan_digest").attach_iter(tid=os.getpid())
                _read(self._lists)
                self._rb.read_all()
                if not obj.read_global("scan_has_lists"):  # a kernel before 6.18
                    self._lists.destroy()
                    if self._digest is not None:
                        self._digest.destroy()
                    self._lists = self._digest = None
                    self.has_lists = False
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        self._lost_seen = 0
        self.lost_total = 0
        # kind -> (raw bytes, decoded) of the last scan: an unchanged answer is not decoded again, and
        # the same list object comes back (callers use that identity to skip their own work)
        self._memo: dict[str, tuple[bytes, list[Any]]] = {}
        self._walk_sum = b""  # digest and count of the last complete list walk (see quick)
        self.quick_scans = 0  # scans answered by the digest alone

    def _decode(self, kind: str, data: bytes, decode: Callable[[bytes], list[Any]]) -> list[Any]:
        last = self._memo.get(kind)
        if last is not None and last[0] == data:
            return last[1]
        out = decode(data)
        self._memo[kind] = (data, out)
        return out

    def _load(self, scan_ringbuf_bytes: int) -> BPFObject:
        obj = BPFObject.open(bpf_object("nstrack"))
        try:
            lists = ["scan_lists", *(["scan_digest"] if self._quick else [])] if self.has_lists else []
            obj.only("scan_tasks", "scan_files", *lists)
            obj.map("scan_rb").max_entries = scan_ringbuf_bytes
            # the event side's maps are unused here: the smallest the kernel allows
            obj.map("events").max_entries = 4096
            for name in ("unshare_old", "kp_args"):
                obj.map(name).max_entries = 1
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def close(self) -> None:
        self._obj.close()

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(self, holders: bool = False, tasks: bool = True, quick: bool = False) -> Scan:
        """Namespaces and member tasks; with ``holders``, also nsfs fds, sockets and bind mounts.

        ``tasks=False`` skips the task records where the kernel's lists alone enumerate namespaces
        (a rescan needs nothing else); without lists they are always read, since they find namespaces.
        ``quick``: where the walk's digest equals the last complete walk's, the same set of namespaces
        is there and the last list comes back without a record read (its refcounts are then those of
        that walk: rescans need only the set; holder scans never ask for quick).
        """
        t0, start = time.perf_counter(), boot_ns()
        self._rb.read_all()  # anything left over from an interrupted scan
        walk = b""
        walked = self._lists is not None  # kept only where the kernel has the lists (see __init__)
        same = False
        if walked and quick and self._digest is not None and self._walk_sum and "lists" in self._memo:
            same = _read(self._digest) == self._walk_sum
            self.quick_scans += same
        if walked and not same:
            assert self._lists is not None
            walk_sum = _read(self._lists)  # the records go to scan_rb; the digest to the output
            walk = b"".join(self._rb.read_all())
        want_tasks = tasks or holders or not walked
        tasks_: list[TaskRecord] = self._decode("tasks", _read(self._tasks), decode_tasks) if want_tasks else []
        lost = self._obj.read_global("lost_scan")
        lost_now, self._lost_seen = lost - self._lost_seen, lost
        self.lost_total += lost_now
        reasons: list[str] = []
        files: list[FileRecord] = []
        mounts: list[MountRecord] = []
        if holders:
            files = self._decode("files", _read(self._files), decode_files)
            mounts, unread = nsfs_mounts(_mnt_readers(tasks_))
            if unread:
                reasons.append(f"{len(unread)} mount namespaces without a member task: their bind mounts unread")
        if same:
            namespaces, method, complete = self._memo["lists"][1], "ns-lists", True
        elif walked:
            namespaces = self._decode("lists", walk, decode_ns_records)
            method, complete = "ns-lists", lost_now == 0
            # a digest to compare later walks with, unless this walk missed records or was cut short
            whole = complete and len(walk_sum) == 16 and not walk_sum[15] & 0x80
            self._walk_sum = walk_sum if whole else b""
            if lost_now:
                reasons.append(f"scan ring buffer full: {lost_now} namespaces not reported")
        else:
            namespaces = derive_namespaces(tasks_, files, mounts)
            if holders:  # owners and parents, and the namespaces kept alive only as such
                namespaces = resolve_links(namespaces, openable_paths(tasks_, files, mounts))
            method, complete = "tasks", False
            reasons.append(
                "kernel without namespace lists (before 6.18): namespaces are found through tasks"
                + (", nsfs fds, sockets and bind mounts" if holders else "")
                + "; those kept alive only by kernel references or other namespaces can be missed"
            )
        return Scan(start, time.perf_counter() - t0, namespaces, tasks_, complete, method, files, mounts,
                    holders, reasons)


def _mnt_readers(tasks: list[TaskRecord]) -> list[tuple[int, int]]:
    return [(t.inums[1], t.tgid) for t in tasks if t.inums[1]]


def derive_namespaces(
    tasks: list[TaskRecord], files: list[FileRecord] = (), mounts: list[MountRecord] = ()  # type: ignore[assignment]
) -> list[NSRecord]:
    seen: dict[tuple[str, int], NSRecord] = {}
    for t in tasks:
        for type_, inum in t.namespaces():
            seen.setdefault((type_, inum), NSRecord(type_, inum, None, 0, 0, None))
    for f in files:
        seen.setdefault((f.type, f.inum), NSRecord(f.type, f.inum, None, f.owner_inum, 0, None))
    for m in mounts:
        seen.setdefault((m.type, m.inum), NSRecord(m.type, m.inum, None, 0, 0, None))
    return list(seen.values())


def procfs_scan() -> Scan:
    t0, start = time.perf_counter(), boot_ns()
    namespaces, tasks = proc_scan()
    mounts, _ = nsfs_mounts(_mnt_readers(tasks))
    for m in mounts:
        if not any(n.type == m.type and n.inum == m.inum for n in namespaces):
            namespaces.append(NSRecord(m.type, m.inum, None, 0, 0, None))
    namespaces = resolve_links(namespaces, openable_paths(tasks, [], mounts))
    return Scan(start, time.perf_counter() - t0, namespaces, tasks, False, "procfs", [], mounts, True,
                ["no BPF: /proc only (like lsns); namespaces held only by fds of processes, sockets, "
                 "child namespaces or kernel references are missed, and no creators are known"])
