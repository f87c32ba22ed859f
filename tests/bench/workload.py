"""Workloads run in a separate process for about a fixed time; each prints how many operations it did, the
seconds they took (up to the end of the last whole loop: a count of whole loops in a fixed time would
round the rate to one loop, 1% at a few hundred loops per second) and the CPU seconds this process spent
on them (kernel work done for it elsewhere, such as freeing net namespaces in a work queue, excluded).

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


def churn(seconds: float) -> tuple[int, float, float]:
    """Namespaces made (and freed: each unshare drops the previous one) in ``seconds``. ENOSPC means the
    per-user limit of that type (user.max_*_namespaces) is reached because the kernel has not yet freed
    the earlier ones (ipc and net namespaces are freed from work queues; seen on 5.10 under TCG): the
    loop waits for the kernel, as a real workload would, and that time counts."""
    n = 0
    cpu0 = cpu = time.process_time()
    start = now = time.perf_counter()
    end = start + seconds
    while now < end:
        for flag in CHURN_FLAGS:
            while libc.unshare(flag) != 0:
                err = ctypes.get_errno()
                if err != errno.ENOSPC or time.perf_counter() > end + 10:  # the kernel never caught up
                    raise OSError(err, f"unshare({flag:#x})")
                time.sleep(0.001)
        n += len(CHURN_FLAGS)
        now, cpu = time.perf_counter(), time.process_time()
    return n, now - start, cpu - cpu0


def fork(seconds: float) -> tuple[int, float, float]:
    n = 0
    cpu0 = cpu = time.process_time()
    start = now = time.perf_counter()
    end = start + seconds
    while now < end:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        n += 1
        now, cpu = time.perf_counter(), time.process_time()
    return n, now - start, cpu - cpu0


if __name__ == "__main__":
    kind, seconds = sys.argv[1], float(sys.argv[2])
    ops, took, cpu = {"churn": churn, "fork": fork}[kind](seconds)
    print(ops, repr(took), repr(cpu))
