#!/usr/bin/env python3
"""servicesd --check-config and --health. A good home: exit 0, "configuration OK", the
effective configuration (every key, the paths resolved), each configured service listed, no
socket bound, no secret value printed. A configured service whose secret is missing: exit 1
naming the service and the secret. A bad services.conf line (unknown service, a URL that is
not http(s), a timeout out of range, a duplicate): exit 1 with path:line. An unknown config
key: exit 1. --health: 1 while nothing serves, 0 once servicesd is up, 1 again after it
stopped."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (WEBHOOK_TOKEN, WIKI_TOKEN, Servicesd, check, me,  # noqa: E402
                    need_servicesd, run_test)


def out_of(p):
    return p.stdout + p.stderr


def no_secrets(p, what):
    o = out_of(p)
    check(WIKI_TOKEN not in o and WEBHOOK_TOKEN not in o, f"{what}: a secret was printed:\n{o}")


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "check") as s:
        m = s.standard()
        p = s.cli("--check-config")
        check(p.returncode == 0 and "configuration OK" in p.stdout,
              f"good home: exit {p.returncode}\n{out_of(p)}")
        check(f"service lookup_wiki: {m.url} secret=wiki-token" in p.stdout
              and f"service publish_summary: {m.url} secret=webhook-token" in p.stdout,
              f"services not listed:\n{p.stdout}")
        check("2 profile(s)" in p.stdout and "2 configured service(s)" in p.stdout, p.stdout)
        # The effective configuration: every key, and the paths resolved against HOME.
        lines = p.stdout.splitlines()
        check("max_inflight = 256" in lines and "user = " in lines
              and f"allow_users = {me()}" in lines, f"no effective config:\n{p.stdout}")
        check(f"effective endpoint=ipc://{s.sock} profiles_dir={s.path('etc/profiles')} "
              f"secrets_dir={s.path('etc/secrets/servicesd')} "
              f"services_file={s.path('etc/services.conf')} db={s.db}" in lines,
              f"no resolved paths:\n{p.stdout}")
        check(not os.path.exists(s.sock), "--check-config bound the socket")
        no_secrets(p, "good home")

        # A configured service whose secret is missing.
        os.unlink(s.path("etc/secrets/servicesd/webhook-token"))
        p = s.cli("--check-config")
        o = out_of(p)
        check(p.returncode == 1, f"missing secret: exit {p.returncode}\n{o}")
        check("service publish_summary needs secret webhook-token" in o
              and s.path("etc/secrets/servicesd") in o, f"missing secret message:\n{o}")
        check("configuration OK" not in o, o)
        no_secrets(p, "missing secret")
        # A secret name services.conf chose.
        s.write_services(f"lookup_wiki url={m.url} secret=team-wiki\n")
        p = s.cli("--check-config")
        check(p.returncode == 1 and "service lookup_wiki needs secret team-wiki" in out_of(p),
              f"named secret: {out_of(p)}")
        s.write_secret("team-wiki", "x")
        p = s.cli("--check-config")
        check(p.returncode == 0, f"named secret present: {out_of(p)}")
        check("publish_summary is allowed but not configured" in p.stdout,
              f"no warning for an allowed service without a line:\n{p.stdout}")
        s.write_tokens()

        # Bad services.conf lines: path:line.
        conf = s.path("etc/services.conf")
        good = f"# upstreams\nlookup_wiki url={m.url}\n"
        for bad, words in ((f"bogus_service url={m.url}", ["bogus_service"]),
                           ("publish_summary url=ftp://127.0.0.1/x", []),
                           (f"publish_summary url={m.url} timeout_ms=0", ["timeout"]),
                           (f"publish_summary url={m.url} timeout_ms=999999", ["timeout"]),
                           (f"lookup_wiki url={m.url}", ["lookup_wiki"]),
                           (f"publish_summary url={m.url} colour=blue", ["colour"]),
                           ("publish_summary", [])):
            s.write_services(good + bad + "\n")
            p = s.cli("--check-config")
            o = out_of(p)
            check(p.returncode == 1, f"{bad!r}: exit {p.returncode}\n{o}")
            check(f"{conf}:3" in o, f"{bad!r}: no path:line ({conf}:3) in\n{o}")
            for w in words:
                check(w in o, f"{bad!r}: {w!r} not in\n{o}")
        s.point_at(m)

        # An unknown config key.
        s.conf["no_such_key"] = "1"
        p = s.cli("--check-config")
        check(p.returncode == 1 and "no_such_key" in out_of(p), f"unknown key: {out_of(p)}")
        del s.conf["no_such_key"]
        check(s.cli("--check-config").returncode == 0, "good again")

        # --health.
        p = s.cli("--health", timeout=15)
        check(p.returncode == 1, f"health while down: exit {p.returncode}\n{out_of(p)}")
        s.start()
        p = s.cli("--health", timeout=15)
        check(p.returncode == 0 and "serving" in p.stdout,
              f"health while up: exit {p.returncode}\n{out_of(p)}")
        s.stop()
        p = s.cli("--health", timeout=15)
        check(p.returncode == 1, f"health after stop: exit {p.returncode}\n{out_of(p)}")
    return 0


run_test(main)
