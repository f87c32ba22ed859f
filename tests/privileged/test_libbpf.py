"""The libbpf binding against the real kernel: load, attach, fire, iterate, and leave nothing behind."""

from __future__ import annotations

import errno
import os

import pytest

from nstrack.kernel.libbpf import BPFError, BPFObject, link_exists
from nstrack.kernel.objects import bpf_object

PROBE = bpf_object("probe")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def fork_and_reap(n: int) -> None:
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


def test_tp_btf_fires_and_closes_cleanly() -> None:
    before = open_fds()
    with BPFObject.open(PROBE) as obj:
        obj.only("probe_tp_btf")
        obj.set_globals(target_tgid=os.getpid())
        obj.load()
        link = obj.program("probe_tp_btf").attach()
        link_id = link.id
        assert link_exists(link_id)
        fork_and_reap(3)
        assert obj.read_global("hits") == 3
    assert not link_exists(link_id), "BPF link still in the kernel after close"
    assert open_fds() == before, "file descriptors leaked"


def inspectable(pid: int) -> bool:
    try:
        os.readlink(f"/proc/{pid}/ns/pid")
    except PermissionError:
        return False
    except FileNotFoundError:
        pass
    return True


def test_iterator_lists_every_process() -> None:
    before_pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    with BPFObject.open(PROBE) as obj:
        obj.only("probe_iter")
        obj.load()
        data = obj.program("probe_iter").attach_iter().read_iter()
    after_pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    seen = {int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)}
    # Processes alive across the whole read. On this project's sandbox hosts pid 1 (the supervisor,
    # whose /proc/1/ns links are refused even to root) is never visited by iter/task; nothing that
    # nstrack could inspect anyway. Every process we may inspect must be seen.
    stable = {p for p in before_pids & after_pids if inspectable(p)}
    assert os.getpid() in seen
    assert stable <= seen, f"iterator missed {sorted(stable - seen)[:10]}"


def test_ring_buffer_round_trip() -> None:
    got: list[bytes] = []
    with BPFObject.open(PROBE) as obj:
        obj.only("probe_ringbuf")
        obj.load()
        rb = obj.ring_buffer("probe_rb", got.append)
        for _ in range(5):
            assert obj.program("probe_ringbuf").test_run() == 2
        assert rb.consume() == 5
    assert got == [b"!kartsn\x00"] * 5


def test_map_update_lookup_delete_iterate() -> None:
    with BPFObject.open(PROBE) as obj:
        obj.only("probe_iter")
        obj.load()
        bss = next(m for m in obj.maps() if m.name.endswith(".bss"))
        key = (0).to_bytes(4, "little")
        bss.update(key, (1234).to_bytes(8, "little"))
        assert obj.read_global("hits") == 1234
        assert list(bss.keys()) == [key]
        with pytest.raises(BPFError) as ei:
            bss.delete(key)  # array maps refuse deletes: a clean error, not a crash
        assert ei.value.errno == errno.EINVAL


def test_verifier_rejection_carries_the_log() -> None:
    before = open_fds()
    with BPFObject.open(PROBE) as obj:
        obj.only("invalid_on_purpose")
        with pytest.raises(BPFError) as ei:
            obj.load()
    err = ei.value
    assert err.errno == errno.EACCES
    assert "invalid mem access" in err.verifier_log
    assert "verifier log (last lines):" in str(err)
    assert open_fds() == before


def test_missing_attach_target_is_a_clear_error() -> None:
    with BPFObject.open(PROBE) as obj:
        obj.only("probe_fentry")
        with pytest.raises(BPFError) as ei:
            obj.program("probe_fentry").set_attach_target("no_such_function_in_any_kernel")
    assert ei.value.errno in (errno.ESRCH, errno.ENOENT)
    assert "no_such_function_in_any_kernel" in str(ei.value)


def test_missing_object_file() -> None:
    with pytest.raises(BPFError, match="file missing"):
        BPFObject.open("/nonexistent/x.bpf.o")
