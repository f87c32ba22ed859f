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

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from .nstypes import TYPE_NAMES, format_name
from .records import SLOTS, FileRecord, MountRecord, NSRecord, TaskRecord
from .replica import Replica, wall_time

SCHEMA_VERSION = 1
_ROLE = {"pid_for_children": "pid_for_children", "time_for_children": "time_for_children"}


class TaskHolder(BaseModel):
    pid: int
    comm: str
    role: str = Field("member", description="member, pid_for_children, time_for_children, or zombie (exited, "
                      "not yet reaped: it still holds its pid namespace)")


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
    return datetime.fromtimestamp(ts, timezone.utc)


def visible_user_namespaces(root: int, user_parent: dict[int, int]) -> set[int]:
    """``root`` and every user namespace below it (the patchset's visibility rule)."""
    children: dict[int, list[int]] = defaultdict(list)
    for child, parent in user_parent.items():
        children[parent].append(child)
    out, stack = {root}, [root]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


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
    comm = {t.tgid: t.comm for t in tasks}
    task_holders: dict[tuple[str, int], list[TaskHolder]] = defaultdict(list)
    for t in tasks:
        exited = t.inums[0] == 0  # no nsproxy left: exited, only its struct pid (pid ns) remains
        for (type_, fname), inum in zip(SLOTS, t.inums):
            if not inum:
                continue
            holders = task_holders[(type_, inum)]
            role = "zombie" if exited else _ROLE.get(fname, "member")
            if not any(h.pid == t.tgid and h.role == role for h in holders):
                holders.append(TaskHolder(pid=t.tgid, comm=t.comm, role=role))
    fd_holders: dict[tuple[str, int], list[FdHolder]] = defaultdict(list)
    sockets: dict[tuple[str, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for f in files:
        if f.kind == "nsfs":
            fd_holders[(f.type, f.inum)].append(FdHolder(pid=f.tgid, fd=f.fd, comm=comm.get(f.tgid, "")))
        elif f.kind == "socket":
            sockets[(f.type, f.inum)][f.tgid] += 1
    mount_holders: dict[tuple[str, int], list[MountHolder]] = defaultdict(list)
    for m in mounts:
        mount_holders[(m.type, m.inum)].append(MountHolder(mnt_ns=format_name("mnt", m.mnt_ns), path=m.path))

    # owner and parent links, from the scan or, failing that, from what events told the replica
    info: dict[tuple[str, int], tuple[int, int]] = {}
    for r in namespaces:
        owner, parent = r.owner_inum, r.parent_inum
        if replica is not None and not owner:
            known = replica.find_alive(r.type, r.inum, r.ns_id)
            if known is not None:
                owner, parent = known.owner_inum, known.parent_inum
        info[(r.type, r.inum)] = (owner, parent)
    children: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (type_, inum), (owner, parent) in info.items():
        if owner:
            children[("user", owner)].append(format_name(type_, inum))
        if type_ == "pid" and parent:
            children[("pid", parent)].append(format_name(type_, inum))

    visible: set[int] | None = None
    if userns is not None:
        user_parent = {inum: owner for (t, inum), (owner, _) in info.items() if t == "user" and owner}
        visible = visible_user_namespaces(userns, user_parent)

    order = {t: i for i, t in enumerate(TYPE_NAMES)}
    entries: list[NamespaceEntry] = []
    for r in sorted(namespaces, key=lambda r: (order.get(r.type, 99), r.inum)):
        key = (r.type, r.inum)
        owner, parent = info[key]
        if types and r.type not in types:
            continue
        if visible is not None:
            subject = r.inum if r.type == "user" else owner
            if subject not in visible:
                continue
        h = Holders(
            tasks=task_holders.get(key, []),
            fds=fd_holders.get(key, []),
            mounts=mount_holders.get(key, []),
            sockets=[SocketHolder(pid=p, comm=comm.get(p, ""), count=n) for p, n in sorted(sockets.get(key, {}).items())],
            children=sorted(children.get(key, [])),
        )
        orphaned = not any(t.role != "zombie" for t in h.tasks)
        if orphaned_only and not orphaned:
            continue
        known = replica.find_alive(r.type, r.inum, r.ns_id) if replica is not None else None
        created = first_seen = None
        creator = None
        if known is not None:
            first_seen = _dt(wall_time(known.first_seen_ns))
            if known.created_ns is not None:
                created = _dt(wall_time(known.created_ns))
            if known.creator is not None:
                c = known.creator
                creator = Creator(pid=c.pid, tgid=c.tgid, comm=c.comm, cgroup_id=c.cgroup_id)
        entries.append(NamespaceEntry(
            name=format_name(r.type, r.inum),
            type=r.type,
            inum=r.inum,
            ns_id=r.ns_id if r.ns_id is not None else (known.ns_id if known else None),
            owner=format_name("user", owner) if owner else None,
            parent=format_name("pid", parent) if parent else None,
            refcount=r.refcount,
            holders=h,
            orphaned=orphaned,
            keeps_alive=keeps_alive(h, r.refcount) if orphaned else None,
            created=created,
            first_seen=first_seen or _dt(scan_time),
            creator=creator,
        ))
    return Snapshot(
        kernel=kernel,
        mode=mode,
        method=method,
        time=_dt(scan_time),
        complete=complete,
        incomplete_reasons=list(incomplete_reasons),
        free_latency_seconds=free_latency,
        namespaces=entries,
    )


def keeps_alive(h: Holders, refcount: int | None) -> str:
    """A plain sentence on what keeps an orphaned namespace alive."""
    parts: list[str] = []
    for t in h.tasks:
        if t.role == "zombie":
            parts.append(f"exited task pid {t.pid} {t.comm} that its parent has not reaped (a zombie)")
    for f in h.fds:
        parts.append(f"an open nsfs file (fd {f.fd} of pid {f.pid}{' ' + f.comm if f.comm else ''})")
    for m in h.mounts:
        parts.append(f"a bind mount at {m.path} (in {m.mnt_ns})")
    for s in h.sockets:
        parts.append(f"{s.count} socket{'s' if s.count != 1 else ''} of pid {s.pid}{' ' + s.comm if s.comm else ''}")
    if h.children:
        shown = ", ".join(h.children[:3]) + (f" and {len(h.children) - 3} more" if len(h.children) > 3 else "")
        parts.append(f"namespaces it owns or parents ({shown})")
    if not parts:
        ref = f" (refcount {refcount})" if refcount is not None else ""
        return f"no task, fd, mount, socket or child namespace holds it: only kernel-internal references{ref}"
    return "held by " + "; ".join(parts)
