#!/usr/bin/env python3
"""Untrusted bytes never stop the orchestrator (invariant 8, issue 6 section 1).

The model has exec make and enter a directory whose name is not UTF-8 (an overlong NUL,
printf '\\300\\200') and print bytes that are not UTF-8 either. Before the fix, encoding
the tool result failed, the orchestrator exited, and on restart replayed the same result
and exited again, for every run. Now the run succeeds with the text sanitized, the journal
holds valid JSON, and a kill -9 + restart replays the run's journal without a failure."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test

SCENARIO = r"""
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "d=$(printf '\\300\\200'); mkdir -p \"$d\" && cd \"$d\" && printf 'out\\377 end'" }
  - tool_calls:
      - name: exec
        arguments: { command: "pwd | od -An -tx1 | tr -d ' \\n'" }
  - content: "out=[{{result.0.stdout}}] pwd={{result.1.stdout}} cwd=[{{result.0.cwd}}]"
"""


def main(args):
    if os.geteuid() != 0:
        print("e2e.untrusted_text needs root for sandboxd; skipped")
        return 77
    with Stack(args, "untrusted", sandbox=True) as st:
        st.demo_skill()
        st.write_scenario("untrusted", SCENARIO)
        st.write_profile("untrusted", "untrusted", tools=("exec",))
        st.start()
        pid = st.pid("orchestrator")
        rid = st.submit("untrusted", "go")
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        res = r["result"]
        # The shell really was in the directory named by the two raw bytes c0 80.
        # stdout is sanitized; sandboxd reports a cwd that is not UTF-8 as unknown ("").
        check(res == "out=[out\ufffd end] pwd=2f776f726b73706163652fc0800a cwd=[]", repr(res))
        check(st.pid("orchestrator") == pid, "the orchestrator restarted")
        for (text,) in st.db_rows("SELECT result FROM steps WHERE run_id=?", (rid,)):
            json.loads(text)
        # A restart replays nothing into a crash: kill -9, start, the run reads back and a
        # new run completes.
        st.kill("orchestrator")
        st.restart("orchestrator")
        check(st.status(rid)["result"] == res, "result changed after restart")
        rid2 = st.submit("untrusted", "again")
        r2 = st.wait_state(rid2, timeout=60)
        check(r2["state"] == "succeeded", f"second run {r2['state']}: {r2.get('error')}")
    return 0


if __name__ == "__main__":
    run_test(main)
