#!/usr/bin/env python3
"""A run's egress (issue 7, Logs): the orchestrator reads the records of runs whose sandbox
reaches the network through credproxy from credproxy's control socket and journals them as
"egress" events, rendered by `orchctl logs` as `[egress] GET host/path → 200 (auth injected:
...)` and `[egress] refused POST host/ (reason)`, escaped for the terminal. Records logged
after the run ended still arrive; none is lost or repeated when credproxy is down while the
run ends, nor when either daemon restarts; credproxy unreachable never fails a run.

credproxy's control socket is played by cp_egress_stub (credproxy's own egress.c without the
proxy); the test writes the records into its database as credproxy would."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

SCENARIO = """
steps:
  - tool_calls:
      - name: exec
        arguments: { command: "sleep 2; echo one" }
  - tool_calls:
      - name: exec
        arguments: { command: "echo two" }
  - content: "done"
"""

NET = "sandbox:\n  network: proxy\n"


class Stub:
    """cp_egress_stub on the home's credproxy control endpoint, admitting the orchestrator."""

    def __init__(self, st, tools):
        self.st = st
        self.exe = os.path.join(tools, "cp_egress_stub")
        self.db = st.path("state/credproxy/egress.db")
        self.sock = st.path("run/credproxy-ctl.sock")
        self.proc = None

    def start(self):
        os.makedirs(os.path.dirname(self.db), exist_ok=True)
        log = open(self.st.path("log/credproxy.log"), "a")
        self.proc = subprocess.Popen([self.exe, self.db, f"ipc://{self.sock}",
                                      "ahp-orchestrator,root"], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: os.path.exists(self.sock) and self._ready(), 10, "the stub's socket")

    def _ready(self):
        try:
            con = sqlite3.connect(self.db, timeout=5)
            try:
                con.execute("SELECT 1 FROM egress LIMIT 1").fetchall()
                return True
            finally:
                con.close()
        except sqlite3.Error:
            return False

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None
            try:
                os.unlink(self.sock)
            except FileNotFoundError:
                pass

    def record(self, run, method, host, path, status, allowed, reason="", injected="",
               port=80, redactions=0):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            with con:
                con.execute(
                    "INSERT INTO egress (ts_ms, run, profile, method, host, port, path, status,"
                    " bytes_up, bytes_down, duration_ms, allowed, rule, reason, injected,"
                    " redactions) VALUES (?, ?, 'net', ?, ?, ?, ?, ?, 0, 10, 3, ?, ?, ?, ?, ?)",
                    (int(time.time() * 1000), run, method, host, port, path, status,
                     1 if allowed else 0, "net#0" if allowed else "", reason, injected,
                     redactions))
        finally:
            con.close()


def texts(st, run_id):
    return [e["text"] for e in st.egress_events(run_id)]


def main(args):
    if os.geteuid() != 0:
        print("integration.orchestrator.egress_events needs root for sandboxd; skipped")
        return 77
    if not os.path.exists(os.path.join(args.tools, "cp_egress_stub")):
        print("no cp_egress_stub (credproxy's egress.c not built); skipped")
        return 77
    with Stack(args, "egress", sandbox=True, credproxy=False) as st:
        st.demo_skill()
        st.write_scenario("egress", SCENARIO)
        st.write_profile("net", "egress", tools=("exec",), extra=NET)
        st.write_profile("quiet", "egress", tools=("exec",))
        st.start()
        stub = Stub(st, args.tools)
        stub.start()
        try:
            run_body(st, stub)
        finally:
            stub.stop()
    return 0


def run_body(st, stub):
    # 1. Records logged while the command runs reach the timeline after the step.
    run = st.submit("net", "fetch things")
    wait_for(lambda: any("$ sleep 2" in e["text"] for e in st.events(run)), 30,
             "the first command to start")
    stub.record(run, "GET", "wiki.local", "/snippets/durability", 200, True,
                injected="Authorization")
    stub.record(run, "POST", "evil.example", "/", 403, False,
                reason="no rule for evil.example in profile net")
    stub.record(run, "GET", "wiki.local", "/\x1b[2J\x1b]0;pwned\x07", 404, True)
    stub.record(run, "CONNECT", "api.example", "", 200, True, port=443)
    stub.record("someone-else", "GET", "wiki.local", "/other", 200, True)
    r = st.wait_state(run, timeout=60)
    check(r["state"] == "succeeded", f"run {r['state']}: {r.get('error')}")
    want = [
        "[egress] GET wiki.local/snippets/durability → 200 (auth injected: Authorization)",
        "[egress] refused POST evil.example/ (no rule for evil.example in profile net)",
        "[egress] GET wiki.local/\x1b[2J\x1b]0;pwned\x07 → 404",
        "[egress] CONNECT api.example:443 → 200",
    ]
    got = st.wait_egress(run, 4)
    check([e["text"] for e in got] == want, f"egress events {[e['text'] for e in got]}")
    check(got[0]["data"]["injected"] == "Authorization" and got[1]["data"]["allowed"] is False,
          f"event data {got[0]['data']} {got[1]['data']}")
    # They came after the first command started (the read follows its step).
    kinds = [(e["kind"], e["text"]) for e in st.events(run)]
    first_egress = next(i for i, k in enumerate(kinds) if k[0] == "egress")
    check(any("$ sleep 2" in t for _, t in kinds[:first_egress]), f"egress too early: {kinds}")

    # orchctl shows them escaped: no control character reaches the terminal.
    out = st.orchctl("logs", run, expect=0).stdout
    check("[egress] refused POST evil.example/ (no rule for evil.example in profile net)\n"
          in out, out)
    check("[egress] GET wiki.local/\\x1b[2J\\x1b]0;pwned\\x07 → 404\n" in out, out)
    check("\x1b" not in out and "\x07" not in out, f"raw control bytes in {out!r}")

    # 2. A record logged just after the run ended still arrives (the log settles),
    # once; then the run is no longer followed.
    stub.record(run, "GET", "wiki.local", "/late", 200, True)
    got = st.wait_egress(run, 5, timeout=20)
    check(got[-1]["text"] == "[egress] GET wiki.local/late → 200", f"{got[-1]}")
    wait_for(lambda: st.db_rows("SELECT done, last_seq FROM egress_cursors WHERE run_id = ?",
                                (run,)) == [(1, 6)], 20, "the run's cursor to be closed")
    stub.record(run, "GET", "wiki.local", "/after-done", 200, True)
    time.sleep(6.5)  # more than the slow timer
    check(len(texts(st, run)) == 5, f"a record after the cursor closed: {texts(st, run)}")

    # 3. A run whose sandbox has no network is not followed at all.
    quiet = st.submit("quiet", "no network")
    r = st.wait_state(quiet, timeout=60)
    check(r["state"] == "succeeded", f"quiet run {r['state']}")
    check(st.db_rows("SELECT count(*) FROM egress_cursors WHERE run_id = ?", (quiet,)) ==
          [(0,)], "a run without network has an egress cursor")

    # 4. credproxy down while a run ends: the run succeeds all the same; the records
    # arrive once it is back, exactly once, across an orchestrator restart too.
    stub.stop()
    run2 = st.submit("net", "fetch while credproxy is down")
    wait_for(lambda: any("$ sleep 2" in e["text"] for e in st.events(run2)), 30,
             "the first command of run 2")
    stub.record(run2, "GET", "wiki.local", "/one", 200, True)
    r = st.wait_state(run2, timeout=60)
    check(r["state"] == "succeeded", f"run 2 {r['state']}: {r.get('error')}")
    check(texts(st, run2) == [], f"egress without credproxy: {texts(st, run2)}")
    stub.record(run2, "GET", "wiki.local", "/two", 200, True)
    st.kill("orchestrator")
    st.restart("orchestrator")
    stub.start()
    got = st.wait_egress(run2, 2, timeout=30)
    check([e["text"] for e in got] == ["[egress] GET wiki.local/one → 200",
                                       "[egress] GET wiki.local/two → 200"], f"{got}")
    wait_for(lambda: st.db_rows("SELECT done FROM egress_cursors WHERE run_id = ?",
                                (run2,)) == [(1,)], 20, "run 2's cursor to be closed")
    # Restarts of both daemons repeat nothing.
    st.kill("orchestrator")
    stub.stop()
    stub.start()
    st.restart("orchestrator")
    time.sleep(6.5)
    check(len(texts(st, run)) == 5 and len(texts(st, run2)) == 2,
          f"repeated: {texts(st, run)} {texts(st, run2)}")


run_test(main)
