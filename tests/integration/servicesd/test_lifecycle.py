#!/usr/bin/env python3
"""Concurrency and stopping. max_inflight bounds the upstream calls at once: with 2 and a mock
answering in 300 ms, six calls sent together take three waves; with the default, fifty take
one. SIGTERM while a call is in flight stops at once (it does not wait for the upstream) and
leaves no row for a read (SAFE services record no intent); after a restart the same key runs again and is
answered, logged as resumed. A second servicesd on the same home is refused the live one's
socket, which keeps serving."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, need_servicesd, ok_result, run_test,  # noqa: E402
                    wait_for)

WIKI = "lookup_wiki"


def main(args):
    if need_servicesd(args):
        return 77
    queue(args)
    sigterm(args)
    second(args)
    return 0


def second(args):
    """A second servicesd on the same home cannot take the socket of a live one."""
    with Servicesd(args, "second") as s:
        s.standard()
        s.start()
        p = subprocess.run([s.exe, "--home", s.home, "serve"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode != 0, f"a second servicesd started: exit {p.returncode}\n{p.stdout}")
        check("servicesd.sock" in p.stdout, f"the refusal names the socket:\n{p.stdout}")
        check(s.alive(), "the first servicesd died")
        cr = s.call(WIKI, {"topic": "durability"}, run="run-2", step=1)
        check(ok_result(cr)["topic"] == "durability", f"first still serving: {cr}")


def timed_batch(s, n, run):
    reqs = [call_req(WIKI, {"topic": "durability"}, run=run, step=i + 1) for i in range(n)]
    t = time.monotonic()
    outs = s.send(*reqs, timeout=30000)
    took = time.monotonic() - t
    for o in outs:
        cr = o["reply"]["call"]
        check(ok_result(cr)["topic"] == "durability" and cr["replayed"] is False, f"{cr}")
    return took


def queue(args):
    with Servicesd(args, "queue") as s:
        m = s.standard(mock_extra=("--latency-ms", "300"))
        s.start("max_inflight=2")
        took = timed_batch(s, 6, "run-q")
        check(took >= 0.85, f"6 calls with max_inflight=2 and 300 ms each took {took:.2f} s "
              "(expected three waves, >= 0.9 s)")
        check(m.stats()["snippets"] == 6, f"{m.stats()}")
        s.stop()
        s.start()
        took = timed_batch(s, 50, "run-p")
        check(took < 2.5, f"50 calls with max_inflight=256 took {took:.2f} s (one wave: ~0.3 s)")
        check(m.stats()["snippets"] == 56, f"{m.stats()}")


def sigterm(args):
    with Servicesd(args, "term") as s:
        m = s.standard(mock_extra=("--hang-ms", "4000"))
        s.start()
        bg = s.popen(call_req(WIKI, {"topic": "durability"}, run="run-t", step=5),
                     timeout=15000)
        # A read records no intent (store.c): nothing is written while it is in flight.
        wait_for(lambda: os.path.exists(s.db) and "servicesd" in s.log(), 10, "servicesd up")
        time.sleep(0.5)
        check(s.rows() == [], f"a read in flight wrote rows: {s.rows()}")
        t = time.monotonic()
        s.stop()
        took = time.monotonic() - t
        check(s.proc.returncode == 0 and took < 3,
              f"SIGTERM with a call in flight: exit {s.proc.returncode} after {took:.2f} s")
        check("stopped" in s.log(), "no stop line")
        check(s.rows() == [], f"after SIGTERM: {s.rows()}")
        bg.kill()
        bg.wait(5)
        # The mock still answers the abandoned request at the end of its hang; after a
        # restart the same key, a SAFE service, simply runs again.
        s.mocks.remove(m)
        m.stop()
        m2 = s.mock("fast")
        s.point_at(m2)
        s.start()
        cr = s.call(WIKI, {"topic": "durability"}, run="run-t", step=5)
        check(ok_result(cr)["topic"] == "durability" and cr["replayed"] is False, f"{cr}")
        check(m2.stats()["snippets"] == 1, f"{m2.stats()}")
        check(s.log_kv("service call resumed after a restart") == [],
              "a read has no intent to resume")
        check(s.rows() == [("run-t:5", "done", WIKI)], f"{s.rows()}")
        # The recorded outcome answers the key from now on.
        cr = s.call(WIKI, {"topic": "durability"}, run="run-t", step=5)
        check(cr["replayed"] is True and m2.stats()["snippets"] == 1, f"{cr} {m2.stats()}")

run_test(main)
