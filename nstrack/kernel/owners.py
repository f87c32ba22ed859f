"""Owner and parent links before 6.18, from the nsfs ioctls (what lsns 2.42 does too).

The in-kernel list walk (6.18+) reports each namespace's owner. Older kernels have no lists, so the
scan finds namespaces through what holds them; for each one it can open (/proc/PID/ns/X, /proc/PID/fd/N,
or a bind mount seen through /proc/PID/root), ``NS_GET_USERNS`` names the owning user namespace and
``NS_GET_PARENT`` the parent (pid, user). Walking those up finds the namespaces kept alive only as
owners or parents, which no task, fd or mount shows.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable

from ..model.records import SLOTS, FileRecord, MountRecord, NSRecord, TaskRecord

NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _ioctl_fd(fd: int, request: int) -> int | None:
    try:
        return int(fcntl.ioctl(fd, request))
    except OSError:  # EPERM above our own user namespace, EINVAL for types without a parent
        return None


def openable_paths(tasks: Iterable[TaskRecord], files: Iterable[FileRecord],
                   mounts: Iterable[MountRecord]) -> dict[tuple[str, int], str]:
    """One path per namespace through which it can be opened."""
    paths: dict[tuple[str, int], str] = {}
    mnt_reader: dict[int, int] = {}
    for t in tasks:
        for (type_, fname), inum in zip(SLOTS, t.inums):
            if inum and (type_, inum) not in paths and t.inums[0]:  # skip zombies (no ns files)
                paths[(type_, inum)] = f"/proc/{t.tgid}/ns/{fname}"
        if t.inums[1]:
            mnt_reader.setdefault(t.inums[1], t.tgid)
    for f in files:
        if f.kind == "nsfs":
            paths.setdefault((f.type, f.inum), f"/proc/{f.tgid}/fd/{f.fd}")
    for m in mounts:
        reader = mnt_reader.get(m.mnt_ns)
        if reader is not None:
            paths.setdefault((m.type, m.inum), f"/proc/{reader}/root{m.path}")
    return paths


def resolve_links(namespaces: list[NSRecord], paths: dict[tuple[str, int], str]) -> list[NSRecord]:
    """``namespaces`` with owner/parent filled in, plus the ancestors only those links reveal."""
    links: dict[tuple[str, int], tuple[int, int]] = {}
    found: dict[tuple[str, int], NSRecord] = {(r.type, r.inum): r for r in namespaces}

    def walk(type_: str, fd: int) -> int:
        """Record links of the namespace open at ``fd`` (and its ancestors); returns its inum."""
        inum = os.fstat(fd).st_ino
        key = (type_, inum)
        if key in links:
            return inum
        links[key] = (0, 0)
        owner = parent = 0
        ufd = _ioctl_fd(fd, NS_GET_USERNS) if type_ != "user" else None
        if ufd is not None:
            try:
                owner = walk("user", ufd)
            finally:
                os.close(ufd)
        if type_ in ("user", "pid"):
            pfd = _ioctl_fd(fd, NS_GET_PARENT)
            if pfd is not None:
                try:
                    up = walk(type_, pfd)
                finally:
                    os.close(pfd)
                if type_ == "user":
                    owner = up  # a user namespace's owner is its parent
                else:
                    parent = up
        links[key] = (owner, parent)
        return inum

    for (type_, inum), path in paths.items():
        fd = _open(path)
        if fd is None:
            continue
        try:
            if os.fstat(fd).st_ino == inum:
                walk(type_, fd)
        finally:
            os.close(fd)

    out: list[NSRecord] = []
    for key, (owner, parent) in links.items():
        r = found.pop(key, None)
        owner = owner or (r.owner_inum if r else 0)  # e.g. a socket's netns: owner reported by BPF
        out.append(NSRecord(key[0], key[1], r.ns_id if r else None, owner, parent, r.refcount if r else None))
    out.extend(found.values())  # namespaces that could not be opened keep what the scan knew
    return out
