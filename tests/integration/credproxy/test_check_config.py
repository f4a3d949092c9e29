#!/usr/bin/env python3
"""credproxy --check-config: a valid home passes (exit 0); a profile using a missing
{{secret:X}}, a provider naming a missing secret, or a malformed egress rule fails
(non-zero) naming X or the rule — and no secret value is ever printed. SIGHUP: a good reload
takes effect (a rotated secret is injected), a bad one keeps the previous policy serving."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import (assert_no_secret, check, get, new_secret, run_standard,  # noqa: E402
                   wait_for)


def no_values(p, std, what):
    out = p.stdout + p.stderr
    for s in std.all_secrets():
        assert_no_secret(out, s, f"--check-config output ({what})")


def run(cp, std):
    cp.write_conf()
    cp._own()
    p = cp.cli("--check-config")
    check(p.returncode == 0, f"valid home: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    no_values(p, std, "valid")
    check(not os.path.exists(cp.relay), "--check-config bound the relay socket")

    # A rule using a secret that does not exist.
    cp.write("etc/profiles/broken.yaml",
             "name: broken\nmodel: mock:none\nsystem_prompt: |\n  x\n"
             "sandbox: { network: proxy }\negress:\n"
             "  - host: wiki.local\n    inject:\n"
             "      Authorization: \"Bearer {{secret:missing-x}}\"\n")
    p = cp.cli("--check-config")
    out = p.stdout + p.stderr
    check(p.returncode != 0, f"missing secret: exit 0\n{out}")
    check("missing-x" in out and "broken" in out, f"error does not name the secret and "
          f"profile:\n{out}")
    no_values(p, std, "missing secret")
    os.unlink(cp.path("etc/profiles/broken.yaml"))

    # A provider naming a secret that does not exist.
    with open(cp.path("etc/providers.conf")) as f:
        good_providers = f.read()
    cp.write_providers(good_providers + "ghost http://127.0.0.1:1 bearer ghost-key\n")
    p = cp.cli("--check-config")
    out = p.stdout + p.stderr
    check(p.returncode != 0 and "ghost-key" in out, f"provider with a missing secret:\n{out}")
    check("providers.conf:7" in out, f"error does not give path:line:\n{out}")
    no_values(p, std, "provider secret")
    # An unknown auth scheme.
    cp.write_providers(good_providers + "odd http://127.0.0.1:1 digest llm-key\n")
    p = cp.cli("--check-config")
    out = p.stdout + p.stderr
    check(p.returncode != 0 and "providers.conf:7" in out, f"unknown auth scheme:\n{out}")
    no_values(p, std, "auth scheme")
    cp.write_providers(good_providers)

    # A bad config key.
    cp.conf["no_such_key"] = "1"
    cp.write_conf()
    p = cp.cli("--check-config")
    check(p.returncode != 0 and "no_such_key" in p.stdout + p.stderr, f"unknown key: {p}")
    del cp.conf["no_such_key"]
    cp.write_conf()
    check(cp.cli("--check-config").returncode == 0, "config good again")

    # --- SIGHUP: rotate a secret; then break a profile (the old policy keeps serving).
    cp.start()
    E = std.E
    r = cp.ask(get("wiki.local", "/snippets/before", E))
    check(r.status == 200 and std.echo.seen[-1].header("X-Api-Key") == std.wiki, f"{r!r}")
    rotated = new_secret("wk2")
    cp.write_secret("wiki-token", rotated)
    cp._own()
    cp.proc.send_signal(signal.SIGHUP)

    def rotated_in():
        r = cp.ask(get("wiki.local", "/snippets/after", E))
        return r.status == 200 and std.echo.seen[-1].header("X-Api-Key") == rotated
    wait_for(rotated_in, 10, "the rotated secret to be injected after SIGHUP")
    r = cp.ask(get("wiki.local", "/snippets/echo2", E))
    check(b"[redacted:wiki-token]" in r.body and rotated.encode() not in r.body,
          f"the rotated secret is scrubbed: {r.body!r}")

    cp.write("etc/profiles/broken.yaml",
             "name: broken\nmodel: mock:none\nsystem_prompt: |\n  x\n"
             "sandbox: { network: proxy }\negress:\n"
             "  - host: wiki.local\n    inject:\n"
             "      Authorization: \"Bearer {{secret:missing-x}}\"\n")
    with open(cp.path("etc/profiles/wiki-bot.yaml")) as f:
        wiki_bot = f.read()
    cp.write("etc/profiles/wiki-bot.yaml", wiki_bot.replace("/snippets/", "/other/"))
    n_log = len(cp.log_lines())
    cp.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("missing-x" in ln for ln in cp.log_lines()[n_log:]), 10,
             "the failed reload to be logged, naming missing-x")
    time.sleep(0.3)
    r = cp.ask(get("wiki.local", "/snippets/kept", E))
    check(r.status == 200 and std.echo.seen[-1].header("X-Api-Key") == rotated,
          f"a bad reload must keep the previous policy: {r!r}")
    check(cp.alive(), "credproxy died on a bad reload")
    std.all_secrets = lambda: [std.wiki, rotated, std.echo_tok, std.llm]
    std.assert_log_clean()


if __name__ == "__main__":
    run_standard("checkcfg", run, start=False)
