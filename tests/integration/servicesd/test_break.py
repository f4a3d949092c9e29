#!/usr/bin/env python3
"""integration.servicesd.break: hostile inputs and faults found in review of servicesd, each
asserting the exact outcome. servicesd is driven directly over its socket with svccall (Call
and Describe as JSON, or raw bytes); a hostile upstream (a stdlib HTTP server in this
process) stands in for the services by pointing services.conf at it and SIGHUP.

Faults found (fixed in servicesd/engine.c and servicesd/main.c):
- an error status whose body is over 1 MiB (500, 401) came back as bad_response, not
  retryable, instead of by its status (http_error retryable / unauthorized);
- an upstream that echoes the Authorization header it got (a 401 body quoting it, or a
  result field) passed the credential on to the model, the orchestrator's journal and
  servicesd's log;
- an empty secret file sent "Authorization: Bearer " upstream (-> unauthorized), a secret
  with a NUL byte sent a cut token, and a secret with an inner newline gave a non-retryable
  `internal` error, where each is a missing credential (unavailable, retryable, nothing
  sent, and an error from --check-config);
- a publish that timed out after its request was sent said retryable=true: the model's
  retry is a new step with a new Idempotency-Key, and mock-services (--hang-ms longer than
  the timeout) then shows two posts. Now not retryable, with a message saying it may have
  taken effect;
- with every upstream slot (max_inflight) taken by calls to one hanging upstream, a call to
  another service waited for their timeout (one slow service blocked the others). Now one
  service holds at most all but one slot per other service;
- a profile narrowed and reloaded in the orchestrator but not (yet) in servicesd still
  published: servicesd's copy granted it and the orchestrator sent whatever the model
  named. Now the orchestrator refuses a registered service its own profile does not list
  (orchestrator/service_tool.c).
Also checked (they held): hostile frames, odd JSON arguments, redirects not followed (the
credential never reaches the other host), slow drip / hang -> timeout, endless chunked and
huge bodies -> bad_response, 200 concurrent duplicates -> one post, kill -9 of servicesd at
points around a publish -> one post and the recorded answer afterwards."""
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

WIKI = "WIKISECRET-7f3a9c1e"
HOOK = "HOOKSECRET-2b8d4e55"


class Upstream(http.server.BaseHTTPRequestHandler):
    """The first path segment picks the behaviour; every request is recorded."""
    protocol_version = "HTTP/1.1"
    seen = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def _send(self, status, body, extra=()):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.do_GET()

    def do_GET(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with Upstream.lock:
            Upstream.seen.append({"path": self.path, "host": self.headers.get("Host"),
                                  "auth": self.headers.get("Authorization")})
        mode = self.path.split("/")[1]
        topic = self.path.rsplit("/", 1)[-1]
        ok = {"topic": topic, "snippets": [{"url": "https://x/1", "excerpt": "e"}]}
        auth = str(self.headers.get("Authorization"))
        if mode == "ok":
            return self._send(200, json.dumps(ok))
        if mode == "huge500":
            return self._send(500, "x" * (2 << 20))
        if mode == "huge401":
            return self._send(401, "x" * (2 << 20))
        if mode == "huge200":
            return self._send(200, '{"topic":"' + "a" * (2 << 20) + '"}')
        if mode == "echo401":
            return self._send(401, json.dumps({"error": "bad token", "got": auth}))
        if mode == "echook":
            return self._send(200, json.dumps(
                {"topic": topic, "snippets": [{"url": "https://x/1", "excerpt": "auth " + auth}]}))
        if mode == "echobad":
            return self._send(200, json.dumps({"message_id": auth, "posted_at": 1}))
        if mode == "redirect":
            port = self.server.server_address[1]
            return self._send(302, "", extra=[("Location",
                                               f"http://127.0.0.2:{port}/ok/snippets/{topic}")])
        if mode == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            return
        if mode == "endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass
            return
        if mode == "hang":
            time.sleep(3)
            return self._send(200, json.dumps({"message_id": "0123456789ab", "posted_at": 1}))
        if mode == "badutf8":
            return self._send(200, b'{"topic":"t","snippets":[{"url":"https://x/1","excerpt":"\xff"}]}')
        self._send(404, "nope")


class T:
    def __init__(self, st, svccall):
        self.st = st
        self.svccall = svccall
        self.ep = f"ipc://{st.path('run/servicesd.sock')}"
        self.step = 0
        self.run = f"brk{os.getpid()}"

    def raw(self, *reqs, copies=1, timeout=15000):
        """Sends each request spec (json:TEXT or hex:HEX) copies times with svccall; returns
        one dict per request sent: the Reply's fields (or transport_error / decode_error /
        timeout) and "i", the index among all sent."""
        argv = [self.svccall, self.ep, "--timeout", str(timeout), "--copies", str(copies)]
        p = subprocess.run(argv + [self.spec(r, i) for i, r in enumerate(reqs)],
                           capture_output=True, text=True, timeout=120)
        return [flat(json.loads(l)) for l in p.stdout.splitlines() if l.strip()]

    def spec(self, r, i=0):
        """svccall's argument for a request spec: hex:... as is, json:TEXT as the text, or
        @PATH of a file holding it when it is over the argv limit."""
        if not r.startswith("json:"):
            return r
        if len(r) <= 65536:
            return r[5:]
        path = self.st.path(f"req{i}.json")
        with open(path, "w") as f:
            f.write(r[5:])
        return "@" + path

    def req(self, service, args, run=None, step=None, profile="brk"):
        if step is None:
            self.step += 1
            step = self.step
        a = args if isinstance(args, str) else json.dumps(args)
        return "json:" + json.dumps({"call": {"run_id": run or self.run, "profile": profile,
                                              "step": step, "service": service,
                                              "args_json": a}})

    def call(self, service, args, **kw):
        out = self.raw(self.req(service, args, **kw))
        check(len(out) == 1 and "call" in out[0], f"reply {out}")
        return out[0]["call"]

    def conf(self, text):
        self.st.write_services_conf(text)
        self.st.hup("servicesd")
        time.sleep(0.5)


def flat(o):
    """svccall's {"i": N, "reply": REPLY} as REPLY's fields plus "i"."""
    if "reply" in o:
        return dict(o["reply"] or {}, i=o["i"])
    return o


def err(c):
    return c.get("error") or {}


def test_error_status_with_huge_body(t, up):
    t.conf(f"lookup_wiki url={up}/huge500 timeout_ms=5000\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "http_error" and e.get("retryable") is True and
          e.get("http_status") == 500 and e["message"].startswith("the service answered HTTP 500: xxx"),
          f"500 with a 2 MiB body: {e}")
    t.conf(f"lookup_wiki url={up}/huge401 timeout_ms=5000\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "unauthorized" and e.get("retryable") is False and
          e.get("http_status") == 401, f"401 with a 2 MiB body: {e}")
    # A 2xx over the cap is still bad_response.
    t.conf(f"lookup_wiki url={up}/huge200 timeout_ms=5000\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "bad_response" and e.get("retryable") is False and
          e.get("message") == "the upstream's answer is over 1048576 bytes", f"2xx over 1 MiB: {e}")


def test_echoed_credential(t, up):
    t.conf(f"lookup_wiki url={up}/echo401\npublish_summary url={up}/echobad\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "unauthorized" and
          e.get("message") == 'the service answered HTTP 401: {"error": "bad token", "got": '
                              '"Bearer [secret]"}', f"echo in a 401: {e}")
    t.conf(f"lookup_wiki url={up}/echook\npublish_summary url={up}/echobad\n")
    c = t.call("lookup_wiki", {"topic": "t"})
    check(err(c).get("code") == "bad_response" and c.get("result_json") == "" and
          err(c).get("message") == "the upstream's answer contains the service's credential; "
                                   "it is not passed on", f"echo in a result: {c}")
    # Quoted by a validation error of the result (message_id must be 12 hex digits).
    c = t.call("publish_summary", {"webhook_id": "w", "content": "c"})
    check(err(c).get("code") == "bad_response" and HOOK not in json.dumps(c) and
          "[secret]" in err(c).get("message", ""), f"echo in an invalid result: {c}")
    log = t.st.log("servicesd")
    check(WIKI not in log and HOOK not in log, "a secret value is in servicesd's log")


def test_bad_secrets(t, up, check_config):
    t.conf(f"lookup_wiki url={up}/ok\n")
    for value in (b"", b"\n", b"tok\n\n", b"a\rb", b"a\x00b"):
        t.st.write_service_secret("wiki-token", value)
        t.st.hup("servicesd")
        time.sleep(0.5)
        with Upstream.lock:
            before = len(Upstream.seen)
        c = t.call("lookup_wiki", {"topic": "t"})
        check(err(c) == {"code": "unavailable", "retryable": True, "field": "", "http_status": 0,
                         "message": "service lookup_wiki has no credential configured"},
              f"secret {value!r}: {c}")
        with Upstream.lock:
            check(len(Upstream.seen) == before, f"secret {value!r} was sent upstream")
        rc, out = check_config()
        check(rc == 1 and "needs secret wiki-token, which is empty or holds a NUL, CR or LF byte"
              in out, f"--check-config with secret {value!r}: rc {rc}\n{out}")
    t.st.write_service_secret("wiki-token", WIKI + "\n")  # one trailing newline is fine
    t.st.hup("servicesd")
    time.sleep(0.5)
    c = t.call("lookup_wiki", {"topic": "t"})
    check(err(c) == {} and json.loads(c["result_json"])["topic"] == "t", f"good secret: {c}")
    with Upstream.lock:
        check(Upstream.seen[-1]["auth"] == "Bearer " + WIKI, f"sent {Upstream.seen[-1]}")
    rc, out = check_config()
    check(rc == 0, f"--check-config with a good secret: rc {rc}\n{out}")


def test_hostile_upstreams(t, up):
    """These held in review; kept as regressions."""
    t.conf(f"lookup_wiki url={up}/redirect timeout_ms=2000\n")
    with Upstream.lock:
        Upstream.seen.clear()
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "http_error" and e.get("http_status") == 302, f"redirect: {e}")
    with Upstream.lock:
        check(len(Upstream.seen) == 1 and Upstream.seen[0]["host"].startswith("127.0.0.1:"),
              f"the redirect was followed: {Upstream.seen}")
    t.conf(f"lookup_wiki url={up}/drip timeout_ms=1500\n")
    t0 = time.monotonic()
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "timeout" and e.get("retryable") is True and
          time.monotonic() - t0 < 5, f"slow drip: {e}")
    t.conf(f"lookup_wiki url={up}/endless timeout_ms=5000\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "bad_response", f"endless chunked: {e}")
    t.conf(f"lookup_wiki url={up}/badutf8\n")
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "bad_response", f"invalid UTF-8: {e}")


def test_publish_timeout_not_retryable(t, up):
    """A publish whose request went out and got no answer may have posted: the model's retry
    would be a new step with a new Idempotency-Key (mock-services --hang-ms posts twice), so
    the error must not invite one. Was: timeout, retryable=true."""
    t.conf(f"publish_summary url={up}/hang timeout_ms=1000\nlookup_wiki url={up}/hang timeout_ms=1000\n")
    e = err(t.call("publish_summary", {"webhook_id": "w", "content": "c"}))
    check(e.get("code") == "timeout" and e.get("retryable") is False and
          e.get("message", "").endswith("; the request was sent, so publish_summary may have "
                                        "taken effect: check before calling it again"),
          f"publish timeout: {e}")
    # A safe service keeps retryable; nothing sent (connection refused) keeps it too.
    e = err(t.call("lookup_wiki", {"topic": "t"}))
    check(e.get("code") == "timeout" and e.get("retryable") is True, f"lookup timeout: {e}")
    t.conf("publish_summary url=http://127.0.0.1:1\n")
    e = err(t.call("publish_summary", {"webhook_id": "w", "content": "c"}))
    check(e.get("code") == "unavailable" and e.get("retryable") is True, f"refused: {e}")


def test_slow_service_does_not_starve(t, up):
    """max_inflight = 2 (servicesd.conf): two publishes to a hanging webhook used to take
    both slots, and a lookup waited for their timeout (20 s in review). Now a service may
    hold all but one slot per other service: the lookup answers at once."""
    t.conf(f"publish_summary url={up}/hang timeout_ms=2500\nlookup_wiki url={up}/ok\n")
    slow = [subprocess.Popen([t.svccall, t.ep, "--timeout", "20000",
                              t.spec(t.req("publish_summary",
                                           {"webhook_id": f"s{i}", "content": "c"}))],
                             stdout=subprocess.PIPE) for i in range(2)]
    time.sleep(0.3)
    t0 = time.monotonic()
    c = t.call("lookup_wiki", {"topic": "t"})
    took = time.monotonic() - t0
    check(err(c) == {} and took < 1.0, f"lookup behind two hanging publishes: {took:.1f}s {c}")
    for p in slow:
        out = flat(json.loads(p.communicate()[0]))
        check(err(out["call"]).get("code") == "timeout", f"slow publish: {out}")


NARROW_FLOW = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: durability } }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: narrowed, content: hi } }
  - content: "done"
"""


def test_narrowed_profile_stale_servicesd(t):
    """A profile narrowed to [lookup_wiki] and reloaded in the orchestrator only (servicesd
    not yet HUPed): the publish went through on servicesd's older copy. Now the orchestrator
    refuses a registered service its own profile does not list (not_allowed), nothing is
    posted."""
    st = t.st
    st.write_profile("brknarrow", "brk-narrow", tools=("exec_service",), skills="",
                     services=("lookup_wiki",))
    st.hup("orchestrator")
    time.sleep(1)
    run_id = st.submit("brknarrow", "narrowed")
    r = st.wait_state(run_id, timeout=60)
    check(r["state"] == "succeeded", f"run {r}")
    rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='tool' ORDER BY seq",
                      (run_id,))
    res = [json.loads(x[0]) for x in rows]
    check(len(res) == 2 and res[0].get("topic") == "durability", f"results {res}")
    check(res[1] == {"error": {"code": "not_allowed", "retryable": False, "field": "service_name",
                               "message": "profile brknarrow does not allow this service "
                                          "(publish_summary)"}}, f"publish result {res[1]}")
    check(st.services_stats()["by_webhook"].get("narrowed") is None,
          f"posted: {st.services_stats()}")


def test_hostile_frames(t):
    out = t.raw("hex:", "hex:ff", "hex:0a0201", 'json:{"call":{}}',
                'json:{"describe":{"profile":"../../x"}}')
    st = sorted((o.get("i"), (o.get("error") or {}).get("status")) for o in out)
    check(st == [(0, "ERR_BAD_REQUEST"), (1, "ERR_BAD_REQUEST"), (2, "ERR_BAD_REQUEST"),
                 (3, "ERR_BAD_REQUEST"), (4, "ERR_NOT_FOUND")], f"frames: {out}")
    for raw, code in (("[" * 100000, "validation"), ('{"topic":"a","topic":"b"}', "validation"),
                      ('{"topic":"a\\u0000b"}', "validation"), ('{"topic":1e400}', "validation"),
                      ('{"topic":"' + "a" * (256 * 1024) + '"}', "too_large")):
        check(err(t.call("lookup_wiki", raw)).get("code") == code, f"args {raw[:40]!r}")


def test_duplicates_and_kill(t):
    st = t.st
    port = st.services_port()
    t.conf(f"lookup_wiki url=http://127.0.0.1:{port}\npublish_summary url=http://127.0.0.1:{port}\n")
    out = t.raw(t.req("publish_summary", {"webhook_id": "dups", "content": "x"}), copies=100)
    check(len(out) == 100 and len({o["call"]["result_json"] for o in out}) == 1 and
          sum(1 for o in out if not o["call"]["replayed"]) == 1, f"duplicates: {out[:2]}")
    check(st.services_stats()["by_webhook"].get("dups") == 1, f"stats {st.services_stats()}")
    for i, delay in enumerate((0.01, 0.1, 0.25, 0.35, 0.5)):
        wid = f"kill{i}"
        r = t.req("publish_summary", {"webhook_id": wid, "content": "x"})
        p = subprocess.Popen([t.svccall, t.ep, "--timeout", "2000", t.spec(r)],
                             stdout=subprocess.PIPE)
        time.sleep(delay)
        st.kill("servicesd")
        p.communicate()
        st.restart("servicesd")
        a = t.raw(r)[0]["call"]
        b = t.raw(r)[0]["call"]
        check(err(a) == {} and a["result_json"] == b["result_json"] and b["replayed"] is True,
              f"after kill at {delay}s: {a} / {b}")
        check(st.services_stats()["by_webhook"].get(wid) == 1,
              f"kill at {delay}s: posts {st.services_stats()['by_webhook']}")


def main(args):
    for b in ("servicesd", "mock-services"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built; skipped")
            return 77
    svccall = os.path.join(args.tools, "svccall")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    up = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with Stack(args, "svcbreak", credproxy=False, services=True,
                   services_args="--latency-ms 300") as st:
            st.write_service_secret("wiki-token", WIKI)
            st.write_service_secret("webhook-token", HOOK)
            st.write("etc/servicesd.conf", "max_inflight = 2\n")
            st.write_scenario("brk-narrow", NARROW_FLOW)
            # Both services at start: servicesd loads this copy and keeps it (no HUP).
            st.write_profile("brknarrow", "brk-narrow", tools=("exec_service",), skills="",
                             services=("lookup_wiki", "publish_summary"))
            st.write_profile("brk", "none", tools=("exec_service",), skills="",
                             services=("lookup_wiki", "publish_summary"))
            st.start()
            t = T(st, svccall)

            def check_config():
                p = subprocess.run([os.path.join(args.bin, "servicesd"), "--home", st.home,
                                    "--check-config"], capture_output=True, text=True)
                return p.returncode, p.stdout + p.stderr

            test_hostile_frames(t)
            test_error_status_with_huge_body(t, up)
            test_echoed_credential(t, up)
            test_bad_secrets(t, up, check_config)
            test_hostile_upstreams(t, up)
            test_publish_timeout_not_retryable(t, up)
            test_slow_service_does_not_starve(t, up)
            st.write_service_secret("wiki-token", WIKI)
            st.hup("servicesd")
            test_duplicates_and_kill(t)
            test_narrowed_profile_stale_servicesd(t)
            for d in ("servicesd", "orchestrator", "mock-services"):
                text = st.log(d)
                check(WIKI not in text and HOOK not in text, f"a secret value is in {d}'s log")
    finally:
        srv.shutdown()


if __name__ == "__main__":
    run_test(main)
