#!/usr/bin/env python3
"""kill -9 the orchestrator at several points of a run, restart it each time: the run
completes, and mock-llm's /stats shows every journaled model call served exactly once.
Only a call that was in flight at a kill (its intent journaled, its reply not) may have
been served again, and at most once per such kill.

Fingerprints are computed from the journal the way mock-llm computes them: the
conversation sent for model step k is the system prompt and task, then every earlier
step's journaled assistant message or tool result, in step order."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, fingerprint, run_test, wait_for

LATENCY_MS = 300
KILL_AFTER = (1, 3, 5)  # completed model calls seen in the timeline
READS = 7


def scenario():
    steps = ["  - tool_calls:\n      - name: skill\n        arguments: { action: list }\n"]
    for i in range(READS):
        # Alternate files so consecutive conversation states differ in content too.
        steps.append("  - tool_calls:\n      - name: skill\n        arguments: "
                     f"{{ action: read, path: \"{{{{result.0.files.{i % 2}}}}}\" }}\n")
    steps.append("  - content: \"long run done after {{result.%d.path}}\"\n" % READS)
    return "steps:\n" + "".join(steps)


def journal_fingerprints(st, run_id):
    """(completed, in_flight): fingerprints of model steps with and without a journaled
    reply, rebuilt from the steps table."""
    task = st.db_rows("SELECT task FROM runs WHERE id = ?", (run_id,))[0][0]
    rows = st.db_rows("SELECT seq, kind, intent, status, result FROM steps WHERE run_id = ?"
                      " ORDER BY seq", (run_id,))
    messages = None
    calls = {}
    completed, in_flight = [], []
    for seq, kind, intent, status, result in rows:
        intent = json.loads(intent)
        if kind == "model":
            if messages is None:
                messages = []
                if intent.get("system"):
                    messages.append({"role": "system", "content": intent["system"]})
                messages.append({"role": "user", "content": task})
            check(intent["messages"] == len(messages),
                  f"step {seq}: intent says {intent['messages']} messages, rebuilt "
                  f"{len(messages)}")
            fp = fingerprint(messages)
            if status is None:
                in_flight.append(fp)
            elif status == 0:
                completed.append(fp)
                msg = json.loads(result)["message"]
                messages.append(msg)
                for tc in msg.get("tool_calls") or []:
                    calls[tc["id"]] = tc
            else:
                in_flight.append(fp)  # failed: its request may or may not have been served
        else:
            if status is None:
                continue
            check(intent["tool_call_id"] in calls, f"step {seq}: unknown tool call id")
            messages.append({"role": "tool", "tool_call_id": intent["tool_call_id"],
                             "content": result})
    return completed, in_flight


def model_events(st, run_id):
    return sum(1 for e in st.events(run_id) if e["kind"] == "model" and "→" in e["text"])


def main(args):
    with Stack(args, "killres", mock_args=f"--latency-ms {LATENCY_MS}") as st:
        st.demo_skill()
        st.write_scenario("long", scenario())
        st.write_profile("long", "long")
        st.start()

        run_id = st.submit("long", "a long task that survives crashes")
        in_flight_at_kill = []
        completed_at_kill = []
        for n in KILL_AFTER:
            wait_for(lambda: model_events(st, run_id) >= n, 60,
                     f"{n} model calls of {run_id}", interval=0.02)
            st.kill("orchestrator")
            # Let the mock finish a request the dead orchestrator left behind.
            time.sleep(LATENCY_MS / 1000 + 0.3)
            done, flying = journal_fingerprints(st, run_id)
            check(len(done) >= n, f"kill after {n}: only {len(done)} model steps journaled")
            check(len(flying) <= 1, f"kill after {n}: {len(flying)} model steps in flight")
            seen = st.stats()["by_fingerprint"]
            for fp in done:
                check(fp in seen, f"kill after {n}: journaled call {fp[:12]} unknown to mock")
            print(f"kill after {n} model calls: {len(done)} journaled, {len(flying)} in flight")
            completed_at_kill.append(done)
            in_flight_at_kill.append(flying)
            st.restart("orchestrator")

        r = st.wait_state(run_id, timeout=60)
        check(r["state"] == "succeeded", f"run ended {r['state']}: {r['error']}")
        last = ("release-notes/SKILL.md", "style/SKILL.md")[(READS - 1) % 2]
        check(r["result"] == f"long run done after {last}", f"result {r['result']!r}")
        check(r["model_calls"] == READS + 2, f"model_calls {r['model_calls']}")

        final_done, final_flying = journal_fingerprints(st, run_id)
        check(not final_flying, "finished run has model steps without a reply")
        check(len(final_done) == READS + 2, f"{len(final_done)} journaled model calls")
        stats = st.stats()["by_fingerprint"]
        print(f"mock-llm served counts per conversation state: {sorted(stats.values())}")
        check(set(stats) == set(final_done),
              f"mock saw {len(stats)} conversations, journal has {len(final_done)}")
        for fp in final_done:
            kills_in_flight = sum(1 for f in in_flight_at_kill if fp in f)
            if kills_in_flight == 0:
                check(stats[fp] == 1, f"journaled call {fp[:12]} was served {stats[fp]} times")
            else:
                check(1 <= stats[fp] <= 1 + kills_in_flight,
                      f"call {fp[:12]} in flight at {kills_in_flight} kill(s) was served "
                      f"{stats[fp]} times")
        for k, done in enumerate(completed_at_kill):
            for fp in done:
                check(stats[fp] == 1 or any(fp in f for f in in_flight_at_kill[:k]),
                      f"call {fp[:12]} journaled before kill {k + 1} was repeated")

        # The timeline survived the crashes: strictly increasing seqs, one restart line
        # per kill.
        evs = st.events(run_id)
        seqs = [e["seq"] for e in evs]
        check(seqs == sorted(set(seqs)), "event seqs are not strictly increasing")
        restarts = [e for e in evs if e["kind"] == "state" and "restarted" in e["text"]]
        check(len(restarts) == len(KILL_AFTER), f"{len(restarts)} restart events")


run_test(main)
