"""Shared test set-up: privileged tests are marked by folder and fail (never skip) without root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "privileged" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.privileged)


@pytest.fixture(scope="session", autouse=True)
def _privileged_needs_root(request: pytest.FixtureRequest) -> None:
    """A privileged test run without root is a failure, not a skip."""
    marked = any(i.get_closest_marker("privileged") for i in request.session.items)
    if marked and os.geteuid() != 0:
        pytest.fail("privileged tests need root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN): run `make test` as root")


@pytest.fixture(scope="session", autouse=True)
def _pins_left_as_found() -> Iterator[None]:
    """`nstrack ls/snapshot/show` pin their scan programs in bpffs (a cache): the suite leaves none behind
    that were not there before it ran."""
    from nstrack.kernel.scanner import PIN_ROOT, _unpin

    before = os.path.exists(PIN_ROOT)
    yield
    if not before and os.path.isdir(PIN_ROOT):
        for name in os.listdir(PIN_ROOT):
            _unpin(f"{PIN_ROOT}/{name}")
        os.rmdir(PIN_ROOT)
