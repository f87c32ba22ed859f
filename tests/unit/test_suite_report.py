"""`make test`'s closing count (tests/suite.py): the host's junit XML and the matrix's summary.json added up,
and a part that ended without a report counted as failed, never as nothing run."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))

import suite

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20" time="3.0"></testsuite></testsuites>
"""


def test_host_counts_errors_as_failures(tmp_path: Path) -> None:
    (tmp_path / "j.xml").write_text(JUNIT)
    part = suite.Part("host", exit=1)
    suite.count_host(part, tmp_path / "j.xml")
    assert (part.passed, part.failed, part.skipped, part.ok) == (14, 3, 3, False)


def test_host_without_a_report_is_a_failure(tmp_path: Path) -> None:
    part = suite.Part("host", exit=4)
    suite.count_host(part, tmp_path / "absent.xml")
    assert (part.passed, part.failed, part.ok) == (0, 1, False)
    assert part.detail == ["pytest exited 4"]


def test_matrix_adds_kernels_and_counts_a_kernel_that_never_booted(tmp_path: Path) -> None:
    summary = {
        "6.12.118": {"series": "6.12", "passed": 300, "failed": 0, "skipped": 2, "errors": 0, "status": "ok",
                     "seconds": 901.2, "cpu_seconds": 1100.0},
        "7.2.13": {"series": "7.2", "passed": 350, "failed": 1, "skipped": 0, "errors": 1, "status": "failed",
                   "seconds": 950.0, "cpu_seconds": None},
        "5.10.0": {"series": "5.10", "passed": 0, "failed": 0, "skipped": 0, "errors": 0, "status": "no-boot",
                   "seconds": 3.0},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    part = suite.Part("matrix", exit=1)
    suite.count_matrix(part, tmp_path / "summary.json")
    assert (part.passed, part.failed, part.skipped, part.ok) == (650, 3, 2, False)
    assert part.detail[0] == "6.12 6.12.118: ok in 901 s, QEMU CPU 1100 s"
    assert part.detail[2] == "5.10 5.10.0: no-boot in 3 s"


def test_matrix_passes_only_with_exit_zero_and_no_failure(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"6.1": {"series": "6.1", "passed": 5, "status": "ok"}}))
    part = suite.Part("matrix", exit=0)
    suite.count_matrix(part, tmp_path / "summary.json")
    assert part.ok and part.passed == 5
    setup_error = suite.Part("matrix", exit=2)
    suite.count_matrix(setup_error, tmp_path / "absent.json")
    assert not setup_error.ok and setup_error.failed == 1
