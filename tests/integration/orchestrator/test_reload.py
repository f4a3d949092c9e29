#!/usr/bin/env python3
"""SIGHUP reloads profiles: a new file becomes usable; a bad file is reported with
file:line in the log and skipped while the others keep working; a profile broken by an edit
keeps its last good version serving, and a profile that is not loaded says why on submit;
two files with one name are an error naming both; --check-config on a bad profiles dir
exits non-zero naming file:line (also for a limit sandboxd would refuse), and warns (exit 0)
about fields that fail closed."""
import json
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
        # ...and submitting to it says why it is not loaded (issue 6 §7).
        p = st.orchctl("submit", "--detach", "broken", "x", expect=4)
        bad_path = st.path("etc/profiles/bad.yaml")
        check(f"profile 'broken' is not loaded: {bad_path}:3:1: unknown key 'flavour'"
              in p.stderr, f"submit error lacks the reason:\n{p.stderr}")
        pid = st.pid("orchestrator")
        check(pid and os.path.exists(f"/proc/{pid}"), "orchestrator died on reload")

        # An edit that breaks alpha (a limit sandboxd would refuse) keeps the last good
        # version serving; the log says which file was refused and why.
        alpha_path = st.path("etc/profiles/alpha.yaml")
        st.write_profile("alpha", "short", extra="sandbox: { output_kb: 10240 }\n")
        reason = f"{alpha_path}:7:23: sandbox.output_kb 10240 is out of range (allowed 1..1024)"
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        wait_for(lambda: "keeping the last good version" in st.log("orchestrator"), 15,
                 "last good version kept in the log", interval=0.2)
        log = st.log("orchestrator")
        kept = [l for l in log.splitlines() if "keeping the last good version" in l]
        check(len(kept) == 1 and "profile alpha" in kept[0] and reason in kept[0],
              f"log line does not name alpha and the reason:\n{kept}")
        run_ok(st, "alpha", "fifth")

        # --check-config refuses what sandboxd would refuse, with file:line:column.
        orch = os.path.join(st.bin, "orchestrator")
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode == 1, f"--check-config accepted output_kb 10240:\n{p.stdout}")
        check(reason in p.stdout, f"--check-config output lacks the reason:\n{p.stdout}")
        check("configuration OK" not in p.stdout, p.stdout)

        # The file is removed and a broken one asks for the name: nothing to keep,
        # and submit names the new file's line.
        os.unlink(alpha_path)
        st.write("etc/profiles/alpha-v2.yaml",
                 "name: alpha\nmodel: mock:short\nsystem_prompt: p\nlimits: { max_turns: 0 }\n")
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        v2 = st.path("etc/profiles/alpha-v2.yaml")
        want = (f"profile 'alpha' is not loaded: {v2}:4:22: limits.max_turns 0 is out of "
                "range (allowed 1..1000)")
        wait_for(lambda: want in st.orchctl("submit", "--detach", "alpha", "x").stderr, 15,
                 "the reason in the submit error", interval=0.2)
        st.orchctl("submit", "--detach", "alpha", "x", expect=4)
        os.unlink(v2)

        # Two files with one name: an error naming both; a file name that differs
        # from name: is a warning, and the profile loads.
        st.write_profile("gamma", "short", system_prompt="from gamma.yaml")
        st.write_profile("gamma", "short", system_prompt="from the copy",
                         file_name="gamma-copy.yaml")
        st.write_profile("delta", "short", file_name="d.yaml")
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        dup = (f"{st.path('etc/profiles/gamma.yaml')}:1:7: profile name 'gamma' is already "
               f"used by {st.path('etc/profiles/gamma-copy.yaml')} (profile names must be "
               "unique)")
        wait_for(lambda: dup in st.log("orchestrator"), 15, "duplicate name error",
                 interval=0.2)
        # The reload's lines are written one by one: wait for this one too, not only
        # for the error above (the check raced the log under ASan).
        warn = (f"{st.path('etc/profiles/d.yaml')}:1:7: warning: profile name 'delta' differs "
                "from the file name (call the file delta.yaml)")
        wait_for(lambda: warn in st.log("orchestrator"), 15, "the warning for d.yaml",
                 interval=0.2)
        run_ok(st, "gamma", "sixth")
        run_ok(st, "delta", "seventh")

        def system_prompt_of_last_gamma_run():
            rid = st.db_rows("SELECT id FROM runs WHERE profile='gamma' "
                             "ORDER BY created_ms DESC LIMIT 1")[0][0]
            intent = st.db_rows("SELECT intent FROM steps WHERE run_id=? AND seq=1", (rid,))
            return json.loads(intent[0][0])["system"].strip()
        check(system_prompt_of_last_gamma_run() == "from the copy", "gamma not from the copy")
        # The file serving gamma breaks: its last good version keeps the name; the file
        # refused as a duplicate before does not take it over.
        copy = st.path("etc/profiles/gamma-copy.yaml")
        st.write_profile("gamma", "short", system_prompt="from the copy",
                         file_name="gamma-copy.yaml", extra="limits: { max_turns: 0 }\n")
        st.kill("orchestrator", signal.SIGHUP, wait=False)
        taken = (f"{st.path('etc/profiles/gamma.yaml')}: profile name 'gamma' is already used "
                 f"by {copy} (kept at its last good version while that file is broken)")
        wait_for(lambda: taken in st.log("orchestrator"), 15, "gamma kept for its file",
                 interval=0.2)
        run_ok(st, "gamma", "eighth")
        check(system_prompt_of_last_gamma_run() == "from the copy",
              "a broken file's name was taken over by the refused duplicate")
        os.unlink(st.path("etc/profiles/gamma-copy.yaml"))
        os.unlink(st.path("etc/profiles/d.yaml"))

        # --check-config validates and exits: non-zero with file:line on a bad dir...
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode != 0, f"--check-config accepted a bad profile:\n{p.stdout}")
        check("bad.yaml:3" in p.stdout, f"--check-config output lacks bad.yaml:3:\n{p.stdout}")
        # ...and zero once the bad file is gone.
        os.unlink(st.path("etc/profiles/bad.yaml"))
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode == 0, f"--check-config on a good dir failed:\n{p.stdout}")
        check("configuration OK" in p.stdout, p.stdout)

        # Approvals (enforced by approvald since issue 9): valid, exit 0, no warning.
        st.write_profile("gated", "short", tools=("skill", "exec"),
                         extra="approvals:\n  - tool: exec\n    match: '^rm'\n")
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode == 0, f"--check-config refused a profile with approvals:\n{p.stdout}")
        check("warning" not in p.stdout, f"a warning about approvals:\n{p.stdout}")
        check("configuration OK" in p.stdout, p.stdout)


run_test(main)
