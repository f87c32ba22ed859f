"""The mode decision table, for every combination of probe results."""

from __future__ import annotations

import itertools

import pytest

from nstrack.model.mode import ALL_HOOKED, MODES, NEEDS, PROBES, decide
from nstrack.model.nstypes import TYPE_NAMES

COMBOS = [dict(zip(PROBES, bits)) for bits in itertools.product([False, True], repeat=len(PROBES))]


def expected_mode(p: dict[str, bool], hooked_btf: frozenset[str], hooked_ks: frozenset[str]) -> str:
    base = p["btf"] and p["ringbuf"]
    tracepoint = base and p["tp_btf"] and p["iter"]
    full = frozenset(TYPE_NAMES)
    if base and p["fentry"] and hooked_btf and (hooked_btf == full or tracepoint):
        return "fentry"
    if base and p["kprobe"] and hooked_ks and (hooked_ks == full or tracepoint):
        return "kprobe"
    if tracepoint:
        return "tracepoint"
    return "procfs"


HOOK_SETS = [ALL_HOOKED, frozenset(), frozenset({"net", "uts"})]


@pytest.mark.parametrize("hooks", HOOK_SETS, ids=["all-hooked", "no-hooks", "some-hooks"])
def test_every_probe_combination(hooks: frozenset[str]) -> None:
    for p in COMBOS:
        d = decide(p, hooks_btf=hooks, hooks_kallsyms=hooks)
        assert d.mode == expected_mode(p, hooks, hooks), p
        assert set(d.per_type) == set(TYPE_NAMES)
        for t, m in d.per_type.items():
            if d.mode in ("fentry", "kprobe"):
                assert m == (d.mode if t in hooks else "tracepoint")
            else:
                assert m == d.mode
        # every better mode is explained
        for better in MODES[: MODES.index(d.mode)]:
            assert better in d.why_not


def test_this_project_machine() -> None:
    """fentry refused, no kprobes, the rest works: tracepoint, with upgrade hints for both."""
    p = {k: True for k in PROBES} | {"fentry": False, "kprobe": False}
    d = decide(p, ALL_HOOKED, ALL_HOOKED)
    assert d.mode == "tracepoint"
    assert "fentry" in d.why_not["fentry"] and "kprobe" in d.why_not["kprobe"]
    assert any("trampolines" in u for u in d.upgrade)
    assert any("KPROBES" in u for u in d.upgrade)


def test_requested_mode_checked() -> None:
    p = {k: True for k in PROBES} | {"fentry": False}
    assert decide(p, ALL_HOOKED, ALL_HOOKED, requested="kprobe").mode == "kprobe"
    with pytest.raises(ValueError, match="mode fentry cannot run on this kernel: needs fentry"):
        decide(p, ALL_HOOKED, ALL_HOOKED, requested="fentry")
    with pytest.raises(ValueError, match="unknown mode 'bogus'; valid modes: fentry, kprobe, tracepoint, procfs"):
        decide(p, ALL_HOOKED, ALL_HOOKED, requested="bogus")
    assert decide({}, frozenset(), frozenset(), requested="procfs").mode == "procfs"


def test_partial_hooks_without_rescan_fallback_is_not_fentry() -> None:
    p = {k: True for k in PROBES} | {"tp_btf": False}
    d = decide(p, frozenset({"net"}), frozenset())
    assert d.mode == "procfs"
    assert "rescan fallback" in d.why_not["fentry"]


def test_needs_cover_only_known_probes() -> None:
    assert all(set(n) <= set(PROBES) for n in NEEDS.values())
