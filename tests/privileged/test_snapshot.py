"""`nstrack snapshot`/`ls`/`show` against namespaces made for real, held every way there is."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from nstrack.model.nstypes import TYPE_NAMES

from .scenario import Made, bind_mount, make_namespace, nsfs_fd, stop_child

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def nstrack(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "nstrack", *args], capture_output=True, text=True,
                          timeout=120)


def socket_in(netns_fd: int) -> socket.socket:
    """A socket created inside the network namespace behind ``netns_fd`` (on a throwaway thread)."""
    out: list[socket.socket] = []
    err: list[int] = []

    def work() -> None:
        if libc.setns(netns_fd, CLONE_NEWNET) != 0:
            err.append(ctypes.get_errno())
            return
        out.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if err:
        raise OSError(err[0], "setns")
    return out[0]


@pytest.fixture(scope="module")
def scenario() -> Iterator[dict[str, Any]]:
    """name -> expectation; everything is torn down after the module, also on failure."""
    expect: dict[str, Any] = {}
    with ExitStack() as stack:
        for t in TYPE_NAMES:
            proc = stack.enter_context(make_namespace("unshare", t))
            expect[f"{t}:[{proc.inum}]"] = ("tasks", False, proc)
            viafd = stack.enter_context(make_namespace("unshare", t))
            stack.enter_context(nsfs_fd(viafd))
            viafd.end_process()
            expect[f"{t}:[{viafd.inum}]"] = ("fds", True, viafd)
            viamount = stack.enter_context(make_namespace("unshare", t))
            path = stack.enter_context(bind_mount(viamount))
            viamount.end_process()
            expect[f"{t}:[{viamount.inum}]"] = ("mounts", True, path)
        # a network namespace held only by a socket
        sock_ns = stack.enter_context(make_namespace("unshare", "net"))
        with nsfs_fd(sock_ns) as fd:
            s = socket_in(fd)
            stack.callback(s.close)
            sock_ns.end_process()
        expect[f"net:[{sock_ns.inum}]"] = ("sockets", True, s)
        # a user namespace held only by the network namespace it owns (which a bind mount holds)
        owner = stack.enter_context(make_namespace("unshare", "user+net"))
        owned_net = int(os.readlink(f"/proc/{owner.member_pid}/ns/net").split("[")[1][:-1])
        owned = Made("net", "unshare", owned_net, owner.member_pid, owner.member_pid, owner.proc)
        stack.enter_context(bind_mount(owned))
        owner.end_process()
        expect[f"user:[{owner.inum}]"] = ("children", True, f"net:[{owned_net}]")
        expect[f"net:[{owned_net}]"] = ("mounts", True, None)
        yield expect


@pytest.fixture(scope="module")
def snap(scenario: dict[str, Any]) -> dict[str, Any]:
    r = nstrack("snapshot")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_every_holder_kind_is_seen(scenario: dict[str, Any], snap: dict[str, Any]) -> None:
    by_name = {e["name"]: e for e in snap["namespaces"]}
    for name, (kind, orphaned, detail) in scenario.items():
        assert name in by_name, f"{name} (held by {kind}) missing from the snapshot"
        e = by_name[name]
        assert e["holders"][kind], f"{name}: expected a {kind} holder, got {e['holders']}"
        assert e["orphaned"] is orphaned, name
        if kind == "mounts" and detail:
            assert detail in [m["path"] for m in e["holders"]["mounts"]]
        if kind == "children":
            assert detail in e["holders"]["children"]
        if orphaned:
            assert e["keeps_alive"].startswith("held by")


def test_superset_of_lsns(snap: dict[str, Any]) -> None:
    lsns = shutil.which("lsns")
    assert lsns, "util-linux lsns is installed by `make setup`"
    before = json.loads(subprocess.run([lsns, "--json", "-o", "NS,TYPE"], capture_output=True, text=True,
                                       check=True).stdout)["namespaces"]
    after_snap = json.loads(nstrack("snapshot").stdout)
    ours = {(e["type"], e["inum"]) for e in after_snap["namespaces"]}
    theirs = {(n["type"], int(n["ns"])) for n in before}
    assert theirs <= ours, f"lsns saw what nstrack did not: {sorted(theirs - ours)[:10]}"
    assert len(ours) > len(theirs), "nstrack should also list the namespaces lsns misses (fd/socket/child)"


def test_complete_on_kernels_with_namespace_lists(snap: dict[str, Any]) -> None:
    """6.18 and later keep lists of every namespace (their layout changed after 6.18: both are walked)."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 18):
        assert snap["method"] == "ns-lists" and snap["complete"] is True, snap["incomplete_reasons"]
        assert all(e["ns_id"] for e in snap["namespaces"]), "the lists give every namespace its ns_id"
    else:
        assert snap["complete"] or snap["incomplete_reasons"]


def test_ls_without_holders_column_lists_the_same(scenario: dict[str, Any]) -> None:
    """`ls` without HOLDERS reads no fds, sockets or mounts where the kernel's lists enumerate every
    namespace; everywhere it must list exactly what `ls` with HOLDERS lists, the scenario's included."""
    def listed(*columns: str) -> dict[str, Any]:
        r = nstrack("ls", "--json", "-o", ",".join(columns))
        assert r.returncode == 0, r.stderr
        return {f"{n['type']}:[{n['ns']}]": n for n in json.loads(r.stdout)["namespaces"]}

    lean = listed("NS", "TYPE", "NPROCS", "PID", "ORPHANED")
    full = listed("NS", "TYPE", "NPROCS", "PID", "ORPHANED", "HOLDERS")
    assert set(scenario) <= set(lean)
    # namespaces of other tests' processes may come and go between the two runs; the scenario's stay
    for name in scenario:
        assert {k: v for k, v in full[name].items() if k != "holders"} == lean[name], name


def test_ls_orphaned_and_show(scenario: dict[str, Any]) -> None:
    r = nstrack("ls", "--orphaned", "--json", "-o", "NAME,HOLDERS,ORPHANED")
    assert r.returncode == 0, r.stderr
    names = {n["name"] for n in json.loads(r.stdout)["namespaces"]}
    for name, (_kind, orphaned, _d) in scenario.items():
        assert (name in names) is orphaned, name
    bound = next(n for n, (k, o, d) in scenario.items() if k == "mounts" and d and n.startswith("net:"))
    shown = nstrack("show", bound)
    assert shown.returncode == 0, shown.stderr
    assert "what keeps it alive: held by a bind mount at " in shown.stdout
    table = nstrack("ls", "-t", "net")
    assert table.stdout.splitlines()[0].split() == ["NS", "TYPE", "NPROCS", "PID", "USER", "COMMAND", "HOLDERS",
                                                    "ORPHANED"]


def test_show_bad_input() -> None:
    assert nstrack("show", "net:4026531840").returncode == 2
    r = nstrack("show", "net:[4000000001]")
    assert r.returncode == 2 and "no live namespace" in r.stderr
    r = nstrack("ls", "-o", "NS,WHAT")
    assert r.returncode == 2 and "valid columns" in r.stderr


def test_without_bpf_privileges() -> None:
    drop = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
    r = nstrack("ls", prefix=drop)
    assert r.returncode == 1 and "CAP_BPF" in r.stderr
    r = nstrack("snapshot", "--mode", "procfs", prefix=drop)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["complete"] is False and d["method"] == "procfs" and d["incomplete_reasons"]


def test_owner_links_from_ioctls_match_the_kernel_walk(scenario: dict[str, Any]) -> None:
    """The pre-6.18 path (nsfs ioctls) against the 6.18 in-kernel walk, on kernels that have both."""
    from nstrack.kernel.owners import openable_paths, resolve_links
    from nstrack.kernel.scanner import Scanner, derive_namespaces

    with Scanner() as s:
        sc = s.scan(holders=True)
    derived = resolve_links(derive_namespaces(sc.tasks, sc.files, sc.mounts),
                            openable_paths(sc.tasks, sc.files, sc.mounts))
    mine = {(r.type, r.inum): (r.owner_inum, r.parent_inum) for r in derived}
    for name in scenario:  # every scenario namespace is found through holders or as an owner
        t, inum = name.split(":")[0], int(name.split("[")[1][:-1])
        assert (t, inum) in mine, name
    if sc.method == "ns-lists":
        truth = {(r.type, r.inum): (r.owner_inum, r.parent_inum) for r in sc.namespaces}
        wrong = {k: (v, truth.get(k)) for k, v in mine.items() if truth.get(k) != v}
        assert not wrong, wrong


def test_refcounts_are_explained_by_the_holders() -> None:
    """Every reference on a namespace held by a process, an nsfs fd, a bind mount or sockets is accounted
    for (refcount_unexplained == 0) where the kernel reports refcounts (6.18+ lists); null elsewhere."""
    from nstrack.model.holders import REF_SLOTS

    made: dict[str, str] = {}
    with ExitStack() as stack:
        for t in REF_SLOTS:
            a = stack.enter_context(make_namespace("unshare", t))  # its process
            made[f"{t}:[{a.inum}]"] = "process"
            b = stack.enter_context(make_namespace("unshare", t))  # process and two fds on one inode
            stack.enter_context(nsfs_fd(b))
            stack.enter_context(nsfs_fd(b))
            made[f"{t}:[{b.inum}]"] = "process+fds"
            c = stack.enter_context(make_namespace("unshare", t))  # only a bind mount, once the process ends
            stack.enter_context(bind_mount(c))
            c.end_process()
            made[f"{t}:[{c.inum}]"] = "mount"
        n = stack.enter_context(make_namespace("unshare", "net"))
        fd = stack.enter_context(nsfs_fd(n))
        socks = [stack.enter_context(socket_in(fd)) for _ in range(3)]
        assert len(socks) == 3
        made[f"net:[{n.inum}]"] = "process+fd+3 sockets"
        # one net namespace in 24 nsproxies (each process has its own uts namespace): 24 references, told
        # apart by the nsproxies' identities (neighbours in memory once shared one)
        shared = stack.enter_context(make_namespace("unshare", "net"))
        for _ in range(24):
            p = subprocess.Popen(["nsenter", f"--net={shared.path}", "unshare", "--uts", "sleep", "3600"],
                                 stdin=subprocess.DEVNULL)
            stack.callback(stop_child, p)
            _wait_exec(p, "sleep")
        made[f"net:[{shared.inum}]"] = "25 processes in 25 nsproxies"
        out = nstrack("snapshot")
        assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    entries = {e["name"]: e for e in doc["namespaces"]}
    lists = doc["method"] == "ns-lists"
    for name, how in made.items():
        e = entries[name]
        if lists:
            assert e["refcount"] is not None and e["refcount_unexplained"] == 0, (name, how, e)
        else:
            assert e["refcount"] is None and e["refcount_unexplained"] is None, (name, how, e)
    if lists:  # and the accounting is not trivially zero: the fd-held ones count the nsfs inode's reference
        assert all(entries[k]["refcount"] >= 2 for k, how in made.items() if "fd" in how)
        assert entries[f"net:[{n.inum}]"]["refcount"] == 1 + 1 + 3
        assert entries[f"net:[{shared.inum}]"]["refcount"] == 25


def _wait_exec(p: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
    """Until the child (which this test started) runs ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{p.pid}/exe").endswith("/" + name):
                return
        except OSError:
            pass
        assert p.poll() is None, f"{name} exited {p.returncode}"
        time.sleep(0.01)
    raise AssertionError(f"pid {p.pid} never ran {name}")


def test_quick_rescans_answer_from_the_walk_digest() -> None:
    """Where the kernel has the lists, a quick scan whose walk digest is unchanged hands back the last list
    (no records read); a namespace made or freed changes the digest and is seen at once."""
    from nstrack.kernel.scanner import Scanner

    def names(sc: Any) -> set[str]:
        return {f"{r.type}:[{r.inum}]" for r in sc.namespaces}

    with Scanner(quick=True) as s:
        first = s.scan(tasks=False)
        again = s.scan(tasks=False, quick=True)
        if not s.has_lists:  # no walk to digest: quick changes nothing
            assert s.quick_scans == 0 and first.method == "tasks"
            return
        assert again.complete and s.quick_scans == 1 and again.namespaces is first.namespaces
        with make_namespace("unshare", "uts") as m:
            made = s.scan(tasks=False, quick=True)
            assert made.namespaces is not first.namespaces and f"uts:[{m.inum}]" in names(made)
            assert s.quick_scans == 1
        deadline = time.monotonic() + 10
        while f"uts:[{m.inum}]" in names(gone := s.scan(tasks=False, quick=True)):
            assert time.monotonic() < deadline, "the freed namespace is still in the walk"
            time.sleep(0.05)
        assert gone.complete and names(gone) <= names(made)
        # the full walk agrees with the quick answer
        assert names(s.scan(tasks=False)) == names(s.scan(tasks=False, quick=True))


def test_pinned_scan_programs_serve_later_runs() -> None:
    """The first `ls` loads the scan programs and pins them; later runs (other processes) scan with the pins
    and say the same; --no-cache neither uses nor makes pins; runs at once take turns on the pinned ring."""
    from nstrack.kernel.scanner import PIN_ROOT, PinnedScanner, Scanner, _unpin, pin_path

    def listed(out: subprocess.CompletedProcess[str]) -> set[tuple[str, int]]:
        assert out.returncode == 0, out.stderr
        return {(n["type"], n["ns"]) for n in json.loads(out.stdout)["namespaces"]}

    path = pin_path()
    _unpin(path)
    os.makedirs(PIN_ROOT, mode=0o700, exist_ok=True)
    stale = [f"{PIN_ROOT}/scan-0badc0de", f"{PIN_ROOT}/scan-0badc0de-tmp{2**22 + 7}"]  # another build; a dead pinner
    for d in stale:
        os.makedirs(d, exist_ok=True)
    with ExitStack() as stack:
        made = [stack.enter_context(make_namespace("unshare", t)) for t in ("net", "uts", "ipc")]
        held = stack.enter_context(make_namespace("unshare", "net"))  # held only by a bind mount
        stack.enter_context(bind_mount(held))
        held.end_process()
        nocache = listed(nstrack("ls", "--json", "--no-cache"))
        assert not os.path.exists(path), "--no-cache pinned"
        first = listed(nstrack("ls", "--json"))
        pins = sorted(os.listdir(path))
        assert not any(os.path.exists(d) for d in stale), os.listdir(PIN_ROOT)
        with Scanner() as s:
            lists = s.has_lists
        assert pins == sorted(["files", "tasks", *(["lists", "rb"] if lists else [])]), pins
        assert oct(os.stat(path).st_mode & 0o777) == "0o700"
        with PinnedScanner(path) as p:  # the pins scan without loading anything
            pinned = p.scan(holders=True)
        expected = {(m.type, m.inum) for m in [*made, held]}
        again = [subprocess.Popen([sys.executable, "-m", "nstrack", "ls", "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [subprocess.CompletedProcess(p.args, p.wait(timeout=120), p.stdout.read(), p.stderr.read())
                for p in again]
        for p in again:
            p.stdout.close()
            p.stderr.close()
        for got in (nocache, first, {(r.type, r.inum) for r in pinned.namespaces}, *map(listed, outs)):
            assert expected <= got
        if lists:  # complete both ways: the same namespaces (the test made and holds all that changed)
            assert first == listed(outs[0]) == nocache
        shown = nstrack("show", f"net:[{held.inum}]")
        assert shown.returncode == 0 and "bind mount" in shown.stdout, shown.stdout + shown.stderr
    assert os.path.isdir(path) and os.path.dirname(path) == PIN_ROOT
