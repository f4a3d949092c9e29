#!/usr/bin/env python3
"""A tool that fails for a platform reason fails the run, resumably (issue 6 section 4).

sandboxd is down when the model asks for exec: the command never started, so this is not
the model's doing and must not be handed to it as a tool error it could paper over. The
run fails with `platform failure in tool exec: ...`, the journal keeps the step as failed
by the platform, and once sandboxd is back `orchctl resume` starts that same step: the
command runs exactly once and the run succeeds without a second model call for it."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test

SCENARIO = """
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "echo ran >> /workspace/count; wc -l < /workspace/count" }
  - content: "n={{result.0.stdout}}"
"""


def main(args):
    if os.geteuid() != 0:
        print("e2e.platform_failure needs root for sandboxd; skipped")
        return 77
    with Stack(args, "platfail", sandbox=True) as st:
        st.demo_skill()
        st.write_scenario("platfail", SCENARIO)
        st.write_profile("platfail", "platfail", tools=("exec",))
        st.start()
        st.kill("sandboxd")
        rid = st.submit("platfail", "count")
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "failed", f"state {r['state']}")
        check(r["error"].startswith("platform failure in tool exec: sandboxd is not "),
              r["error"])
        rows = st.db_rows("SELECT status, result FROM steps WHERE run_id=? AND kind='tool'",
                          (rid,))
        check(len(rows) == 1 and rows[0][0] == 6 and
              "platform_error" in json.loads(rows[0][1]), f"tool step {rows}")

        st.restart("sandboxd")
        st.orchctl("resume", rid, expect=0, timeout=120)
        r = st.wait_state(rid, timeout=60)
        check(r["state"] == "succeeded", f"after resume: {r['state']}: {r.get('error')}")
        # The command ran once, and the model was asked once per step.
        check(r["result"] == "n=1\n", f"result {r['result']!r}")
        rows = st.db_rows("SELECT seq, kind, status FROM steps WHERE run_id=? ORDER BY seq",
                          (rid,))
        check([(k, s) for _, k, s in rows] == [("model", 0), ("tool", 0), ("model", 0)],
              f"steps {rows}")
        convs = st.stats().get("by_fingerprint", {})
        check(all(v == 1 for v in convs.values()) and len(convs) == 2,
              f"mock-llm per-conversation counts {convs}")
    return 0


if __name__ == "__main__":
    run_test(main)
