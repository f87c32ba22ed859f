"""The calibration's synthetic pipelines (make bench, make bench-vm) run against the tracker as it is."""

from __future__ import annotations

import pytest

from tests.bench import calibrate


@pytest.mark.parametrize("pipeline", ["pipeline_us_per_event", "brief_pipeline_us_per_event"])
def test_synthetic_pipelines_run(monkeypatch: pytest.MonkeyPatch, pipeline: str) -> None:
    monkeypatch.setattr(calibrate, "DRAINS", 4)
    monkeypatch.setattr(calibrate, "PER_DRAIN", 25)
    assert getattr(calibrate, pipeline)() > 0
