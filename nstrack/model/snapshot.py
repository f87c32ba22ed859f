"""The snapshot: nstrack's `/proc/namespaces`, every live namespace with what holds it.

One entry per namespace, named exactly as the never-merged patchset's `/proc/namespaces` named them
(``net:[4026531993]``), with holders (member tasks, nsfs fds, bind mounts, sockets, child namespaces)
and ``orphaned`` = alive with no task inside. Built from a scan (and the replica, when one is live,
for creation times and creators). Pure: the scan is passed in.

Sample entry::

    {"name": "net:[4026532286]", "type": "net", "inum": 4026532286, "ns_id": 4103,
     "owner": "user:[4026531837]", "holders": {"tasks": [], "fds": [],
     "mounts": [{"mnt_ns": "mnt:[4026531841]", "path": "/run/netns/blue"}], "sockets": [], "children": []},
     "orphaned": true, "keeps_alive": "a bind mount at /run/netns/blue (in mnt:[4026531841])", ...}
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from . import holders
from .holders import visible_user_namespaces  # noqa: F401  (re-exported)
from .nstypes import format_name
from .records import FileRecord, MountRecord, NSRecord, TaskRecord
from .replica import Replica, wall_time

SCHEMA_VERSION = 1


class TaskHolder(BaseModel):
    pid: int
    comm: str
    role: str = Field("member", description="member, pid_for_children, time_for_children, or zombie (exited, "
                      "not yet reaped: it still holds its pid namespace)")
    uid: int = Field(0, description="the process's real user id")


class FdHolder(BaseModel):
    pid: int
    fd: int
    comm: str = ""


class MountHolder(BaseModel):
    mnt_ns: str = Field(description="the mount namespace the bind mount is in, e.g. mnt:[4026531841]")
    path: str


class SocketHolder(BaseModel):
    pid: int
    comm: str = ""
    count: int


class Holders(BaseModel):
    tasks: list[TaskHolder] = []
    fds: list[FdHolder] = []
    mounts: list[MountHolder] = []
    sockets: list[SocketHolder] = []
    children: list[str] = Field([], description="namespaces this one owns (user) or parents (pid, user)")


class Creator(BaseModel):
    pid: int
    tgid: int
    comm: str
    cgroup_id: int


class NamespaceEntry(BaseModel):
    name: str = Field(description="type:[inum], as the /proc/namespaces patchset names entries")
    type: str
    inum: int
    ns_id: int | None = Field(None, description="the kernel's never-reused id (6.18+), else null")
    owner: str | None = Field(None, description="owning user namespace (for a user namespace: its parent)")
    parent: str | None = Field(None, description="parent pid namespace (pid only)")
    refcount: int | None = None
    refcount_unexplained: int | None = Field(
        None, description="references the holders do not account for (net, mnt, uts, ipc, cgroup, time, when "
        "the kernel reports refcounts: 6.18+); a leak held by something nstrack cannot see shows here")
    holders: Holders
    orphaned: bool = Field(description="alive with no task inside (the leak signal)")
    keeps_alive: str | None = Field(None, description="for an orphaned namespace: what keeps it alive")
    created: datetime | None = Field(None, description="when nstrack saw it being created")
    first_seen: datetime
    creator: Creator | None = None


class Snapshot(BaseModel):
    schema_version: int = SCHEMA_VERSION
    kernel: str
    mode: str = Field(description="tracking mode when served; 'oneshot' or 'procfs' for a one-off scan")
    method: str = Field(description="how namespaces were enumerated: ns-lists (6.18+ in-kernel walk), "
                        "tasks (tasks, fds, sockets, mounts) or procfs")
    time: datetime
    complete: bool
    incomplete_reasons: list[str] = []
    free_latency_seconds: float | None = Field(
        None, description="frees are seen up to this late (rescan interval); null when seen at once")
    namespaces: list[NamespaceEntry]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def entry_model(e: holders.Entry, scan_time: float) -> NamespaceEntry:
    h = e.holders
    c = e.creator
    return NamespaceEntry(
        name=e.name,
        type=e.type,
        inum=e.inum,
        ns_id=e.ns_id,
        owner=format_name("user", e.owner_inum) if e.owner_inum else None,
        parent=format_name("pid", e.parent_inum) if e.parent_inum else None,
        refcount=e.refcount,
        refcount_unexplained=e.refs_unexplained,
        holders=Holders(
            tasks=[TaskHolder(pid=t.pid, comm=t.comm, role=t.role, uid=t.uid) for t in h.tasks],
            fds=[FdHolder(pid=f.pid, fd=f.fd, comm=f.comm) for f in h.fds],
            mounts=[MountHolder(mnt_ns=m.mnt_ns, path=m.path) for m in h.mounts],
            sockets=[SocketHolder(pid=s.pid, comm=s.comm, count=s.count) for s in h.sockets],
            children=h.children,
        ),
        orphaned=e.orphaned,
        keeps_alive=e.keeps_alive,
        created=_dt(wall_time(e.created_ns)) if e.created_ns is not None else None,
        first_seen=_dt(wall_time(e.first_seen_ns)) if e.first_seen_ns is not None else _dt(scan_time),
        creator=Creator(pid=c.pid, tgid=c.tgid, comm=c.comm, cgroup_id=c.cgroup_id) if c else None,
    )


_SECONDS: dict[int, str] = {}  # whole Unix second -> "YYYY-MM-DDTHH:MM:SS"


def _iso(ts: float) -> str:
    """A Unix time as pydantic serialises a UTC datetime (``...T12:00:00.500000Z``, no fraction if 0).

    Microseconds rounded as ``datetime.fromtimestamp`` rounds them (half to even; tests/unit keep the two
    equal); the date and time of day are formatted once per second (10k entries per /namespaces).
    """
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    sec = int(whole)
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{us:06d}Z" if us else f"{head}Z"


def _entry_head(e: holders.Entry) -> dict[str, object]:
    """The fields of an entry before its holders, as the model dumps them."""
    return {
        "name": format_name(e.type, e.inum),
        "type": e.type,
        "inum": e.inum,
        "ns_id": e.ns_id,
        "owner": format_name("user", e.owner_inum) if e.owner_inum else None,
        "parent": format_name("pid", e.parent_inum) if e.parent_inum else None,
        "refcount": e.refcount,
        "refcount_unexplained": e.refs_unexplained,
    }


def _entry_tail(e: holders.Entry, scan_time: float, boot_offset: float) -> dict[str, object]:
    """The fields of an entry after its holders."""
    c = e.creator
    return {
        "orphaned": e.orphaned,
        "keeps_alive": e.keeps_alive,
        "created": _iso(boot_offset + e.created_ns / 1e9) if e.created_ns is not None else None,
        "first_seen": _iso(boot_offset + e.first_seen_ns / 1e9) if e.first_seen_ns is not None else _iso(scan_time),
        "creator": {"pid": c.pid, "tgid": c.tgid, "comm": c.comm, "cgroup_id": c.cgroup_id} if c else None,
    }


def _other_holders(h: holders.Holders) -> dict[str, object]:
    return {
        "fds": [{"pid": f.pid, "fd": f.fd, "comm": f.comm} for f in h.fds],
        "mounts": [{"mnt_ns": m.mnt_ns, "path": m.path} for m in h.mounts],
        "sockets": [{"pid": s.pid, "comm": s.comm, "count": s.count} for s in h.sockets],
        "children": list(h.children),
    }


def entry_dict(e: holders.Entry, scan_time: float, boot_offset: float) -> dict[str, object]:
    """``entry_model(e, scan_time).model_dump(mode="json")`` without building models (10k entries per
    /namespaces request): ``boot_offset`` is Unix time minus CLOCK_BOOTTIME seconds, taken once.
    tests/unit/test_snapshot.py keeps the two equal."""
    tasks = [{"pid": t.pid, "comm": t.comm, "role": t.role, "uid": t.uid} for t in e.holders.tasks]
    return {**_entry_head(e), "holders": {"tasks": tasks, **_other_holders(e.holders)},
            **_entry_tail(e, scan_time, boot_offset)}


_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_STR = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (ensure_ascii)


def _opt(v: int | None) -> str:
    return "null" if v is None else str(v)


def _ref(type_: str, inum: int) -> str:
    return f'"{type_}:[{inum}]"' if inum else "null"


def entry_json(e: holders.Entry, scan_time: float, boot_offset: float, memo: dict[int, str]) -> str:
    """``entry_dict`` as compact JSON, written directly (10k entries per /namespaces after a change).

    A task's holder object is shared by all its namespaces (``aggregate``) and a creator by nothing
    else, but both are encoded once per render (``memo``: id -> JSON, for one render only).
    tests/unit/test_snapshot.py keeps the text equal to ``entry_dict``'s as JSON.
    """
    h = e.holders
    tasks = []
    for t in h.tasks:
        text = memo.get(id(t))
        if text is None:
            text = memo[id(t)] = f'{{"pid":{t.pid},"comm":{_STR(t.comm)},"role":"{t.role}","uid":{t.uid}}}'
        tasks.append(text)
    others = (_DUMPS(_other_holders(h))[1:] if h.fds or h.mounts or h.sockets or h.children
              else '"fds":[],"mounts":[],"sockets":[],"children":[]}')
    c = e.creator
    if c is None:
        creator = "null"
    else:
        known = memo.get(id(c))
        if known is not None:
            creator = known
        else:
            creator = memo[id(c)] = (f'{{"pid":{c.pid},"tgid":{c.tgid},"comm":{_STR(c.comm)},'
                                     f'"cgroup_id":{c.cgroup_id}}}')
    created = f'"{_iso(boot_offset + e.created_ns / 1e9)}"' if e.created_ns is not None else "null"
    first = _iso(boot_offset + e.first_seen_ns / 1e9) if e.first_seen_ns is not None else _iso(scan_time)
    return (f'{{"name":"{e.type}:[{e.inum}]","type":"{e.type}","inum":{e.inum},"ns_id":{_opt(e.ns_id)},'
            f'"owner":{_ref("user", e.owner_inum)},"parent":{_ref("pid", e.parent_inum)},'
            f'"refcount":{_opt(e.refcount)},"refcount_unexplained":{_opt(e.refs_unexplained)},'
            f'"holders":{{"tasks":[{",".join(tasks)}],{others},"orphaned":{"true" if e.orphaned else "false"},'
            f'"keeps_alive":{"null" if e.keeps_alive is None else _STR(e.keeps_alive)},"created":{created},'
            f'"first_seen":"{first}","creator":{creator}}}')


def snapshot_dict(*, kernel: str, mode: str, method: str, scan_time: float, complete: bool,
                  incomplete_reasons: Sequence[str], free_latency: float | None,
                  entries: Iterable[holders.Entry]) -> dict[str, object]:
    """``Snapshot(...).model_dump(mode="json")`` for these entries, without models (see entry_dict)."""
    offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return {
        "schema_version": SCHEMA_VERSION,
        "kernel": kernel,
        "mode": mode,
        "method": method,
        "time": _iso(scan_time),
        "complete": complete,
        "incomplete_reasons": list(incomplete_reasons),
        "free_latency_seconds": free_latency,
        "namespaces": [entry_dict(e, scan_time, offset) for e in entries],
    }


def build(
    *,
    kernel: str,
    mode: str,
    method: str,
    namespaces: Sequence[NSRecord],
    tasks: Sequence[TaskRecord],
    files: Iterable[FileRecord] = (),
    mounts: Iterable[MountRecord] = (),
    complete: bool,
    incomplete_reasons: Sequence[str] = (),
    scan_time: float,
    replica: Replica | None = None,
    free_latency: float | None = None,
    userns: int | None = None,
    types: set[str] | None = None,
    orphaned_only: bool = False,
) -> Snapshot:
    entries = holders.aggregate(namespaces, tasks, files, mounts, replica, userns, types, orphaned_only)
    return Snapshot(
        kernel=kernel,
        mode=mode,
        method=method,
        time=_dt(scan_time),
        complete=complete,
        incomplete_reasons=list(incomplete_reasons),
        free_latency_seconds=free_latency,
        namespaces=[entry_model(e, scan_time) for e in entries],
    )
