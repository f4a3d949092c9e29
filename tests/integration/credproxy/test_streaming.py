#!/usr/bin/env python3
"""Streaming and timeouts. A chunked SSE response reaches the client as it arrives: the first
event is read while the upstream still holds the response open (it waits for the test to
release it), through a rule that injects nothing, through one that injects (so the scrubber
is in the path) and on the provider route. Large bodies pass intact both ways. A slow upstream
within the timeout answers; one slower than idle_timeout_s gets 504 with a reason, an
upstream that is not listening 502; the daemon keeps serving."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import Conn, TestFailure, check, get, run_standard, wait_readable  # noqa: E402

IDLE_S = 3


def sse_first_event(std, c, what):
    """Reads the head and the first event while the upstream holds the stream; then releases
    it and reads to the end. c has had the request sent."""
    std.echo.srv.release.clear()
    c.sock.settimeout(10)
    r = c.read_head()
    check(r.status == 200, f"{what}: {r!r}")
    check("text/event-stream" in (r.header("Content-Type") or ""), f"{what}: {r!r}")
    check(not std.echo.srv.release.is_set(), "released early")
    got = b""
    t0 = time.monotonic()
    chunked = "chunked" in (r.header("Transfer-Encoding") or "").lower()
    while b"data: first\n\n" not in got:
        check(time.monotonic() - t0 < 8, f"{what}: the first event did not arrive while the "
              f"upstream held the stream open (got {got!r}); the response is buffered")
        try:
            if chunked:
                got += c.read_chunk()
            else:
                if not c.buf:
                    check(wait_readable(c.sock, 8), f"{what}: nothing to read; got {got!r}")
                    c._more()
                got += c.buf
                c.buf = b""
        except (EOFError, OSError) as e:
            raise TestFailure(f"{what}: the first event did not arrive while the upstream held "
                              f"the stream open ({time.monotonic() - t0:.1f}s, got {got!r}); "
                              f"then the read failed: {e!r}")
    check(b"last" not in got, f"{what}: the stream ended before release?")
    std.echo.release()
    if chunked:
        while True:
            ch = c.read_chunk()
            if not ch:
                break
            got += ch
    else:
        got += c.read_body(r)
    check(got.endswith(b"data: last released=1\n\n"), f"{what}: tail {got[-60:]!r}")
    return r


def run(cp, std):
    E, echo = std.E, std.echo

    # --- SSE through a rule without injection, one with injection (scrubber), and the
    # provider route (what the orchestrator's streaming model calls use).
    # Each case runs; wrong outcomes are collected and reported together at the end.
    failures = []

    def case(what, fn):
        try:
            fn()
        except (TestFailure, OSError, EOFError) as e:
            failures.append(f"{what}: {e}")
            std.echo.release()

    def sse_plain():
        with cp.conn() as c:
            c.send(get("stream.local", "/sse", E))
            sse_first_event(std, c, "SSE via stream.local (no injection)")

    def sse_injected():
        with cp.conn() as c:
            c.send(get("wiki.local", "/snippets/sse", E))
            sse_first_event(std, c, "SSE via wiki.local (injection, scrubbed)")

    def sse_provider():
        with Conn(path=cp.api) as c:
            body = b'{"model":"m","stream":true,"messages":[]}'
            c.send(b"POST /providers/mock/v1/sse HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
            sse_first_event(std, c, "SSE on the provider route")
    case("SSE without injection", sse_plain)
    case("SSE with injection", sse_injected)
    case("SSE on the provider route", sse_provider)

    # --- large bodies both ways (streamed; checked byte for byte).
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    r = cp.ask(get("echo.local", "/big", E, method="PUT", body=payload), timeout=60)
    check(r.status == 200, f"4 MiB PUT: {r.status}")
    check(r.body.endswith(b"\n" + payload), f"4 MiB body came back changed ({len(r.body)} bytes)")
    up = echo.seen[-1]
    check(up.body == payload, f"upstream got {len(up.body)} bytes, not the 4 MiB sent")
    # A chunked request body from the client.
    with cp.conn() as c:
        c.send(f"POST http://echo.local:{E}/chunked HTTP/1.1\r\nHost: echo.local:{E}\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n".encode())
        for part in (b"hello ", b"chunked ", b"world"):
            c.send(b"%x\r\n%s\r\n" % (len(part), part))
            time.sleep(0.05)
        c.send(b"0\r\n\r\n")
        r = c.response()
        check(r.status == 200 and r.body.endswith(b"\nhello chunked world"), f"chunked up: {r!r}")

    # --- a broken upstream: not HTTP, a head over max_header_bytes: 502 with a reason; a
    # body cut short: the client sees the connection end early (never a complete-looking
    # response), and credproxy goes on serving.
    def upstream_garbage():
        r = cp.ask(get("stream.local", "/garbage", E))
        check(r.status == 502 and r.why, f"upstream sent no HTTP: {r!r}")
    def upstream_hugehead():
        r = cp.ask(get("stream.local", "/hugehead", E))
        check(r.status == 502 and r.why, f"upstream head of 48 KiB: {r!r}")
    def upstream_truncated():
        with cp.conn() as c:
            c.send(get("stream.local", "/truncated", E))
            try:
                h = c.read_head()
            except EOFError:
                raise TestFailure("the connection was closed without a response: the client "
                                  "gets neither the upstream's head nor a 502 with a reason")
            if h.status == 502:
                check(h.why, f"502 without a reason: {h!r}")
                return
            check(h.status == 200, f"truncated: {h!r}")
            try:
                body = c.read_body(h)
            except (EOFError, OSError):
                return
            raise TestFailure(f"a body cut short by the upstream looked complete: {body!r}")
    case("upstream not HTTP", upstream_garbage)
    case("upstream head too large", upstream_hugehead)
    case("upstream body cut short", upstream_truncated)
    r = cp.ask(get("stream.local", "/after-broken", E))
    check(r.status == 200, f"after broken upstreams: {r!r}")

    # --- a slow upstream within the timeout; one past it: 504 (a short response_timeout_s).
    cp.stop()
    cp.start(f"response_timeout_s={IDLE_S}", f"connect_timeout_s={IDLE_S}")
    t0 = time.monotonic()
    r = cp.ask(get("stream.local", "/slow?s=1", E), timeout=30)
    check(r.status == 200 and r.body == b"slow\n", f"slow upstream (1 s): {r!r}")
    t0 = time.monotonic()
    r = cp.ask(get("stream.local", f"/slow?s={IDLE_S * 3}", E), timeout=60)
    took = time.monotonic() - t0
    check(r.status == 504 and r.why, f"upstream slower than response_timeout_s: {r!r}")
    check(IDLE_S - 0.5 <= took <= IDLE_S * 2 + 1, f"504 after {took:.1f}s (response_timeout_s={IDLE_S})")

    # --- nothing listening on the named port: 502 (connect refused), with a reason.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    r = cp.ask(get("stream.local", "/", dead))
    # stream.local's rule names port E only: a dead port is refused by policy first.
    check(r.status == 403, f"unnamed port: {r!r}")
    std.echo.stop()  # the fixture goes away; the rule stays
    r = cp.ask(get("stream.local", "/gone", E))
    check(r.status == 502 and r.why, f"upstream not listening: {r!r}")
    check(cp.alive(), "credproxy died")
    std.assert_log_clean()
    check(not failures, "\n".join(failures))


if __name__ == "__main__":
    run_standard("stream", run)
