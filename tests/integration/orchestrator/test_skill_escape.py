#!/usr/bin/env python3
"""Skill paths cannot leave the skills dir: '..', absolute paths and symlinks (to a file
and to a directory) placed in the skills dir are refused with an error tool result, and
the secret file's content never reaches the model, the journal, the logs or orchctl. An
empty skills dir lists and searches as empty (no crash under the sanitizers)."""
import json
import os
import secrets
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test

SEP = "\n=====\n"

EMPTY = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - tool_calls:
      - name: skill
        arguments: { action: search, query: "x" }
  - content: "{{result.0}} | {{result.1}}"
"""


def scenario(secret_path):
    reads = ["../../secret.txt", "ok/../../../secret.txt", secret_path, "link.md",
             "linkdir/secret.txt"]
    steps = []
    for p in reads:
        steps.append("  - tool_calls:\n      - name: skill\n"
                     f"        arguments: {{ action: read, path: {json.dumps(p)} }}\n")
    steps.append("  - tool_calls:\n      - name: skill\n"
                 "        arguments: { action: search, query: \"TOKEN\" }\n")
    steps.append("  - tool_calls:\n      - name: skill\n"
                 "        arguments: { action: list }\n")
    results = SEP.join("{{result.%d}}" % i for i in range(len(reads) + 2))
    steps.append(f"  - content: {json.dumps(results)}\n")
    return "steps:\n" + "".join(steps), len(reads)


def main(args):
    with Stack(args, "skillesc") as st:
        token = "TOKEN-" + secrets.token_hex(16)
        secret = st.write("etc/secret.txt", f"the secret is {token}\n")
        st.write_skill("esc/ok/SKILL.md", "# OK\n\nA harmless skill.\n")
        os.symlink(secret, st.path("etc/skills/esc/link.md"))
        os.symlink(os.path.dirname(secret), st.path("etc/skills/esc/linkdir"))
        text, nreads = scenario(secret)
        st.write_scenario("escape", text)
        st.write_profile("escape", "escape", skills="skills/esc")
        os.makedirs(st.path("etc/skills/empty"))
        st.write_scenario("empty", EMPTY)
        st.write_profile("empty", "empty", skills="skills/empty")
        st.start()

        p = st.orchctl("submit", "empty", "nothing to read", expect=0, timeout=60)
        check('Result: {"files":[]} | {"matches":[],"truncated":false}' in p.stdout,
              f"empty skills dir:\n{p.stdout}\n{p.stderr}")

        p = st.orchctl("submit", "escape", "read what you should not", timeout=60)
        check(p.returncode in (0, 1), f"submit exit {p.returncode}: {p.stderr}")
        run_id = p.stdout.splitlines()[0].strip()
        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state {r['state']}: {r['error']}")

        parts = r["result"].split(SEP)
        check(len(parts) == nreads + 2, f"result has {len(parts)} parts: {r['result']!r}")
        for i in range(nreads):
            res = json.loads(parts[i])
            check("error" in res and res["error"].get("status") and res["error"].get("message"),
                  f"read #{i} was not refused with a typed error: {parts[i]}")
        search = json.loads(parts[nreads])
        check("matches" in search, f"search result {parts[nreads]}")
        listing = json.loads(parts[nreads + 1])
        check(listing.get("files") == ["ok/SKILL.md"], f"list result {listing}")

        # The secret is nowhere: model-visible results, timeline, journal, logs.
        check(token not in r["result"], "secret reached the model")
        for argv in (("logs", run_id), ("--json", "logs", run_id), ("--json", "status", run_id)):
            out = st.orchctl(*argv, expect=0).stdout
            check(token not in out, f"secret in orchctl {' '.join(argv)}")
        for name in os.listdir(st.path("state")):
            path = st.path(f"state/{name}")
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    check(token.encode() not in f.read(), f"secret in {path}")
        for d in ("orchestrator", "mock-llm"):
            check(token not in st.log(d), f"secret in {d}.log")


run_test(main)
