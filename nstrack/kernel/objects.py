"""Where the precompiled BPF objects live (package data, built by ``make bpf``)."""

from __future__ import annotations

import os
from pathlib import Path


def bpf_object(name: str) -> Path:
    """Path of ``NAME.bpf.o``; ``NSTRACK_BPF_DIR`` overrides the packaged folder."""
    folder = os.environ.get("NSTRACK_BPF_DIR") or str(Path(__file__).resolve().parent.parent / "_bpf")
    return Path(folder) / f"{name}.bpf.o"
