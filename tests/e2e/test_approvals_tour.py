#!/usr/bin/env python3
"""The stage-6 tour, end to end: the shipped team-digest-approved profile (team-digest with
`approvals: [{service: publish_summary}]`), the team-digest skill and the approvals-tour
scenario on the whole stack (orchestrator, sandboxd, credproxy, servicesd, mock-services,
approvald, mock-llm). The agent reads the sandbox's OS name with exec and looks a topic up
with exec_service lookup_wiki; the platform then stops before publish_summary: `orchctl
submit` (not on a terminal: no inline prompt) prints `[approval] waiting on #1:
publish_summary(webhook_id="team-updates", content="…") — approvald approve 1 | approvald
reject 1` and returns with the run waiting (nothing posted). A
human answers with the CLI, `approvald approve 1 -m "looks right"`, and the run, followed
with `orchctl logs --follow`, publishes exactly once and answers `Published <message_id> at
<posted_at>: <summary>` with the ids the webhook assigned; its timeline shows who approved
it, when and why."""
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test, wait_for

TASK = "Post a digest on durability for the team"
PROFILE = "team-digest-approved"


def install_repo_content(st):
    """The home gets exactly what the repo ships, as scripts/demo does."""
    etc = os.path.join(st.home, "etc")
    for src, dst in (("profiles", "profiles"), ("skills", "skills"),
                     ("mocks/mock-llm/scenarios", "mock-llm")):
        shutil.rmtree(os.path.join(etc, dst), ignore_errors=True)
        shutil.copytree(os.path.join(st.src, src), os.path.join(etc, dst))


def pretty_name():
    """PRETTY_NAME of /etc/os-release (the sandbox sees the host's, read-only)."""
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                return line.split('"')[1]
    return ""


def main(args):
    if os.geteuid() != 0:
        print("e2e.approvals_tour needs root for sandboxd; skipped")
        return 77
    for b in ("servicesd", "mock-services", "sandboxd", "approvald"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}; the approvals tour needs it: skipped")
            return 77
    with open(os.path.join(args.bin, "orchestrator"), "rb") as f:
        if b"approvald_endpoint" not in f.read():
            print("this orchestrator does not wait for approvals yet: skipped")
            return 77
    with Stack(args, "apprtour", sandbox=True, services=True, approvals=True) as st:
        install_repo_content(st)
        st.start()

        # 1. Submit: followed until the platform pauses before the publish.
        p = st.orchctl("submit", PROFILE, TASK, expect=0, timeout=120)
        out = p.stdout
        run_id = out.splitlines()[0].strip()
        for want in ("[sandbox] $ cat /etc/os-release", "[sandbox]   → exit=0",
                     '[service] lookup_wiki(topic="durability") → ok, 2 snippets ('):
            check(want in out, f"live timeline lacks {want!r}:\n{out}")
        m = re.search(r'^\[approval\] waiting on #(\d+): publish_summary\(webhook_id='
                      r'"team-updates", content="Checked on .*"\) — approvald approve (\d+) '
                      r'\| approvald reject (\d+)$', out, re.M)
        check(m is not None and m.group(1) == m.group(2) == m.group(3),
              f"no waiting line:\n{out}")
        req_id = m.group(1)
        check(out.endswith(f"Run {run_id} is waiting_approval; follow it later with: "
                           f"orchctl logs --follow {run_id}\n"), f"submit's end:\n{out}")
        check("approve #" not in out, "prompted off a terminal")
        check(st.status(run_id)["state"] == "waiting_approval", st.status(run_id))
        listed = st.orchctl_json("list", "--state", "waiting_approval")[0]["runs"]
        check([r["run_id"] for r in listed] == [run_id], f"waiting runs {listed}")
        check(st.services_stats()["posts"] == 0, "published before the approval")

        # 2. The human on call: list, show (the exact arguments), approve.
        p = st.approvald("list", expect=0)
        check(re.match(rf"#{req_id}  pending  publish_summary\(", p.stdout) and
              f"run {run_id}" in p.stdout, f"approvald list:\n{p.stdout}")
        shown = st.approvald_json("show", req_id)
        args_shown = json.loads(shown["arguments_json"])
        check(shown["run_id"] == run_id and shown["action"] == "publish_summary" and
              shown["profile"] == PROFILE and args_shown["webhook_id"] == "team-updates",
              f"approvald show: {shown}")
        p = st.approvald("approve", req_id, "-m", "looks right", expect=0)
        check(p.stdout.startswith(f"approved #{req_id} (publish_summary, run {run_id} step "),
              p.stdout)

        # 3. Followed again: the publish runs once, and the answer quotes its ids.
        p = st.orchctl("logs", "--follow", run_id, expect=0, timeout=120)
        check(re.search(rf"^\[approval\] #{req_id} approved by root: looks right$",
                        p.stdout, re.M), f"no decision line:\n{p.stdout}")
        check("[service] publish_summary → ok message_id=" in p.stdout, p.stdout)
        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='tool' ORDER BY seq",
                          (run_id,))
        results = [json.loads(x[0]) for x in rows]
        check(len(results) == 3, f"tool results {results}")
        wiki, pub = results[1], results[2]
        snip = wiki["snippets"][0]
        summary = f"Checked on {pretty_name()}. {snip['excerpt']} ({snip['url']})"
        check(args_shown == {"webhook_id": "team-updates", "content": summary},
              f"approved arguments {args_shown}")
        m = re.fullmatch(r"Published ([0-9a-f]{12}) at (\d+): (.*)", r["result"], re.S)
        check(m is not None, f"answer {r['result']!r}")
        check(m.group(1) == pub["message_id"] and int(m.group(2)) == int(pub["posted_at"]),
              f"answer ids {m.groups()[:2]} != webhook's {pub}")
        check(m.group(3) == summary, f"summary {m.group(3)!r} != {summary!r}")
        print(r["result"])
        check(r["model_calls"] == 4 and r["tool_calls"] == 3, f"counters {r}")

        # Who decided, when, why: in the timeline and in approvald.
        appr = [e for e in st.events(run_id) if e["kind"] == "approval"]
        check(len(appr) == 2, f"approval events {[e['text'] for e in appr]}")
        check(appr[0]["data"]["id"] == int(req_id) and
              appr[0]["data"]["arguments"] == args_shown, f"waiting event {appr[0]}")
        d = st.approvald_json("show", req_id)["decision"]
        check(d["by"] == "root" and d["comment"] == "looks right" and
              d["state"] == "STATE_APPROVED", f"decision {d}")

        s = st.services_stats()
        check(s["posts"] == 1 and s["by_webhook"] == {"team-updates": 1},
              f"mock-services stats {s}")

        # The sandbox parked for the approval kept its workspace; the run's end discards it
        # (found by the chaos test: every approved run left one behind).
        meta = st.path(f"state/sandboxd/sandboxes/{run_id}.meta")
        wait_for(lambda: not os.path.exists(meta), 10,
                 f"sandboxd to drop the parked workspace of {run_id}")
    return 0


if __name__ == "__main__":
    run_test(main)
