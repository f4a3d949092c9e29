#!/usr/bin/env python3
"""mock-services integration tests: the real binary on an ephemeral loopback port (its port
published through --port-file), driven over HTTP/1.1; each test asserts exact statuses, bodies
and /stats counts. Python 3 stdlib only.

usage: test_mock_services.py --bin MOCK_SERVICES_BINARY TEST    (exit 0 pass, 1 fail)
"""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import TestFailure, check, run_case, wait_for  # noqa: E402

TESTS = {}

WIKI = {"Authorization": "Bearer wiki-token"}
BOT = {"Authorization": "Bot webhook-token"}
HEX12 = re.compile(r"^[0-9a-f]{12}$")

DURABILITY = [
    {"url": "https://wiki.example.com/durability/journal",
     "excerpt": "Every step is journaled before it runs: the intent first, the result after, "
                "so a crash loses no work."},
    {"url": "https://wiki.example.com/durability/resume",
     "excerpt": "On restart the orchestrator reads the journal and resumes each run at its "
                "first unfinished step."},
]
SANDBOXING = [
    {"url": "https://wiki.example.com/sandboxing/isolation",
     "excerpt": "Each run's commands execute in their own namespaces, cgroup and seccomp "
                "filter, as an unprivileged uid."},
]
REPLAY = [
    {"url": "https://wiki.example.com/replay/idempotency",
     "excerpt": "A call repeated with the same key returns the recorded outcome instead of "
                "doing the work twice."},
]


def test(fn):
    TESTS[fn.__name__[len("t_"):]] = fn
    return fn


class Mock:
    """One mock-services process on an ephemeral port."""

    def __init__(self, binary, tmp, *extra, name="mock"):
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--port-file", self.port_file] + list(extra),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

        def port():
            check(self.proc.poll() is None, f"mock-services exited early: {self.tail()}")
            try:
                with open(self.port_file) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            return int(text) if text.endswith("\n") and text.strip().isdigit() else None

        self.port = wait_for(port, 10, "the port file")

    def tail(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers, parsed JSON body) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            hdrs = dict(headers or {})
            if body is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            return r.status, r.headers, json.loads(raw)
        finally:
            conn.close()

    def get(self, path, headers=None, **kw):
        return self.request("GET", path, headers=headers, **kw)

    def post(self, path, body, headers=None, **kw):
        return self.request("POST", path, body=body, headers=headers, **kw)

    def stats(self):
        status, _, body = self.get("/stats")
        check(status == 200, f"/stats -> {status}")
        return body

    def expect(self, method, path, status, body, send=None, headers=None):
        """Asserts one exchange's exact status and body."""
        st, _, got = self.request(method, path, body=send, headers=headers)
        check((st, got) == (status, body),
              f"{method} {path}: expected {status} {body}, got {st} {got}")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mock-services did not stop on its signal")
            # A clean stop exits 0 (a sanitizer's report would make it nonzero).
            check(self.proc.returncode == 0,
                  f"mock-services exited {self.proc.returncode}: {self.tail()}")
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode


def stats_subset(m, **want):
    s = m.stats()
    got = {k: s[k] for k in want}
    check(got == want, f"stats: expected {want}, got {got} (all: {s})")
    return s


# ----------------------------------------------------------------------------- tests


@test
def t_fixtures(m, ctx):
    """Each canned topic, on one keep-alive HTTP/1.1 connection, then the counts."""
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    for topic, snippets in [("durability", DURABILITY), ("sandboxing", SANDBOXING),
                            ("replay", REPLAY)]:
        conn.request("GET", f"/snippets/{topic}", headers=WIKI)
        r = conn.getresponse()
        body = json.loads(r.read())
        check(r.status == 200 and r.headers["Content-Type"] == "application/json",
              f"{topic}: {r.status} {r.headers}")
        check(body == {"topic": topic, "snippets": snippets}, f"{topic}: {body}")
    conn.close()
    check([len(x) for x in (DURABILITY, SANDBOXING, REPLAY)] == [2, 1, 1], "fixture sizes")
    stats_subset(m, requests=3, snippets=3, webhooks=0, posts=0,
                 by_topic={"durability": 1, "sandboxing": 1, "replay": 1},
                 by_status={"200": 3}, by_webhook={}, failures_injected=0)
    m.expect("GET", "/healthz", 200, {"ok": True})


@test
def t_unknown_topic(m, ctx):
    m.expect("GET", "/snippets/kubernetes", 200, {"topic": "kubernetes", "snippets": []},
             headers=WIKI)
    # The topic is the decoded path segment (servicesd percent-encodes it).
    m.expect("GET", "/snippets/no%20such%20topic", 200,
             {"topic": "no such topic", "snippets": []}, headers=WIKI)
    m.expect("GET", "/snippets/Durability", 200, {"topic": "Durability", "snippets": []},
             headers=WIKI)
    # Control characters, invalid UTF-8 and over-long topics are refused.
    m.expect("GET", "/snippets/a%01b", 400, {"error": "bad_topic"}, headers=WIKI)
    m.expect("GET", "/snippets/%ff", 400, {"error": "bad_topic"}, headers=WIKI)
    m.expect("GET", "/snippets/" + "t" * 257, 400, {"error": "bad_topic"}, headers=WIKI)
    # %00 does not cut the topic short (it would read "a").
    m.expect("GET", "/snippets/a%00b", 400, {"error": "bad_topic"}, headers=WIKI)
    m.expect("GET", "/snippets/" + "t" * 3000, 414, {"error": "uri_too_long"}, headers=WIKI)
    # Not one path segment: no such endpoint.
    m.expect("GET", "/snippets/", 404, {"error": "not_found"}, headers=WIKI)
    m.expect("GET", "/snippets/a/b", 404, {"error": "not_found"}, headers=WIKI)
    m.expect("POST", "/snippets/durability", 405, {"error": "method_not_allowed"},
             send={}, headers=WIKI)
    stats_subset(m, requests=11, snippets=7, posts=0,
                 by_topic={"kubernetes": 1, "no such topic": 1, "Durability": 1},
                 by_status={"200": 3, "400": 4, "414": 1, "404": 2, "405": 1})


@test
def t_unauthorized(m, ctx):
    cases = [
        (None, "unauthorized"),
        ("", "unauthorized"),
        ("Basic d2lraTp0b2tlbg==", "bad_scheme"),
        ("Bearer", "bad_token"),
        ("Bearer wrong", "bad_token"),
        ("Bearer wiki-token-and-more", "bad_token"),
        ("Bot wiki-token", "bad_scheme"),
    ]
    for value, code in cases:
        hdrs = {} if value is None else {"Authorization": value}
        st, h, body = m.get("/snippets/durability", headers=hdrs)
        check((st, body) == (401, {"error": code}), f"snippets auth {value!r}: {st} {body}")
        check(h["WWW-Authenticate"] == 'Bearer realm="mock-services"', f"challenge: {h}")
    # The scheme is case-insensitive (RFC 9110 section 11.1).
    m.expect("GET", "/snippets/replay", 200, {"topic": "replay", "snippets": REPLAY},
             headers={"Authorization": "bearer wiki-token"})
    for value, code in [(None, "unauthorized"), ("Bearer webhook-token", "bad_scheme"),
                        ("Bot wiki-token", "bad_token")]:
        hdrs = {} if value is None else {"Authorization": value}
        st, h, body = m.post("/webhooks/team-a", {"content": "x"}, headers=hdrs)
        check((st, body) == (401, {"error": code}), f"webhook auth {value!r}: {st} {body}")
        check(h["WWW-Authenticate"] == 'Bot realm="mock-services"', f"challenge: {h}")
    stats_subset(m, requests=11, snippets=8, webhooks=3, posts=0, by_webhook={},
                 by_topic={"replay": 1}, by_status={"401": 10, "200": 1})


@test
def t_post(m, ctx):
    before = int(time.time())
    st, _, a = m.post("/webhooks/team-a", {"content": "summary one"}, headers=BOT)
    after = int(time.time())
    check(st == 200 and set(a) == {"message_id", "posted_at"}, f"post: {st} {a}")
    check(HEX12.match(a["message_id"]), f"message_id: {a}")
    check(isinstance(a["posted_at"], int) and before <= a["posted_at"] <= after,
          f"posted_at {a['posted_at']} not in [{before}, {after}]")
    # Without an Idempotency-Key every post is a new one.
    st, _, b = m.post("/webhooks/team-a", {"content": "summary one"}, headers=BOT)
    check(st == 200 and HEX12.match(b["message_id"]) and b["message_id"] != a["message_id"],
          f"second post: {st} {b} (first {a})")
    st, _, c = m.post("/webhooks/ops.B_2", {}, headers=BOT)
    check(st == 200 and HEX12.match(c["message_id"]), f"third post: {st} {c}")
    stats_subset(m, requests=3, webhooks=3, posts=3, idempotent_replays=0,
                 by_webhook={"team-a": 2, "ops.B_2": 1}, by_status={"200": 3},
                 idempotency_keys=0)


@test
def t_idempotency(m, ctx):
    key = {"Idempotency-Key": "run-1:3", **BOT}
    st, _, a = m.post("/webhooks/team-a", {"content": "hello"}, headers=key)
    check(st == 200 and HEX12.match(a["message_id"]), f"first: {st} {a}")
    time.sleep(1.1)  # a replay must not carry a new posted_at either
    st, _, b = m.post("/webhooks/team-a", {"content": "hello"}, headers=key)
    check((st, b) == (200, a), f"replay: {st} {b}, first {a}")
    stats_subset(m, requests=2, webhooks=2, posts=1, idempotent_replays=1,
                 by_webhook={"team-a": 1}, idempotency_keys=1)
    # Another key is another post.
    st, _, c = m.post("/webhooks/team-a", {"content": "hello"},
                      headers={"Idempotency-Key": "run-1:4", **BOT})
    check(st == 200 and c["message_id"] != a["message_id"], f"other key: {st} {c}")
    # Bad keys are refused before anything is posted.
    for bad in ["has space", "k" * 256, "caf\u00e9".encode().decode("latin-1")]:
        m.expect("POST", "/webhooks/team-a", 400, {"error": "bad_idempotency_key"},
                 send={"content": "x"}, headers={"Idempotency-Key": bad, **BOT})
    # The longest key (255 visible characters) is remembered too.
    long_key = {"Idempotency-Key": "k" * 255, **BOT}
    st, _, d = m.post("/webhooks/team-a", {}, headers=long_key)
    check(st == 200 and HEX12.match(d["message_id"]), f"255-character key: {st} {d}")
    m.expect("POST", "/webhooks/team-a", 200, d, send={}, headers=long_key)
    stats_subset(m, posts=3, idempotent_replays=2, idempotency_keys=3,
                 by_status={"200": 5, "400": 3})

    # Concurrent duplicates (the mock has a thread per connection): one post, the rest
    # replays of it.
    m2 = Mock(ctx["bin"], ctx["tmp"], "--latency-ms", "200", name="concurrent")
    try:
        hdrs = {"Idempotency-Key": "run-2:1", **BOT}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            outs = list(ex.map(lambda _: m2.post("/webhooks/w", {"content": "c"},
                                                 headers=hdrs), range(8)))
        check(all(o[0] == 200 for o in outs), f"statuses {[o[0] for o in outs]}")
        ids = {o[2]["message_id"] for o in outs}
        check(len(ids) == 1, f"one answer for one key: {ids}")
        stats_subset(m2, webhooks=8, posts=1, idempotent_replays=7, by_webhook={"w": 1})
    finally:
        m2.stop()


@test
def t_bad_body(m, ctx):
    for raw in [b"[1]", b'"text"', b"42", b"null", b"", b"{", b"\xff\xfe", b'{"a": 1} trailing',
                b'{"a": "\\u0000"}', b'{"a": "\xc3"}']:
        m.expect("POST", "/webhooks/team-a", 400, {"error": "bad_body"}, send=raw,
                 headers=BOT)
    st, _, body = m.post("/webhooks/team-a", b"{}", headers=BOT)
    check(st == 200 and HEX12.match(body["message_id"]), f"empty object: {st} {body}")
    stats_subset(m, requests=11, webhooks=11, posts=1, by_status={"400": 10, "200": 1},
                 by_webhook={"team-a": 1})


@test
def t_too_large(m, ctx):
    cap = 64 * 1024
    # Exactly the cap is accepted.
    raw = b'{"content": "' + b"x" * (cap - 15) + b'"}'
    check(len(raw) == cap, "cap-sized body")
    st, _, body = m.post("/webhooks/big", raw, headers=BOT)
    check(st == 200 and HEX12.match(body["message_id"]), f"cap-sized: {st} {body}")
    # One byte more is read, dropped and refused (no reset: the client wrote it all).
    m.expect("POST", "/webhooks/big", 413, {"error": "too_large"}, send=raw + b" ",
             headers=BOT)
    # Chunked, without Content-Length: read and dropped past the cap, then refused.
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    conn.putrequest("POST", "/webhooks/big")
    for k, v in BOT.items():
        conn.putheader(k, v)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 65536
    for _ in range(8):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    check((r.status, json.loads(r.read())) == (413, {"error": "too_large"}),
          f"chunked: {r.status}")
    conn.close()
    # A client that waits for 100 Continue is refused before it sends the body.
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    conn.putrequest("POST", "/webhooks/big")
    for k, v in BOT.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(10 << 20))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    r = conn.getresponse()
    check((r.status, json.loads(r.read())) == (413, {"error": "too_large"}),
          f"expect 100-continue: {r.status}")
    conn.close()
    # Headers past libmicrohttpd's 32 KiB pool: 431 from the library, the mock unharmed.
    s = socket.create_connection(("127.0.0.1", m.port), timeout=30)
    s.sendall(b"GET /snippets/durability HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 +
              b"\r\n\r\n")
    head = s.recv(4096)
    s.close()
    check(head.startswith(b"HTTP/1.1 431 "), f"big header: {head[:60]!r}")
    stats_subset(m, requests=4, webhooks=4, posts=1, by_status={"200": 1, "413": 3},
                 by_webhook={"big": 1})
    m.expect("GET", "/healthz", 200, {"ok": True})


@test
def t_bad_webhook_id(m, ctx):
    for path in ["/webhooks/te%21m", "/webhooks/a%20b", "/webhooks/%C3%A9t%C3%A9",
                 "/webhooks/" + "a" * 65, "/webhooks/a%00b"]:
        m.expect("POST", path, 400, {"error": "bad_webhook_id"}, send={}, headers=BOT)
    m.expect("POST", "/webhooks/a/b", 404, {"error": "not_found"}, send={}, headers=BOT)
    m.expect("GET", "/webhooks/x", 405, {"error": "method_not_allowed"}, headers=BOT)
    ok = "A-z_0.9" + "a" * 57
    check(len(ok) == 64, "64-character id")
    st, _, body = m.post("/webhooks/" + ok, {}, headers=BOT)
    check(st == 200, f"64-character id: {st} {body}")
    stats_subset(m, requests=8, webhooks=6, posts=1, by_webhook={ok: 1},
                 by_status={"400": 5, "404": 1, "405": 1, "200": 1})


@test
def t_fail_every(m, ctx):
    m.stop()
    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--fail-every", "3", "--fail-status", "503",
                           name="fail503")
    seq = []
    for i in range(6):
        if i % 2:
            st, h, body = m.get("/snippets/replay", headers=WIKI)
        else:
            st, h, body = m.post("/webhooks/w", {}, headers=BOT)
        seq.append(st)
        if st == 503:
            check(body == {"error": "injected"} and h["Retry-After"] == "1", f"{body} {h}")
        # Neither /healthz nor /stats moves the sequence.
        m.expect("GET", "/healthz", 200, {"ok": True})
    check(seq == [200, 200, 503, 200, 200, 503], f"--fail-every 3: {seq}")
    # Injection comes first: even an unauthenticated request can be the Nth.
    for _ in range(2):
        m.expect("GET", "/snippets/replay", 401, {"error": "unauthorized"})
    m.expect("GET", "/snippets/replay", 503, {"error": "injected"})
    stats_subset(m, requests=9, snippets=6, webhooks=3, posts=2, failures_injected=3,
                 by_status={"200": 4, "503": 3, "401": 2}, by_topic={"replay": 2})
    # A keyed post that got the injected failure was not made: its retry with the same key
    # is a fresh post, the next one a replay.
    m.expect("POST", "/stats/reset", 200, {"reset": True})
    hdrs = {"Idempotency-Key": "run-3:1", **BOT}
    codes = [m.get("/snippets/replay", headers=WIKI)[0] for _ in range(2)]
    answers = [m.post("/webhooks/w", {}, headers=hdrs) for _ in range(3)]
    codes += [a[0] for a in answers]
    check(codes == [200, 200, 503, 200, 200], f"keyed: {codes}")
    check(answers[1][2] == answers[2][2], f"replay of the retried post: {answers}")
    stats_subset(m, posts=1, idempotent_replays=1, failures_injected=1, by_webhook={"w": 1})
    m.stop()

    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--fail-every", "1", "--fail-status", "429",
                           name="fail429")
    st, h, body = m.get("/snippets/durability", headers=WIKI)
    check((st, body, h["Retry-After"]) == (429, {"error": "injected"}, "1"), f"429: {st} {h}")
    m.stop()
    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--fail-every", "2", "--fail-status", "500",
                           name="fail500")
    codes = [m.get("/snippets/durability", headers=WIKI) for _ in range(2)]
    check([c[0] for c in codes] == [200, 500] and codes[1][1]["Retry-After"] is None,
          f"500: {codes}")


@test
def t_hang(m, ctx):
    m.stop()
    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--hang-ms", "3000", name="hang")
    results = {}

    def slow():
        t0 = time.monotonic()
        results["snippets"] = m.get("/snippets/durability", headers=WIKI)
        results["took"] = time.monotonic() - t0

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    # /healthz and /stats answer while a request hangs.
    t0 = time.monotonic()
    m.expect("GET", "/healthz", 200, {"ok": True})
    stats_subset(m, requests=0)
    check(time.monotonic() - t0 < 1.0, f"/healthz and /stats took {time.monotonic() - t0:.2f}s")
    # A client with a shorter timeout gives up.
    try:
        m.get("/snippets/replay", headers=WIKI, timeout=1)
        raise AssertionError("a 1 s client got an answer from a 3 s hang")
    except (socket.timeout, TimeoutError):
        pass
    t.join(10)
    check(results["snippets"][0] == 200 and 2.9 <= results["took"] < 6,
          f"hung request: {results}")
    # Stopping does not wait out a hang.
    m.stop()
    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--hang-ms", "60000", name="hang-stop")

    def hang_forever():
        try:
            m.get("/snippets/replay", headers=WIKI, timeout=60)
        except Exception:  # noqa: BLE001 - the connection is cut by the stop
            pass

    hung = threading.Thread(target=hang_forever, daemon=True)
    hung.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    check(m.stop(timeout=5) == 0, "exit status after SIGTERM")
    check(time.monotonic() - t0 < 3, f"stop took {time.monotonic() - t0:.2f}s")
    check(not os.path.exists(m.port_file), "port file removed on stop")

    # --latency-ms delays snippets/webhooks only.
    m = ctx["mock"] = Mock(ctx["bin"], ctx["tmp"], "--latency-ms", "400", name="latency")
    t0 = time.monotonic()
    m.post("/webhooks/w", {}, headers=BOT)
    check(time.monotonic() - t0 >= 0.4, "latency on webhooks")
    t0 = time.monotonic()
    m.expect("GET", "/healthz", 200, {"ok": True})
    check(time.monotonic() - t0 < 0.3, "no latency on /healthz")


@test
def t_stats_reset(m, ctx):
    key = {"Idempotency-Key": "run-4:1", **BOT}
    st, _, a = m.post("/webhooks/team-a", {}, headers=key)
    m.get("/snippets/durability", headers=WIKI)
    m.get("/snippets/durability")
    m.get("/nope")
    stats_subset(m, requests=4, snippets=2, webhooks=1, posts=1, idempotency_keys=1,
                 by_status={"200": 2, "401": 1, "404": 1})
    m.expect("GET", "/stats/reset", 405, {"error": "method_not_allowed"})
    m.expect("POST", "/stats/reset", 200, {"reset": True})
    s = m.stats()
    want = {"requests": 0, "snippets": 0, "webhooks": 0, "posts": 0, "by_webhook": {},
            "by_topic": {}, "idempotent_replays": 0, "failures_injected": 0, "by_status": {},
            "idempotency_keys": 1, "dropped": 0}
    check(s == want, f"after reset: {s}")
    # The keys survive a reset: a retried post is still not made twice.
    st, _, b = m.post("/webhooks/team-a", {}, headers=key)
    check((st, b) == (200, a), f"replay after reset: {b} vs {a}")
    stats_subset(m, requests=1, webhooks=1, posts=0, idempotent_replays=1, by_webhook={})


@test
def t_log(m, ctx):
    m.get("/snippets/durability", headers=WIKI)
    m.post("/webhooks/w", {}, headers={"Authorization": "Bot s3cr3t-value"})
    m.get("/snippets/a%1b%5b31mred%e2%80%aeb", headers={"Authorization": "Bearer \x7fzz"})
    m.get("/healthz")  # a liveness probe: not logged
    m.post("/healthz", {})  # not a probe: logged (405)
    m.stop()
    with open(m.log_path, "rb") as f:
        log = f.read().decode("utf-8")
    lines = [x for x in log.splitlines() if x.startswith("[mock-services] ")]
    check(lines == [
        "[mock-services] GET /snippets/durability (auth=Bearer w…) → 200",
        "[mock-services] POST /webhooks/w (auth=Bot s…) → 401",
        "[mock-services] GET /snippets/a\\x1b[31mred\\u{202e}b (auth=Bearer …) → 401",
        "[mock-services] POST /healthz (auth=-) → 405",
    ], f"log lines: {lines}")
    check("\x1b" not in log and "s3cr3t" not in log and "wiki-token" not in log,
          "raw escape or a secret in the log")


@test
def t_cli(m, ctx):
    m.stop()
    b, tmp = ctx["bin"], ctx["tmp"]
    r = subprocess.run([b, "--help"], capture_output=True, text=True, timeout=10)
    check(r.returncode == 0 and r.stdout.startswith("usage: mock-services"), f"--help: {r}")
    r = subprocess.run([b, "--version"], capture_output=True, text=True, timeout=10)
    check(r.returncode == 0 and re.match(r"^mock-services \S+\n$", r.stdout), f"--version: {r}")
    for argv, rc in [(["--bogus"], 2), (["extra"], 2), (["--port", "70000"], 1),
                     (["--fail-status", "200"], 1), (["--fail-every", "-1"], 1),
                     (["--hang-ms", "x"], 1), (["--listen", "not-an-address"], 1),
                     (["--wiki-token-file", os.path.join(tmp, "absent")], 1)]:
        r = subprocess.run([b, "--port", "0"] + argv, capture_output=True, text=True,
                           timeout=10)
        check(r.returncode == rc, f"{argv}: exit {r.returncode}, expected {rc}: {r.stderr}")

    # Token files: one trailing newline stripped; empty or control characters refused.
    def token_file(name, data):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    for data in [b"", b"\n", b"tok\n\n", b"to\x01k"]:
        r = subprocess.run([b, "--wiki-token-file", token_file("bad", data)],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 1, f"token {data!r}: exit {r.returncode}")
    m = ctx["mock"] = Mock(b, tmp, "--wiki-token-file", token_file("wiki", b"w1ki s3cret\n"),
                           "--webhook-token-file", token_file("hook", b"h00k"), name="tokens")
    m.expect("GET", "/snippets/replay", 401, {"error": "bad_token"}, headers=WIKI)
    m.expect("GET", "/snippets/replay", 200, {"topic": "replay", "snippets": REPLAY},
             headers={"Authorization": "Bearer w1ki s3cret"})
    m.expect("POST", "/webhooks/w", 401, {"error": "bad_token"}, send={}, headers=BOT)
    st, _, _ = m.post("/webhooks/w", {}, headers={"Authorization": "Bot h00k"})
    check(st == 200, f"webhook with the file's token: {st}")
    m.stop()

    # --listen: any numeric address; 0.0.0.0 is reachable on loopback, ::1 when the host
    # has IPv6.
    m = ctx["mock"] = Mock(b, tmp, "--listen", "0.0.0.0", name="any")
    m.expect("GET", "/healthz", 200, {"ok": True})
    m.stop()
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
        has_v6 = True
    except OSError:
        has_v6 = False
    if has_v6:
        m = ctx["mock"] = Mock(b, tmp, "--listen", "::1", name="v6")
        conn = http.client.HTTPConnection("::1", m.port, timeout=10)
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        check((r.status, json.loads(r.read())) == (200, {"ok": True}), "IPv6 /healthz")
        conn.close()


# ----------------------------------------------------------------------------- main


class Ctx(dict):
    """run_case's fixture: a temp dir and the test's mock-services (ctx["mock"]; a test may
    start another in its place), with "bin" and "tmp"."""

    def __init__(self, binary, name):
        super().__init__(bin=binary, tmp=tempfile.mkdtemp(prefix="mock-services-test-"))
        self["mock"] = Mock(binary, self["tmp"])

    @property
    def proc(self):
        return self["mock"].proc

    def alive(self):
        m = self["mock"]
        check(m.proc.poll() is None or m.proc.returncode == 0,
              f"mock-services died: {m.proc.returncode}")

    def log_tail(self):
        return "--- log:\n" + self["mock"].tail()

    def cleanup(self, keep=False):
        try:
            if self["mock"].proc.poll() is None:
                self["mock"].stop()
        except AssertionError as e:
            raise TestFailure(f"at stop: {e}")
        finally:
            if keep:
                print(f"kept {self['tmp']}")
            else:
                shutil.rmtree(self["tmp"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_case({name: lambda c, fn=fn: fn(c["mock"], c) for name, fn in TESTS.items()},
                      Ctx))
