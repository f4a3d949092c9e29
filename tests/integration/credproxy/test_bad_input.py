#!/usr/bin/env python3
"""Bad input on credproxy's sockets (issue 7, "Bad input"): malformed request lines,
origin-form on the relay, CL+TE, duplicate Content-Length, obs-fold, too many and too large
headers, slowloris (408 after header_timeout_s), a missing or malformed PROXY v2 header, a
PROXY header where none belongs (api socket). Each gets its exact status (or a closed
connection where no HTTP can be spoken) and a log line, nothing reaches the upstream, and
after each one a good request on a new connection still works: the daemon keeps serving."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import Conn, PP2_SIG, TestFailure, check, get, proxy_v2, run_standard  # noqa: E402

HEADER_TIMEOUT_S = 2


def run(cp, std):
    E = std.E
    echo = std.echo
    good_n = [0]

    def still_serving(after):
        good_n[0] += 1
        r = cp.ask(get("wiki.local", f"/snippets/good{good_n[0]}", E))
        check(r.status == 200, f"after {after}: a good request on a new connection got {r!r}")
        check(cp.alive(), f"credproxy died after {after}")

    failures = []

    def bad(name, raw, status, profile="wiki-bot", must_close=True):
        """One bad input; a wrong outcome is collected (every case runs, all are reported)."""
        try:
            bad1(name, raw, status, profile, must_close)
        except TestFailure as e:
            failures.append(str(e))
        except (OSError, EOFError) as e:
            failures.append(f"{name}: {e!r}")
            still_serving(name)

    def bad1(name, raw, status, profile, must_close):
        n_up = len(echo.seen)
        n_log = len(cp.log_lines())
        with cp.conn(profile=profile, run="run-bad") as c:
            c.send(raw)
            try:
                r = c.response()
            except EOFError:
                raise AssertionError(f"{name}: connection closed without a {status} response")
            want = status if isinstance(status, tuple) else (status,)
            check(r.status in want, f"{name}: expected {status}, got {r!r}")
            status = r.status
            check(r.why, f"{name}: {status} without X-Credproxy-Reason: {r!r}")
            check(r.body.strip() and b"\n" not in r.body.strip(),
                  f"{name}: reason body is not one line: {r.body!r}")
            # After a request it could not frame, credproxy must not read on (RFC 9112
            # section 6.3 and 11.2: no guessing where the next request starts).
            if must_close:
                check(c.closed(5), f"{name}: connection left open after {status}")
        check(len(echo.seen) == n_up, f"{name}: reached the upstream: {echo.seen[n_up:]}")
        time.sleep(0.1)
        # One log line for it (msg=egress, or a refusal line for a request too malformed
        # to name a host), with the status and the run.
        new = cp.log_lines()[n_log:]
        check(any(f"status={status}" in ln and "run=run-bad" in ln for ln in new),
              f"{name}: no log line with status={status}: {new}")
        still_serving(name)

    host = f"wiki.local:{E}"
    target = f"http://{host}/snippets/x"
    bad("garbage request line", b"HELLO\r\n\r\n", 400)
    bad("request line without version", f"GET {target}\r\nHost: {host}\r\n\r\n".encode(), 400)
    bad("NUL in the target", f"GET {target}\x00 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 400)
    bad("origin-form on the relay", f"GET /snippets/x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
        400, must_close=False)
    bad("Content-Length with Transfer-Encoding",
        (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
         f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode(), 400)
    bad("duplicate Content-Length",
        (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n"
         f"Content-Length: 4\r\n\r\nabcd").encode(), 400)
    bad("Content-Length list", (f"POST {target} HTTP/1.1\r\nHost: {host}\r\n"
                                f"Content-Length: 3, 3\r\n\r\nabc").encode(), 400)
    bad("obs-fold", (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n"
                     f"  b\r\n\r\n").encode(), 400)
    bad("space before the colon", (f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
                                   f"X-Bad : a\r\n\r\n").encode(), 400)
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    bad("200 headers", f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{many}\r\n".encode(), 431)
    big = "a" * (64 * 1024)
    bad("a 64 KiB header", f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\n\r\n".encode(),
        431)
    # A request line longer than max_header_bytes: 414 (URI Too Long) or 431 (the head).
    bad("a 64 KiB request line", f"GET {target}?{big} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
        (414, 431))

    # --- slowloris: headers trickling in, never finished: 408 after header_timeout_s
    # (total time for the headers, not idle time between bytes).
    n_up = len(echo.seen)
    with cp.conn(run="run-slow", timeout=30) as c:
        t0 = time.monotonic()
        c.send(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n".encode())
        got = None
        i = 0
        while time.monotonic() - t0 < 4 * HEADER_TIMEOUT_S + 5:
            c.sock.settimeout(0.4)
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                chunk = None
            except ConnectionResetError:
                chunk = b""
            if chunk == b"":
                break
            if chunk:
                c.buf += chunk
                if b"\r\n\r\n" in c.buf:
                    got = time.monotonic() - t0
                    break
            try:
                c.send(b"X-Drip-%d: %d\r\n" % (i, i))
            except (BrokenPipeError, ConnectionResetError):
                break
            i += 1
        check(got is not None, f"slowloris: no response after {time.monotonic() - t0:.1f}s "
              f"(buffer {c.buf[:200]!r})")
        c.sock.settimeout(10)
        r = c.response()
        check(r.status == 408 and r.why, f"slowloris: expected 408, got {r!r}")
        check(HEADER_TIMEOUT_S - 0.5 <= got <= HEADER_TIMEOUT_S + 3,
              f"slowloris: 408 after {got:.1f}s, header_timeout_s is {HEADER_TIMEOUT_S}")
        check(c.closed(5), "slowloris: connection left open after 408")
    check(len(echo.seen) == n_up, "slowloris request reached the upstream")
    still_serving("slowloris")

    # --- the PROXY v2 header is required on the relay socket.
    def no_response_or(status, c, name):
        """The connection is closed; if credproxy answered first, it is with status."""
        check(c.closed(5), f"{name}: connection not closed")
        if c.buf:
            r = c.read_head()
            check(r.status == status, f"{name}: answered {r!r}, expected {status} or nothing")

    def header_case(name, data):
        try:
            header_case1(name, data)
        except (TestFailure, OSError, EOFError) as e:
            failures.append(f"{name}: {e}")
            still_serving(name)

    def header_case1(name, data):
        n_log = len(cp.log_lines())
        n_up = len(echo.seen)
        with Conn(path=cp.relay) as c:
            c.send(data)
            no_response_or(400, c, name)
        time.sleep(0.1)
        new = cp.log_lines()[n_log:]
        check(new, f"{name}: no log line")
        check(len(echo.seen) == n_up, f"{name}: reached the upstream")
        still_serving(name)

    req = get("wiki.local", "/snippets/x", E)
    header_case("no PROXY header", req)
    header_case("PROXY v1 header", b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n" + req)
    hdr = proxy_v2("run-x", "wiki-bot")
    header_case("PROXY v2 LOCAL command", hdr[:12] + b"\x20" + hdr[13:] + req)
    header_case("PROXY v2 version 3", hdr[:12] + b"\x31" + hdr[13:] + req)
    tlv_run = struct.pack("!BH", 0xE0, 5) + b"run-x"
    header_case("no profile TLV", PP2_SIG + b"\x21\x00" + struct.pack("!H", len(tlv_run)) +
                tlv_run + req)
    header_case("profile with a space", proxy_v2("run-x", "wiki bot") + req)
    header_case("two profile TLVs", proxy_v2("run-x", "wiki-bot", [(0xE1, b"other")]) + req)
    header_case("TLV overruns the header", PP2_SIG + b"\x21\x00" + struct.pack("!H", 4) +
                struct.pack("!BH", 0xE0, 200) + b"r" + req)
    header_case("header longer than 512", proxy_v2("r", "wiki-bot", [(0xEE, b"x" * 580)]) + req)
    header_case("value over 128 bytes", proxy_v2("r" * 129, "wiki-bot") + req)

    # An unknown TLV type is skipped; a header arriving a byte at a time is fine.
    with Conn(path=cp.relay, header=proxy_v2("run-x", "wiki-bot", [(0xEA, b"hello")])) as c:
        r = c.request(get("wiki.local", "/snippets/unknown-tlv", E))
        check(r.status == 200, f"unknown TLV type must be skipped: {r!r}")
    with Conn(path=cp.relay) as c:
        for b in proxy_v2("run-slowhdr", "wiki-bot"):
            c.send(bytes([b]))
            time.sleep(0.005)
        r = c.request(get("wiki.local", "/snippets/bytewise", E))
        check(r.status == 200, f"PROXY header sent a byte at a time: {r!r}")
    # A PROXY header, then nothing: the header timeout closes it too.
    with Conn(path=cp.relay, timeout=30) as c:
        c.send(proxy_v2("run-idle", "wiki-bot")[:10])
        t0 = time.monotonic()
        check(c.closed(HEADER_TIMEOUT_S + 5), "half a PROXY header held open past the timeout")
        check(time.monotonic() - t0 >= HEADER_TIMEOUT_S - 0.5, "closed before the timeout")
    still_serving("half a PROXY header")

    # --- a PROXY header on the api socket (no header belongs there): refused.
    with Conn(path=cp.api) as c:
        c.send(proxy_v2("run-x", "wiki-bot") + b"GET /providers/open/v1/models HTTP/1.1\r\n"
               b"Host: localhost\r\n\r\n")
        no_response_or(400, c, "PROXY header on the api socket")
    n_up = len(echo.seen)
    r = cp.api_ask(b"GET /providers/open/v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    check(r.status == 200 and len(echo.seen) == n_up + 1, f"api socket after bad input: {r!r}")

    # --- peers: only relay_users (root) on the relay socket, api_users on the api socket.
    # A client running as nobody is refused (closed, or no permission to connect at all).
    if os.geteuid() == 0:
        import subprocess
        probe = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_UNIX)\n"
                 "s.settimeout(5)\n"
                 "try:\n"
                 "    s.connect(sys.argv[1])\n"
                 "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
                 "    print('GOT', s.recv(100))\n"
                 "except OSError as e:\n"
                 "    print('ERR', e.errno)\n")
        for sock, data in ((cp.relay, proxy_v2("run-nobody", "wiki-bot") + req),
                           (cp.api, b"GET /providers/open/v1/models HTTP/1.1\r\n"
                                    b"Host: localhost\r\n\r\n")):
            n_up = len(echo.seen)
            p = subprocess.run(["/usr/bin/python3", "-c", probe, sock, data.hex()],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=20, preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
            out = p.stdout.strip()
            if not (out.startswith("ERR") or out == "GOT b''"):
                failures.append(f"uid 65534 on {os.path.basename(sock)}: {out}")
            if len(echo.seen) != n_up:
                failures.append(f"uid 65534 on {os.path.basename(sock)} reached the upstream")
        still_serving("peers that are not allowed")

    # --- many bad connections at once do not starve a good one.
    socks = []
    for i in range(50):
        c = cp.conn(run=f"run-many{i}")
        c.send(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n".encode())
        socks.append(c)
    still_serving("50 half-open connections")
    for c in socks:
        c.close()

    check(cp.alive(), "credproxy died")
    std.assert_log_clean()
    check(not failures, f"{len(failures)} bad inputs handled wrongly:\n" + "\n".join(failures))


if __name__ == "__main__":
    run_standard("badinput", run, sets=(f"header_timeout_s={HEADER_TIMEOUT_S}",))
