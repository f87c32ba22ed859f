"""Where each namespace type is created and freed, per kernel family.

On 6.18 and newer every type goes through the generic ``__ns_tree_add_raw`` / ``__ns_tree_remove``.
Before that, each type has its own create and free functions; which exist (and are not inlined)
differs per build, so the table lists candidates and the running kernel's BTF and kallsyms decide.
Every candidate has a program in bpf/events.bpf.c named ``create_FN``/``destroy_FN`` (fentry/fexit)
and ``kp_create_FN``/``kp_destroy_FN`` (kprobes); tests/unit/test_nstypes.py checks that.
Seen in the kernel matrix (tests/vm/kernel-facts.json): every candidate below exists in BTF and kallsyms
on Debian's 5.10, 6.1 and 6.12 except where noted.
"""

from __future__ import annotations

from dataclasses import dataclass

GENERIC_CREATE = "__ns_tree_add_raw"
GENERIC_DESTROY = "__ns_tree_remove"

# create_new_namespaces (kernel/nsproxy.c) calls every copy function below for each unshare or clone
# that makes a namespace: one hook there serves seven types (one trampoline or kretprobe per call instead
# of seven); the copy functions remain for a kernel that inlines it. User namespaces are made elsewhere.
NSPROXY_CREATE = "create_new_namespaces"

# type -> (create candidates, destroy candidates), best first
PER_TYPE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "net": ((NSPROXY_CREATE, "copy_net_ns"), ("__put_net",)),
    "uts": ((NSPROXY_CREATE, "copy_utsname"), ("free_uts_ns",)),
    # free_ipc_ns is inlined on every kernel seen (5.10-7.2); shm_exit_ns(ns) runs once in it.
    # mq_clear_sbinfo(ns) runs at the last put, before the free work (LAST_PUT).
    "ipc": ((NSPROXY_CREATE, "copy_ipcs"), ("mq_clear_sbinfo", "shm_exit_ns")),
    "mnt": ((NSPROXY_CREATE, "copy_mnt_ns"), ("free_mnt_ns",)),
    "pid": ((NSPROXY_CREATE, "copy_pid_ns"), ("delayed_free_pidns",)),  # RCU callback of the free
    # __put_user_ns runs at the last put; free_user_ns is the work item that frees (and may free
    # a chain of parents at once, which only a rescan then sees).
    "user": (("create_user_ns",), ("__put_user_ns", "free_user_ns")),
    "cgroup": ((NSPROXY_CREATE, "copy_cgroup_ns"), ("free_cgroup_ns",)),
    "time": ((NSPROXY_CREATE, "copy_time_ns"), ("free_time_ns",)),
}

ALL_FUNCTIONS: tuple[str, ...] = tuple(
    sorted({GENERIC_CREATE, GENERIC_DESTROY, "proc_free_inum"} | {f for c, d in PER_TYPE.values() for f in c + d})
)


@dataclass(frozen=True)
class TypeHooks:
    create: str | None
    destroy: str | None

    @property
    def complete(self) -> bool:
        return self.create is not None and self.destroy is not None


# Before 6.18 the per-type free functions are often inlined into same-file callers (seen on 6.1: an
# nsfs fd's last put never calls __put_net as a function), so frees go through the one function every
# namespace type returns its inode number to, in fs/proc where namespace code cannot inline it.
INUM_FREE = "proc_free_inum"


# Types whose last put calls a function in another file (never inlined into it): their frees are
# learnt there, when the namespace becomes unreachable, rather than when a work item frees it and
# returns its inode number. put_ipc_ns (ipc/namespace.c) calls mq_clear_sbinfo (ipc/mqueue.c) and leaves
# the rest to a work item that unmounts each namespace's mqueue after an RCU grace period: under
# namespace churn in the 5.10 VMs most ipc inode numbers came back more than a second after the last put.
# Absent without CONFIG_POSIX_MQUEUE (an inline no-op then): proc_free_inum serves.
LAST_PUT = {"ipc": "mq_clear_sbinfo"}


def resolve(present: set[str] | frozenset[str]) -> dict[str, TypeHooks]:
    """Hooks per type given the set of functions that exist (in BTF for fentry, kallsyms for kprobe)."""
    if GENERIC_CREATE in present and GENERIC_DESTROY in present:
        return {t: TypeHooks(GENERIC_CREATE, GENERIC_DESTROY) for t in PER_TYPE}
    out: dict[str, TypeHooks] = {}
    for t, (creates, destroys) in PER_TYPE.items():
        c = next((f for f in creates if f in present), None)
        last_put = LAST_PUT.get(t)
        if last_put in present:
            d: str | None = last_put
        else:
            d = INUM_FREE if INUM_FREE in present else next((f for f in destroys if f in present), None)
        out[t] = TypeHooks(c, d)
    return out


def hooked_types(present: set[str] | frozenset[str]) -> frozenset[str]:
    return frozenset(t for t, h in resolve(present).items() if h.complete)
