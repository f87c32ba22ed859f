"""Dropping capabilities once everything is loaded and attached.

After start-up nstrack only reads: ring buffers (mmap), iterator instances and map reads on the file
descriptors it already holds. CAP_PERFMON (tracing programs) and the rest can go. CAP_BPF stays: seen
on Debian's 5.10 under QEMU, with kernel.unprivileged_bpf_disabled set (Debian's default) the kernel
refuses every bpf(2) command without it, even a map lookup on an fd already held, and rescans need
bpf(BPF_ITER_CREATE). Capabilities are per thread: drop before starting any other thread (threads
inherit the creating thread's sets).
"""

from __future__ import annotations

import ctypes
import os

from .host import CAPS, effective_caps

# what `serve` keeps after attaching, and why
RUNTIME_CAPS: dict[str, str] = {
    "CAP_BPF": "bpf(2) at run time (iterator instances for rescans, map reads): with "
               "kernel.unprivileged_bpf_disabled set, older kernels refuse every bpf() command without it",
    "CAP_SYS_PTRACE": "read /proc/PID/mountinfo of other users' processes, to find nsfs bind mounts in "
                      "every mount namespace (holder scans)",
}
# what loading and attaching need, and why (documented in deploy/)
STARTUP_CAPS: dict[str, str] = {
    "CAP_PERFMON": "tracing programs (tp_btf, fentry, kprobes, tracepoints) and reading kernel memory",
    "CAP_SYS_RESOURCE": "raise RLIMIT_MEMLOCK on kernels before 5.11 (libbpf does it)",
    **RUNTIME_CAPS,
}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_LAST = 40


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def drop_to(keep: set[str]) -> set[str]:
    """Reduce this thread's capabilities (effective, permitted, bounding, ambient) to ``keep``.

    Returns the effective set afterwards. Raises OSError if the kernel refuses.
    """
    mask = 0
    for name in keep:
        mask |= 1 << CAPS[name] if name in CAPS else 0
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err != 22:  # EINVAL: kernel without ambient capabilities
            raise OSError(err, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    for cap in range(CAP_LAST + 1):
        if not mask >> cap & 1:
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: the capset below still holds
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = mask >> 32
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return effective_caps(os.getpid())
