#!/usr/bin/env python3
"""SIGHUP reloads profiles, secrets and services.conf: narrowing a profile's services takes
effect (not_allowed, and Describe lists no publish_summary), a new profile is served, a
services.conf line pointing at another upstream is followed, a removed line makes the service
unavailable, a rotated secret is sent; a reload that fails (a bad services.conf line, a broken
profile) keeps the previous generation serving. A call in flight during a reload finishes with
what it was admitted with."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, err_of, need_servicesd, ok_result,  # noqa: E402
                    run_test, wait_for)

WIKI = "lookup_wiki"
PUB = "publish_summary"
PARGS = {"webhook_id": "team", "content": "x"}


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "reload") as s:
        m = s.standard(mock_extra=("--latency-ms", "50"))
        s.start()
        step = iter(range(1, 1000))
        check(ok_result(s.call(PUB, PARGS, step=next(step)))["message_id"], "publish before")

        # Narrow `both` to lookup_wiki while a publish is in flight.
        slow = s.mock("slow", extra=("--hang-ms", "1500"))
        s.point_at(slow)
        s.hup()
        bg = s.popen(call_req(PUB, PARGS, step=100), timeout=15000)
        wait_for(lambda: ("run-1:100", "intent", PUB) in s.rows(), 10, "the call's intent")
        s.point_at(m)
        s.write_profile("both", [WIKI])
        s.hup()
        cr = s.call(PUB, PARGS, step=next(step))
        e = err_of(cr, "not_allowed")
        check("does not allow" in e["message"], f"{e}")
        d = s.describe("both")["describe"]
        check(d["services"] == [WIKI] and PUB not in d["tool_json"], f"describe: {d}")
        out, _ = bg.communicate(timeout=20)
        cr = json.loads(out)["reply"]["call"]
        check(ok_result(cr)["message_id"] and slow.stats()["posts"] == 1,
              f"the call in flight was admitted before the reload and must finish: {cr}")
        check(ok_result(s.call(WIKI, {"topic": "durability"}, step=next(step)))["topic"]
              == "durability", "lookup after narrowing")

        # A new profile.
        check(s.describe("fresh").get("error", {}).get("status_name") == "ERR_NOT_FOUND", "")
        s.write_profile("fresh", [PUB])
        s.hup()
        check(s.describe("fresh")["describe"]["services"] == [PUB], "new profile")
        check(ok_result(s.call(PUB, PARGS, step=next(step), profile="fresh"))["message_id"], "")

        # services.conf: lookup_wiki moves to another upstream, then is removed.
        m2 = s.mock("second")
        s.write_services(f"lookup_wiki url={m2.url}\npublish_summary url={m.url}\n")
        s.hup()
        before = m.stats()["snippets"]
        ok_result(s.call(WIKI, {"topic": "replay"}, step=next(step)))
        check(m2.stats()["snippets"] == 1 and m.stats()["snippets"] == before,
              "lookup_wiki did not follow services.conf")
        s.write_services(f"publish_summary url={m.url}\n")
        s.hup()
        e = err_of(s.call(WIKI, {"topic": "replay"}, step=next(step)), "unavailable")
        check("not configured" in e["message"], f"{e}")

        # A rotated secret is what gets sent.
        s.point_at(m)
        s.write_secret("wiki-token", "rotated-but-wrong")
        s.hup()
        e = err_of(s.call(WIKI, {"topic": "replay"}, step=next(step)), "unauthorized")
        check(e["http_status"] == 401, f"{e}")
        s.write_tokens()
        s.hup()
        ok_result(s.call(WIKI, {"topic": "replay"}, step=next(step)))

        # Failed reloads keep the previous generation.
        s.write_services(f"lookup_wiki url={m.url}\nnot_a_service url={m.url}\n")
        s.hup()
        check("reload failed" in s.log() and "services.conf:2" in s.log(),
              f"bad services.conf reload not logged:\n{s.log()[-2000:]}")
        ok_result(s.call(PUB, PARGS, step=next(step), profile="fresh"))
        check(s.alive(), "servicesd died on a bad reload")
        s.point_at(m)
        s.write("etc/profiles/fresh.yaml", "name: fresh\ntools: [exec_service\n")
        n_failed = s.log().count("reload failed")
        s.hup()
        check(s.log().count("reload failed") == n_failed + 1, f"broken profile:\n{s.log()}")
        check(s.describe("fresh")["describe"]["services"] == [PUB],
              "a broken profile reload dropped the previous profile")
        ok_result(s.call(PUB, PARGS, step=next(step), profile="fresh"))
    return 0


run_test(main)
