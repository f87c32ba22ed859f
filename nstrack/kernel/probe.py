"""Find out what this kernel allows by loading, attaching and firing tiny programs (bpf/probe.bpf.c).

Each probe loads one program of the probe object (the others have autoload off), attaches it,
triggers it from this process and checks that it ran. A probe is conclusive: ``ok`` is True only if
the program ran, and otherwise ``reason`` says what refused it and why.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..model import mode as modes
from . import hooks, host
from .bpf_names import PROBE
from .bpfsys import errno_name
from .libbpf import BPFError, BPFLink, BPFObject, BPFProgram, VmlinuxBTF, libbpf_version
from .objects import bpf_object

PROBE_FUNCTION = "ksys_unshare"  # in BTF and kallsyms since 4.17; unshare(0) reaches it and creates nothing

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class ProbeResult:
    ok: bool
    reason: str
    errno: str | None = None
    seconds: float = 0.0


@dataclass
class Findings:
    kernel: str
    libbpf: str
    lockdown: str
    lsms: str
    listns: bool
    caps: list[str]
    missing_caps: list[str]
    mounts: list[dict[str, str]]
    probes: dict[str, ProbeResult]
    hooks_btf: dict[str, dict[str, str | None]]
    hooks_kallsyms: dict[str, dict[str, str | None]]
    decision: modes.Decision
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = self.decision
        return {
            "kernel": self.kernel,
            "mode": d.mode,
            "mode_limits": d.limits,
            "rescan_seconds": modes.DEFAULT_RESCAN_SECONDS if d.mode in ("tracepoint", "procfs") else None,
            "per_type": d.per_type,
            "why_not": d.why_not,
            "upgrade": d.upgrade,
            "probes": {k: asdict(v) for k, v in self.probes.items()},
            "hooks": {"btf": self.hooks_btf, "kallsyms": self.hooks_kallsyms},
            "libbpf": self.libbpf,
            "lockdown": self.lockdown,
            "lsms": self.lsms,
            "listns": self.listns,
            "capabilities": self.caps,
            "missing_capabilities": self.missing_caps,
            "mounts": self.mounts,
            "notes": self.notes,
            "serve_capabilities": _serve_caps(),
        }


def _serve_caps() -> dict[str, dict[str, str]]:
    from .caps import RUNTIME_CAPS, STARTUP_CAPS

    return {"at_start": STARTUP_CAPS, "kept_after_attach": RUNTIME_CAPS}


def _unshare_nothing() -> None:
    _libc.unshare(0)


def _fork_and_reap() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _explain(probe: str, exc: BPFError) -> str:
    e = exc.errno
    if probe == "kprobe" and e == errno.ENOENT and not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        return "ENOENT: this kernel has no kprobes (no /sys/bus/event_source/devices/kprobe, CONFIG_KPROBES unset)"
    if probe in ("fentry",) and e == errno.EPERM:
        return "EPERM: BPF trampolines refused before verification (security policy or sandbox)"
    if probe == "tracepoint" and e == errno.ENOENT:
        return "ENOENT: syscall tracepoints not found (tracefs not mounted, or CONFIG_FTRACE_SYSCALLS unset)"
    if probe == "bpf_loop" and e in (errno.EINVAL, errno.EACCES):
        return f"{errno_name(e)}: bpf_loop helper unknown to this kernel (needs Linux 5.17+)"
    return str(exc).split("\n")[0]


def _run_probe(
    name: str,
    program: str,
    attach: Callable[[BPFProgram], BPFLink | None],
    trigger: Callable[[BPFObject, BPFLink | None], bool],
    target: str | None = None,
) -> ProbeResult:
    t0 = time.perf_counter()
    try:
        with BPFObject.open(bpf_object(PROBE.OBJECT)) as obj:
            obj.only(program)
            obj.set_globals(**{PROBE.glob.target_tgid: os.getpid()})
            prog = obj.program(program)
            if target:
                prog.set_attach_target(target)
            obj.load()
            link = attach(prog)
            fired = trigger(obj, link)
    except BPFError as exc:
        return ProbeResult(False, _explain(name, exc), errno_name(exc.errno), time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    if not fired:
        return ProbeResult(False, "loaded and attached, but never ran when triggered", None, dt)
    return ProbeResult(True, "loaded, attached and ran", None, dt)


def _hits(obj: BPFObject, _link: BPFLink | None, action: Callable[[], object]) -> bool:
    action()
    return obj.read_global(PROBE.glob.hits) > 0


def probe_btf() -> ProbeResult:
    t0 = time.perf_counter()
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return ProbeResult(False, "no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF", "ENOENT")
    try:
        with VmlinuxBTF() as btf:
            ok = btf.has("ns_common", 4)  # BTF_KIND_STRUCT
    except BPFError as exc:
        return ProbeResult(False, str(exc).split("\n")[0], errno_name(exc.errno), time.perf_counter() - t0)
    if not ok:
        return ProbeResult(False, "kernel BTF has no struct ns_common", None, time.perf_counter() - t0)
    return ProbeResult(True, "kernel BTF loaded (/sys/kernel/btf/vmlinux)", None, time.perf_counter() - t0)


def run_probes() -> dict[str, ProbeResult]:
    results: dict[str, ProbeResult] = {"btf": probe_btf()}

    got: list[bytes] = []

    def rb_trigger(obj: BPFObject, _link: BPFLink | None) -> bool:
        rb = obj.ring_buffer(PROBE.maps.probe_rb, got.append)
        obj.program(PROBE.prog.probe_ringbuf).test_run()
        rb.consume()
        return got == [(0x6E737472616B21).to_bytes(8, "little")]

    results["ringbuf"] = _run_probe("ringbuf", PROBE.prog.probe_ringbuf, lambda p: None, rb_trigger)
    results["bpf_loop"] = _run_probe(
        "bpf_loop", PROBE.prog.probe_bpf_loop, lambda p: None,
        lambda obj, _l: obj.program(PROBE.prog.probe_bpf_loop).test_run() == 45,
    )
    results["iter"] = _run_probe(
        "iter", PROBE.prog.probe_iter, lambda p: p.attach_iter(),
        lambda obj, link: link is not None and os.getpid().to_bytes(4, "little") in link.read_iter(),
    )
    results["tp_btf"] = _run_probe(
        "tp_btf", PROBE.prog.probe_tp_btf, lambda p: p.attach(), lambda o, l: _hits(o, l, _fork_and_reap)
    )
    results["tracepoint"] = _run_probe(
        "tracepoint", PROBE.prog.probe_tracepoint, lambda p: p.attach(), lambda o, l: _hits(o, l, os.getppid)
    )
    results["kprobe"] = _run_probe(
        "kprobe", PROBE.prog.probe_kprobe, lambda p: p.attach_kprobe(PROBE_FUNCTION),
        lambda o, l: _hits(o, l, _unshare_nothing),
    )
    results["fentry"] = _run_probe(
        "fentry", PROBE.prog.probe_fentry, lambda p: p.attach(), lambda o, l: _hits(o, l, _unshare_nothing),
        target=PROBE_FUNCTION,
    )
    return {p: results[p] for p in modes.PROBES}


def find_hooks(btf_ok: bool) -> tuple[dict[str, hooks.TypeHooks], dict[str, hooks.TypeHooks]]:
    """Hook functions per type as found in BTF (fentry) and kallsyms (kprobe)."""
    in_btf: set[str] = set()
    if btf_ok:
        try:
            with VmlinuxBTF() as btf:
                in_btf = {f for f in hooks.ALL_FUNCTIONS if btf.has(f)}
        except BPFError:
            pass
    in_kallsyms = host.kallsyms_functions(hooks.ALL_FUNCTIONS)
    return hooks.resolve(in_btf), hooks.resolve(in_kallsyms)


def investigate(requested_mode: str | None = None, mount: bool = True) -> Findings:
    """Everything ``nstrack doctor`` reports. Raises ValueError if ``requested_mode`` cannot run."""
    facts = host.host_facts(mount=mount)
    missing = host.missing_bpf_caps(facts.caps)
    notes: list[str] = []
    for m in facts.mounts:
        if m.action == "mounted":
            notes.append(f"mounted {m.fstype} at {m.path} (it was missing)")
        elif m.action.startswith("failed") and m.fstype != "securityfs":
            notes.append(f"could not mount {m.fstype} at {m.path}: {m.action}")
    if missing:
        notes.append(
            "missing capabilities " + ", ".join(missing) + ": BPF needs CAP_BPF and CAP_PERFMON "
            "(or CAP_SYS_ADMIN); run as root or grant them"
        )
    try:
        lib_version = libbpf_version()
        probes = run_probes()
    except BPFError as exc:  # libbpf itself missing or too old
        lib_version = "unavailable"
        notes.append(str(exc))
        probes = {p: ProbeResult(False, "libbpf unavailable", errno_name(exc.errno)) for p in modes.PROBES}
    if missing:
        for r in probes.values():
            if not r.ok and r.errno == "EPERM":
                r.reason += f" (this process lacks {', '.join(missing)})"
    hb, hk = find_hooks(probes["btf"].ok)
    decision = modes.decide(
        {k: v.ok for k, v in probes.items()},
        hooks_btf=frozenset(t for t, h in hb.items() if h.complete),
        hooks_kallsyms=frozenset(t for t, h in hk.items() if h.complete),
        requested=requested_mode,
    )
    return Findings(
        kernel=facts.kernel,
        libbpf=lib_version,
        lockdown=facts.lockdown,
        lsms=facts.lsms,
        listns=facts.listns,
        caps=sorted(facts.caps),
        missing_caps=missing,
        mounts=[asdict(m) for m in facts.mounts],
        probes=probes,
        hooks_btf={t: asdict(h) for t, h in hb.items()},
        hooks_kallsyms={t: asdict(h) for t, h in hk.items()},
        decision=decision,
        notes=notes,
    )
