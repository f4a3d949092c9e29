#!/usr/bin/env python3
"""servicesd's typed calls against mock-services: lookup_wiki (durability -> 2 snippets,
summary "2 snippets"), publish_summary (a 12-hex message_id and posted_at), Describe (the
exec_service tool lists exactly the profile's services; an unknown profile is ERR_NOT_FOUND),
unknown_service, and not_allowed for a service the profile does not grant — asked for directly
over the socket, refused, logged at warn with run and profile, never sent upstream nor
recorded. A service with no services.conf line is `unavailable`."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (WEBHOOK_TOKEN, Servicesd, check, err_of, need_servicesd,  # noqa: E402
                    ok_result, run_test)


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "calls") as s:
        m = s.standard()
        s.write_profile("notool", ["lookup_wiki"], tools=("skill",))
        s.write_profile("none", None)
        s.start()
        lookups(s, m)
        publishes(s, m)
        describes(s)
        refusals(s, m)
    with Servicesd(args, "unconf") as s:
        unconfigured(s)
    return 0


def lookups(s, m):
    cr = s.call("lookup_wiki", {"topic": "durability"}, run="run-a", step=1)
    res = ok_result(cr)
    check(cr["service"] == "lookup_wiki" and cr["summary"] == "2 snippets"
          and cr["replayed"] is False, f"lookup reply: {cr}")
    check(res["topic"] == "durability" and len(res["snippets"]) == 2, f"lookup result: {res}")
    for sn in res["snippets"]:
        check(set(sn) == {"url", "excerpt"} and sn["url"].startswith("https://")
              and sn["excerpt"], f"snippet: {sn}")
    st = m.stats()
    check(st["snippets"] == 1 and st["by_topic"] == {"durability": 1}
          and st["by_status"] == {"200": 1}, f"mock after one lookup: {st}")

    # A topic the wiki knows nothing on: a result with no snippets, not an error.
    cr = s.call("lookup_wiki", {"topic": "no such topic"}, run="run-a", step=2)
    res = ok_result(cr)
    check(res == {"topic": "no such topic", "snippets": []} and cr["summary"] == "0 snippets",
          f"unknown topic: {cr}")
    cr = s.call("lookup_wiki", {"topic": "sandboxing"}, run="run-a", step=3)
    check(len(ok_result(cr)["snippets"]) == 1 and cr["summary"] == "1 snippet", f"{cr}")
    rows = s.rows()
    check(rows == [("run-a:1", "done", "lookup_wiki"), ("run-a:2", "done", "lookup_wiki"),
                   ("run-a:3", "done", "lookup_wiki")], f"store rows: {rows}")


def publishes(s, m):
    before = int(time.time())
    cr = s.call("publish_summary", {"webhook_id": "team-42", "content": "Release 1.2 is out."},
                run="run-b", step=7)
    res = ok_result(cr)
    after = int(time.time())
    check(set(res) == {"message_id", "posted_at"}, f"publish result keys: {res}")
    check(re.fullmatch(r"[0-9a-f]{12}", res["message_id"]) is not None, f"message_id: {res}")
    check(isinstance(res["posted_at"], int) and before - 2 <= res["posted_at"] <= after + 2,
          f"posted_at {res['posted_at']} not in [{before}, {after}]")
    check(cr["summary"] == f"message_id={res['message_id']}" and cr["replayed"] is False,
          f"publish reply: {cr}")
    st = m.stats()
    check(st["webhooks"] == 1 and st["posts"] == 1 and st["by_webhook"] == {"team-42": 1}
          and st["idempotency_keys"] == 1, f"mock after one publish: {st}")
    # The mock checked `Authorization: Bot <token>`; its log shows the scheme, never the token.
    check("POST /webhooks/team-42" in m.log(), f"mock log:\n{m.log()}")
    check(WEBHOOK_TOKEN not in s.log() and WEBHOOK_TOKEN not in json.dumps(cr),
          "the webhook token leaked into the log or the reply")


def describes(s):
    r = s.describe("both")
    d = r["describe"]
    check(d["services"] == ["lookup_wiki", "publish_summary"], f"describe both: {d}")
    tool = json.loads(d["tool_json"])
    check(tool["type"] == "function" and tool["function"]["name"] == "exec_service",
          f"tool: {tool}")
    enum = tool["function"]["parameters"]["properties"]["service_name"]["enum"]
    check(enum == ["lookup_wiki", "publish_summary"], f"service_name enum: {enum}")

    d = s.describe("wiki")["describe"]
    check(d["services"] == ["lookup_wiki"], f"describe wiki: {d}")
    tool = json.loads(d["tool_json"])
    check(tool["function"]["parameters"]["properties"]["service_name"]["enum"]
          == ["lookup_wiki"], f"wiki enum: {tool}")
    check("publish_summary" not in d["tool_json"], "the wiki profile's tool mentions "
          "publish_summary")
    check("lookup_wiki:" in tool["function"]["description"], f"{tool}")

    # exec_service with no services: the tool says so, and every call is refused.
    d = s.describe("none")["describe"]
    tool = json.loads(d["tool_json"])
    check(d.get("services", []) == [] and "No services are currently enabled"
          in tool["function"]["description"], f"describe none: {d}")
    e = err_of(s.call("lookup_wiki", {"topic": "x"}, run="run-n", step=1, profile="none"),
               "not_allowed")
    check("does not allow" in e["message"], f"{e}")

    r = s.describe("no-such-profile")
    e = r.get("error") or {}
    check(e.get("status_name") == "ERR_NOT_FOUND" and "no-such-profile" in e.get("message", "")
          and "describe" not in r, f"unknown profile: {r}")


def refusals(s, m):
    before = m.stats()
    rows_before = s.rows()
    cr = s.call("no_such_service", {"x": 1}, run="run-c", step=1)
    e = err_of(cr, "unknown_service")
    check(e["field"] == "service_name" and "no_such_service" in e["message"]
          and e["retryable"] is False and e["http_status"] == 0, f"unknown service: {e}")

    # The profile does not list publish_summary: refused whatever the caller says.
    cr = s.call("publish_summary", {"webhook_id": "team-42", "content": "x"}, run="run-c",
                step=2, profile="wiki")
    e = err_of(cr, "not_allowed")
    check(e["field"] == "service_name" and "wiki" in e["message"]
          and "publish_summary" in e["message"] and e["retryable"] is False,
          f"not allowed: {e}")
    lines = [kv for kv in s.log_kv("service refused") if kv.get("run") == "run-c"]
    check(len(lines) == 1, f"expected one refusal line for run-c:\n{s.log()}")
    kv = lines[0]
    check(kv["level"] == "warn" and kv["step"] == "2" and kv["profile"] == "wiki"
          and kv["service"] == "publish_summary" and kv["why"] == "does not allow this service",
          f"refusal line: {kv}")

    # A profile servicesd has not loaded, and one without the exec_service tool.
    e = err_of(s.call("lookup_wiki", {"topic": "x"}, run="run-c", step=3, profile="ghost"),
               "not_allowed")
    check("ghost" in e["message"], f"{e}")
    e = err_of(s.call("lookup_wiki", {"topic": "x"}, run="run-c", step=4, profile="notool"),
               "not_allowed")
    check("exec_service" in e["message"], f"{e}")
    whys = {kv["profile"]: kv["why"] for kv in s.log_kv("service refused")}
    check(whys.get("ghost") == "is not a profile servicesd has loaded"
          and whys.get("notool") == "does not list the exec_service tool", f"{whys}")

    # Nothing reached the upstream, nothing was recorded.
    after = m.stats()
    check(after["requests"] == before["requests"], f"a refused call reached the mock: {after}")
    check(s.rows() == rows_before, f"a refused call was recorded: {s.rows()}")
    # The same key is still free for an allowed call.
    cr = s.call("lookup_wiki", {"topic": "replay"}, run="run-c", step=2, profile="wiki")
    check(ok_result(cr)["topic"] == "replay" and cr["replayed"] is False, f"{cr}")


def unconfigured(s):
    """publish_summary allowed by the profile but absent from services.conf."""
    m = s.mock()
    s.write_tokens()
    s.point_at(m, services=("lookup_wiki",))
    s.write_profile("both", ["lookup_wiki", "publish_summary"])
    s.start()
    cr = s.call("publish_summary", {"webhook_id": "t", "content": "x"}, run="run-u", step=1)
    e = err_of(cr, "unavailable")
    check("publish_summary" in e["message"] and "not configured" in e["message"]
          and e["retryable"] is False, f"unconfigured: {e}")
    check(s.rows() == [], f"an unconfigured call was recorded: {s.rows()}")
    check(m.stats()["requests"] == 0, "an unconfigured call reached the mock")
    # The configured one works beside it.
    check(ok_result(s.call("lookup_wiki", {"topic": "durability"}, run="run-u", step=2))
          ["topic"] == "durability", "lookup beside an unconfigured service")


run_test(main)
