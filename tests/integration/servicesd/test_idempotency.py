#!/usr/bin/env python3
"""Exactly-once publishing. The same key (run:step) twice: the second answer comes from the
store (replayed=true, same message_id) and the webhook is called once. The same key with other
arguments or another service: conflict. Two calls with one key sent together: one upstream
request, both get the same message_id. kill -9 while a publish is in flight (mock --hang-ms):
the intent is on disk; after a restart the same key is sent upstream again with the same
Idempotency-Key, so the mock posts once, and the caller gets a result."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, err_of, need_servicesd, ok_result,  # noqa: E402
                    run_test, wait_for)

PUB = "publish_summary"
WIKI = "lookup_wiki"
ARGS = {"webhook_id": "team-7", "content": "Nightly build is green."}


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "idem") as s:
        m = s.standard(mock_extra=("--latency-ms", "200"))
        s.start()
        same_key(s, m)
        conflicts(s, m)
        together(s, m)
    crash(args)
    return 0


def same_key(s, m):
    first = s.call(PUB, ARGS, run="run-1", step=3)
    res = ok_result(first)
    check(first["replayed"] is False, f"first: {first}")
    second = s.call(PUB, ARGS, run="run-1", step=3)
    check(second["replayed"] is True and ok_result(second) == res
          and second["summary"] == first["summary"]
          and second["duration_ms"] == first["duration_ms"], f"second: {second} vs {first}")
    # Spelled differently (key order, spacing), the same arguments are the same call.
    third = s.call(PUB, '{ "content": "Nightly build is green.", "webhook_id": "team-7" }',
                   run="run-1", step=3)
    check(third["replayed"] is True and ok_result(third) == res, f"respelled: {third}")
    st = m.stats()
    check(st["webhooks"] == 1 and st["posts"] == 1 and st["idempotent_replays"] == 0,
          f"the webhook must be called once: {st}")
    # The next step is a new call.
    cr = s.call(PUB, ARGS, run="run-1", step=4)
    check(cr["replayed"] is False and ok_result(cr)["message_id"] != res["message_id"],
          f"next step: {cr}")
    check(m.stats()["posts"] == 2, "the next step did not post")


def conflicts(s, m):
    before = m.stats()["webhooks"]
    cr = s.call(PUB, dict(ARGS, content="Something else."), run="run-1", step=3)
    e = err_of(cr, "conflict")
    check("step 3" in e["message"] and "run-1" in e["message"] and e["retryable"] is False,
          f"conflict: {e}")
    cr = s.call(WIKI, {"topic": "durability"}, run="run-1", step=3)
    err_of(cr, "conflict")
    check(m.stats()["webhooks"] == before, "a conflicting call reached the mock")
    # The record is untouched: the original call is still answered from it.
    cr = s.call(PUB, ARGS, run="run-1", step=3)
    check(cr["replayed"] is True and not cr.get("error"), f"after conflicts: {cr}")


def together(s, m):
    before = m.stats()
    outs = s.send(call_req(PUB, ARGS, run="run-2", step=1),
                  call_req(PUB, ARGS, run="run-2", step=1),
                  call_req(PUB, dict(ARGS, content="other"), run="run-2", step=1))
    a, b, c = (o["reply"]["call"] for o in outs)
    ra, rb = ok_result(a), ok_result(b)
    check(ra["message_id"] == rb["message_id"] and ra == rb, f"two answers: {a} / {b}")
    check(sorted([a["replayed"], b["replayed"]]) == [False, True],
          f"exactly one of the two was the original: {a} / {b}")
    err_of(c, "conflict")
    after = m.stats()
    check(after["webhooks"] - before["webhooks"] == 1 and after["posts"] - before["posts"] == 1,
          f"two calls with one key made {after['webhooks'] - before['webhooks']} requests")


def crash(args):
    with Servicesd(args, "crash") as s:
        m = s.standard(mock_extra=("--hang-ms", "1500"))
        s.start()
        key = "run-9:2"
        bg = s.popen(call_req(PUB, ARGS, run="run-9", step=2), timeout=20000)
        # The intent is committed before the request starts.
        wait_for(lambda: os.path.exists(s.db) and s.rows() == [(key, "intent", PUB)], 10,
                 "the intent row")
        time.sleep(0.3)  # the request reaches the mock (loopback: well under this)
        s.kill9()
        bg.kill()
        bg.wait(5)
        check(s.rows() == [(key, "intent", PUB)], f"after kill -9: {s.rows()}")
        # The hung request finishes at the mock after its caller died: one post.
        wait_for(lambda: m.stats()["webhooks"] == 1, 10, "the first request to finish")
        check(m.stats()["posts"] == 1, f"{m.stats()}")

        s.start()
        t = time.monotonic()
        cr = s.call(PUB, ARGS, run="run-9", step=2, timeout=20000)
        took = time.monotonic() - t
        res = ok_result(cr)
        check(cr["replayed"] is False and took >= 1.4,
              f"the resent call must go upstream again ({took:.2f} s): {cr}")
        st = m.stats()
        check(st["webhooks"] == 2 and st["posts"] == 1 and st["idempotent_replays"] == 1
              and st["idempotency_keys"] == 1,
              f"the second request must carry the same Idempotency-Key: {st}")
        check(s.rows() == [(key, "done", PUB)], f"rows: {s.rows()}")
        resumed = s.log_kv("service call resumed after a restart")
        check(len(resumed) == 1 and resumed[0]["run"] == "run-9" and resumed[0]["step"] == "2"
              and resumed[0]["retry"] == "keyed", f"resume line: {resumed}")
        # From now on the store answers.
        again = s.call(PUB, ARGS, run="run-9", step=2)
        check(again["replayed"] is True and ok_result(again) == res, f"{again}")
        check(m.stats()["webhooks"] == 2, "a recorded outcome reached the mock")


run_test(main)
