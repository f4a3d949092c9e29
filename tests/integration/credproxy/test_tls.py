#!/usr/bin/env python3
"""HTTPS through CONNECT. To a host whose rule injects, credproxy intercepts: the client
(Python ssl trusting only HOME/state/credproxy/ca.crt) gets a leaf minted for the host
(cached: the same on the next connection), requests inside the tunnel get the credential
(seen by the TLS upstream, which credproxy verified against upstream_ca_file) and come back
scrubbed; a ClientHello whose SNI is not the CONNECT host, or has none, fails. To a host
whose rule injects nothing, the tunnel is blind: the client sees the upstream's own
certificate. An upstream whose certificate no trusted CA signed gets 502. The CA is made
once (ca.key 0600, ca.crt 0644) and survives a restart."""
import os
import ssl
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import Cases, Conn, assert_no_secret, check, run_standard  # noqa: E402


def connect(cp, authority, run_id="run-tls"):
    c = cp.conn(run=run_id)
    r = c.request(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    return c, r


def wrap(c, ctx, sni):
    """TLS over the tunnel; returns a Conn reading from the TLS socket."""
    check(c.buf == b"", f"bytes after the CONNECT response: {c.buf!r}")
    ss = ctx.wrap_socket(c.sock, server_hostname=sni)
    t = Conn.__new__(Conn)
    t.sock = ss
    t.buf = b""
    return t


def handshake_fails(cp, authority, ctx, sni, what):
    c, r = connect(cp, authority)
    check(r.status == 200, f"{what}: CONNECT {r!r}")
    try:
        t = wrap(c, ctx, sni)
        # TLS 1.3: a server's refusal may surface on the first read.
        t.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = t.sock.recv(100)
        check(got == b"", f"{what}: the handshake succeeded and got {got!r}")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError, OSError):
        pass
    finally:
        c.close()


def run(cp, std):
    T, wiki, tls = std.T, std.wiki, std.tls
    cases = Cases()
    key, crt = cp.path("state/credproxy/ca.key"), cp.ca
    check(os.path.exists(crt) and os.path.exists(key), "no platform CA after start")
    check(stat.S_IMODE(os.stat(key).st_mode) == 0o600, f"ca.key mode {oct(os.stat(key).st_mode)}")
    check(stat.S_IMODE(os.stat(crt).st_mode) == 0o644, f"ca.crt mode {oct(os.stat(crt).st_mode)}")
    with open(crt, "rb") as f:
        ca_pem = f.read()

    only_cp = ssl.create_default_context(cafile=crt)  # trusts credproxy's CA and nothing else
    only_cp.load_verify_locations(cafile=crt)

    # --- interception: CONNECT then TLS; two requests in the tunnel.
    n = len(tls.seen)
    c, r = connect(cp, f"tls.local:{T}")
    check(r.status == 200, f"CONNECT tls.local: {r!r}")
    t = wrap(c, only_cp, "tls.local")
    cert = t.sock.getpeercert()
    der1 = t.sock.getpeercert(binary_form=True)
    sans = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    check(sans == ["tls.local"], f"minted leaf SAN {cert.get('subjectAltName')}")
    r1 = t.request(f"GET /snippets/x HTTP/1.1\r\nHost: tls.local:{T}\r\n\r\n".encode())
    r2 = t.request(f"POST /y HTTP/1.1\r\nHost: tls.local:{T}\r\nContent-Length: 2\r\n\r\nhi"
                   .encode())
    check(r1.status == 200 and r2.status == 200, f"inside the tunnel: {r1!r} {r2!r}")
    seen = tls.seen[n:]
    check([s.path for s in seen] == ["/snippets/x", "/y"], f"TLS upstream saw {seen}")
    for s in seen:
        check(s.header_all("Authorization") == ["Bearer " + wiki], f"not injected over TLS: {s}")
    check(seen[1].body == b"hi", f"body over TLS: {seen[1]}")
    check(r1.header("X-Seen-Authorization") == "Bearer [redacted:wiki-token]", f"{r1!r}")
    assert_no_secret(r1.raw_head + r1.body + r2.raw_head + r2.body, wiki, "intercepted responses")
    # Inside the tunnel the Host must still be the CONNECT host: 400, like any refusal
    # inside an intercepted tunnel, sent over TLS.
    def host_mismatch():
        r3 = t.request("GET /z HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode())
        check(r3.status == 400 and r3.why, f"Host mismatch inside the tunnel: {r3!r}")
    cases.run("Host mismatch inside an intercepted tunnel", host_mismatch)
    c.close()
    check(len(tls.seen) == n + 2, f"mismatched Host reached the upstream: {tls.seen[n:]}")
    # A path the rule does not allow inside the tunnel: 403 over TLS.
    def refused_inside():
        c, r = connect(cp, f"tls.local:{T}")
        t = wrap(c, only_cp, "tls.local")
        r = t.request(f"DELETE /x HTTP/1.1\r\nHost: tls.local:{T}\r\n\r\n".encode())
        c.close()
        check(r.status == 403 and "method" in r.why and "profile wiki-bot" in r.why,
              f"DELETE inside an intercepted tunnel: {r!r}")
    cases.run("a refusal inside an intercepted tunnel", refused_inside)

    # The leaf is cached: the same certificate on the next connection.
    def cached():
        c, r = connect(cp, f"tls.local:{T}")
        t = wrap(c, only_cp, "tls.local")
        check(t.sock.getpeercert(binary_form=True) == der1, "a new leaf for the same host")
        check(t.request(f"GET /again HTTP/1.1\r\nHost: tls.local:{T}\r\n\r\n".encode())
              .status == 200, "second intercepted connection")
        c.close()
    cases.run("leaf cache", cached)

    # --- SNI other than the CONNECT host, or none: the handshake fails.
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    n = len(tls.seen)
    handshake_fails(cp, f"tls.local:{T}", loose, "other.local", "SNI other.local for tls.local")
    handshake_fails(cp, f"tls.local:{T}", loose, None, "no SNI for tls.local")
    check(len(tls.seen) == n, f"SNI mismatch reached the upstream: {tls.seen[n:]}")
    # Plain HTTP where TLS is expected: closed, nothing forwarded.
    c, r = connect(cp, f"tls.local:{T}")
    c.send(f"GET /plain HTTP/1.1\r\nHost: tls.local:{T}\r\n\r\n".encode())
    check(c.closed(10), "plain HTTP inside an intercepted tunnel was not closed")
    c.close()
    check(len(tls.seen) == n, "plain HTTP in an intercepted tunnel reached the upstream")

    # --- blind tunnel: the upstream's own certificate, no credential.
    def blind():
        test_ca = ssl.create_default_context(cafile=std.test_ca)
        c, r = connect(cp, f"plain.local:{T}", "run-blind")
        check(r.status == 200, f"CONNECT plain.local: {r!r}")
        t = wrap(c, test_ca, "plain.local")
        with open(std.leaf) as f:
            leaf_der = ssl.PEM_cert_to_DER_cert(f.read())
        check(t.sock.getpeercert(binary_form=True) == leaf_der,
              "blind tunnel: not the upstream's cert")
        r = t.request(f"GET /blind HTTP/1.1\r\nHost: plain.local:{T}\r\n"
                      f"Authorization: Bearer agent-own\r\n\r\n".encode())
        check(r.status == 200, f"blind tunnel request: {r!r}")
        up = tls.seen[-1]
        check(up.path == "/blind" and up.header_all("Authorization") == ["Bearer agent-own"],
              f"blind tunnel must pass bytes untouched: {up}")
        c.close()
    cases.run("blind tunnel", blind)

    # --- an upstream certificate no trusted CA signed: 502 (at CONNECT, or for the first
    # request inside the tunnel), never a request to it.
    def untrusted():
        c, r = connect(cp, f"bad.local:{std.B}")
        if r.status == 200:
            t = wrap(c, only_cp, "bad.local")
            r = t.request(f"GET /x HTTP/1.1\r\nHost: bad.local:{std.B}\r\n\r\n".encode())
        c.close()
        check(r.status == 502 and r.why, f"untrusted upstream certificate: {r!r}")
    cases.run("untrusted upstream certificate", untrusted)
    check(std.bad.seen == [], f"request sent to an unverified upstream: {std.bad.seen}")

    time.sleep(0.3)
    lines = cp.egress_lines()
    check(any("method=CONNECT" in ln and "host=plain.local" in ln for ln in lines),
          f"no egress line for the blind tunnel: {lines[-10:]}")
    check(any("host=tls.local" in ln and "path=/snippets/x" in ln and "status=200" in ln
              for ln in lines), f"no egress line for the intercepted request: {lines[-10:]}")
    std.assert_log_clean()

    # --- the CA survives a restart unchanged.
    cp.stop()
    cp.start()
    with open(crt, "rb") as f:
        check(f.read() == ca_pem, "the platform CA changed across a restart")
    c, r = connect(cp, f"tls.local:{T}")
    t = wrap(c, only_cp, "tls.local")
    check(t.request(f"GET /after HTTP/1.1\r\nHost: tls.local:{T}\r\n\r\n".encode()).status == 200,
          "interception after a restart")
    c.close()
    cases.check()


if __name__ == "__main__":
    run_standard("tls", run, with_tls=True)
