#!/usr/bin/env python3
"""The provider route on the api socket: /providers/<name>/<rest> goes to the provider's
base URL + /<rest> with its key injected in its scheme (Bearer, x-api-key, a named header,
none), overwriting whatever the caller sent; the request body arrives unchanged; an upstream
429 with Retry-After and its body reaches the caller unchanged; an unknown provider is 404;
no key appears in a response or the log. Requests without /providers/ are refused."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import assert_no_secret, check, run_standard  # noqa: E402

BODY = b'{"model":"scripted","messages":[{"role":"user","content":"hi"}]}'


def post(path, body=BODY, headers=()):
    h = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"{h}Content-Length: {len(body)}\r\n\r\n").encode() + body


def run(cp, std):
    echo, key = std.echo, std.llm

    # --- bearer, overwriting the caller's own Authorization.
    n = len(echo.seen)
    r = cp.api_ask(post("/providers/mock/v1/chat/completions",
                        headers=[("Authorization", "Bearer caller-forged")]))
    check(r.status == 200, f"mock provider: {r!r}")
    up = echo.seen[n:]
    check(len(up) == 1, f"upstream saw {up}")
    up = up[0]
    check(up.method == "POST" and up.path == "/v1/chat/completions", f"upstream request {up}")
    check(up.header_all("Authorization") == ["Bearer " + key], f"bearer key: {up}")
    check(up.body == BODY, f"body changed on the way: {up.body!r}")
    check(up.header("Host") == f"127.0.0.1:{std.E}", f"upstream Host {up.header('Host')!r}")
    assert_no_secret(r.raw_head + r.body, key, "the provider response")

    # --- x-api-key (base URL host from hosts_file), a named header, none.
    r = cp.api_ask(post("/providers/xkey/v1/messages"))
    up = echo.seen[-1]
    check(r.status == 200 and up.path == "/v1/messages", f"xkey: {r!r} {up}")
    check(up.header_all("x-api-key") == [key] and up.header_all("Authorization") == [],
          f"x-api-key scheme: {up}")
    r = cp.api_ask(post("/providers/named/v1/chat/completions"))
    up = echo.seen[-1]
    check(r.status == 200 and up.path == "/named/v1/chat/completions", f"named: {r!r} {up}")
    check(up.header_all("X-Custom-Key") == [key] and up.header_all("Authorization") == [],
          f"header:X-Custom-Key scheme: {up}")
    r = cp.api_ask(post("/providers/open/v1/chat/completions",
                        headers=[("Authorization", "Bearer caller-own")]))
    up = echo.seen[-1]
    check(r.status == 200 and up.path == "/v1/chat/completions", f"open: {r!r} {up}")
    check(all(key not in v for _, v in up.headers), f"a key went to a provider with none: {up}")
    # A GET (the model list) is forwarded too.
    r = cp.api_ask(b"GET /providers/mock/v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    check(r.status == 200 and echo.seen[-1].path == "/v1/models", f"GET models: {r!r}")

    # --- upstream errors reach the caller unchanged, Retry-After included.
    r = cp.api_ask(post("/providers/limited/v1/chat/completions"))
    check(r.status == 429, f"429 passthrough: {r!r}")
    check(r.header("Retry-After") == "7", f"Retry-After: {r.headers}")
    check(r.body == b'{"error":{"message":"slow down","type":"rate_limit"}}', f"429 body {r.body!r}")
    check(echo.seen[-1].path == "/ratelimit/v1/chat/completions", f"{echo.seen[-1]}")
    for code in (400, 401, 500, 503):
        r = cp.api_ask(post(f"/providers/open/status?c={code}"))
        check(r.status == code and r.body == b"status\n", f"{code} passthrough: {r!r}")

    # --- unknown provider: 404 with a reason; nothing forwarded.
    n = len(echo.seen)
    r = cp.api_ask(post("/providers/nosuch/v1/chat/completions"))
    check(r.status == 404 and r.why and "nosuch" in r.why, f"unknown provider: {r!r}")
    wrong = []
    for path in ("/v1/chat/completions", "/providers/", "/providers//v1/x"):
        r = cp.api_ask(post(path))
        if not (400 <= r.status < 500 and r.why):
            wrong.append(f"{path}: {r.status} {r.why!r}")
    # Dot segments would leave the provider's base path (limited's is /ratelimit): refused
    # as on the relay (cp_path_check), never forwarded.
    for path in ("/providers/mock/../open/v1/x", "/providers/mock/%2e%2e/x",
                 "/providers/limited/../../x", "/providers/limited/v1/..%2f..%2fx"):
        r = cp.api_ask(post(path))
        if r.status != 400 or not r.why:
            wrong.append(f"{path}: {r.status} {r.why!r}, upstream saw "
                         f"{[s.path for s in echo.seen[n:]]}")
    # An absolute-form (forward proxy) request is not a provider route.
    r = cp.api_ask(post(f"http://127.0.0.1:{std.E}/v1/chat/completions"))
    check(400 <= r.status < 500, f"absolute-form on the api socket: {r!r}")
    if len(echo.seen) != n:
        wrong.append(f"refused provider requests were forwarded: {[s.path for s in echo.seen[n:]]}")

    time.sleep(0.3)
    lines = [ln for ln in cp.egress_lines() if "host=mock" in ln or "mock" in ln]
    check(lines, "no egress line for a provider call")
    std.assert_log_clean()
    check(cp.alive(), "credproxy died")
    check(not wrong, "provider route requests handled wrongly:\n" + "\n".join(wrong))


if __name__ == "__main__":
    run_standard("providers", run)
