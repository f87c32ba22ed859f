"""The no-BPF fallback: namespaces of every process, read from /proc like lsns does.

Incomplete by nature: it sees only namespaces some process is a member of (not those held only by
an nsfs fd, a bind mount, a socket or a child namespace) and cannot see creators.
"""

from __future__ import annotations

import os

from ..model.records import SLOTS, NSRecord, TaskRecord


def _inum(link: str) -> int:
    # "net:[4026531840]" -> 4026531840
    return int(link[link.index("[") + 1 : -1])


def proc_scan(proc: str = "/proc") -> tuple[list[NSRecord], list[TaskRecord]]:
    tasks: list[TaskRecord] = []
    found: dict[tuple[str, int], NSRecord] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        inums: list[int] = []
        for _type, fname in SLOTS:
            try:
                inums.append(_inum(os.readlink(f"{proc}/{pid}/ns/{fname}")))
            except (OSError, ValueError):
                inums.append(0)
        if not any(inums):
            continue  # gone, a kernel thread we may not inspect, or no permission
        comm, uid = "", 0
        try:
            with open(f"{proc}/{pid}/status") as f:
                for line in f:
                    if line.startswith("Name:"):
                        comm = line.split(None, 1)[1].strip() if len(line.split()) > 1 else ""
                    elif line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
        t = TaskRecord(pid, pid, tuple(inums), comm, uid)
        tasks.append(t)
        for type_, inum in t.namespaces():
            found.setdefault((type_, inum), NSRecord(type_, inum, None, 0, 0, None))
    return list(found.values()), tasks
