#!/usr/bin/env python3
"""A provider failure fails the run; `orchctl resume` finishes it from the failure point
without repeating any model call that had already returned (mock-llm /stats)."""
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
        arguments: { action: read, path: "{{result.0.files.0}}" }
  - tool_calls:
      - name: skill
        arguments: { action: search, query: "changes" }
  - content: "Finished after {{result.2.matches.0.line}}"
"""


def main(args):
    # Every 3rd chat completion fails with 500 and the orchestrator does not retry, so
    # the run fails on its third model call.
    with Stack(args, "provfail", mock_args="--fail-every 3 --fail-status 500") as st:
        st.demo_skill()
        st.write_scenario("four", SCENARIO)
        st.write_profile("four", "four")
        st.write_conf(model_retries=0)
        st.start()

        p = st.orchctl("submit", "four", "release notes please", expect=1, timeout=60)
        run_id = p.stdout.splitlines()[0].strip()
        check("failed" in p.stdout, f"no failure line:\n{p.stdout}")
        r = st.status(run_id)
        check(r["state"] == "failed", f"state {r['state']}")
        check(r["error"], "failed run has no error text")
        s1 = st.stats()
        check(s1["failures_injected"] == 1, f"stats {s1}")
        check(s1["chat_completions"] == 2, f"chat_completions {s1['chat_completions']} != 2")
        before = dict(s1["by_fingerprint"])
        check(sorted(before.values()) == [1, 1], f"by_fingerprint {before}")

        # The failed run is listed as failed.
        failed = st.orchctl_json("list", "--state", "failed")[0]["runs"]
        check([x["run_id"] for x in failed] == [run_id], f"list --state failed: {failed}")

        p = st.orchctl("resume", run_id, expect=0, timeout=60)
        check("Result: Finished after" in p.stdout, f"resume output:\n{p.stdout}")
        # resume prints only the new part of the timeline.
        check(p.stdout.count("[skill] list") == 0, f"old steps printed again:\n{p.stdout}")
        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state after resume {r['state']}")
        check(r["model_calls"] == 4, f"model_calls {r['model_calls']}")

        s2 = st.stats()
        after = s2["by_fingerprint"]
        check(s2["failures_injected"] == 1, f"stats {s2}")
        check(s2["chat_completions"] == 4, f"chat_completions {s2['chat_completions']} != 4")
        check(len(after) == 4 and all(v == 1 for v in after.values()),
              f"a model call was repeated: {after}")
        for fp in before:
            check(after.get(fp) == 1, f"journaled call {fp[:12]} repeated on resume")

        # Resuming a run that succeeded is refused with a typed error (exit 5).
        p = st.orchctl("resume", run_id, expect=5)
        check("invalid_state" in p.stderr, p.stderr)


run_test(main)
