"""`nstrack doctor` tells the truth about the kernel it runs on.

Each finding is checked against an independent fact of the host (files in /sys and /proc), and the
chosen mode against what this kind of machine is known to allow: NSTRACK_EXPECT_MODE when set (the
VM matrix sets ``fentry``), else this project's hardened Firecracker hosts must give ``tracepoint``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nstrack.kernel import host


def run_doctor(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "nstrack", "doctor", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def doctor() -> dict[str, object]:
    r = run_doctor("--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def expected_mode() -> str | None:
    if os.environ.get("NSTRACK_EXPECT_MODE"):
        return os.environ["NSTRACK_EXPECT_MODE"]
    if "-fc-" in os.uname().release:  # this project's own machines (kernel-notes.md)
        return "tracepoint"
    return None


def test_json_shape(doctor: dict[str, object]) -> None:
    assert doctor["kernel"] == os.uname().release
    probes = doctor["probes"]
    assert isinstance(probes, dict)
    assert set(probes) == {"btf", "fentry", "kprobe", "tp_btf", "tracepoint", "iter", "ringbuf", "bpf_loop"}
    for p in probes.values():
        assert isinstance(p["ok"], bool) and isinstance(p["reason"], str) and p["reason"]


def test_findings_match_host(doctor: dict[str, object]) -> None:
    probes = doctor["probes"]
    assert isinstance(probes, dict)
    assert probes["btf"]["ok"] == os.path.exists("/sys/kernel/btf/vmlinux")
    if not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        assert not probes["kprobe"]["ok"]
        assert "no kprobes" in probes["kprobe"]["reason"]
    assert doctor["listns"] == host.has_listns()
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (5, 17):
        assert probes["bpf_loop"]["ok"], probes["bpf_loop"]
    if (major, minor) >= (5, 8):
        for feature in ("ringbuf", "iter", "tp_btf"):
            assert probes[feature]["ok"], probes[feature]


def test_mode_is_the_one_this_machine_allows(doctor: dict[str, object]) -> None:
    want = expected_mode()
    if want is None:
        pytest.skip("unknown kind of machine: set NSTRACK_EXPECT_MODE to assert the mode")
    assert doctor["mode"] == want, doctor["why_not"]
    if want == "tracepoint":
        probes = doctor["probes"]
        assert isinstance(probes, dict)
        assert probes["fentry"] == probes["fentry"] | {"ok": False, "errno": "EPERM"}
        assert doctor["rescan_seconds"], "tracepoint mode must state its free-latency bound"
    if want == "fentry":
        per_type = doctor["per_type"]
        assert isinstance(per_type, dict)
        assert set(per_type.values()) == {"fentry"}, f"types without fentry hooks: {per_type}"


def test_text_report_and_exit_status(doctor: dict[str, object]) -> None:
    r = run_doctor()
    assert r.returncode == (0 if doctor["mode"] != "procfs" else 1)
    assert f"mode: {doctor['mode']}" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_usage_error_exits_2() -> None:
    r = run_doctor("--mode", "bogus")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


def test_without_capabilities_names_them() -> None:
    """As root with every capability dropped: procfs only, exit 1, the missing capabilities named."""
    drop = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
    r = run_doctor("--json", prefix=drop)
    assert r.returncode == 1, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "procfs"
    assert d["missing_capabilities"] == ["CAP_BPF", "CAP_PERFMON"]
    assert any("CAP_BPF" in n for n in d["notes"])
    assert "EPERM" in d["probes"]["tp_btf"]["reason"] or d["probes"]["tp_btf"]["errno"] == "EPERM"
    text = run_doctor(prefix=drop)
    assert "missing capabilities CAP_BPF, CAP_PERFMON" in text.stdout
