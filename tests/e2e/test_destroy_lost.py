#!/usr/bin/env python3
"""A Destroy lost with the orchestrator: a run ends while sandboxd is down, so the Destroy of
its sandbox waits in the orchestrator's memory, and the orchestrator is killed (-9) before
sandboxd is back. The restarted orchestrator's sweep (sandboxd's List against the journal)
destroys the ended run's sandbox; before the sweep, nothing did, and the record, workspace
and uid slot stayed for good. A sandbox whose id the journal does not know (a one-shot
still running, another orchestrator's) is left alone, and so is one outside the run id space
("r-" + hex) even when the journal holds an ended run of that id: a one-shot's ("cli-...")."""
import re
import sqlite3
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test, wait_for

SCENARIO = """
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "echo kept > /workspace/f" }
  - content: "wrote {{result.0.exit_code}}"
"""


def main(args):
    if os.geteuid() != 0:
        print("e2e.destroy_lost needs root for sandboxd; skipped")
        return 77
    with Stack(args, "destroylost", sandbox=True, mock_args="--latency-ms 1500") as st:
        st.demo_skill()
        st.write_scenario("lost", SCENARIO)
        st.write_profile("lost", "lost", tools=("exec",))
        st.start()
        rid = st.orchctl("submit", "--detach", "lost", "write", expect=0).stdout.strip()
        meta = st.path(f"state/sandboxd/sandboxes/{rid}.meta")

        def exec_done():
            return st.db_rows("SELECT count(*) FROM steps WHERE run_id = ? AND kind = 'tool'"
                              " AND status = 0", (rid,))[0][0] == 1
        wait_for(exec_done, 30, "the exec step to complete")
        check(os.path.exists(meta), "no sandbox record for the run")
        # The second model call takes 1.5 s: sandboxd goes down before the run ends.
        st.kill("sandboxd")
        r = st.wait_state(rid, timeout=30)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        st.kill("orchestrator")  # its queued Destroy goes with it

        # A sandbox of no run of this journal: a one-shot holding its sandbox (sleep 8).
        # Only the restarted sandboxd's lines: the first one's log has the run's own
        # "sandbox r-... ready (profile=lost" (and its "worker serving" line may not be
        # written yet when the one-shot is).
        since = len(st.log("sandboxd"))
        st.restart("sandboxd")
        other = subprocess.Popen([os.path.join(st.bin, "sandboxd"), "--home", st.home, "exec",
                                  "--profile", "lost", "--", "sleep", "8"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def one_shot():
                return re.findall(r"sandbox (cli-[0-9a-f]{16}) ready \(profile=lost",
                                  st.log("sandboxd")[since:])
            cli = wait_for(one_shot, 15, "the one-shot's sandbox")
            check(len(cli) == 1, f"the one-shot's sandbox id: {cli}")
            # an ended run of the one-shot's id in the journal (the orchestrator is down):
            # the sweep must still leave a sandbox outside the run id space alone
            db = sqlite3.connect(st.path("state/orchestrator/orchestrator.db"), timeout=10)
            with db:
                db.execute("INSERT INTO runs (id, profile, task, state, created_ms, "
                           "updated_ms) VALUES (?, 'lost', 'forged', 'succeeded', 1, 1)",
                           (cli[0],))
            db.close()
            time.sleep(1)  # a sandboxd alone sends no Destroy
            check(os.path.exists(meta), "the record went without an orchestrator")
            st.restart("orchestrator")
            wait_for(lambda: not os.path.exists(meta), 15,
                     f"the restarted orchestrator's sweep to destroy {rid}'s sandbox")
            check("its run has succeeded; destroying it" in st.log("orchestrator"),
                  "the sweep's log line is missing")
            rc = other.wait(timeout=30)
            check(f"sandbox {cli[0]}: its run" not in st.log("orchestrator"),
                  "the sweep destroyed a one-shot's sandbox")
            check(rc == 0, f"the one-shot (outside the run id space) did not survive the sweep: "
                  f"exit {rc}: {other.stderr.read().decode(errors='replace')}")
        finally:
            if other.poll() is None:
                other.kill()
                other.wait()
    return 0


if __name__ == "__main__":
    run_test(main)
