#!/bin/sh
# Default guest command of tests/vm/vmtest.py: runs inside each kernel's VM, from the project root,
# with NSTRACK_VM_OUT set to the writable results folder (build/vmtest/<series>/ on the host).
set -u
out="${NSTRACK_VM_OUT:?NSTRACK_VM_OUT is not set: run me through tests/vm/vmtest.py}"

echo "guest: kernel $(uname -r)"
.venv/bin/nstrack doctor --json > "$out/doctor.json"
echo "$?" > "$out/doctor-exit-code"
echo "guest: nstrack doctor exited $(cat "$out/doctor-exit-code")"

# host_only tests check nothing kernel-specific (packaging, configuration, TLS): the host suite runs them
.venv/bin/python -m pytest tests -m "privileged and not host_only" -p no:cacheprovider -q --junitxml="$out/junit.xml"
rc=$?
echo "guest: pytest exited $rc"
exit "$rc"
