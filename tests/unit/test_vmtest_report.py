"""vmtest's reading of a guest's junit XML: the counts, and the failed tests named (CI shows vmtest's lines)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))

import vmtest

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="3.0">
<testcase classname="tests.privileged.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.privileged.test_a" name="test_ok2" time="0.1"/>
<testcase classname="tests.privileged.test_a" name="test_skip" time="0.1"><skipped message="no fentry"/></testcase>
<testcase classname="tests.privileged.test_b" name="test_bad[kprobe]" time="0.1">
<failure message="assert 3 == 0&#10;  where 3 = lost">long traceback</failure></testcase>
<testcase classname="tests.privileged.test_b" name="test_err" time="0.1"><error>setup broke
more</error></testcase>
</testsuite></testsuites>
"""


def test_counts_and_failures_from_junit(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    assert vmtest.junit_counts(path) == (2, 1, 1, 1)
    assert vmtest.junit_failures(path) == [
        "failure tests.privileged.test_b::test_bad[kprobe]: assert 3 == 0",
        "error tests.privileged.test_b::test_err: setup broke",
    ]
    assert vmtest.junit_failures(path, limit=1) == [
        "failure tests.privileged.test_b::test_bad[kprobe]: assert 3 == 0", "... and 1 more",
    ]


def test_no_junit_no_failures(tmp_path: Path) -> None:
    assert vmtest.junit_counts(tmp_path / "absent.xml") == (0, 0, 0, 0)
    assert vmtest.junit_failures(tmp_path / "absent.xml") == []
    (tmp_path / "cut.xml").write_text("<testsuites><testsuite")
    assert vmtest.junit_failures(tmp_path / "cut.xml") == []


def test_summary_names_the_failures(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    result = vmtest.Result("7.2", "7.2.13", "failed", 1, 10.0, *vmtest.junit_counts(path),
                           failures=vmtest.junit_failures(path))
    summary = result.summary()
    assert (summary["passed"], summary["failed"], summary["status"]) == (2, 1, "failed")
    assert summary["failures"] == vmtest.junit_failures(path) and len(result.failures) == 2
