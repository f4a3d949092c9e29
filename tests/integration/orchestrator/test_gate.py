#!/usr/bin/env python3
"""Approval gates fail closed until approvald exists (invariant 5, issue 6 section 5).

A profile with `approvals:` rules: a call a rule matches never starts; the model gets the
typed error `approval required, but no approval service is configured; the call was not
run` and the timeline has a [gate] line. Calls no rule matches run as usual. No sandboxd
runs here: a gated exec never gets as far as asking for a sandbox."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test

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
  - content: "list={{result.0.files.0}} read={{result.1.error.status}}: {{result.1.error.message}} exec={{result.2.error.status}}"
"""

APPROVALS = """approvals:
  - tool: skill
    match: '"action":"read"'
  - tool: exec
    match: '^(rm|git push)'
"""

WANT = ("list=release-notes/SKILL.md read=permission: approval required, but no approval "
        "service is configured; the call was not run exec=permission")


def main(args):
    with Stack(args, "gate") as st:
        st.demo_skill()
        st.write_scenario("gate", SCENARIO)
        st.write_profile("gate", "gate", tools=("skill", "exec"), extra=APPROVALS)
        st.start()
        rid = st.submit("gate", "go")
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        check(r["result"] == WANT, f"result {r['result']!r}")
        ev = st.events(rid)
        gates = [e for e in ev if e["kind"] == "gate"]
        check(len(gates) == 2, f"gate events: {gates}")
        check(gates[0]["text"] == "[gate] skill call needs approval; no approval service is "
              "configured, so it was refused", gates[0]["text"])
        check(gates[1]["data"]["arguments"] == {"command": "rm -rf /workspace"}, gates[1])
        # The gated exec never reached the sandbox.
        check(not any(e["kind"] == "sandbox" for e in ev), f"exec started: {ev}")
        # The journal holds the refusals as completed tool steps with ERR_PERMISSION (8).
        rows = st.db_rows("SELECT status, result FROM steps WHERE run_id=? AND kind='tool' "
                          "ORDER BY seq", (rid,))
        check([s for s, _ in rows] == [0, 8, 8], f"tool step statuses {rows}")
        check(json.loads(rows[1][1])["error"]["status"] == "permission", rows[1][1])


run_test(main)
