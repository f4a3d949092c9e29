#!/usr/bin/env python3
"""Attacks on the approval gate found by review (issue 9).

A run waits on a gated publish_summary; the orchestrator is killed, the profile loses its
`approvals:` rule, and the orchestrator starts again. The human was asked and may be about to
say no: the step must keep waiting for that request's decision (same request, nothing
published), and run once only when approved — never on the strength of the edit alone. A reject
of such a step publishes nothing. The same when the orchestrator died after sending the Create
but before approvald's answer (the run not yet waiting_approval).

Typed-ahead input (orchctl's inline prompt, on a pseudo-terminal, against approvald alone and
fakeorch): a "y" typed while the run went on after #1 was approved must not approve #2, which
the user has not seen yet; #2 stays pending until answered at its own prompt.

The same prompt must not decide approvald's #N when #N is another run's request (a waiting line
older than approvald's database, which numbers from 1 again).

The stack part needs root, servicesd, mock-services and approvald (skipped otherwise)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../approvald"))
from ahptest import Stack, check, run_test, wait_for  # noqa: E402
from apprlib import ME, Approvald, approvald_built  # noqa: E402
from test_orchctl_approve import ARGS, PROMPT, FakeRun, PtyProc, orchctl_argv  # noqa: E402

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


def typeahead(args):
    with Approvald(args, "typeahead") as ap:
        ap.start()
        fake = FakeRun(args, ap.home)
        p = None
        try:
            fake.add("run", "[run] started")
            r1 = ap.created(fake.run_id, 3, args=ARGS)
            fake.wait_on(r1)
            p = PtyProc(orchctl_argv(args, ap.home, "logs", "--follow", fake.run_id))
            at = p.expect(PROMPT.format(r1["id"]))
            p.send("y\n")
            at = p.expect(f"approved #1 by {ME}\n", start=at)
            p.send("y\n")  # typed ahead: #2 is not on the screen yet
            time.sleep(0.5)
            fake.add("approval", f"[approval] #1 approved by {ME}")
            fake.set("running")
            r2 = ap.created(fake.run_id, 5, args={"webhook_id": "all-company",
                                                  "content": "rm"})
            fake.wait_on(r2)
            at = p.expect(PROMPT.format(r2["id"]), start=at)
            time.sleep(1.0)
            check(ap.cli_json("show", str(r2["id"]))["state"] == "STATE_PENDING",
                  f"typed-ahead input decided #2 unseen:\n{p.out}")
            p.send("n\n")
            at = p.expect("reason: ", start=at)
            p.send("seen now\n")
            p.expect(f"rejected #2 by {ME}: seen now\n", start=at)
            d = ap.cli_json("show", str(r2["id"]))
            check(d["state"] == "STATE_REJECTED" and d["decision"]["comment"] == "seen now",
                  f"#2: {d}")
            fake.set("succeeded", "done")
            check(p.finish() == 0, p.out)
        finally:
            if p is not None:
                p.kill()
            fake.stop()


def other_run(args):
    """The waiting line's #1 is, in approvald's database (made anew since), another run's
    request: the inline prompt must not decide it."""
    with Approvald(args, "otherrun") as ap:
        ap.start()
        fake = FakeRun(args, ap.home)
        p = None
        try:
            fake.add("run", "[run] started")
            other = ap.created("r-other", 2, args={"webhook_id": "all-company",
                                                   "content": "not yours"})
            fake.wait_on(other)  # fake's run r-appr1 says it waits on #1
            p = PtyProc(orchctl_argv(args, ap.home, "logs", "--follow", fake.run_id))
            at = p.expect(PROMPT.format(other["id"]))
            p.send("y\n")
            p.expect("orchctl: approvald's #1 is for run r-other, not run r-appr1 (its "
                     "database is newer than the waiting line); not decided\n", start=at)
            check(ap.cli_json("show", "1")["state"] == "STATE_PENDING",
                  f"another run's request was decided:\n{p.out}")
            fake.set("cancelled")
            p.finish()
        finally:
            if p is not None:
                p.kill()
            fake.stop()


def main(args):
    if approvald_built(args) and os.path.exists(os.path.join(args.bin, "orchctl")):
        other_run(args)
    if approvald_built(args) and os.path.exists(os.path.join(args.bin, "orchctl")):
        typeahead(args)
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
        st.write_scenario("w", PUB % "in the window")
        st.write_profile("pw", "w", tools=("exec_service",), skills=None, services=SERVICES,
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

        # The same when the orchestrator dies before approvald's answer to the Create
        # reached it (approvald stopped, so the run is not waiting_approval yet).
        st.kill("orchestrator")
        st.restart("orchestrator")
        ap_pid = st.pid("approvald")
        os.kill(ap_pid, signal.SIGSTOP)
        try:
            rw = st.submit("pw", "go")
            time.sleep(1.5)  # the Create is sent and unanswered
            check(st.status(rw)["state"] == "running", f"{st.status(rw)}")
            st.kill("orchestrator")
            st.write_profile("pw", "w", tools=("exec_service",), skills=None,
                             services=SERVICES)
        finally:
            os.kill(ap_pid, signal.SIGCONT)
        st.restart("orchestrator")
        qw = wait_waiting(st, rw, 1)
        time.sleep(1)
        s = st.services_stats()
        check(s["posts"] == 0, f"published without a decision (Create window): {s}")
        st.approvald("reject", str(qw), "-m", "not this one", expect=0)
        r = st.wait_state(rw)
        check(r["state"] == "succeeded" and r["result"] == "published= error=rejected",
              f"window run: {r}")
        check(wait_waiting(st, ra, 3) == qa, "the first run lost its request")

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
