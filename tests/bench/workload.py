"""Workloads run in a separate process for a fixed time; each prints how many operations it did.

    python workload.py churn 0.5     # unshare(2) of uts, ipc, net, mnt, cgroup, time in turn
    python workload.py fork 0.5      # fork + _exit + waitpid
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
CHURN_FLAGS = (0x04000000, 0x08000000, 0x40000000, 0x00020000, 0x02000000, 0x00000080)


def churn(seconds: float) -> int:
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for flag in CHURN_FLAGS:
            if libc.unshare(flag) != 0:
                raise OSError(ctypes.get_errno(), f"unshare({flag:#x})")
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
