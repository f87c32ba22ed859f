"""Who holds each namespace: the aggregation behind the snapshot, `ls` and `show` (pure, no pydantic).

`ls` reads these plain records directly, so a cold `nstrack ls` does not pay for importing pydantic;
``snapshot.Snapshot`` is the published document built from them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from .nstypes import TYPE_NAMES, format_name
from .records import MEMBER_TYPES, ROLE, SLOTS, FileRecord, MountRecord, NSRecord, TaskRecord
from .replica import Creator, Replica

_NONE: list = []  # type: ignore[type-arg]  # shared empty holder list (never mutated)


@dataclass(slots=True)
class TaskHolder:
    pid: int
    comm: str
    role: str = "member"  # member, pid_for_children, time_for_children, zombie
    uid: int = 0


@dataclass(slots=True)
class FdHolder:
    pid: int
    fd: int
    comm: str = ""


@dataclass(slots=True)
class MountHolder:
    mnt_ns: str
    path: str


@dataclass(slots=True)
class SocketHolder:
    pid: int
    comm: str
    count: int


@dataclass(slots=True)
class Holders:
    tasks: list[TaskHolder] = field(default_factory=list)
    fds: list[FdHolder] = field(default_factory=list)
    mounts: list[MountHolder] = field(default_factory=list)
    sockets: list[SocketHolder] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Entry:
    type: str
    inum: int
    ns_id: int | None
    owner_inum: int
    parent_inum: int
    refcount: int | None
    holders: Holders
    orphaned: bool
    keeps_alive: str | None
    created_ns: int | None = None
    first_seen_ns: int | None = None
    creator: Creator | None = None
    refs_unexplained: int | None = None  # refcount minus what the holders account for (see REF_SLOTS)

    @property
    def name(self) -> str:
        return format_name(self.type, self.inum)


# Where each reference on a namespace comes from, for the types whose refcount nstrack can account for
# (measured on 6.18: tests/privileged/test_snapshot.py). Every nsproxy using it holds one per slot
# (time: time_ns and time_for_children are two), the nsfs inode one while any fd or bind mount has it
# open, and for net every socket one. pid (struct pid, children) and user (every cred) are not modelled.
REF_SLOTS: dict[str, tuple[int, ...]] = {"net": (0,), "mnt": (1,), "uts": (2,), "ipc": (3,), "cgroup": (6,),
                                         "time": (7, 9)}


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


def aggregate(
    namespaces: Sequence[NSRecord],
    tasks: Sequence[TaskRecord],
    files: Iterable[FileRecord] = (),
    mounts: Iterable[MountRecord] = (),
    replica: Replica | None = None,
    userns: int | None = None,
    types: set[str] | None = None,
    orphaned_only: bool = False,
    explain: bool = True,
) -> list[Entry]:
    """Holders of every namespace; ``explain=False`` skips the keeps_alive sentences (for `ls`)."""
    comm = {t.tgid: t.comm for t in tasks}
    task_holders: dict[tuple[str, int], list[TaskHolder]] = defaultdict(list)
    proxies: set[int] = set()  # every nsproxy counted once: the same nsproxy holds the same namespaces
    by_proxy: list[tuple[int, ...]] = []  # the namespaces of each of them
    first: dict[int, tuple[int, ...]] = {}  # tgid -> namespaces of its first task seen
    mixed: dict[int, set[int]] = {}  # tgid -> inums attributed, for processes whose threads differ
    for t in tasks:
        inums, tgid, proxy = t.inums, t.tgid, t.nsproxy
        if proxy and proxy not in proxies:
            proxies.add(proxy)
            by_proxy.append(inums)
        prev = first.get(tgid)
        if prev is None:
            first[tgid] = inums
            if inums[0]:  # the common case, written out: one holder in slots 0-7 (all of other types)
                holder = TaskHolder(tgid, t.comm, "member", t.uid)
                for type_, inum in zip(MEMBER_TYPES, inums):
                    if inum:
                        task_holders[(type_, inum)].append(holder)
                # *_for_children: listed apart where they differ from the task's own
                if inums[8] and inums[8] != inums[4]:
                    task_holders[("pid", inums[8])].append(TaskHolder(tgid, t.comm, "pid_for_children", t.uid))
                if inums[9] and inums[9] != inums[7]:
                    task_holders[("time", inums[9])].append(TaskHolder(tgid, t.comm, "time_for_children", t.uid))
                continue
            _place(t, task_holders, set())
        elif prev != inums:  # a thread in other namespaces than the first one seen: those not listed yet
            done = mixed.get(tgid)
            if done is None:
                done = mixed[tgid] = {i for i in prev if i}
            _place(t, task_holders, done)
        # else: a thread in its leader's namespaces: the process is listed already
    fd_holders: dict[tuple[str, int], list[FdHolder]] = defaultdict(list)
    sockets: dict[tuple[str, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for f in files:
        if f.kind == "nsfs":
            fd_holders[(f.type, f.inum)].append(FdHolder(f.tgid, f.fd, comm.get(f.tgid, "")))
        elif f.kind == "socket":
            sockets[(f.type, f.inum)][f.tgid] += 1
    mount_holders: dict[tuple[str, int], list[MountHolder]] = defaultdict(list)
    for m in mounts:
        mount_holders[(m.type, m.inum)].append(MountHolder(format_name("mnt", m.mnt_ns), m.path))

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

    # per type with a refcount model: how many nsproxy slots point at each inum (BPF scans identify
    # nsproxies; /proc cannot, and then nothing is claimed)
    slot_refs = {type_: [Counter(map(itemgetter(slot), by_proxy)) for slot in slots]
                 for type_, slots in REF_SLOTS.items()} if by_proxy else {}

    order = {t: i for i, t in enumerate(TYPE_NAMES)}
    find_alive = replica.find_alive if replica is not None else None
    entries: list[Entry] = []
    for r in sorted(namespaces, key=lambda r: (order.get(r.type, 99), r.inum)):
        type_, inum = r.type, r.inum
        key = (type_, inum)
        owner, parent = info[key]
        if types and type_ not in types:
            continue
        if visible is not None and (inum if type_ == "user" else owner) not in visible:
            continue
        th = task_holders.get(key, _NONE)
        orphaned = True
        for t in th:
            if t.role != "zombie":
                orphaned = False
                break
        if orphaned_only and not orphaned:
            continue
        sock = sockets.get(key)
        kids = children.get(key)
        h = Holders(th, fd_holders.get(key, _NONE), mount_holders.get(key, _NONE),
                    [SocketHolder(p, comm.get(p, ""), n) for p, n in sorted(sock.items())] if sock else _NONE,
                    sorted(kids) if kids else _NONE)
        known = find_alive(type_, inum, r.ns_id) if find_alive is not None else None
        unexplained = None
        refcount = r.refcount
        if refcount is not None and type_ in slot_refs:
            explained = sum(c[inum] for c in slot_refs[type_]) + (1 if h.fds or h.mounts else 0)
            if sock:
                explained += sum(sock.values())
            unexplained = refcount - explained  # < 0 only when tasks changed between the two reads
        if known is None:
            entries.append(Entry(type_, inum, r.ns_id, owner, parent, refcount, h, orphaned,
                                 keeps_alive(h, refcount, unexplained) if orphaned and explain else None,
                                 None, None, None, unexplained))
        else:
            entries.append(Entry(type_, inum, r.ns_id if r.ns_id is not None else known.ns_id, owner, parent,
                                 refcount, h, orphaned,
                                 keeps_alive(h, refcount, unexplained) if orphaned and explain else None,
                                 known.created_ns, known.first_seen_ns, known.creator, unexplained))
    return entries



def _place(t: TaskRecord, task_holders: dict[tuple[str, int], list[TaskHolder]], done: set[int]) -> None:
    """List task ``t`` under each of its namespaces once, except those in ``done`` (which it extends).

    An exited task (no nsproxy: only its struct pid's namespace is left) is a zombie everywhere."""
    exited = t.inums[0] == 0
    holder: TaskHolder | None = None
    for (type_, fname), inum in zip(SLOTS, t.inums):
        if not inum or inum in done:
            continue
        done.add(inum)
        role = ROLE[fname]
        if exited or role == "member":  # one holder object shared by the task's namespaces
            if holder is None:
                holder = TaskHolder(t.tgid, t.comm, "zombie" if exited else "member", t.uid)
            task_holders[(type_, inum)].append(holder)
        else:
            task_holders[(type_, inum)].append(TaskHolder(t.tgid, t.comm, role, t.uid))


def keeps_alive(h: Holders, refcount: int | None, unexplained: int | None = None) -> str:
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
    more = ""
    if unexplained is not None and unexplained > 0:
        more = (f"; and {unexplained} more reference{'s' if unexplained != 1 else ''} that none of these "
                "explain (kernel-internal: e.g. a mount of its own filesystem, a kernel socket or a module)")
    return "held by " + "; ".join(parts) + more
