#!/usr/bin/env python3
"""A run completes: orchctl submit follows it to the end, the timeline has model and skill
lines, status says succeeded and the result is the scenario's templated answer."""
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
        arguments: { action: read, path: "{{result.0.files.0}}" }
  - content: "Done: {{result.1.path}} has {{result.1.bytes}} bytes; task was: {{task}}"
"""

TASK = "Write release notes for v0.1"


def main(args):
    with Stack(args, "completes") as st:
        st.demo_skill()
        st.write_scenario("basic", SCENARIO)
        st.write_profile("basic", "basic")
        st.start()

        p = st.orchctl("submit", "basic", TASK, expect=0, timeout=60)
        lines = p.stdout.splitlines()
        run_id = lines[0].strip()
        check(run_id, "submit printed no run id")
        out = p.stdout
        check("[model]" in out, f"no [model] line in the live timeline:\n{out}")
        check("[skill]" in out, f"no [skill] line in the live timeline:\n{out}")

        skill = os.path.join(st.home, "etc/skills/demo/release-notes/SKILL.md")
        size = os.path.getsize(skill)
        want = f"Done: release-notes/SKILL.md has {size} bytes; task was: {TASK}"
        check(f"Result: {want}" in out, f"no 'Result: {want}' line:\n{out}")

        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state {r['state']}")
        check(r["result"] == want, f"result {r['result']!r} != {want!r}")
        check(r["model_calls"] == 3, f"model_calls {r['model_calls']} != 3")
        check(r["tool_calls"] == 2, f"tool_calls {r['tool_calls']} != 2")
        check(r["tokens"] > 0, "no tokens counted")
        check(r["profile"] == "basic" and r["task"] == TASK, f"run info {r}")

        # logs shows the whole stored timeline again, in order, with details.
        evs = st.events(run_id)
        seqs = [e["seq"] for e in evs]
        check(seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"event seqs {seqs}")
        kinds = [e["kind"] for e in evs]
        check(kinds.count("model") >= 3, f"model events {kinds}")
        check(any(e["kind"] == "skill" and "release-notes/SKILL.md" in e["text"] for e in evs),
              f"no skill read event: {[e['text'] for e in evs]}")
        human = st.orchctl("logs", run_id, expect=0).stdout
        for e in evs:
            if e["kind"] == "answer":  # shown once, as the Result line
                continue
            check(e["text"] in human, f"logs is missing {e['text']!r}")
        check(f"Result: {want}" in human, "logs has no Result line")

        # list finds it with filters; --state/--profile narrow it.
        runs = st.orchctl_json("list")[0]["runs"]
        check([x["run_id"] for x in runs] == [run_id], f"list {runs}")
        check(st.orchctl_json("list", "--state", "failed")[0]["runs"] == [], "state filter")
        check(st.orchctl_json("list", "--profile", "nope")[0]["runs"] == [], "profile filter")
        check(run_id in st.orchctl("list", expect=0).stdout, "human list")

        # Unknown run and unknown profile: exit 4; a finished run cannot be resumed: 5.
        st.orchctl("status", "run-doesnotexist", expect=4)
        st.orchctl("logs", "run-doesnotexist", expect=4)
        st.orchctl("submit", "no-such-profile", "x", expect=4)
        st.orchctl("resume", run_id, expect=5)
        st.orchctl("frobnicate", expect=2)

        # mock-llm saw each of the three conversation states exactly once.
        stats = st.stats()
        counts = sorted(stats["by_fingerprint"].values())
        check(counts == [1, 1, 1], f"by_fingerprint {json.dumps(stats['by_fingerprint'])}")

        # The stack reports every daemon alive.
        p = st._stack("status", st.home)
        check("orchestrator" in p.stdout and "alive" in p.stdout, p.stdout)


run_test(main)
