#!/usr/bin/env python3
"""A failed run keeps its workspace, so `orchctl resume` continues with the files its replayed
conversation talks about: a run writes /workspace/note.txt, the model provider then fails
(mock-llm failure injection) and the run fails; after resume the next exec reads the file.
Once the resumed run succeeds, its workspace is deleted like any other ended run's."""
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test, wait_for

# Calls 1 and 2 succeed, call 3 fails (--fail-every 3); after resume calls 4 and 5 are the
# scenario's steps 2 and 3 and succeed.
SCENARIO = """
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "echo kept-across-resume > /workspace/note.txt" }
  - tool_calls:
      - name: exec
        arguments: { command: "echo second" }
  - tool_calls:
      - name: exec
        arguments: { command: "cat /workspace/note.txt" }
  - content: "note={{result.2.stdout}}"
"""


def sandbox_results(st, run_id):
    return [(e["data"]["command"], e["data"]["result"]) for e in st.events(run_id)
            if e["kind"] == "sandbox" and isinstance(e.get("data"), dict)
            and "result" in e["data"]]


def main(args):
    if os.geteuid() != 0:
        print("e2e.resume_workspace needs root for sandboxd; skipped")
        return 77
    with Stack(args, "resumews", mock_args="--fail-every 3 --fail-status 500",
               sandbox=True) as st:
        st.demo_skill()
        st.write_scenario("resumews", SCENARIO)
        st.write_profile("resumews", "resumews", tools=("exec",))
        st.write_conf(model_retries=0)
        st.start()

        p = st.orchctl("submit", "resumews", "write a note", expect=1, timeout=90)
        run_id = p.stdout.splitlines()[0].strip()
        r = st.status(run_id)
        check(r["state"] == "failed", f"state {r['state']}: {r.get('error')}")
        check(st.stats()["failures_injected"] == 1, f"stats {st.stats()}")
        res = sandbox_results(st, run_id)
        check([c for c, _ in res] == ["echo kept-across-resume > /workspace/note.txt",
                                      "echo second"], f"commands before the failure: {res}")

        # sandboxd retained the failed run's workspace (and says so).
        notes = glob.glob(st.path("state/sandboxd/workspaces/*/ws/note.txt"))
        check(len(notes) == 1 and open(notes[0]).read() == "kept-across-resume\n",
              f"retained workspace: {notes}")
        wait_for(lambda: f"sandbox {run_id} destroyed (workspace retained)" in st.log("sandboxd"),
                 10, "sandboxd to log the retained workspace")

        p = st.orchctl("resume", run_id, expect=0, timeout=90)
        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state after resume {r['state']}: {r.get('error')}")
        res = sandbox_results(st, run_id)
        check(len(res) == 3 and res[2][0] == "cat /workspace/note.txt",
              f"commands after resume: {res}")
        cat = res[2][1]
        check(cat["stdout"] == "kept-across-resume\n" and cat["exit_code"] == 0,
              f"the resumed run sees its file: {cat}")
        check(r["result"] == "note=kept-across-resume\n", f"result {r['result']!r}")

        # It succeeded now: its workspace goes, like any ended run's that did not fail.
        wait_for(lambda: not glob.glob(st.path("state/sandboxd/workspaces/*/ws/note.txt")), 15,
                 "the succeeded run's workspace to be deleted")
        check(f"sandbox {run_id} destroyed\"" in st.log("sandboxd"),
              "an ordinary destroy after success\n" + st.log("sandboxd")[-2000:])
    return 0


if __name__ == "__main__":
    run_test(main)
