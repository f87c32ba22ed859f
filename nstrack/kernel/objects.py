"""Where the precompiled BPF objects live (package data, built by ``make bpf``)."""

from __future__ import annotations

import os


def bpf_object(name: str) -> str:
    """Path of ``NAME.bpf.o``; ``NSTRACK_BPF_DIR`` overrides the packaged folder.

    A plain string (no pathlib: `nstrack ls` imports this on its fast path, and pathlib costs 3 ms)."""
    folder = os.environ.get("NSTRACK_BPF_DIR") or os.path.join(os.path.dirname(os.path.dirname(
        os.path.realpath(__file__))), "_bpf")
    return os.path.join(folder, f"{name}.bpf.o")
