#!/usr/bin/env python3
"""`make test`: the unit and host suites, then the kernel matrix; each part's duration and one closing count.

Usage (from the project root, as root, after `make setup`)::

    python3 tests/suite.py                 # host suite, then every kernel of the matrix
    python3 tests/suite.py --kernels 6.12  # the matrix limited to some kernels (VMTEST_KERNELS in make)

The closing lines say how long each part took (CI has 90 minutes, `make test` must stay under 45) and
add the host's and every kernel's counts into one line, ``total: N passed, N failed, N skipped``.
Exit status: 0 if every part passed, 1 otherwise.

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))

import vmtest  # (tests/vm is not a package: the VM runner is a script of its own)

HOST_JUNIT = ROOT / "build" / "junit-host.xml"
VM_OUT = ROOT / "build" / "vmtest"
VM_LOG = ROOT / "build" / "vmtest.log"


@dataclass
class Part:
    name: str
    seconds: float = 0.0
    exit: int | None = None
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    detail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit == 0 and self.failed == 0


def say(message: str) -> None:
    print(f"[make test] {message}", flush=True)


def run_part(part: Part, cmd: list[str]) -> None:
    say(f"{part.name}: {' '.join(cmd)}")
    t0 = time.monotonic()
    part.exit = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, check=False).returncode
    part.seconds = time.monotonic() - t0


def host_part(python: str) -> Part:
    part = Part("host suite (unit and privileged tests on this kernel)")
    HOST_JUNIT.parent.mkdir(parents=True, exist_ok=True)
    HOST_JUNIT.unlink(missing_ok=True)
    run_part(part, [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", f"--junitxml={HOST_JUNIT}"])
    count_host(part, HOST_JUNIT)
    return part


def count_host(part: Part, junit: Path) -> None:
    """The host suite's counts from pytest's junit XML (errors count as failures)."""
    passed, failed, skipped, errors = vmtest.junit_counts(junit)
    part.passed, part.failed, part.skipped = passed, failed + errors, skipped
    if part.exit != 0 and not part.failed:  # pytest died before writing its report, or collected nothing
        part.failed = 1
        part.detail.append(f"pytest exited {part.exit}")


def matrix_cmd(kernels: str | None) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "vm" / "vmtest.py"), *(["--kernels", kernels] if kernels else [])]


def matrix_part(kernels: str | None) -> Part:
    part = Part("kernel matrix")
    (VM_OUT / "summary.json").unlink(missing_ok=True)
    run_part(part, matrix_cmd(kernels))
    count_matrix(part, VM_OUT / "summary.json")
    return part


def overlapped(python: str, kernels: str | None) -> list[Part]:
    """The matrix started first, in the background, and the host suite beside it: the guests' QEMU keeps
    both cores busy, the host suite mostly waits on the kernel. vmtest's lines go to build/vmtest.log,
    and are printed once the host suite is done, then as they come."""
    matrix = Part("kernel matrix")
    (VM_OUT / "summary.json").unlink(missing_ok=True)
    VM_LOG.parent.mkdir(parents=True, exist_ok=True)
    say(f"{matrix.name}: {' '.join(matrix_cmd(kernels))} (in the background, output in {VM_LOG})")
    t0 = time.monotonic()
    with VM_LOG.open("w") as out:
        proc = subprocess.Popen(matrix_cmd(kernels), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        host = host_part(python)
        say(f"{host.name}: done in {host.seconds:.0f} s; the kernel matrix so far, then as it goes:")
        with VM_LOG.open() as log:
            while True:
                line = log.readline()
                if line:
                    print(line, end="", flush=True)
                elif proc.poll() is not None:
                    print(log.read(), end="", flush=True)
                    break
                else:
                    time.sleep(1.0)
    finally:
        if proc.poll() is None:  # interrupted: end the matrix (it ends its guests)
            proc.terminate()
            proc.wait()
    matrix.exit, matrix.seconds = proc.returncode, time.monotonic() - t0
    count_matrix(matrix, VM_OUT / "summary.json")
    return [host, matrix]


def count_matrix(part: Part, summary: Path) -> None:
    """The matrix's counts from vmtest's summary.json: every kernel's tests, and a kernel that did not
    boot or finish as one failure more."""
    try:
        results = json.loads(summary.read_text())
    except (OSError, ValueError):
        results = {}
    for release, r in results.items():
        part.passed += int(r.get("passed", 0))
        part.failed += int(r.get("failed", 0)) + int(r.get("errors", 0))
        part.skipped += int(r.get("skipped", 0))
        if r.get("status") != "ok" and not (int(r.get("failed", 0)) + int(r.get("errors", 0))):
            part.failed += 1  # a kernel that did not boot or did not finish counts as a failure
        cpu = f", QEMU CPU {r['cpu_seconds']:.0f} s" if r.get("cpu_seconds") is not None else ""
        part.detail.append(f"{r.get('series', '?')} {release}: {r.get('status')} in {r.get('seconds', 0):.0f} s{cpu}")
    if part.exit != 0 and not part.failed:  # vmtest stopped before any kernel ran (a setup error)
        part.failed = 1
        part.detail.append(f"vmtest exited {part.exit}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", help="comma-separated kernel series for the matrix (default: all)")
    p.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the venv's Python (default: %(default)s)")
    p.add_argument("--sequential", action="store_true",
                   help="the host suite first, then the matrix (default: the matrix in the background beside it)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.sequential:
        parts = [host_part(args.python), matrix_part(args.kernels)]
    else:
        parts = overlapped(args.python, args.kernels)
    total = time.monotonic() - t0
    say(f"durations (total {total:.0f} s = {total / 60:.1f} min; CI allows 90 min, the aim is under 45):")
    for part in parts:
        state = "ok" if part.ok else "FAILED"
        say(f"  {part.name}: {part.seconds:.0f} s, {state}: {part.passed} passed, {part.failed} failed, {part.skipped} skipped")
        for line in part.detail:
            say(f"    {line}")
    passed, failed, skipped = (sum(getattr(x, k) for x in parts) for k in ("passed", "failed", "skipped"))
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if all(part.ok for part in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
