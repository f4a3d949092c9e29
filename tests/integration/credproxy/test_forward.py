#!/usr/bin/env python3
"""credproxy as a forward proxy on its relay socket (PROXY v2 header, no sandbox): an allowed
request gets the rule's headers injected (overwriting the agent's own), and everything the
profile does not allow is refused with the exact status and a reason naming the profile:
other hosts, methods, paths, ports, dot segments, Host/target mismatch, userinfo, numeric
host spellings, a special address reached through a wildcard rule, CONNECT to a port no rule
names, an unknown profile. Keep-alive: two requests on one connection. Each request has one
egress log line, which never holds a secret."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import (Conn, assert_no_secret, check, get, proxy_v2, refused,  # noqa: E402
                   run_standard)


def run(cp, std):
    E, wiki, echo = std.E, std.wiki, std.echo

    # --- allowed: both headers injected, the upstream sees the target's Host.
    n = len(echo.seen)
    r = cp.ask(get("wiki.local", "/snippets/durability", E))
    check(r.status == 200, f"allowed request: {r!r}")
    seen = echo.seen[n:]
    check(len(seen) == 1, f"upstream saw {seen}")
    up = seen[0]
    check(up.path == "/snippets/durability", f"upstream path {up.path!r} (origin-form expected)")
    check(up.header_all("Authorization") == ["Bearer " + wiki], f"injected Authorization: {up}")
    check(up.header_all("X-Api-Key") == [wiki], f"injected X-Api-Key: {up}")
    check(up.header("Host") == f"wiki.local:{E}", f"upstream Host {up.header('Host')!r}")
    check(not any(k.lower().startswith("proxy-") for k, _ in up.headers),
          f"hop-by-hop proxy headers forwarded: {up}")

    # --- the agent's own Authorization (any case) is overwritten, never duplicated.
    n = len(echo.seen)
    r = cp.ask(get("wiki.local", "/snippets/forged", E,
                   headers=[("Authorization", "Bearer agent-forged"),
                            ("authorization", "Basic YWdlbnQ6Zm9yZ2Vk"),
                            ("X-API-KEY", "agent-key")]))
    check(r.status == 200, f"request with forged headers: {r!r}")
    up = echo.seen[n:][0]
    check(up.header_all("Authorization") == ["Bearer " + wiki],
          f"agent's Authorization not overwritten: {up.header_all('Authorization')}")
    check(up.header_all("X-Api-Key") == [wiki], f"agent's X-Api-Key not overwritten: {up}")

    # --- a host no rule names: 403, the reason names the host and the profile.
    n = len(echo.seen)
    r = cp.ask(get("evil.example", "/"))
    why = refused(r, 403, "evil.example")
    check("no rule" in why, f"reason for an unknown host: {why!r}")
    r = cp.ask(get("127.0.0.1", "/", E))
    refused(r, 403, "127.0.0.1")
    # --- a method the rule does not list; a path outside its prefixes.
    r = cp.ask(get("wiki.local", "/snippets/x", E, method="DELETE"))
    refused(r, 403, "DELETE", "method")
    r = cp.ask(get("wiki.local", "/admin", E))
    refused(r, 403, "/admin", "path")
    r = cp.ask(get("wiki.local", "/snippetsX", E))
    refused(r, 403, "path")
    # --- dot segments (plain and percent-encoded) are refused before prefix matching.
    for p in ("/snippets/../admin", "/snippets/%2e%2e/admin", "/snippets/%2E%2E/admin",
              "/snippets/./../admin", "/snippets/..%2fadmin"):
        r = cp.ask(get("wiki.local", p, E))
        check(r.status == 400 and r.why, f"{p}: expected 400 with a reason, got {r!r}")
    # --- a port the rule does not name (no port in a rule = 80/443; ours name E only).
    r = cp.ask(get("wiki.local", "/snippets/x"))
    refused(r, 403, "port")
    r = cp.ask(get("wiki.local", "/snippets/x", 8080))
    refused(r, 403, "port")
    check(len(echo.seen) == n, f"refused requests reached the upstream: {echo.seen[n:]}")

    # --- Host header disagreeing with the target; userinfo; numeric host spellings.
    r = cp.ask(get("wiki.local", "/snippets/x", E, host_header="evil.example"))
    check(r.status == 400 and r.why, f"Host mismatch: {r!r}")
    r = cp.ask(get("wiki.local", "/snippets/x", E, host_header=f"wiki.local:{E + 1}"))
    check(r.status == 400 and r.why, f"Host with another port: {r!r}")
    r = cp.ask((f"GET http://user:pw@wiki.local:{E}/snippets/x HTTP/1.1\r\n"
                f"Host: wiki.local:{E}\r\n\r\n").encode())
    check(r.status == 400 and r.why, f"userinfo in the target: {r!r}")
    r = cp.ask(("GET http://wiki.local@evil.example/ HTTP/1.1\r\n"
                "Host: evil.example\r\n\r\n").encode())
    check(r.status == 400 and r.why, f"userinfo naming an allowed host: {r!r}")
    for h in ("2130706433", "0x7f.1", "127.1", "0177.0.0.1", "0x7f000001"):
        r = cp.ask(get(h, "/"))
        check(r.status == 400 and r.why, f"numeric host {h}: expected 400, got {r!r}")
        r = cp.ask(f"CONNECT {h}:443 HTTP/1.1\r\nHost: {h}:443\r\n\r\n".encode())
        check(r.status == 400 and r.why, f"CONNECT to numeric host {h}: got {r!r}")
    check(len(echo.seen) == n, f"refused requests reached the upstream: {echo.seen[n:]}")

    # --- mixed case and a trailing dot are normalised (then allowed) or refused, never
    # matched loosely: if allowed, the credential goes to exactly that host.
    r = cp.ask(get("WIKI.Local.", "/snippets/case", E))
    check(r.status in (200, 400), f"WIKI.Local.: {r!r}")
    if r.status == 200:
        up = echo.seen[-1]
        check(up.path == "/snippets/case" and up.header_all("Authorization") == ["Bearer " + wiki],
              f"normalised host: {up}")
    n = len(echo.seen)

    # --- SSRF: a wildcard rule reaching a loopback address is refused (403, the class
    # named); an exact rule naming a host that maps to loopback is allowed (above).
    r = cp.ask(get("a.corp.local", "/", E))
    refused(r, 403, "loopback")
    r = cp.ask(f"CONNECT b.corp.local:{E} HTTP/1.1\r\nHost: b.corp.local:{E}\r\n\r\n".encode())
    refused(r, 403, "loopback")
    for h, words in (("priv.corp.local", ["private"]), ("meta.corp.local", []),
                     ("cgnat.corp.local", ["cgnat"]), ("zero.corp.local", [])):
        r = cp.ask(get(h, "/", E))
        why = refused(r, 403, *words)
        check(any(k in why for k in ("loopback", "private", "link-local", "metadata", "cgnat",
                                     "unspecified", "ipv4-mapped", "unique-local", "special")),
              f"{h}: the reason does not name the address class: {why!r}")
    check(len(echo.seen) == n, f"special address reached: {echo.seen[n:]}")

    # --- CONNECT to a port no rule names; to a host no rule names.
    for target in ("wiki.local:22", "wiki.local:443", "evil.example:8443", "evil.example:443"):
        r = cp.ask(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        refused(r, 403)
    r = cp.ask("CONNECT wiki.local:22 HTTP/1.1\r\nHost: wiki.local:22\r\n\r\n".encode())
    refused(r, 403, "port")

    # --- an unknown profile in the PROXY header: 403 naming it.
    r = cp.ask(get("wiki.local", "/snippets/x", E), profile="nobody")
    refused(r, 403, "nobody", profile="nobody")
    check(len(echo.seen) == n, f"unknown profile reached the upstream: {echo.seen[n:]}")

    # --- keep-alive: two requests on one connection; a refusal does not end it either
    # unless credproxy says Connection: close.
    with cp.conn(run="run-ka") as c:
        r1 = c.request(get("wiki.local", "/snippets/ka1", E))
        r2 = c.request(get("echo.local", "/ka2", E, method="POST", body=b"hello"))
        check(r1.status == 200 and r2.status == 200, f"keep-alive: {r1!r} {r2!r}")
        r3 = c.request(get("evil.example", "/"))
        check(r3.status == 403, f"refusal on a kept-alive connection: {r3!r}")
        if (r3.header("Connection") or "").lower() != "close":
            r4 = c.request(get("wiki.local", "/snippets/ka4", E))
            check(r4.status == 200, f"after a refusal on the same connection: {r4!r}")
    ups = [s for s in echo.seen[n:] if "ka" in s.path]
    check([u.path for u in ups][:2] == ["/snippets/ka1", "/ka2"], f"keep-alive upstream: {ups}")
    check(ups[1].body == b"hello" and ups[1].header_all("Authorization") == ["Bearer " + std.echo_tok],
          f"POST body and the echo rule's credential: {ups[1]}")

    # --- the egress log: one logfmt line per request, names of injected headers, never
    # their values.
    time.sleep(0.3)
    lines = cp.egress_lines()
    ok = [ln for ln in lines if "path=/snippets/durability" in ln]
    check(len(ok) == 1, f"egress lines for /snippets/durability: {ok}\nall: {lines[-20:]}")
    ln = ok[0]
    for want in ("run=run-1", "profile=wiki-bot", "method=GET", "host=wiki.local", f"port={E}",
                 "status=200", "decision=allow", "rule=wiki-bot#0", "Authorization", "X-Api-Key"):
        check(want in ln, f"egress line lacks {want!r}: {ln}")
    deny = [ln for ln in lines if "host=evil.example" in ln and "method=GET" in ln]
    check(deny and "status=403" in deny[0] and "decision=deny" in deny[0]
          and "profile wiki-bot" in deny[0], f"refusal line: {deny}")
    ka = [ln for ln in lines if "run=run-ka" in ln]
    check(len(ka) >= 3, f"keep-alive requests logged one line each: {ka}")
    std.assert_log_clean()
    # The durable egress log has the same records, and no value.
    import sqlite3
    db = cp.path("state/credproxy/egress.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM egress")]
    finally:
        con.close()
    check(any(r.get("path") == "/snippets/durability" and r.get("status") == 200
              and r.get("run") == "run-1" for r in rows), f"egress.db rows: {rows[:5]}")
    check(any(r.get("host") == "evil.example" and r.get("status") == 403 for r in rows),
          "egress.db lacks the refusal of evil.example")
    for suffix in ("", "-wal"):
        if os.path.exists(db + suffix):
            with open(db + suffix, "rb") as f:
                data = f.read()
            for s in std.all_secrets():
                assert_no_secret(data, s, "egress.db" + suffix)
    check(cp.alive(), "credproxy died")
    # A fresh PROXY-headed connection still works at the end.
    with Conn(path=cp.relay, header=proxy_v2("run-end", "wiki-bot")) as c:
        check(c.request(get("wiki.local", "/snippets/end", E)).status == 200, "final request")


if __name__ == "__main__":
    run_standard("forward", run)
