#!/usr/bin/env python3
"""Redirects and scrubbing. A redirect comes back to the client unfollowed (the upstream
sees one request), and the client's follow-up to another host carries no credential; a
redirect to a host no rule names is refused when followed. An upstream reflecting the
injected secret (raw in a header and the body, in standard and URL-safe base64 at every
alignment, percent-encoded with upper- and lower-case hex) reaches the client with
[redacted:NAME] instead, and the egress log counts the redactions."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import assert_no_secret, check, get, refused, run_standard  # noqa: E402


def run(cp, std):
    E, wiki, echo = std.E, std.wiki, std.echo

    # --- redirect: passed back, not followed.
    n = len(echo.seen)
    to = f"http://other.local:{E}/landing"
    r = cp.ask(get("redir.local", f"/redir?to={to}", E))
    check(r.status == 302, f"redirect: {r!r}")
    check(r.header("Location") == to, f"Location changed: {r.header('Location')!r}")
    time.sleep(0.5)
    seen = echo.seen[n:]
    check(len(seen) == 1 and seen[0].header("Host") == f"redir.local:{E}",
          f"credproxy followed the redirect: {seen}")
    check(seen[0].header_all("Authorization") == ["Bearer " + wiki], f"redir.local injection: {seen}")
    # The client follows: other.local's rule injects nothing, so nothing is sent.
    r = cp.ask(get("other.local", "/landing", E, headers=[("Referer", f"http://redir.local:{E}/")]))
    check(r.status == 200, f"follow-up: {r!r}")
    up = echo.seen[-1]
    check(up.header("Host") == f"other.local:{E}" and up.path == "/landing", f"follow-up: {up}")
    check(up.header_all("Authorization") == [] and up.header_all("X-Api-Key") == [],
          f"the redirected request carried a credential: {up}")
    check(r.header("X-Seen-Authorization") is None, f"follow-up reflected a credential: {r!r}")
    # A redirect to a host no rule names: the follow-up is refused.
    r = cp.ask(get("redir.local", "/redir?to=http://evil.example/steal", E))
    check(r.status == 302 and r.header("Location") == "http://evil.example/steal", f"{r!r}")
    refused(cp.ask(get("evil.example", "/steal")), 403, "evil.example")

    # --- scrubbing: raw reflection in a header and in the body.
    r = cp.ask(get("wiki.local", "/snippets/echo", E))
    check(r.status == 200, f"echo: {r!r}")
    check(r.header("X-Seen-Authorization") == "Bearer [redacted:wiki-token]",
          f"reflected header not scrubbed: {r.header('X-Seen-Authorization')!r}")
    body = r.body.decode("latin-1")
    check("Authorization: Bearer [redacted:wiki-token]" in body, f"body: {body!r}")
    check("X-Api-Key: [redacted:wiki-token]" in body, f"body: {body!r}")
    assert_no_secret(r.raw_head + r.body, wiki, "the echo response")
    # The same through the other rule and its own secret name.
    r = cp.ask(get("echo.local", "/e", E, method="POST", body=b"payload"))
    check(r.status == 200 and b"Authorization: Bearer [redacted:echo-token]" in r.body,
          f"echo.local: {r!r}")
    check(r.body.endswith(b"\npayload"), f"request body passed through: {r.body[-40:]!r}")
    assert_no_secret(r.raw_head + r.body, std.echo_tok, "the echo.local response")

    # --- base64, every alignment, standard and URL-safe. The fixture encodes each header
    # value; X-Api-Key is the bare secret, Authorization has "Bearer " (7 bytes) before it.
    for i in range(3):
        r = cp.ask(get("wiki.local", "/snippets/b64", E, headers=[("X-Pad", "p" * i)]))
        check(r.status == 200, f"b64: {r!r}")
        assert_no_secret(r.raw_head + r.body, wiki, f"the base64 echo (pad {i})")
        check(r.body.count(b"[redacted:wiki-token]") >= 4,
              f"base64 forms not redacted (pad {i}): {r.body!r}")

    # --- percent-encoded, upper and lower hex.
    r = cp.ask(get("wiki.local", "/snippets/pct", E))
    check(r.status == 200, f"pct: {r!r}")
    assert_no_secret(r.raw_head + r.body, wiki, "the percent-encoded echo")
    check(r.body.count(b"[redacted:wiki-token]") >= 4, f"pct forms not redacted: {r.body!r}")

    # --- a response that never reflects anything is byte-for-byte untouched.
    r = cp.ask(get("other.local", "/status?c=204", E))
    check(r.status == 204, f"204 passthrough: {r!r}")
    r = cp.ask(get("other.local", "/plain", E))
    check(r.status == 200 and b"[redacted" not in r.body, f"no false redaction: {r!r}")

    # --- the log counts redactions and never holds a value.
    time.sleep(0.3)
    lines = [ln for ln in cp.egress_lines() if "path=/snippets/echo" in ln]
    check(len(lines) == 1, f"egress lines for /snippets/echo: {lines}")
    m = re.search(r"\bredactions=(\d+)", lines[0])
    check(m and int(m.group(1)) >= 3, f"redaction count (header + 2 body lines): {lines[0]}")
    lines = [ln for ln in cp.egress_lines() if "path=/plain" in ln]
    check(lines and "redactions=0" in lines[0], f"clean response counted redactions: {lines}")
    std.assert_log_clean()
    check(cp.alive(), "credproxy died")


if __name__ == "__main__":
    run_standard("scrub", run)
