#!/usr/bin/env python3
"""The README's tour, end to end: the shipped release-notes profile, skill and scripted
scenario run on the real stack with sandboxd; the timeline shows the skill and sandbox
steps, the answer quotes the skill and the sandbox's own /etc/os-release, the sandbox is
gone when the run ends, and `orchctl logs` still shows every step afterwards."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test, wait_for

TASK = "Write release notes for v0.1"


def install_repo_content(st):
    """The home gets exactly what the repo ships, as scripts/demo does."""
    etc = os.path.join(st.home, "etc")
    for src, dst in (("profiles", "profiles"), ("skills", "skills"),
                     ("mocks/mock-llm/scenarios", "mock-llm")):
        shutil.rmtree(os.path.join(etc, dst), ignore_errors=True)
        shutil.copytree(os.path.join(st.src, src), os.path.join(etc, dst))


def main(args):
    if os.geteuid() != 0:
        print("e2e.tour needs root for sandboxd; skipped")
        return 77
    with Stack(args, "tour", sandbox=True) as st:
        install_repo_content(st)
        st.start()

        p = st.orchctl("submit", "release-notes", TASK, expect=0, timeout=120)
        out = p.stdout
        run_id = out.splitlines()[0].strip()
        for want in ("[skill] list", "[skill] read release-notes/SKILL.md",
                     "[sandbox] $ cat /etc/os-release | head -3; echo $PWD",
                     "[sandbox]   → exit=0", "cwd=/workspace", "[run] succeeded"):
            check(want in out, f"live timeline lacks {want!r}:\n{out}")

        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        res = r["result"]
        check(f"Release notes plan for: {TASK}" in res, f"result lacks the task:\n{res}")
        check("release-notes/SKILL.md" in res, f"result does not cite the skill:\n{res}")
        # The sandbox's os-release is the host's (read-only allowlist), and the command
        # ran in /workspace: both come from the real sandbox, not from the scenario.
        with open("/etc/os-release") as f:
            first = f.readline().strip()
        check(first in res, f"result lacks the sandbox's os-release line {first!r}:\n{res}")
        check("exit 0, cwd /workspace" in res, f"result lacks the exec outcome:\n{res}")
        check(r["model_calls"] == 5 and r["tool_calls"] == 4, f"counters {r}")

        # The run ended, so its sandbox was destroyed: sandboxd's log says so.
        wait_for(lambda: f"sandbox {run_id} destroyed" in st.log("sandboxd"), 10,
                 "sandboxd to destroy the run's sandbox")

        # Every model call was served once: nothing was paid for twice.
        stats = st.stats()
        check(stats["chat_completions"] == 5, f"mock-llm served {stats['chat_completions']}")
        check(all(c == 1 for c in stats["by_fingerprint"].values()), f"repeats: {stats}")

        # A restarted orchestrator still shows the whole timeline, with exec details.
        st.restart("orchestrator")
        evs = st.events(run_id)
        ex = [e for e in evs if e["kind"] == "sandbox"]
        check(ex, f"no sandbox events after restart: {[e['text'] for e in evs]}")
        check(any("os-release" in json.dumps(e.get("data")) for e in ex), "exec args not logged")
        human = st.orchctl("logs", run_id, expect=0).stdout
        check("[sandbox] $ cat /etc/os-release" in human, f"logs lost the exec line:\n{human}")
    return 0


if __name__ == "__main__":
    run_test(main)
