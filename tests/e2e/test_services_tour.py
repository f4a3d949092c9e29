#!/usr/bin/env python3
"""The stage-5 tour, end to end: the shipped team-digest profile, skill and services-tour
scenario on the whole stack (orchestrator, sandboxd, credproxy, servicesd, mock-services,
mock-llm). The agent reads the sandbox's OS name with exec, looks a topic up with
exec_service lookup_wiki and posts a digest with exec_service publish_summary; the answer
is `Published <message_id> at <posted_at>: <summary>` with the ids the webhook assigned,
the timeline has one [sandbox] step and two [service] lines, and the webhook got exactly one
post."""
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import Stack, check, run_test

TASK = "Post a digest on durability for the team"


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
        print("e2e.services_tour needs root for sandboxd; skipped")
        return 77
    for b in ("servicesd", "mock-services", "sandboxd"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}; the services tour needs it: skipped")
            return 77
    with Stack(args, "svctour", sandbox=True, services=True) as st:
        install_repo_content(st)
        st.start()

        p = st.orchctl("submit", "team-digest", TASK, expect=0, timeout=120)
        out = p.stdout
        run_id = out.splitlines()[0].strip()
        for want in ("[sandbox] $ cat /etc/os-release", "[sandbox]   → exit=0",
                     '[service] lookup_wiki(topic="durability") → ok, 2 snippets (',
                     "[service] publish_summary → ok message_id=", "[run] succeeded"):
            check(want in out, f"live timeline lacks {want!r}:\n{out}")

        r = st.status(run_id)
        check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
        rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='tool' ORDER BY seq",
                          (run_id,))
        results = [json.loads(x[0]) for x in rows]
        check(len(results) == 3, f"tool results {results}")
        wiki, pub = results[1], results[2]
        check(wiki.get("topic") == "durability" and len(wiki.get("snippets", [])) == 2,
              f"lookup result {wiki}")
        snip = wiki["snippets"][0]
        summary = f"Checked on {pretty_name()}. {snip['excerpt']} ({snip['url']})"
        m = re.fullmatch(r"Published ([0-9a-f]{12}) at (\d+): (.*)", r["result"], re.S)
        check(m is not None, f"answer {r['result']!r}")
        check(m.group(1) == pub["message_id"] and int(m.group(2)) == int(pub["posted_at"]),
              f"answer ids {m.groups()[:2]} != webhook's {pub}")
        check(m.group(3) == summary, f"summary {m.group(3)!r} != {summary!r}")
        print(r["result"])
        check(r["model_calls"] == 4 and r["tool_calls"] == 3, f"counters {r}")

        evs = st.events(run_id)
        sandbox = [e for e in evs if e["kind"] == "sandbox"]
        service = [e["text"] for e in evs if e["kind"] == "service"]
        check(len(service) == 2, f"service lines {service}")
        check(re.fullmatch(r"\[service\] publish_summary → ok message_id=" + pub["message_id"] +
                           r" \(\d+ ms\)", service[1]) is not None, f"publish line {service[1]}")
        # One exec step: its command line and its result; service work adds none.
        check(len(sandbox) == 2, f"sandbox lines {[e['text'] for e in sandbox]}")
        pub_ev = [e for e in evs if e["kind"] == "service"][1]["data"]
        check(pub_ev["arguments"] == {"webhook_id": "team-updates", "content": summary},
              f"publish arguments {pub_ev['arguments']}")

        s = st.services_stats()
        check(s["posts"] == 1 and s["by_webhook"] == {"team-updates": 1} and
              s["by_topic"] == {"durability": 1}, f"mock-services stats {s}")
    return 0


if __name__ == "__main__":
    run_test(main)
