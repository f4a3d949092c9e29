#!/usr/bin/env python3
"""SIGHUP reloads profiles: a new file becomes usable; a bad file is reported with
file:line in the log and skipped while the others keep working; --check-config on a bad
profiles dir exits non-zero naming file:line."""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

SCENARIO = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - content: "{{task}}: {{result.0.files.0}}"
"""

BAD = """name: broken
model: mock:short
flavour: strawberry
tools: [skill]
"""


def run_ok(st, profile, task):
    p = st.orchctl("submit", profile, task, expect=0, timeout=60)
    check(f"Result: {task}: release-notes/SKILL.md" in p.stdout, p.stdout)


def main(args):
    with Stack(args, "reload") as st:
        st.demo_skill()
        st.write_scenario("short", SCENARIO)
        st.write_profile("alpha", "short")
        st.start()
        run_ok(st, "alpha", "first")
        st.orchctl("submit", "--detach", "beta", "x", expect=4)

        # A new profile appears on SIGHUP.
        st.write_profile("beta", "short")
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        wait_for(lambda: st.orchctl("submit", "--detach", "beta", "probe").returncode == 0,
                 15, "profile beta after SIGHUP", interval=0.2)
        run_ok(st, "beta", "second")

        # A bad file is reported with file:line and skipped; the rest keep working.
        st.write("etc/profiles/bad.yaml", BAD)
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        wait_for(lambda: "bad.yaml:3" in st.log("orchestrator"), 15,
                 "bad.yaml:3 in the orchestrator log", interval=0.2)
        run_ok(st, "alpha", "third")
        run_ok(st, "beta", "fourth")
        st.orchctl("submit", "--detach", "broken", "x", expect=4)
        pid = st.pid("orchestrator")
        check(pid and os.path.exists(f"/proc/{pid}"), "orchestrator died on reload")

        # --check-config validates and exits: non-zero with file:line on a bad dir...
        orch = os.path.join(st.bin, "orchestrator")
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode != 0, f"--check-config accepted a bad profile:\n{p.stdout}")
        check("bad.yaml:3" in p.stdout, f"--check-config output lacks bad.yaml:3:\n{p.stdout}")
        # ...and zero once the bad file is gone.
        os.unlink(st.path("etc/profiles/bad.yaml"))
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode == 0, f"--check-config on a good dir failed:\n{p.stdout}")


run_test(main)
