#!/usr/bin/env python3
"""Upstream failures become typed errors with exact codes: a wrong token (servicesd's secret
file) -> unauthorized with http_status 401; nothing listening -> unavailable, retryable; an
upstream slower than services.conf's timeout_ms=300 (mock --hang-ms) -> timeout, retryable,
after about 300 ms; injected 503/500/429/408 -> http_error retryable, 403 -> unauthorized,
404 -> not_found, 400/409 -> http_error not retryable; a 2xx that is not the result (not
JSON, wrong shape, over 1 MiB, a message_id that is not 12 hex digits) -> bad_response; a
redirect is not followed; https to a plain upstream -> tls; an unresolvable name -> dns. Each
outcome is recorded: the same key again is answered from the store (replayed) without
another upstream request."""
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (WEBHOOK_TOKEN, WIKI_TOKEN, Servicesd, check, err_of,  # noqa: E402
                    free_port, need_servicesd, run_test)

WIKI = "lookup_wiki"
PUB = "publish_summary"


def main(args):
    if need_servicesd(args):
        return 77
    unauthorized(args)
    refused(args)
    timeout(args)
    for status, code, retryable in ((503, "http_error", True), (429, "http_error", True),
                                    (500, "http_error", True), (408, "http_error", True),
                                    (403, "unauthorized", False), (404, "not_found", False),
                                    (400, "http_error", False), (409, "http_error", False)):
        injected(args, status, code, retryable)
    bad_responses(args)
    tls_and_dns(args)
    return 0


def tls_and_dns(args):
    """https:// to a plain-HTTP upstream -> tls (not retryable); a name that does not
    resolve -> dns (retryable), asserted when this host's resolver answers NXDOMAIN fast."""
    s = Servicesd(args, "tlsdns")
    with s:
        m = s.mock()
        s.write_tokens()
        s.write_services(f"lookup_wiki url=https://127.0.0.1:{m.port}\n"
                         "publish_summary url=http://nosuch-host.invalid timeout_ms=5000\n")
        s.write_profile("both", [WIKI, PUB])
        s.start()
        e = err_of(s.call(WIKI, {"topic": "durability"}, run="run-1", step=1), "tls")
        check(e["retryable"] is False and e["http_status"] == 0, f"tls: {e}")
        check(m.stats()["snippets"] == 0, "a TLS failure produced an HTTP request")
        t = time.monotonic()
        try:
            socket.getaddrinfo("nosuch-host.invalid", 80)
            fast_nx = False
        except socket.gaierror:
            fast_nx = time.monotonic() - t < 1.0
        if not fast_nx:
            print("this host's resolver does not refuse .invalid quickly: dns case skipped")
            return
        e = err_of(s.call(PUB, {"webhook_id": "t", "content": "x"}, run="run-1", step=2),
                   "dns")
        check(e["retryable"] is True and "nosuch-host.invalid" in e["message"], f"dns: {e}")


def home(args, name, mock_extra=(), timeout_ms=None, wiki=WIKI_TOKEN, url=None):
    s = Servicesd(args, name)
    m = s.mock(extra=mock_extra) if url is None else None
    s.write_tokens(wiki=wiki)
    s.point_at(url or m, timeout_ms)
    s.write_profile("both", [WIKI, PUB])
    return s, m


def replayed_same(s, args, run, step, first, service=WIKI):
    cr = s.call(service, args, run=run, step=step)
    check(cr["replayed"] is True and cr["error"] == first["error"]
          and cr["duration_ms"] == first["duration_ms"], f"same key again: {cr} vs {first}")


def unauthorized(args):
    s, m = home(args, "auth", wiki="not-the-wiki-token")
    with s:
        s.write_secret("webhook-token", "not-the-webhook-token")
        s.start()
        cr = s.call(WIKI, {"topic": "durability"}, run="run-1", step=1)
        e = err_of(cr, "unauthorized")
        check(e["http_status"] == 401 and e["retryable"] is False, f"401: {e}")
        check("bad_token" in e["message"], f"the message quotes the body: {e}")
        cr2 = s.call(PUB, {"webhook_id": "team", "content": "x"}, run="run-1", step=2)
        e = err_of(cr2, "unauthorized")
        check(e["http_status"] == 401 and e["retryable"] is False, f"401 publish: {e}")
        st = m.stats()
        check(st["by_status"] == {"401": 2} and st["posts"] == 0, f"mock: {st}")
        check("not-the-wiki-token" not in s.log() + json.dumps(cr),
              "the secret's value leaked into the log or the reply")
        replayed_same(s, {"topic": "durability"}, "run-1", 1, cr)
        check(m.stats()["requests"] == 2, "a replayed error reached the mock")


def refused(args):
    port = free_port()
    s, _ = home(args, "refused", url=f"http://127.0.0.1:{port}")
    with s:
        s.start()
        cr = s.call(WIKI, {"topic": "durability"}, run="run-1", step=1)
        e = err_of(cr, "unavailable")
        check(e["retryable"] is True and e["http_status"] == 0, f"refused: {e}")
        cr = s.call(PUB, {"webhook_id": "team", "content": "x"}, run="run-1", step=2)
        e = err_of(cr, "unavailable")
        check(e["retryable"] is True, f"refused publish: {e}")
        check(s.rows() == [("run-1:1", "done", WIKI), ("run-1:2", "done", PUB)],
              f"rows: {s.rows()}")


def timeout(args):
    s, m = home(args, "timeout", mock_extra=("--hang-ms", "3000"), timeout_ms=300)
    with s:
        s.start()
        t = time.monotonic()
        cr = s.call(WIKI, {"topic": "durability"}, run="run-1", step=1)
        took = time.monotonic() - t
        e = err_of(cr, "timeout")
        check(e["retryable"] is True and e["http_status"] == 0, f"timeout: {e}")
        check(250 <= cr["duration_ms"] <= 1500 and took < 2.5,
              f"a 300 ms timeout took {cr['duration_ms']} ms (client saw {took:.2f} s)")
        # servicesd kept serving while the mock still hangs.
        check(s.describe("both")["describe"]["services"] == [WIKI, PUB], "describe after")


def injected(args, status, code, retryable):
    s, m = home(args, f"fail{status}",
                mock_extra=("--fail-every", "1", "--fail-status", str(status)))
    with s:
        s.start()
        cr = s.call(WIKI, {"topic": "durability"}, run="run-1", step=1)
        e = err_of(cr, code)
        check(e["http_status"] == status and e["retryable"] is retryable,
              f"{status}: expected {code} retryable={retryable}, got {e}")
        check("injected" in e["message"], f"{status}: the message quotes the body: {e}")
        cr2 = s.call(PUB, {"webhook_id": "team", "content": "x"}, run="run-1", step=2)
        e = err_of(cr2, code)
        check(e["http_status"] == status and e["retryable"] is retryable, f"{status}: {e}")
        st = m.stats()
        check(st["failures_injected"] == 2 and st["posts"] == 0 and st["requests"] == 2,
              f"{status}: mock {st}")
        replayed_same(s, {"topic": "durability"}, "run-1", 1, cr)
        check(m.stats()["requests"] == 2, f"{status}: a replayed outcome reached the mock")


class Fixture(http.server.BaseHTTPRequestHandler):
    """Answers /snippets/<case> with a body servicesd must refuse as bad_response."""
    seen = []

    def do_GET(self):
        Fixture.seen.append((self.path, self.headers.get("Authorization")))
        case = self.path.rsplit("/", 1)[-1]
        if case == "redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/stolen")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {
            "notjson": b"<html>hello</html>",
            "shape": json.dumps({"topic": "shape", "snippets": [{"url": 5}]}).encode(),
            "toomany": json.dumps({"topic": "toomany", "snippets": [
                {"url": "https://w/x", "excerpt": "e"}] * 101}).encode(),
            "huge": b'{"topic": "huge", "snippets": [], "pad": "' + b"x" * (1100 * 1024) + b'"}',
        }.get(case, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        """/webhooks/<case>: a 200 whose message_id breaks the result's contract."""
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        Fixture.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"message_id": "NOT-HEX!", "posted_at": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def bad_responses(args):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        s, _ = home(args, "badresp", url=f"http://127.0.0.1:{srv.server_port}")
        with s:
            s.start()
            for i, (topic, field) in enumerate((("notjson", None), ("shape", None),
                                                ("toomany", "snippets"), ("huge", None))):
                cr = s.call(WIKI, {"topic": topic}, run="run-1", step=i + 1)
                e = err_of(cr, "bad_response")
                check(e["retryable"] is False, f"{topic}: {e}")
                if topic != "huge":
                    check(e["http_status"] == 200, f"{topic}: http_status {e}")
                if field:
                    check(e["field"] == field, f"{topic}: field {e}")
            cr = s.call(WIKI, {"topic": "redirect"}, run="run-1", step=10)
            e = err_of(cr, "http_error")
            check(e["http_status"] == 302 and e["retryable"] is False, f"redirect: {e}")
            cr = s.call(PUB, {"webhook_id": "team", "content": "x"}, run="run-1", step=11)
            e = err_of(cr, "bad_response")
            check(e["field"] == "message_id" and e["http_status"] == 200
                  and e["retryable"] is False, f"bad message_id: {e}")
            paths = [p for p, _ in Fixture.seen]
            check("/stolen" not in paths, f"the redirect was followed: {paths}")
            check(all(a == (f"Bot {WEBHOOK_TOKEN}" if p.startswith("/webhooks/")
                            else f"Bearer {WIKI_TOKEN}") for p, a in Fixture.seen),
                  f"authorization sent: {Fixture.seen}")
    finally:
        srv.shutdown()
        srv.server_close()


run_test(main)
