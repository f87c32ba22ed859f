"""The snapshot's JSON Schema (``snapshot.schema.json``), generated from the pydantic models of
``nstrack.model.snapshot``: ``make schema`` (``python -m nstrack.schema``) writes it, and a unit test
fails while the committed file differs from what the models give."""

from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).resolve().parent / "snapshot.schema.json"


def schema_text() -> str:
    """The schema as the committed file holds it (two-space indent, a final newline)."""
    from ..model.snapshot import Snapshot

    return json.dumps(Snapshot.model_json_schema(), indent=2) + "\n"
