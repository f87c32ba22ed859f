"""nstrack's namespace scan against the kernel's own listns(2) (Linux 6.19+).

listns() returns exactly the *active* namespaces (nstrack/kernel/listns.py has the rule and its
sources). listns() ids are turned into (type, inode number) by opening each through an nsfs file handle,
and compared with nstrack's scan with holders (the 6.18+ list walk, or on older kernels tasks, fds,
sockets, bind mounts and owner links). Per (type, inum), exactly:

    listns() ⊆ nstrack's namespaces   and   listns() == {n : n is active}

where "active" is computed independently from the holders nstrack's scan saw: the initial namespaces;
every nsproxy namespace of a task (net, mnt, uts, ipc, cgroup, time, pid_for_children,
time_for_children; none for a zombie) and its real_cred user namespace; every nsfs fd; every nsfs bind
mount (mount namespaces without a member task are read here through nsenter); then, repeatedly, the
owning user namespace of anything active. Everything nstrack found that listns() omits is thus
inactive. With the walk, the ns_ids must also be the kernel's.

On a kernel without listns() this fails on 6.19 or newer (or where NSTRACK_EXPECT_LISTNS=1, as the
VM matrix sets for 7.2) and is skipped, with the reason, on older kernels.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from nstrack.kernel import host
from nstrack.kernel.mounts import parse_mountinfo
from nstrack.model.nstypes import TYPE_NAMES
from nstrack.model.records import SLOTS, MountRecord

from .scenario import Made, bind_mount, make_namespace, nsfs_fd
from .test_snapshot import socket_in

# task_record slots that hold an active reference (nsproxy_ns_active_get() and get_cred_namespaces()):
# every slot but "pid" (the task's own pid namespace, which its nsproxy does not point to)
ACTIVE_SLOTS = tuple(i for i, (_t, fname) in enumerate(SLOTS) if fname != "pid")
NS_LAST_INIT_ID = 8
# A comparison can catch the kernel mid-change (a process of an earlier test exiting: its cred, and
# the user namespace's active reference in it, go after an RCU grace period, long under emulation):
# it is taken again, after a pause growing by a second each time; a real difference stays.
ATTEMPTS = 4


def _kernel_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (major, minor)


@pytest.fixture(scope="module", autouse=True)
def _needs_listns() -> None:
    if host.has_listns():
        return
    release = os.uname().release
    if os.environ.get("NSTRACK_EXPECT_LISTNS") == "1":
        pytest.fail(f"NSTRACK_EXPECT_LISTNS=1 but listns(2) (syscall {host.SYS_LISTNS}) is absent on {release}")
    if _kernel_at_least(6, 19):
        pytest.fail(f"kernel {release} is 6.19 or newer but listns(2) (syscall {host.SYS_LISTNS}) is absent (ENOSYS)")
    pytest.skip(f"kernel {release} has no listns(2) (ENOSYS; added in Linux 6.19): nothing to cross-check")


Expect = dict[tuple[str, int], tuple[str, bool]]  # (type, inum) -> (how it is held, listed by listns?)


@pytest.fixture(scope="module")
def scenario() -> Iterator[Expect]:
    """Namespaces held every way, active and not; all torn down after the module, also on failure."""
    expect: Expect = {}
    with ExitStack() as stack:
        for t in TYPE_NAMES:
            proc = stack.enter_context(make_namespace("unshare", t))
            expect[(t, proc.inum)] = ("task", True)
            viafd = stack.enter_context(make_namespace("unshare", t))
            stack.enter_context(nsfs_fd(viafd))
            viafd.end_process()
            expect[(t, viafd.inum)] = ("nsfs fd", True)
            viamount = stack.enter_context(make_namespace("unshare", t))
            stack.enter_context(bind_mount(viamount))
            viamount.end_process()
            expect[(t, viamount.inum)] = ("bind mount", True)
        # inactive: a network namespace held only by a socket
        sock_ns = stack.enter_context(make_namespace("unshare", "net"))
        with nsfs_fd(sock_ns) as fd:
            s = socket_in(fd)
            stack.callback(s.close)
        sock_ns.end_process()
        expect[("net", sock_ns.inum)] = ("socket", False)
        # active through the owner chain: a user namespace whose only holder is the net namespace it
        # owns, which a bind mount holds
        owner = stack.enter_context(make_namespace("unshare", "user+net"))
        owned = _net_of(owner)
        stack.enter_context(bind_mount(owned))
        owner.end_process()
        expect[("user", owner.inum)] = ("owner of an active net namespace", True)
        expect[("net", owned.inum)] = ("bind mount", True)
        # inactive through the owner chain: the same, with the owned net namespace held by a socket
        owner2 = stack.enter_context(make_namespace("unshare", "user+net"))
        owned2 = _net_of(owner2)
        with nsfs_fd(owned2) as fd:
            s2 = socket_in(fd)
            stack.callback(s2.close)
        owner2.end_process()
        expect[("user", owner2.inum)] = ("owner of an inactive net namespace", False)
        expect[("net", owned2.inum)] = ("socket", False)
        yield expect


def _net_of(made: Made) -> Made:
    inum = int(os.readlink(f"/proc/{made.member_pid}/ns/net").split("[")[1][:-1])
    return Made("net", "unshare", inum, made.member_pid, made.member_pid, made.proc)


INIT_INUMS = range(0xEFFFFFF8, 0xF0000000)  # the initial namespaces' fixed inode numbers (MNT..IPC)


def _listed() -> dict[tuple[str, int], int]:
    """(type, inum) -> ns_id of every namespace listns() returns (inode numbers through nsfs handles)."""
    from nstrack.kernel.listns import listns_typed, open_ns_by_id

    out: dict[tuple[str, int], int] = {}
    mount_fd = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)  # any nsfs file names the mount
    try:
        for ns_id, t in listns_typed(page=64):  # a small page: paging is exercised too
            try:
                fd = open_ns_by_id(ns_id, mount_fd)
            except OSError as exc:  # gone (or inactive) since it was listed: the caller retries
                out[(t, -ns_id)] = ns_id
                print(f"listed {t} ns_id {ns_id} could not be opened: {exc}")
                continue
            try:
                out[(t, os.fstat(fd).st_ino)] = ns_id
            finally:
                os.close(fd)
    finally:
        os.close(mount_fd)
    return out


def _mountinfo_via(path: str) -> str:
    """/proc/self/mountinfo of the mount namespace open at ``path``, read by a child that joins it."""
    r = subprocess.run(["nsenter", f"--mount={path}", "cat", "/proc/self/mountinfo"], check=False,
                       capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"nsenter --mount={path}: {r.stderr.strip()}"
    return r.stdout


def _predict_active(sc: Any) -> tuple[dict[tuple[str, int], str], list[str]]:
    """(type, inum) -> why, for the namespaces the kernel must count as active, from the holder scan alone."""
    from nstrack.kernel.owners import openable_paths

    found = {(r.type, r.inum): r for r in sc.namespaces}
    why: dict[tuple[str, int], str] = {}
    problems: list[str] = []

    def seed(key: tuple[str, int], reason: str) -> None:
        if key not in found:
            problems.append(f"{key[0]}:[{key[1]}] ({reason}) is not among nstrack's namespaces")
        why.setdefault(key, reason)

    for r in sc.namespaces:
        if r.inum in INIT_INUMS or (r.ns_id is not None and r.ns_id <= NS_LAST_INIT_ID):
            why[(r.type, r.inum)] = "initial namespace"
    for t in sc.tasks:
        for i in ACTIVE_SLOTS:
            if t.inums[i]:
                seed((SLOTS[i][0], t.inums[i]), f"{SLOTS[i][1]} of task {t.pid} ({t.comm})")
    for f in sc.files:
        if f.kind == "nsfs":
            seed((f.type, f.inum), f"nsfs fd {f.fd} of {f.tgid}")
    mounts: list[MountRecord] = list(sc.mounts)
    read = {m for m in (t.inums[1] for t in sc.tasks) if m}  # mount namespaces nstrack read
    # mount namespaces without a member task: nstrack did not read their nsfs mounts; read them here
    # through any path that opens them (an nsfs fd or a bind mount), until no new one turns up
    while True:
        paths = openable_paths(sc.tasks, sc.files, mounts)
        todo = [(inum, p) for (t, inum), p in paths.items() if t == "mnt" and inum not in read]
        if not todo:
            break
        for inum, p in todo:
            read.add(inum)
            mounts.extend(parse_mountinfo(_mountinfo_via(p), inum))
    unread = sorted({r.inum for r in sc.namespaces if r.type == "mnt"} - read)
    if unread:
        problems.append(f"mount namespaces neither nstrack nor this test could read: {unread}")
    for m in mounts:
        seed((m.type, m.inum), f"bind mount at {m.path} in mnt:[{m.mnt_ns}]")
    todo_keys = list(why)
    while todo_keys:  # an active namespace holds its owner user namespace active, up the chain
        key = todo_keys.pop()
        r = found.get(key)
        if r is None:
            continue
        owner = r.owner_inum or (r.parent_inum if r.type == "user" else 0)
        if owner and ("user", owner) not in why:
            seed(("user", owner), f"owner of active {r.type}:[{r.inum}]")
            todo_keys.append(("user", owner))
    return why, problems


def test_listns_equals_the_active_part_of_nstracks_scan(scenario: Expect) -> None:
    from nstrack.kernel.scanner import Scanner

    report: list[str] = []
    with Scanner() as s:
        for attempt in range(1, ATTEMPTS + 1):
            before = _listed()
            sc = s.scan(holders=True)
            after = _listed()
            found = {(r.type, r.inum): r for r in sc.namespaces}
            why, problems = _predict_active(sc)
            active = set(why)
            listed = set(before) & set(after)
            report = []
            if before != after:
                report.append(f"listns() changed during the scan: +{sorted(set(after) - set(before))} "
                              f"-{sorted(set(before) - set(after))}")
            report += problems
            not_found = listed - set(found)
            if not_found:
                report.append(f"listns() returned namespaces nstrack did not find: {sorted(not_found)}")
            unexplained = listed - active
            if unexplained:
                report.append(f"listns() lists namespaces with no active holder nstrack saw: {sorted(unexplained)}")
            missing = active - listed
            if missing:
                report.append("active namespaces listns() omits: "
                              + "; ".join(f"{k} ({why[k]})" for k in sorted(missing)))
            if sc.method == "ns-lists":  # the walk has ns_ids: they must be the kernel's
                wrong = {k: (found[k].ns_id, before[k]) for k in listed & set(found) if found[k].ns_id != before[k]}
                if wrong:
                    report.append(f"ns_id differs (walk, listns): {wrong}")
            if not report:
                break
            print(f"attempt {attempt}: " + " | ".join(report))
            if attempt < ATTEMPTS:
                time.sleep(attempt)
    assert not report, "\n".join(report)

    # the exact relation held: listns() == the active part of nstrack's namespaces; the rest is inactive
    inactive = set(found) - listed
    for key, (how, expect_listed) in scenario.items():
        assert (key in listed) is expect_listed, (
            f"{key[0]}:[{key[1]}] held by {how}: listns() {'omits' if expect_listed else 'lists'} it")
        if expect_listed or sc.method == "ns-lists":
            assert key in found, f"{key[0]}:[{key[1]}] (held by {how}) missing from nstrack's scan ({sc.method})"
    assert {t for t, _ in listed} == set(TYPE_NAMES)
    inactive_scenario = [k for k, (_h, lst) in scenario.items() if not lst]
    print(f"kernel {os.uname().release}, nstrack scan method {sc.method}: {len(found)} namespaces, listns() "
          f"{len(listed)} (all found by nstrack, all active by its holders, none active omitted), "
          f"{len(inactive)} inactive omitted: {sorted(inactive)}; scenario {len(scenario)} namespaces, inactive "
          f"{inactive_scenario}, found by nstrack: {[k for k in inactive_scenario if k in found]}")


def test_listns_paging_and_errors() -> None:
    import errno

    from nstrack.kernel.listns import ListnsError, listns, listns_call

    whole = listns(page=1_000_000 // 4)
    assert whole == sorted(whole) and len(whole) == len(set(whole))
    assert listns(page=1) == whole  # one id per call: the cursor is the last id seen
    assert set(listns(ns_type=0x40000000)) <= set(whole)
    with pytest.raises(ListnsError) as e:
        listns_call(ns_type=0x1)  # not a CLONE_NEW* bit
    assert e.value.errno == errno.EOPNOTSUPP and "listns" in str(e.value)
    with pytest.raises(ListnsError) as e:
        listns_call(count=1_000_001)
    assert e.value.errno == errno.EOVERFLOW
