#!/bin/sh
# Guest command for `make bench-vm`: the lifecycle benchmark in each kernel's VM, every event mode.
# Ratios (with/without nstrack, interleaved in one run) are what is compared; TCG makes absolute rates
# meaningless. Results: build/vmbench/<series>/lifecycle.json on the host (make bench-vm).
set -u
out="${NSTRACK_VM_OUT:?NSTRACK_VM_OUT is not set: run me through tests/vm/vmtest.py}"
echo "guest: kernel $(uname -r), lifecycle benchmark"
# serve's tracker, and the BPF side alone (unread: the programs attached, the rings read after the run).
# make bench-vm boots with QEMU -icount and one CPU: nstrack's threads then count against the workload as on its
# CPU (serve), while unread is what the workload's own CPU pays. NSTRACK_BENCH_CONFIGS=serve,watch,unread
# adds watch's. 9 rounds of 2 s with 1 s pauses (net namespaces are freed late under TCG): ~12 minutes per
# kernel, then the calibration: build/vmbench/<series>/calibrate.json.
NSTRACK_BENCH_OUT="$out" NSTRACK_BENCH_MODES="${NSTRACK_BENCH_MODES:-fentry,kprobe}" \
    NSTRACK_BENCH_CONFIGS="${NSTRACK_BENCH_CONFIGS:-serve,unread}" NSTRACK_BENCH_SECONDS="${NSTRACK_BENCH_SECONDS:-2}" NSTRACK_BENCH_PAUSE="${NSTRACK_BENCH_PAUSE:-1}" \
    NSTRACK_BENCH_ROUNDS="${NSTRACK_BENCH_ROUNDS:-9}" .venv/bin/python -m tests.bench lifecycle
rc=$?
# how much slower Python and the workloads run in this guest than on the host (compare with make bench's)
NSTRACK_BENCH_OUT="$out" NSTRACK_BENCH_SECONDS=2 .venv/bin/python -m tests.bench calibrate || rc=1
exit "$rc"
