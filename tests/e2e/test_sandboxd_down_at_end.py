#!/usr/bin/env python3
"""A run ends while sandboxd is down (SIGKILL): the orchestrator's Destroy of the run's sandbox
cannot be delivered then, and is sent again until sandboxd, restarted, answers it, so the run's
sandbox record and workspace do not stay behind for good. (Found by the chaos test: the Destroy
was fire-and-forget, and every run that ended during a sandboxd restart left its workspace.)
The approvals tour fits: its sandbox is parked while the publish waits for the approval, and
the run ends after the publish without another exec."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test, wait_for

PROFILE = "team-digest-approved"


def main(args):
    if os.geteuid() != 0:
        print("e2e.sandboxd_down_at_end needs root for sandboxd; skipped")
        return 77
    for b in ("servicesd", "mock-services", "sandboxd", "approvald"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}: skipped")
            return 77
    with Stack(args, "sbxdownend", sandbox=True, services=True, approvals=True) as st:
        etc = os.path.join(st.home, "etc")
        import shutil
        for src, dst in (("profiles", "profiles"), ("skills", "skills"),
                         ("mocks/mock-llm/scenarios", "mock-llm")):
            shutil.rmtree(os.path.join(etc, dst), ignore_errors=True)
            shutil.copytree(os.path.join(st.src, src), os.path.join(etc, dst))
        st.start()
        rid = st.submit(PROFILE, "Post a digest on durability for the team")
        st.wait_state(rid, ("waiting_approval",), timeout=60)
        meta = st.path(f"state/sandboxd/sandboxes/{rid}.meta")
        check(os.path.exists(meta), "no sandbox record for the run before the kill")
        st.kill("sandboxd")
        req = st.approvald_json("list")["requests"][0]["id"]
        st.approvald("approve", str(req), expect=0)
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        check(os.path.exists(meta), "the record went while sandboxd was down")
        st.restart("sandboxd")
        wait_for(lambda: not os.path.exists(meta), 15,
                 f"the restarted sandboxd to get the Destroy of {rid}")
        check(st.services_stats()["posts"] == 1, "not exactly one publish")
    return 0


if __name__ == "__main__":
    run_test(main)
