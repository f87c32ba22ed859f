"""Workloads run in a separate process for a fixed time; each prints how many operations it did.

    python workload.py churn 0.5     # unshare(2) of uts, ipc, net, mnt, cgroup, time in turn
    python workload.py fork 0.5      # fork + _exit + waitpid
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
CHURN_FLAGS = (0x04000000, 0x08000000, 0x40000000, 0x00020000, 0x02000000, 0x00000080)


def churn(seconds: float) -> int:
    """Namespaces made (and freed: each unshare drops the previous one) in ``seconds``. ENOSPC means the
    per-user limit of that type (user.max_*_namespaces) is reached because the kernel has not yet freed
    the earlier ones (ipc and net namespaces are freed from work queues; seen on 5.10 under TCG): the
    loop waits for the kernel, as a real workload would, and that time counts."""
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for flag in CHURN_FLAGS:
            while libc.unshare(flag) != 0:
                err = ctypes.get_errno()
                if err != errno.ENOSPC or time.perf_counter() > end + 10:  # the kernel never caught up
                    raise OSError(err, f"unshare({flag:#x})")
                time.sleep(0.001)
        n += len(CHURN_FLAGS)
    return n


def fork(seconds: float) -> int:
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        n += 1
    return n


if __name__ == "__main__":
    kind, seconds = sys.argv[1], float(sys.argv[2])
    print({"churn": churn, "fork": fork}[kind](seconds))
