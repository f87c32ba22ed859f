"""`nstrack serve` on loopback, against namespaces made for real."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from .scenario import ASYNC_FREE_GRACE
from .serving import Served, serve


@pytest.fixture(scope="module")
def srv() -> Iterator[Served]:
    with serve("--rescan-seconds", "0.5", "--holders-seconds", "0.5") as s:
        yield s


@contextmanager
def bound_netns(n: int) -> Iterator[list[str]]:
    """`ip netns add` n times: network namespaces held only by bind mounts; removed afterwards."""
    names = [f"nstrack-test-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    with ExitStack() as stack:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            stack.callback(subprocess.run, ["ip", "netns", "del", name], check=False)
        yield names


def wait_metric(srv: Served, series: str, want: float, timeout: float) -> float:
    end = time.monotonic() + timeout
    while True:
        v = srv.metric(series)
        if v == want or time.monotonic() > end:
            return v
        time.sleep(0.3)


ORPHANS = 'nstrack_orphaned_namespaces{held_by="mount",ns_type="net"}'


def test_orphans_move_with_bind_mounted_netns(srv: Served) -> None:
    base = srv.metric(ORPHANS)
    created = srv.metric('nstrack_namespaces_created_total{ns_type="net"}')
    with bound_netns(3) as names:
        assert wait_metric(srv, ORPHANS, base + 3, 10) == base + 3
        orphans = srv.json("/namespaces?type=net&orphaned=true")["namespaces"]
        paths = {m["path"] for e in orphans for m in e["holders"]["mounts"]}
        assert {f"/run/netns/{n}" for n in names} <= paths
        one = next(e for e in orphans if any(m["path"] == f"/run/netns/{names[0]}" for m in e["holders"]["mounts"]))
    assert srv.metric('nstrack_namespaces_created_total{ns_type="net"}') >= created + 3
    assert wait_metric(srv, ORPHANS, base, ASYNC_FREE_GRACE + 5) == base
    # the namespace is gone: its tombstone answers 410 with what was seen
    deadline = time.monotonic() + ASYNC_FREE_GRACE
    while True:
        code, _, body = srv.get("/namespaces/" + urllib.parse.quote(one["name"]))
        if code == 410 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert code == 410, body
    assert "was destroyed" in body


def test_endpoints(srv: Served) -> None:
    code, ctype, body = srv.get("/")
    assert code == 200 and "text/html" in ctype and "/metrics" in body and "tracking mode" in body
    code, ctype, body = srv.get("/metrics")
    assert code == 200 and ctype.startswith("text/plain") and "nstrack_build_info" in body
    code, ctype, body = srv.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert code == 200 and "openmetrics" in ctype and body.rstrip().endswith("# EOF")
    health = srv.json("/healthz")
    assert health["ok"] is True and health["mode"]
    snap = srv.json("/namespaces")
    init_net = next(e for e in snap["namespaces"] if e["type"] == "net" and not e["orphaned"])
    for ident in (init_net["name"], str(init_net["inum"])):
        assert srv.json("/namespaces/" + urllib.parse.quote(ident))["inum"] == init_net["inum"]
    assert srv.json("/namespaces?limit=1")["namespaces"].__len__() == 1
    assert {e["type"] for e in srv.json("/namespaces?type=uts")["namespaces"]} == {"uts"}


@pytest.mark.parametrize(("path", "code"), [
    ("/nope", 404), ("/namespaces?type=nett", 400), ("/namespaces?orphaned=maybe", 400),
    ("/namespaces?limit=0", 400), ("/namespaces?color=red", 400), ("/namespaces/net:4026531840", 400),
    ("/namespaces/net:%5B4000000001%5D", 404),
])
def test_bad_requests(srv: Served, path: str, code: int) -> None:
    got, ctype, body = srv.get(path)
    assert got == code, body
    assert ctype == "application/json" and '"error"' in body


def test_idle_client_does_not_block_scrapes(srv: Served) -> None:
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(8)]
    try:
        idle[0].sendall(b"GET /metrics HTTP/1.1\r\n")  # a request that never finishes
        code, _, body = srv.get("/metrics")
        assert code == 200 and "nstrack_namespaces" in body
    finally:
        for s in idle:
            s.close()


def _ls_json(*args: str) -> dict[tuple[str, int], dict[str, object]]:
    import json
    import sys

    out = subprocess.run([sys.executable, "-m", "nstrack", "ls", "--json", "-o", "NS,TYPE,NPROCS,HOLDERS,ORPHANED",
                          *args], capture_output=True, text=True, check=True, timeout=120).stdout
    return {(r["type"], r["ns"]): r for r in json.loads(out)["namespaces"]}


def test_ls_through_serve_equals_a_local_scan(srv: Served) -> None:
    """`nstrack ls --server URL` reads a running serve; it lists what a scan of its own lists."""
    with bound_netns(2) as names:
        bound = {int(subprocess.run(["stat", "-L", "-c", "%i", f"/run/netns/{n}"], capture_output=True, text=True,
                                    check=True).stdout) for n in names}
        deadline = time.monotonic() + 10
        while True:  # the serve learns them within a rescan and a holder scan
            via = _ls_json("--server", srv.base)
            if all(("net", i) in via for i in bound) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        local = _ls_json()
        for i in bound:
            row = via[("net", i)]
            assert row["orphaned"] is True and row["holders"].startswith("mount:") and row["nprocs"] == 0
            assert local[("net", i)] == row
        assert len(via) > len(bound) and ("net", min(i for t, i in local if t == "net")) in via  # the host's own too
        orphaned = _ls_json("--server", srv.base, "--orphaned", "-t", "net")
        assert {("net", i) for i in bound} <= set(orphaned) and all(r["orphaned"] for r in orphaned.values())


def test_ls_server_errors_are_clear(srv: Served) -> None:
    import sys

    from .serving import free_port

    bad = subprocess.run([sys.executable, "-m", "nstrack", "ls", "--server", f"http://127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot ask nstrack serve at 127.0.0.1:" in bad.stderr
    wrong = subprocess.run([sys.executable, "-m", "nstrack", "ls", "--server", "ftp://x"], capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 1 and "give http[s]://HOST:PORT" in wrong.stderr


def test_ls_endpoint_answers_like_ls_json(srv: Served) -> None:
    import json

    code, ctype, body = srv.get("/ls?columns=NS,TYPE,ORPHANED&type=net")
    assert code == 200 and ctype == "application/json"
    rows = json.loads(body)["namespaces"]
    assert rows and all(set(r) == {"ns", "type", "orphaned"} and r["type"] == "net" for r in rows)
    for bad in ("/ls?columns=NS,BOGUS", "/ls?type=nett", "/ls?sort=ns", "/ls?orphaned=maybe"):
        code, _, body = srv.get(bad)
        assert code == 400 and "error" in json.loads(body), bad


def test_sigterm_stops_serve_at_once() -> None:
    """serve sleeps without a periodic wake-up; SIGTERM still ends it cleanly (exit 0), also while a client
    holds a connection open without sending anything."""
    with serve() as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port))
        try:
            time.sleep(0.5)
            srv.proc.terminate()  # only the process this test started
            assert srv.proc.wait(timeout=15) == 0
        finally:
            idle.close()
