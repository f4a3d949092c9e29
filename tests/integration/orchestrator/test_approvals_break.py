#!/usr/bin/env python3
"""Attacks on the approval gate found by review (issue 9).

A run waits on a gated publish_summary; the orchestrator is killed, the profile loses its
`approvals:` rule, and the orchestrator starts again. The human was asked and may be about to
say no: the step must keep waiting for that request's decision (same request, nothing
published), and run once only when approved — never on the strength of the edit alone. A reject
of such a step publishes nothing.

Needs root, servicesd, mock-services and approvald; skipped (77) otherwise."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

PUB = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: team, content: "%s" } }
  - content: "published={{result.0.message_id}} error={{result.0.error.code}}"
"""
SERVICES = ("lookup_wiki", "publish_summary")
GATE = "approvals:\n  - service: publish_summary\n"


def waiting_ids(st, rid):
    return [e["data"]["id"] for e in st.events(rid)
            if e["kind"] == "approval" and e["data"].get("state") == "waiting"]


def wait_waiting(st, rid, n):
    def pred():
        ids = waiting_ids(st, rid)
        return ids[n - 1] if st.status(rid)["state"] == "waiting_approval" and \
            len(ids) >= n else None
    return wait_for(pred, 30, f"run {rid} to wait ({n})")


def main(args):
    if os.geteuid() != 0:
        print("skipped: needs root (approvald's user)")
        return 77
    for b in ("approvald", "servicesd", "mock-services", "orchestrator"):
        if not os.path.exists(os.path.join(args.bin, b)):
            print(f"skipped: {b} is not built")
            return 77
    with Stack(args, "apprbreak", credproxy=False, services=True, approvals=True) as st:
        st.write_scenario("a", PUB % "to approve")
        st.write_scenario("r", PUB % "to reject")
        st.write_profile("pa", "a", tools=("exec_service",), skills=None, services=SERVICES,
                         extra=GATE)
        st.write_profile("pr", "r", tools=("exec_service",), skills=None, services=SERVICES,
                         extra=GATE)
        st.start()
        ra = st.submit("pa", "go")
        rr = st.submit("pr", "go")
        qa = wait_waiting(st, ra, 1)
        qr = wait_waiting(st, rr, 1)

        # The rule goes while the orchestrator is down.
        st.kill("orchestrator")
        st.write_profile("pa", "a", tools=("exec_service",), skills=None, services=SERVICES)
        st.write_profile("pr", "r", tools=("exec_service",), skills=None, services=SERVICES)
        st.restart("orchestrator")
        check(wait_waiting(st, ra, 2) == qa and wait_waiting(st, rr, 2) == qr,
              "the restarted runs wait on another request")
        time.sleep(1)
        s = st.services_stats()
        check(s["posts"] == 0, f"published without a decision after the rule went: {s}")
        check(st.status(ra)["state"] == "waiting_approval", f"{st.status(ra)}")

        st.approvald("reject", str(qr), "-m", "no", expect=0)
        r = st.wait_state(rr)
        check(r["state"] == "succeeded" and r["result"] == "published= error=rejected",
              f"rejected run: {r}")
        st.approvald("approve", str(qa), expect=0)
        r = st.wait_state(ra)
        check(r["state"] == "succeeded" and r["result"].startswith("published=") and
              r["result"].endswith(" error="), f"approved run: {r}")
        time.sleep(1)
        s = st.services_stats()
        check(s["posts"] == 1, f"posts: {s}")
    return 0


run_test(main)
