#!/usr/bin/env python3
"""Argument validation: each kind of bad argument is a typed `validation` error that names the
field and the rule (unknown field, wrong type, missing required field, the webhook_id pattern,
content over 4000 characters, a topic under its minimum length, arguments that are not a JSON
object or not JSON at all); args_json over 256 KiB is `too_large`. None of them reaches the
upstream or the idempotency store, and the same key then works for valid arguments."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, err_of, need_servicesd, ok_result,  # noqa: E402
                    run_test)

PUB = "publish_summary"
WIKI = "lookup_wiki"

# (service, args, field, words the message must hold)
CASES = [
    (WIKI, {"topic": "x", "extra": 1}, "extra", ["unknown field", "topic"]),
    (WIKI, {"topic": 5}, "topic", ["expected string", "number"]),
    (PUB, {"webhook_id": "team", "content": ["x"]}, "content", ["expected string", "array"]),
    (WIKI, {}, "topic", ["required"]),
    (WIKI, {"topic": None}, "topic", ["required"]),
    (PUB, {"webhook_id": "team"}, "content", ["required"]),
    (PUB, {"content": "hi"}, "webhook_id", ["required"]),
    (PUB, {"webhook_id": "team 1", "content": "x"}, "webhook_id",
     ["pattern", "^[A-Za-z0-9._-]{1,64}$", '"team 1"']),
    (PUB, {"webhook_id": "a" * 65, "content": "x"}, "webhook_id", ["at most 64", "65"]),
    (PUB, {"webhook_id": "team", "content": "x" * 4001}, "content",
     ["at most 4000", "maxLength", "4001"]),
    (WIKI, {"topic": ""}, "topic", ["at least 1", "minLength"]),
    (WIKI, {"topic": "a/b"}, "topic", ["pattern"]),
    (WIKI, "[1, 2]", "", ["JSON object", "array"]),
    (WIKI, '"durability"', "", ["JSON object", "string"]),
    (WIKI, "not json", "", ["not valid JSON"]),
]


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "valid") as s:
        m = s.standard()
        s.start()
        for i, (svc, a, field, words) in enumerate(CASES):
            cr = s.call(svc, a, run="run-v", step=i + 1)
            e = err_of(cr, "validation")
            check(e["field"] == field, f"case {i} {svc} {str(a)[:80]}: field {e['field']!r}, "
                  f"expected {field!r}: {e}")
            for w in words:
                check(w in e["message"], f"case {i}: message lacks {w!r}: {e['message']!r}")
            check(e["retryable"] is False and e["http_status"] == 0 and cr["service"] == svc
                  and cr["replayed"] is False, f"case {i}: {cr}")
            check("\n" not in e["message"] and len(e["message"]) <= 512, f"case {i}: {e}")

        # 4000 characters (code points, not bytes) is the limit, not over it.
        cr = s.call(PUB, {"webhook_id": "team", "content": "é" * 4000}, run="run-v", step=100)
        check(ok_result(cr)["message_id"], f"4000 characters refused: {cr}")

        # Over 256 KiB of arguments: too_large, decided before parsing (via a file: too long
        # for a command line).
        big = s.path("big.json")
        with open(big, "w") as f:
            json.dump(call_req(WIKI, json.dumps({"topic": "x" * (256 * 1024)}), run="run-v",
                               step=101), f)
        (o,) = s.send("@" + big)
        e = err_of(o["reply"]["call"], "too_large")
        check(e["field"] == "args" and "262144" in e["message"] and e["retryable"] is False,
              f"too large: {e}")

        st = m.stats()
        check(st["requests"] == 1 and st["posts"] == 1,
              f"only the one valid call may reach the mock: {st}")
        check(s.rows() == [("run-v:100", "done", PUB)], f"store rows: {s.rows()}")
        # A key refused for its arguments is not used up.
        cr = s.call(WIKI, {"topic": "durability"}, run="run-v", step=1)
        check(ok_result(cr)["topic"] == "durability" and cr["replayed"] is False, f"{cr}")
    return 0


run_test(main)
