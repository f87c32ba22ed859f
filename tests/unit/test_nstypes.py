from __future__ import annotations

import pytest

from nstrack.kernel import hooks
from nstrack.model.nstypes import TYPE_NAMES, UnknownNamespaceType, format_name, ns_type, parse_name


def test_names_round_trip() -> None:
    for t in TYPE_NAMES:
        assert parse_name(format_name(t, 4026531840 + len(t))) == (t, 4026531840 + len(t))


@pytest.mark.parametrize("bad", ["net:4026531840", "net:[]", "net[1]", "", "net:[12]x", "net:[-1]"])
def test_malformed_names(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed namespace name"):
        parse_name(bad)


def test_unknown_type_lists_valid_ones() -> None:
    with pytest.raises(UnknownNamespaceType, match="valid types: net, mnt, uts, ipc, pid, user, cgroup, time"):
        ns_type("nett")
    assert ns_type("ns").name == "mnt"


def test_hook_table_prefers_generic_hooks() -> None:
    everything = set(hooks.ALL_FUNCTIONS)
    r = hooks.resolve(everything)
    assert all(h.create == "__ns_tree_add_raw" and h.destroy == "__ns_tree_remove" for h in r.values())
    older = everything - {"__ns_tree_add_raw"}
    r = hooks.resolve(older)
    assert r["net"].create == "create_new_namespaces" and r["net"].destroy == "proc_free_inum"
    # one hook for the seven types create_new_namespaces makes; each type's copy function without it
    assert {t for t, h in r.items() if h.create == "create_new_namespaces"} == set(hooks.PER_TYPE) - {"user"}
    assert r["user"].create == "create_user_ns"
    assert hooks.resolve(older - {"create_new_namespaces"})["net"].create == "copy_net_ns"
    assert hooks.resolve(older - {"proc_free_inum"})["net"].destroy == "__put_net"
    # ipc: at its last put where that call exists (not an inline no-op), else by its inode number
    assert r["ipc"].destroy == "mq_clear_sbinfo"
    assert hooks.resolve(older - {"mq_clear_sbinfo"})["ipc"].destroy == "proc_free_inum"
    assert hooks.resolve(older - {"mq_clear_sbinfo", "proc_free_inum"})["ipc"].destroy == "shm_exit_ns"
    assert hooks.hooked_types({"copy_net_ns"}) == frozenset()
    assert hooks.hooked_types({"copy_net_ns", "__put_net", "copy_utsname"}) == {"net"}


def test_every_hook_candidate_has_its_programs() -> None:
    """The hook table and bpf/events.bpf.c agree: each candidate has fentry and kprobe programs, in the
    object and in the names generated from it (bpf_names)."""
    from nstrack.kernel.bpf_names import EVENTS
    from nstrack.kernel.libbpf import BPFObject
    from nstrack.kernel.objects import bpf_object

    with BPFObject.open(bpf_object(EVENTS.OBJECT)) as obj:
        programs = {p.name: p.section for p in obj.programs()}
    assert programs == EVENTS.SECTIONS, "bpf_names.py is stale: run `make bpf`"
    for creates, destroys in hooks.PER_TYPE.values():
        for fn in creates:
            assert programs[f"create_{fn}"] == f"fexit/{fn}"
            assert programs[f"kp_create_{fn}"] == f"kretprobe/{fn}"
        for fn in destroys:
            assert programs[f"destroy_{fn}"] == f"fentry/{fn}"
            assert programs[f"kp_destroy_{fn}"] == f"kprobe/{fn}"
    assert programs["destroy_proc_free_inum"] == "fentry/proc_free_inum"
    assert programs["kp_destroy_proc_free_inum"] == "kprobe/proc_free_inum"
    assert programs["tree_add"] == "fentry/__ns_tree_add_raw"
    assert programs["tree_remove"] == "fentry/__ns_tree_remove"
