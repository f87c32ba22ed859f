"""How libbpf failures become Python exceptions (no kernel needed)."""

from __future__ import annotations

import errno

from nstrack.kernel.libbpf import BPFError, _verifier_log, errno_name

LOG = [
    "libbpf: prog 'x': BPF program load failed: Permission denied",
    "libbpf: prog 'x': -- BEGIN PROG LOAD LOG --",
    "0: R1=ctx() R10=fp0",
    "; __u32 pid = ctx->task->tgid;",
    "1: (79) r1 = *(u64 *)(r1 +8)",
    "R1 invalid mem access 'trusted_ptr_or_null_'",
    "processed 3 insns (limit 1000000)",
    "-- END PROG LOAD LOG --",
    "libbpf: failed to load object 'probe.bpf.o'",
]


def test_verifier_log_extracted() -> None:
    log = _verifier_log(LOG)
    assert log.splitlines()[0] == "0: R1=ctx() R10=fp0"
    assert "invalid mem access" in log
    assert "END PROG LOAD LOG" not in log and "failed to load object" not in log


def test_error_carries_errno_hint_and_log_tail() -> None:
    exc = BPFError(errno.EACCES, "loading probe.bpf.o", LOG, _verifier_log(LOG))
    assert exc.errno == errno.EACCES
    text = str(exc)
    assert text.startswith("loading probe.bpf.o: EACCES (Permission denied); rejected by the verifier")
    assert "verifier log (last lines):" in text
    assert text.rstrip().endswith("processed 3 insns (limit 1000000)")
    assert "Traceback" not in text


def test_error_without_log_shows_libbpf_messages() -> None:
    exc = BPFError(errno.EPERM, "attaching probe_fentry", ["libbpf: prog 'probe_fentry': failed to attach: -1"])
    text = str(exc)
    assert "EPERM (Operation not permitted)" in text
    assert "CAP_BPF" in text
    assert "failed to attach" in text


def test_errno_names() -> None:
    assert errno_name(errno.EPERM) == "EPERM"
    assert errno_name(9999) == "errno 9999"
    assert errno_name(None) == "errno ?"
