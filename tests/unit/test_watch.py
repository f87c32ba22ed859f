from __future__ import annotations

from nstrack.model.records import Event
from nstrack.model.replica import Replica
from nstrack.views.watch import change_json, change_text


def test_created_and_destroyed_lines() -> None:
    r = Replica()
    [c] = r.apply(Event("created", "pid", 4026532248, 17, 10**9, 4026531837, 4026531836, 42, 41, "unshare", 1, "unshare"))
    j = change_json(c, "tracepoint", 2.0)
    assert j["event"] == "created" and j["name"] == "pid:[4026532248]" and j["ns_id"] == 17
    assert j["creator"] == {"pid": 42, "tgid": 41, "comm": "unshare", "cgroup_id": 1}
    assert j["parent"] == "pid:[4026531836]" and j["owner"] == "user:[4026531837]"
    assert j["time"].endswith("Z") and j["via"] == "unshare"
    assert "created   pid:[4026532248] id=17 owner=user:[4026531837] by unshare[41] (unshare)" in change_text(
        c, "tracepoint", 2.0)
    [d] = r.reconcile([], scan_start_ns=3 * 10**9, types={"pid"})
    j = change_json(d, "tracepoint", 2.0)
    assert j["event"] == "destroyed" and j["via"] == "rescan"
    assert j["lifetime_seconds"] == 2.0 and j["detected_within_seconds"] == 2.0
    assert change_text(d, "tracepoint", 2.0).endswith("after 2.00s (rescan, within 2s)")
