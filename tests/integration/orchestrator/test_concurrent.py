#!/usr/bin/env python3
"""50 runs submitted at once all complete, each with its own correct result, and
mock-llm served every conversation state exactly once."""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import TERMINAL, Stack, check, run_test, wait_for

N = 50

SCENARIO = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - tool_calls:
      - name: skill
        arguments: { action: read, path: "{{result.0.files.1}}" }
  - content: "{{task}} -> {{result.1.path}}"
"""


def main(args):
    with Stack(args, "concurrent", mock_args="--latency-ms 20") as st:
        st.demo_skill()
        st.write_scenario("three", SCENARIO)
        st.write_profile("three", "three")
        st.start()

        ids = [None] * N
        errors = []

        def submit(i):
            try:
                ids[i] = st.submit("three", f"task number {i}")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"submit {i}: {e}")

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(not errors, "\n".join(errors))
        check(len(set(ids)) == N, "run ids are not unique")

        def all_done():
            runs = st.orchctl_json("list", "--limit", str(N * 2))[0]["runs"]
            done = [r for r in runs if r["state"] in TERMINAL]
            return runs if len(done) == N else None

        runs = wait_for(all_done, 180, f"{N} runs to finish", interval=0.5)
        by_id = {r["run_id"]: r for r in runs}
        check(set(by_id) == set(ids), "list does not show exactly the submitted runs")
        for i, rid in enumerate(ids):
            r = by_id[rid]
            check(r["state"] == "succeeded", f"run {i} {rid}: {r['state']} {r['error']}")
            want = f"task number {i} -> style/SKILL.md"
            check(r["result"] == want, f"run {i}: result {r['result']!r} != {want!r}")

        stats = st.stats()
        fps = stats["by_fingerprint"]
        check(stats["chat_completions"] == 3 * N, f"chat_completions {stats['chat_completions']}")
        check(len(fps) == 3 * N and all(v == 1 for v in fps.values()),
              f"{len(fps)} fingerprints, max count {max(fps.values())}")
        pid = st.pid("orchestrator")
        check(pid is not None and os.path.exists(f"/proc/{pid}"), "orchestrator died")


run_test(main)
