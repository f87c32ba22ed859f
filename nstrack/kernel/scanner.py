"""One scan of every namespace and its holders, the code shared by start-up, rescans and snapshots.

- 6.18+: the in-kernel walk of every namespace list (complete), from the ``scan_tasks`` iterator.
- older kernels: tasks, nsfs fds, sockets, nsfs bind mounts and owner links (complete only for what
  something in that list holds; the result says so).
- no BPF: /proc, like lsns (marked incomplete).
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Self

from ..model.records import (
    FileRecord,
    MountRecord,
    NSRecord,
    TaskRecord,
    boot_ns,
    decode_files,
    decode_ns_records,
    decode_tasks,
)
from .bpf_names import SCAN
from .bpfsys import BPFError
from .mounts import nsfs_mounts
from .objects import bpf_object
from .owners import openable_paths, resolve_links
from .procscan import proc_scan

SP = SCAN.prog  # the scan object's programs (bpf/scan.bpf.c)


class Scan:
    """One scan's result (a plain class: `nstrack ls` starts faster without the dataclasses module)."""

    __slots__ = (
        "complete",
        "files",
        "holders_scanned",
        "incomplete_reasons",
        "method",
        "mounts",
        "namespaces",
        "seconds",
        "start_ns",
        "tasks",
    )

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


def _retry(read: Callable[[], bytes]) -> bytes:
    for attempt in range(3):
        try:
            return read()
        except BPFError as exc:  # a task that exits mid-read can make the kernel answer EAGAIN
            if exc.errno != errno.EAGAIN or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _walk_sum(raw: bytes) -> tuple[int, int, bool] | None:
    """(digest, lost records, whole) from a list walk's iterator output; None: the kernel has no lists."""
    if len(raw) != 24:
        return None
    digest, count, lost = struct.unpack("<QQQ", raw)
    return digest, lost, not count >> 63


class _Scans:
    """``scan()`` over four readers of raw records, which subclasses provide: the list walk (records,
    and its iterator output: digest, count, lost), the digest-only walk, tasks, and files."""

    has_lists: bool

    def __init__(self) -> None:
        self.lost_total = 0
        # kind -> (raw bytes, decoded) of the last scan: an unchanged answer is not decoded again, and
        # the same list object comes back (callers use that identity to skip their own work)
        self._memo: dict[str, tuple[bytes, list[Any]]] = {}
        self._walk_sum = b""  # iterator output of the last complete list walk (see quick)
        self.quick_scans = 0  # scans answered by the digest alone

    def _walk(self) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def _digest_walk(self) -> bytes | None:
        return None

    def _tasks(self) -> bytes:
        raise NotImplementedError

    def _files(self) -> bytes:
        raise NotImplementedError

    def _decode(self, kind: str, data: bytes, decode: Callable[[bytes], list[Any]]) -> list[Any]:
        last = self._memo.get(kind)
        if last is not None and last[0] == data:
            return last[1]
        out = decode(data)
        self._memo[kind] = (data, out)
        return out

    def scan(self, holders: bool = False, tasks: bool = True, quick: bool = False) -> Scan:
        """Namespaces and member tasks; with ``holders``, also nsfs fds, sockets and bind mounts.

        ``tasks=False`` skips the task records where the kernel's lists alone enumerate namespaces
        (a rescan needs nothing else); without lists they are always read, since they find namespaces.
        ``quick``: where the walk's digest equals the last complete walk's, the same set of namespaces
        is there and the last list comes back without a record read (its refcounts are then those of
        that walk: rescans need only the set; holder scans never ask for quick).
        """
        t0, start = time.perf_counter(), boot_ns()
        walked = self.has_lists
        same = False
        if walked and quick and self._walk_sum and "lists" in self._memo:
            digest = self._digest_walk()
            same = digest is not None and digest == self._walk_sum
            self.quick_scans += same
        lost_now, walk, summary = 0, b"", None
        if walked and not same:
            walk, raw_sum = self._walk()
            summary = _walk_sum(raw_sum)
            if summary is None:
                raise BPFError(errno.EIO, f"namespace list walk wrote {len(raw_sum)} bytes, expected 24")
            lost_now = summary[1]
            self.lost_total += lost_now
        want_tasks = tasks or holders or not walked
        tasks_: list[TaskRecord] = self._decode("tasks", self._tasks(), decode_tasks) if want_tasks else []
        reasons: list[str] = []
        files: list[FileRecord] = []
        mounts: list[MountRecord] = []
        if holders:
            files = self._decode("files", self._files(), decode_files)
            mounts, unread = nsfs_mounts(_mnt_readers(tasks_))
            if unread:
                reasons.append(f"{len(unread)} mount namespaces without a member task: their bind mounts unread")
        if same:
            namespaces, method, complete = self._memo["lists"][1], "ns-lists", True
        elif walked:
            assert summary is not None
            namespaces = self._decode("lists", walk, decode_ns_records)
            complete = lost_now == 0 and summary[2]
            method = "ns-lists"
            # a digest to compare later walks with, unless this walk missed records or was cut short
            self._walk_sum = raw_sum if complete else b""
            if lost_now:
                reasons.append(f"scan ring buffer full: {lost_now} namespaces not reported")
            if not summary[2]:
                reasons.append("namespace list walk cut short (more namespaces of one type than walk_max)")
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


class Scanner(_Scans):
    """Loads the scan iterators (libbpf) once; ``scan()`` may be called any number of times."""

    def __init__(self, scan_ringbuf_bytes: int = 1 << 23, quick: bool = False) -> None:
        """``quick``: also load the digest-only walk, for ``scan(quick=True)`` (the tracker's rescans)."""
        super().__init__()
        self._quick = quick
        # The list walk is tried first: it loads wherever bpf_loop exists and finds out in the kernel
        # whether the 6.18+ lists are there (it writes its summary only then); 5.10 refuses an object
        # that holds it (scan.bpf.c, scan_lists), so the small scan object is loaded again without it.
        self.has_lists = True
        try:
            obj = self._load(scan_ringbuf_bytes)
        except BPFError:
            self.has_lists = False
            obj = self._load(scan_ringbuf_bytes)
        try:
            self._rb = obj.ring_buffer(SCAN.maps.scan_rb)  # read with read_all()
            self._tasks_link = obj.program(SP.scan_tasks).attach_iter()
            self._files_link = obj.program(SP.scan_files).attach_iter()
            # the walk runs once, on the iterator's first task: visit only one (this process's leader)
            self._lists = self._digest = None
            if self.has_lists:
                self._lists = obj.program(SP.scan_lists).attach_iter(tid=os.getpid())
                if quick:
                    self._digest = obj.program(SP.scan_digest).attach_iter(tid=os.getpid())
                has = _walk_sum(_retry(self._lists.read_iter)) is not None
                self._rb.read_all()
                if not has:  # a kernel before 6.18
                    self._lists.destroy()
                    if self._digest is not None:
                        self._digest.destroy()
                    self._lists = self._digest = None
                    self.has_lists = False
        except BaseException:
            obj.close()
            raise
        self._obj = obj

    def _load(self, scan_ringbuf_bytes: int) -> Any:
        from .libbpf import BPFObject

        obj = BPFObject.open(bpf_object(SCAN.OBJECT))
        try:
            lists = [SP.scan_lists, *([SP.scan_digest] if self._quick else [])] if self.has_lists else []
            obj.only(SP.scan_tasks, SP.scan_files, *lists)
            obj.map(SCAN.maps.scan_rb).max_entries = scan_ringbuf_bytes
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def _walk(self) -> tuple[bytes, bytes]:
        assert self._lists is not None
        self._rb.read_all()  # anything left over from an interrupted scan
        raw_sum = _retry(self._lists.read_iter)  # the records go to scan_rb, the summary to the output
        return b"".join(self._rb.read_all()), raw_sum

    def _digest_walk(self) -> bytes | None:
        return _retry(self._digest.read_iter) if self._digest is not None else None

    def _tasks(self) -> bytes:
        return _retry(self._tasks_link.read_iter)

    def _files(self) -> bytes:
        return _retry(self._files_link.read_iter)

    def pin(self, path: str) -> bool:
        """Pin the scan programs and ring buffer under ``path`` in bpffs, for ``PinnedScanner``.

        Made under a temporary name and renamed into place (a concurrent pinner's copy wins, ours
        goes); copies under other names (other builds of the object) are removed. False when this
        host cannot pin (bpffs not mounted at /sys/fs/bpf, or not permitted): nothing is left behind.
        """
        from . import bpfsys

        root = os.path.dirname(path)
        tmp = f"{path}-tmp{os.getpid()}"  # bpffs refuses names with dots
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            os.mkdir(tmp, 0o700)
        except OSError:
            return False
        try:
            progs = {"tasks": SP.scan_tasks, "files": SP.scan_files, **({"lists": SP.scan_lists} if self.has_lists else {})}
            for pin, prog in progs.items():
                bpfsys.obj_pin(self._obj.program(prog).fd, f"{tmp}/{pin}")
            if self.has_lists:  # the walk's ring (kernels without lists have only iterator output)
                bpfsys.obj_pin(self._rb.fd, f"{tmp}/rb")
            os.rename(tmp, path)
        except OSError:
            _unpin(tmp)
            return os.path.isdir(path)
        for name in os.listdir(root):  # other builds' pins, and half-made ones of pinners that died
            _, tmp_of, pid = name.partition("-tmp")
            if name.startswith("scan-") and f"{root}/{name}" != path and (
                    not tmp_of or not (pid.isdigit() and os.path.exists(f"/proc/{pid}"))):
                _unpin(f"{root}/{name}")
        return True

    def close(self) -> None:
        self._obj.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Where the CLI pins its scan programs; NSTRACK_PIN_ROOT for a bpffs mounted elsewhere (or a benchmark
# comparing two builds, whose pins would otherwise replace each other)
PIN_ROOT = os.environ.get("NSTRACK_PIN_ROOT") or "/sys/fs/bpf/nstrack"
PINNED_RING_BYTES = 1 << 22  # 4 MiB of scan ring kept pinned: ~87k namespaces per walk (48 bytes each)


def pin_path(root: str = PIN_ROOT) -> str:
    """Where this build's scan programs are pinned: named by a checksum of the object file."""
    import zlib

    with open(bpf_object(SCAN.OBJECT), "rb") as f:
        return f"{root}/scan-{zlib.crc32(f.read()):08x}"


def _unpin(path: str) -> None:
    """Remove a pin directory (unlinking a pin releases the kernel object once nothing else holds it)."""
    try:
        for name in os.listdir(path):
            os.unlink(f"{path}/{name}")
        os.rmdir(path)
    except FileNotFoundError:
        pass


class PinnedScanner(_Scans):
    """Scans with the programs an earlier `nstrack ls/snapshot/show` pinned (``Scanner.pin``): no object
    load, no BTF parse, no verification, no libbpf. Holds an exclusive lock on the pin directory for
    its lifetime: the pinned ring buffer has one reader at a time."""

    def __init__(self, path: str) -> None:
        import fcntl

        from . import bpfsys

        super().__init__()
        self._fds: list[int] = []
        self._dir = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # FileNotFoundError: nothing pinned
        try:
            fcntl.flock(self._dir, fcntl.LOCK_EX)
            self._tasks_prog = self._get(f"{path}/tasks")
            self._files_prog = self._get(f"{path}/files")
            self.has_lists = os.path.exists(f"{path}/lists")
            self._lists_prog = self._get(f"{path}/lists") if self.has_lists else -1
            self._rb = None
            if self.has_lists:
                rb = self._get(f"{path}/rb")
                self._rb = bpfsys.RingBuffer(rb, bpfsys.map_max_entries(rb), "scan_rb (pinned)")
        except BaseException:
            self.close()
            raise

    def _get(self, path: str) -> int:
        from .bpfsys import obj_get

        fd = obj_get(path)
        self._fds.append(fd)
        return fd

    def _run(self, prog: int, what: str, tid: int | None = None) -> bytes:
        from .bpfsys import iter_link, read_iter

        link = iter_link(prog, tid)
        try:
            return _retry(lambda: read_iter(link, what))
        finally:
            os.close(link)

    def _walk(self) -> tuple[bytes, bytes]:
        assert self._rb is not None
        self._rb.read_all()
        raw_sum = self._run(self._lists_prog, "pinned scan_lists", os.getpid())
        return b"".join(self._rb.read_all()), raw_sum

    def _tasks(self) -> bytes:
        return self._run(self._tasks_prog, "pinned scan_tasks")

    def _files(self) -> bytes:
        return self._run(self._files_prog, "pinned scan_files")

    def close(self) -> None:
        rb = getattr(self, "_rb", None)
        if rb is not None:
            rb.close()
            self._rb = None
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self._dir >= 0:
            os.close(self._dir)  # and the lock with it
            self._dir = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
                [("no BPF: /proc only (like lsns); namespaces held only by fds of processes, sockets, "
                  "child namespaces or kernel references are missed, and no creators are known")])
