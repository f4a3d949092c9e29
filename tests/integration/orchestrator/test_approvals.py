#!/usr/bin/env python3
"""Runs wait for humans through approvald (issue 9, invariants 5 and 6), on the real stack:
orchestrator, approvald, servicesd, mock-services, sandboxd, mock-llm.

- approve: a gated publish_summary waits (`waiting_approval`, `[approval] waiting on #N: ...`),
  is approved with the approvald CLI, and publishes exactly once (mock-services /stats);
- reject: nothing is published and the model's tool result carries who and why;
- expiry (`expires: 1s`) rejects, audited as `expiry`;
- ask_human: the answer (and who gave it) reaches the model;
- while a run waits its sandbox has no process alive (the workspace stays: the next exec reads
  a file written before) and the orchestrator has no more threads than idle;
- restarts of the orchestrator, of approvald, and of both while runs wait (and a decision made
  while the orchestrator is down): every approved run completes, each publishing exactly once;
- a decision sent on the orchestrator's socket is refused (the request stays pending);
- an approval is bound to its run, step and arguments: a forged journal row with another digest
  is refused (approval_mismatch), and arguments changed under a waiting step are refused by
  approvald (conflict) — nothing is published either way;
- cancel while waiting: approvald shows the request cancelled by the orchestrator;
- kill -9 of the orchestrator after an approval, while the approved publish is in flight
  (mock-services holds it): after the restart the run completes and there is still exactly
  one post.

Needs root (sandboxd, approvald's user), servicesd, mock-services and approvald; skipped (77)
otherwise."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, TestFailure, check, run_test, wait_for

CONTENT = "Hello team, the weekly digest is ready to go out."
PUB = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: team, content: "%s" } }
  - content: "published={{result.0.message_id}} error={{result.0.error.code}}: {{result.0.error.message}} by={{result.0.error.by}}"
""" % CONTENT

SBX = """
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "echo kept > /workspace/note.txt" }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: team, content: hi } }
  - tool_calls:
      - name: exec
        arguments: { command: "cat /workspace/note.txt" }
  - content: "published={{result.1.message_id}} note={{result.2.stdout}}"
"""

ASK = """
steps:
  - tool_calls:
      - name: ask_human
        arguments: { question: "Which channel should the digest go to?" }
  - content: "answer={{result.0.answer}} by={{result.0.by}}"
"""

SERVICES = ("lookup_wiki", "publish_summary")
WAITING = re.compile(r'^\[approval\] waiting on #(\d+): publish_summary\(webhook_id="team", '
                     r'content="(.*)"\) — approvald approve \1 \| approvald reject \1$')


def approval_events(st, rid, state=None):
    return [e for e in st.events(rid) if e["kind"] in ("approval", "question")
            and (state is None or e["data"].get("state") == state)]


def wait_waiting(st, rid, n=1, timeout=30):
    """Waits until the run is waiting_approval with its n-th waiting line; the request id."""
    def pred():
        if st.status(rid)["state"] != "waiting_approval":
            return None
        ev = approval_events(st, rid, "waiting")
        return ev[n - 1]["data"]["id"] if len(ev) >= n else None
    return wait_for(pred, timeout, f"run {rid} to wait ({n})")


def posts(st):
    return st.services_stats()["posts"]


def comms(pids):
    """{pid: comm} of pids (for messages); a gone process is "-"."""
    out = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                out[p] = f.read().strip()
        except OSError:
            out[p] = "-"
    return out


def settled_descendants(pid, quiet=1.0, timeout=15):
    """descendants(pid) once their number has not changed for quiet seconds: sandboxd's idle
    set (its pool full, the disk helper's discards of earlier sandboxes done)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        now = sorted(descendants(pid))
        if last is None or len(now) != len(last):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        if time.monotonic() > deadline:
            raise TestFailure(f"sandboxd's processes did not settle: {comms(now)}")
        time.sleep(0.05)


def descendants(pid):
    """Pids of every process below pid."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l.split()[1] for l in f if l.startswith("Threads:")][0])


def restart_orch(st, kill=True):
    if kill:
        st.kill("orchestrator")
    st.restart("orchestrator")


def journal_write(st, sql, params=()):
    con = sqlite3.connect(st.path("state/orchestrator/orchestrator.db"), timeout=10)
    try:
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def test_crash_after_approve(args):
    with Stack(args, "apprcrash", credproxy=False, services=True, approvals=True,
               services_args="--hang-ms 2000") as st:
        st.write_scenario("pub", PUB)
        st.write_profile("pub", "pub", tools=("exec_service",), skills=None,
                         services=SERVICES, extra="approvals:\n  - service: publish_summary\n")
        st.start()
        rid = st.submit("pub", "go")
        rq = wait_waiting(st, rid)
        st.approvald("approve", str(rq), expect=0)
        wait_for(lambda: posts(st) == 1, 15, "the mock to take the post")
        check(st.db_rows("SELECT state FROM approvals WHERE run_id=?", (rid,)) ==
              [("approved",)], "the approval is not journaled with the start")
        st.kill("orchestrator")
        st.restart("orchestrator")
        r = st.wait_state(rid)
        check(r["state"] == "succeeded" and re.fullmatch(r"published=[0-9a-f]{12} error=: +by=",
                                                         r["result"]), f"after crash: {r}")
        time.sleep(2.5)  # anything sent twice would have landed by now
        s = st.services_stats()
        check(s["posts"] == 1, f"posts after the crash: {s}")
        check(len([e for e in approval_events(st, rid) if e["data"].get("state") == "waiting"])
              == 1, "the approved step waited again after the restart")


def main(args):
    if os.geteuid() != 0:
        print("skipped: needs root (sandboxd, approvald's user)")
        return 77
    for b in ("approvald", "servicesd", "mock-services", "sandboxd", "orchestrator"):
        if not os.path.exists(os.path.join(args.bin, b)):
            print(f"skipped: {b} is not built")
            return 77
    with Stack(args, "approvals", credproxy=False, services=True, approvals=True,
               sandbox=True) as st:
        st.write_scenario("pub", PUB)
        st.write_scenario("sbx", SBX)
        st.write_scenario("ask", ASK)
        gate = "approvals:\n  - service: publish_summary\n"
        st.write_profile("pub", "pub", tools=("exec_service",), skills=None,
                         services=SERVICES, extra=gate)
        st.write_profile("pub-exp", "pub", tools=("exec_service",), skills=None,
                         services=SERVICES,
                         extra="approvals:\n  - service: publish_summary\n    expires: 1s\n")
        st.write_profile("sbx", "sbx", tools=("exec", "exec_service"), skills=None,
                         services=SERVICES, extra=gate)
        st.write_profile("ask", "ask", tools=("ask_human",), skills=None)
        st.start()
        orch_pid = st.pid("orchestrator")
        idle_threads = threads(orch_pid)

        # 1. approve: exactly one publish.
        rid = st.submit("pub", "go")
        rq = wait_waiting(st, rid)
        e = approval_events(st, rid, "waiting")[0]
        m = WAITING.match(e["text"])
        check(m and int(m.group(1)) == rq and m.group(2) == CONTENT[:40] + "…", e["text"])
        check(e["data"]["action"] == "publish_summary" and
              e["data"]["arguments"] == {"webhook_id": "team", "content": CONTENT} and
              e["data"]["rule"] == "approvals[0]: service publish_summary" and
              e["data"]["expires_ms"] > time.time() * 1000, f"event data {e['data']}")
        show = st.approvald_json("show", str(rq))
        check(show["run_id"] == rid and show["digest"] == e["data"]["digest"] and
              json.loads(show["arguments_json"]) == {"webhook_id": "team", "content": CONTENT},
              f"approvald show {show}")
        check(posts(st) == 0, "published before approval")
        lst = st.orchctl_json("list", "--state", "waiting_approval")
        check(rid in json.dumps(lst), f"orchctl list --state waiting_approval: {lst}")
        st.approvald("approve", str(rq), "-m", "looks right", expect=0)
        r = st.wait_state(rid)
        check(r["state"] == "succeeded" and re.fullmatch(r"published=[0-9a-f]{12} error=: +by=",
                                                         r["result"]), f"approve: {r}")
        check(posts(st) == 1, f"posts after approve: {st.services_stats()}")
        texts = [x["text"] for x in approval_events(st, rid)]
        check(texts[-1] == f"[approval] #{rq} approved by root: looks right", texts)
        check(st.db_rows("SELECT id, state, by, comment FROM approvals WHERE run_id=?",
                         (rid,)) == [(rq, "approved", "root", "looks right")], "approvals row")

        # 2. reject: nothing published, the model sees who and why.
        rid = st.submit("pub", "go")
        rq = wait_waiting(st, rid)
        st.approvald("reject", str(rq), "-m", "wrong channel", expect=0)
        r = st.wait_state(rid)
        check(r["result"] == "published= error=rejected: rejected by root: wrong channel "
              "by=root", f"reject: {r}")
        check(posts(st) == 1, "a rejected call published")
        p = st.approvald("approve", str(rq), expect=1)
        check("already rejected by root" in p.stderr, p.stderr)

        # 3. expiry rejects, audited as expiry.
        rid = st.submit("pub-exp", "go")
        r = st.wait_state(rid, timeout=30)
        check(re.fullmatch(r"published= error=rejected: rejected by expiry: expired after "
                           r"\S+ by=expiry", r["result"]), f"expiry: {r}")
        texts = [x["text"] for x in approval_events(st, rid)]
        check(re.fullmatch(r"\[approval\] #\d+ rejected by expiry: expired after \S+",
                           texts[-1]), texts)
        check(st.db_rows("SELECT by FROM approvals WHERE run_id=?", (rid,)) == [("expiry",)],
              "expiry not journaled")
        check(posts(st) == 1, "an expired call published")

        # 4. ask_human: the answer reaches the model.
        rid = st.submit("ask", "go")
        rq = wait_waiting(st, rid)
        e = approval_events(st, rid, "waiting")[0]
        check(e["kind"] == "question" and e["text"] ==
              f'[question] waiting on #{rq}: "Which channel should the digest go to?" — '
              f'approvald answer {rq} "…"', e["text"])
        st.approvald("answer", str(rq), "Verified by ops on call", expect=0)
        r = st.wait_state(rid)
        check(r["result"] == "answer=Verified by ops on call by=root", f"ask: {r}")
        check(approval_events(st, rid)[-1]["text"] ==
              f"[question] #{rq} answered by root: Verified by ops on call", "answer line")

        # 5. a waiting run holds no sandbox process and no thread; the workspace stays.
        sbx_pid = st.pid("sandboxd")
        idle_sbx = settled_descendants(sbx_pid)
        rid = st.submit("sbx", "go")
        rq = wait_waiting(st, rid)
        m = re.search(r"sandbox %s ready \(.*uid=(\d+)" % rid, st.log("sandboxd"))
        check(m, "no sandbox ready line for the run")
        uid = m.group(1)

        def run_procs():
            """The run's sandbox processes (sandboxd's descendants with its uid: another
            sandboxd on the host may use the same uids), and sandboxd's process count."""
            own, below = [], descendants(sbx_pid)
            for d in below:
                try:
                    with open(f"/proc/{d}/status") as f:
                        if [l.split()[1] for l in f if l.startswith("Uid:")] == [uid]:
                            own.append(d)
                except (OSError, IndexError):
                    pass
            return own, len(below)
        # The destroy is asynchronous; sandboxd's pool refills to its idle size.
        try:
            wait_for(lambda: run_procs() == ([], len(idle_sbx)), 10,
                     "the sandbox's processes to stop")
        except TestFailure:
            raise TestFailure(f"the run's processes {run_procs()[0]}; sandboxd's "
                              f"{comms(descendants(sbx_pid))}, idle {comms(idle_sbx)}") from None
        # A thread of libcurl's resolver may live a moment after a model call; a waiting
        # run must not keep one: the count returns to its idle value and stays there.
        wait_for(lambda: threads(orch_pid) == idle_threads, 10,
                 f"orchestrator threads to return to {idle_threads} (idle)")
        time.sleep(0.3)
        check(threads(orch_pid) == idle_threads,
              f"orchestrator threads {threads(orch_pid)} != {idle_threads} idle")
        st.approvald("approve", str(rq), expect=0)
        r = st.wait_state(rid)
        check(re.fullmatch(r"published=[0-9a-f]{12} note=kept\n?", r["result"]), f"sbx: {r}")
        check(posts(st) == 2, "sbx publish count")

        # 6. a decision on the orchestrator's socket is refused.
        rid = st.submit("pub", "go")
        rq = wait_waiting(st, rid)
        apprsend = os.path.join(args.tools, "apprsend")
        p = subprocess.run([apprsend, f"ipc://{st.path('run/approvald.sock')}", "human",
                            json.dumps({"decide": {"id": rq, "state": "STATE_APPROVED"}})],
                           stdout=subprocess.PIPE, text=True, timeout=30)
        reply = json.loads(p.stdout)
        check("error" in reply or "transport_error" in reply, f"orch-socket decide: {reply}")
        check(st.approvald_json("show", str(rq)).get("state", "STATE_PENDING") ==
              "STATE_PENDING", "decided through the orchestrator's socket")
        check(st.status(rid)["state"] == "waiting_approval", "the run moved on")
        cancel_rid, cancel_rq = rid, rq

        # 7. restarts while waiting: orchestrator, approvald, both; and a decision made
        # while the orchestrator is down.
        runs = [st.submit("pub", "go") for _ in range(4)]
        rqs = [wait_waiting(st, x) for x in runs]
        restart_orch(st)
        for x in runs:
            wait_waiting(st, x, n=2)
        st.approvald("approve", str(rqs[0]), expect=0)
        check(st.wait_state(runs[0])["state"] == "succeeded", "A after orchestrator restart")
        st.restart("approvald")
        st.approvald("approve", str(rqs[1]), expect=0)
        check(st.wait_state(runs[1])["state"] == "succeeded", "B after approvald restart")
        st.kill("orchestrator")
        st.approvald("approve", str(rqs[3]), expect=0)
        st.restart("approvald")
        st.restart("orchestrator")
        check(st.wait_state(runs[3])["state"] == "succeeded", "D decided while down")
        wait_waiting(st, runs[2], n=3)
        st.approvald("approve", str(rqs[2]), expect=0)
        check(st.wait_state(runs[2])["state"] == "succeeded", "C after both restarted")
        check(posts(st) == 6, f"posts after the restarts: {st.services_stats()}")
        for x in runs:
            ok = [e for e in st.events(x) if e["kind"] == "service"]
            check(len(ok) == 1 and " → ok " in ok[0]["text"], f"run {x} services {ok}")

        # 8. cancel while waiting (the run of step 6, across the restarts).
        st.orchctl("cancel", cancel_rid, expect=0)
        wait_for(lambda: st.approvald_json("show", str(cancel_rq)).get("state") ==
                 "STATE_CANCELLED", 10, "the request to be cancelled")
        d = st.approvald_json("show", str(cancel_rq))["decision"]
        check(d["by"] == "orchestrator", f"cancel decision {d}")
        check(st.status(cancel_rid)["state"] == "cancelled", "cancel state")

        # 9. an approval is bound to its run, step and arguments.
        forged, changed = st.submit("pub", "go"), st.submit("pub", "go")
        fq, cq = wait_waiting(st, forged), wait_waiting(st, changed)
        step = st.db_rows("SELECT MAX(seq) FROM steps WHERE run_id=?", (forged,))[0][0]
        st.kill("orchestrator")
        # (OR REPLACE: the step's "pending" row, journaled when it was put to a human.)
        journal_write(st, "INSERT OR REPLACE INTO approvals VALUES (?, ?, ?, 'approved', "
                      "'mallory', 0, '', ?)", (forged, step, fq, "0" * 64))
        journal_write(st, "UPDATE steps SET result = replace(result, 'weekly digest', "
                      "'weekly DIGEST') WHERE run_id = ? AND kind = 'model'", (changed,))
        st.restart("orchestrator")
        r = st.wait_state(forged)
        check(r["result"].startswith("published= error=approval_mismatch: "), f"forged: {r}")
        r = st.wait_state(changed)
        check(r["state"] == "failed" and "approvald refused the request: conflict" in r["error"],
              f"changed: {r}")
        st.approvald("approve", str(cq), expect=0)
        time.sleep(1)
        check(posts(st) == 6, f"a mismatched approval published: {st.services_stats()}")
    test_crash_after_approve(args)


run_test(main)
