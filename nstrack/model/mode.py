"""Choosing the tracking mode from what the kernel allowed (pure; see ``nstrack doctor``).

Modes, best first: ``fentry`` > ``kprobe`` > ``tracepoint`` > ``procfs``.

>>> ok = {p: True for p in PROBES}
>>> decide(ok, hooks_btf=ALL_HOOKED, hooks_kallsyms=ALL_HOOKED).mode
'fentry'
>>> decide({**ok, "fentry": False, "kprobe": False}, ALL_HOOKED, ALL_HOOKED).mode
'tracepoint'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .nstypes import MODES, TYPE_NAMES

PROBES: tuple[str, ...] = ("btf", "fentry", "kprobe", "tp_btf", "tracepoint", "iter", "ringbuf", "bpf_loop")
ALL_HOOKED: frozenset[str] = frozenset(TYPE_NAMES)

# How fast each mode learns of a free, stated wherever the mode is shown.
DEFAULT_RESCAN_SECONDS = 2.0

LIMITS: dict[str, str] = {
    "fentry": "sees every create and free as it happens (BTF trampolines)",
    "kprobe": "sees every create and free as it happens (kprobes; slightly more overhead than fentry)",
    "tracepoint": "sees creations as they happen (fork/clone/unshare tracepoints); frees and namespaces "
    "made without a task (e.g. by a kernel thread) are found by an in-kernel rescan, so a free is "
    "reported up to one rescan interval late",
    "procfs": "no BPF: polls /proc like lsns; misses namespaces held only by bind mounts in other "
    "mount namespaces, by sockets or by child namespaces, and sees no creator; output is marked incomplete",
}

NEEDS: dict[str, tuple[str, ...]] = {
    "fentry": ("btf", "ringbuf", "fentry"),
    "kprobe": ("btf", "ringbuf", "kprobe"),
    "tracepoint": ("btf", "ringbuf", "tp_btf", "iter"),
    "procfs": (),
}


@dataclass
class Decision:
    mode: str
    # per namespace type: the mode that covers it ("fentry", "kprobe" or "tracepoint")
    per_type: dict[str, str] = field(default_factory=dict)
    # why better modes were not chosen, one sentence each
    why_not: dict[str, str] = field(default_factory=dict)
    # what would give a better mode
    upgrade: list[str] = field(default_factory=list)

    @property
    def limits(self) -> str:
        return LIMITS[self.mode]


def unmet(mode: str, probes: Mapping[str, bool]) -> list[str]:
    return [p for p in NEEDS[mode] if not probes.get(p, False)]


def decide(
    probes: Mapping[str, bool],
    hooks_btf: frozenset[str] | set[str],
    hooks_kallsyms: frozenset[str] | set[str],
    requested: str | None = None,
) -> Decision:
    """Pick the best mode the probes allow, or check that ``requested`` is possible.

    ``hooks_btf``/``hooks_kallsyms`` name the namespace types whose create and free functions exist
    in the kernel's BTF (needed by fentry) and kallsyms (needed by kprobes). A type without hooks in
    an event mode is tracked by rescans instead (per-type fallback), never dropped.
    Raises ``ValueError`` when ``requested`` cannot run here, with the reason.
    """
    why_not: dict[str, str] = {}
    possible: list[str] = []
    for mode in MODES:
        missing = unmet(mode, probes)
        if mode in ("fentry", "kprobe"):
            hooked = hooks_btf if mode == "fentry" else hooks_kallsyms
            if not missing and not hooked:
                missing = [f"no namespace hook functions found in {'BTF' if mode == 'fentry' else 'kallsyms'}"]
            # per-type fallback to rescans needs the tracepoint-mode pieces
            if not missing and set(hooked) != set(TYPE_NAMES) and unmet("tracepoint", probes):
                missing = ["some types lack hooks and the rescan fallback (tp_btf, iter) is unavailable"]
        if missing:
            why_not[mode] = "needs " + ", ".join(missing)
        else:
            possible.append(mode)

    if requested is not None:
        if requested not in MODES:
            raise ValueError(f"unknown mode {requested!r}; valid modes: {', '.join(MODES)}")
        if requested not in possible:
            raise ValueError(f"mode {requested} cannot run on this kernel: {why_not[requested]}")
        mode = requested
    else:
        mode = possible[0]  # procfs is always possible

    per_type: dict[str, str] = {}
    for t in TYPE_NAMES:
        if mode == "fentry":
            per_type[t] = "fentry" if t in hooks_btf else "tracepoint"
        elif mode == "kprobe":
            per_type[t] = "kprobe" if t in hooks_kallsyms else "tracepoint"
        else:
            per_type[t] = mode

    upgrade: list[str] = []
    better = MODES[: MODES.index(mode)]
    for b in better:
        for need in unmet(b, probes):
            hint = UPGRADE_HINTS.get(need)
            if hint and hint not in upgrade:
                upgrade.append(hint)
    return Decision(mode=mode, per_type=per_type, why_not={m: why_not[m] for m in better if m in why_not},
                    upgrade=upgrade)


UPGRADE_HINTS: dict[str, str] = {
    "btf": "a kernel built with CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux); without BTF, CO-RE "
    "programs cannot load (bcc fallback is planned)",
    "ringbuf": "Linux 5.8 or newer (BPF ring buffer)",
    "fentry": "a kernel/sandbox that allows BPF trampolines (fentry/fexit): not refused by the "
    "security policy (seccomp/LSM/hypervisor) and with CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
    "kprobe": "a kernel with CONFIG_KPROBES=y and kprobe events (/sys/bus/event_source/devices/kprobe)",
    "tp_btf": "BTF-enabled raw tracepoints (Linux 5.5+ with BTF) and CAP_BPF+CAP_PERFMON",
    "iter": "BPF task iterators (Linux 5.8+)",
}
