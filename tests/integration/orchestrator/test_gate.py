#!/usr/bin/env python3
"""Approval gates wait for a human (invariant 5, issue 9).

A profile with `approvals:` rules: a call a rule matches does not start; approvald records a
request with its exact arguments, the run is `waiting_approval` with an `[approval] waiting on
#N: ...` line, and continues only when a person decides with the approvald CLI. Approved, the
call runs (the skill read); rejected, the model gets `{"error": {"code": "rejected", "message":
"rejected by root: <reason>", ...}}` and the call never starts (the exec never reaches a
sandbox). Calls no rule matches run as usual. No sandboxd runs here."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

SCENARIO = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - tool_calls:
      - name: skill
        arguments: { action: read, path: release-notes/SKILL.md }
  - tool_calls:
      - name: exec
        arguments: { command: "rm -rf /workspace" }
  - content: "list={{result.0.files.0}} read={{result.1.path}} exec={{result.2.error.code}}: {{result.2.error.message}} by={{result.2.error.by}}"
"""

APPROVALS = """approvals:
  - tool: skill
    match: '"action":"read"'
  - tool: exec
    match: '^(rm|git push)'
"""

WANT = ("list=release-notes/SKILL.md read=release-notes/SKILL.md exec=rejected: rejected by "
        "root: not on my watch by=root")
WAITING = re.compile(r"^\[approval\] waiting on #(\d+): (.*) — approvald approve \1 \| "
                     r"approvald reject \1$")


def waiting(st, rid, n):
    """Waits for the run's n-th [approval] waiting line; returns its event."""
    def pred():
        ev = [e for e in st.events(rid) if e["kind"] == "approval"
              and e["data"].get("state") == "waiting"]
        return ev[n - 1] if len(ev) >= n and st.status(rid)["state"] == "waiting_approval" \
            else None
    return wait_for(pred, 30, f"run {rid} to wait on approval {n}")


def main(args):
    for b in ("approvald", "orchestrator", "orchctl", "mock-llm"):
        if not os.path.exists(os.path.join(args.bin, b)):
            print(f"skipped: {b} is not built")
            return 77
    with Stack(args, "gate", approvals=True) as st:
        st.demo_skill()
        st.write_scenario("gate", SCENARIO)
        st.write_profile("gate", "gate", tools=("skill", "exec"), extra=APPROVALS)
        st.start()
        rid = st.submit("gate", "go")

        # The skill read waits; the list before it ran.
        e = waiting(st, rid, 1)
        m = WAITING.match(e["text"])
        check(m and m.group(2) == 'skill(action="read", path="release-notes/SKILL.md")',
              e["text"])
        rq = int(m.group(1))
        check(e["data"]["action"] == "skill" and
              e["data"]["arguments"] == {"action": "read", "path": "release-notes/SKILL.md"} and
              e["data"]["rule"] == 'approvals[0]: tool skill matching "action":"read"' and
              re.fullmatch(r"[0-9a-f]{64}", e["data"]["digest"]) and e["data"]["id"] == rq,
              f"event data {e['data']}")
        p = st.orchctl_json("list", "--state", "waiting_approval")
        check([r["id"] for r in p if "id" in r] == [rid] or rid in json.dumps(p), f"list {p}")
        show = st.approvald_json("show", str(rq))
        check(show["run_id"] == rid and show["action"] == "skill" and
              show["digest"] == e["data"]["digest"], f"approvald show {show}")
        st.approvald("approve", str(rq), "-m", "fine", expect=0)

        # Then the exec waits; rejected, it never starts.
        e = waiting(st, rid, 2)
        m = WAITING.match(e["text"])
        check(m and m.group(2) == 'exec(command="rm -rf /workspace")', e["text"])
        st.approvald("reject", m.group(1), "-m", "not on my watch", expect=0)
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        check(r["result"] == WANT, f"result {r['result']!r}")
        ev = st.events(rid)
        texts = [x["text"] for x in ev if x["kind"] == "approval"]
        check(texts[1] == f"[approval] #{rq} approved by root: fine" and
              texts[3] == f"[approval] #{m.group(1)} rejected by root: not on my watch",
              f"approval lines {texts}")
        states = [(x["data"].get("from"), x["data"].get("to")) for x in ev if x["kind"] == "state"]
        check(states.count(("running", "waiting_approval")) == 2 and
              states.count(("waiting_approval", "running")) == 2, f"state events {states}")
        # The gated exec never reached the sandbox.
        check(not any(x["kind"] == "sandbox" for x in ev), f"exec started: {ev}")
        # The journal: steps ok / ok / rejected (ERR_PERMISSION 8), and both decisions.
        rows = st.db_rows("SELECT status, result FROM steps WHERE run_id=? AND kind='tool' "
                          "ORDER BY seq", (rid,))
        check([s for s, _ in rows] == [0, 0, 8], f"tool step statuses {rows}")
        check(json.loads(rows[2][1])["error"] == {
            "code": "rejected", "message": "rejected by root: not on my watch", "by": "root",
            "retryable": False}, rows[2][1])
        rows = st.db_rows("SELECT id, state, by, comment FROM approvals WHERE run_id=? "
                          "ORDER BY step", (rid,))
        check(rows == [(rq, "approved", "root", "fine"),
                       (int(m.group(1)), "rejected", "root", "not on my watch")],
              f"approvals rows {rows}")


run_test(main)
