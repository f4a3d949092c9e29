"""Watch, the orchestrator's subscription: a held long poll returns promptly when a decision
is made (well under 1 s), empty after wait_ms; limit and more; after a restart of approvald
the old cursor returns what was decided meanwhile; another log_id restarts the cursor."""

import json
import os
import subprocess
import time

from ahptest import check, run_test
from apprlib import Approvald, approvald_built

ARGS = {"webhook_id": "team", "content": "hi"}


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "watch") as ap:
        ap.start()
        for step in (1, 2, 3, 4):
            ap.created("r-w1", step, args=ARGS)
        w = ap.watch()
        check(w["decided"] == [] and w["last_seq"] == 0 and w["more"] is False
              and len(w["log_id"]) == 32, f"empty: {w}")
        log_id = w["log_id"]

        # Held, then answered by a decision: measured from the CLI's return.
        watcher = subprocess.Popen(
            [os.path.join(ap.tools, "apprsend"), ap.orch_ep, "orch", "-", "--timeout", "20000"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        watcher.stdin.write(json.dumps({"watch": {"after_seq": 0, "wait_ms": 10000,
                                                  "log_id": log_id}}))
        watcher.stdin.close()
        time.sleep(0.5)
        check(watcher.poll() is None, "the watch did not wait")
        ap.cli("approve", "1", expect=0)
        t_decided = time.monotonic()
        while watcher.poll() is None and time.monotonic() - t_decided < 5:
            time.sleep(0.002)
        lag = time.monotonic() - t_decided
        out = json.loads(watcher.stdout.read())
        watcher.wait()
        check([(x["id"], x["state"]) for x in out["watch"]["decided"]] == [(1, "STATE_APPROVED")]
              and out["watch"]["last_seq"] == 1, f"held watch: {out}")
        check(lag < 0.25, f"the held watch answered {lag * 1000:.0f} ms after the decision")
        print(f"held watch answered {lag * 1000:.1f} ms after approvald approve returned")

        # Nothing new: empty after wait_ms.
        t0 = time.monotonic()
        w = ap.watch(after_seq=1, wait_ms=300, log_id=log_id)
        took = time.monotonic() - t0
        check(w["decided"] == [] and w["last_seq"] == 1 and w["log_id"] == log_id, f"{w}")
        check(0.28 < took < 1.5, f"an empty watch of 300 ms took {took:.2f}s")

        # limit / more.
        ap.cli("reject", "2", expect=0)
        ap.cli("approve", "3", expect=0)
        w = ap.watch(after_seq=0, limit=2, log_id=log_id)
        check([x["id"] for x in w["decided"]] == [1, 2] and w["last_seq"] == 2
              and w["more"] is True, f"limit 2: {w}")
        w = ap.watch(after_seq=2, limit=2, log_id=log_id)
        check([x["id"] for x in w["decided"]] == [3] and w["last_seq"] == 3
              and w["more"] is False, f"rest: {w}")

        # A restart: the old cursor returns what was decided meanwhile.
        ap.restart()
        ap.cli("approve", "4", "-m", "after the restart", expect=0)
        ap.restart()
        w = ap.watch(after_seq=3, log_id=log_id)
        check([(x["id"], x["decision"]["seq"], x["decision"]["comment"]) for x in w["decided"]]
              == [(4, 4, "after the restart")] and w["log_id"] == log_id
              and w["last_seq"] == 4, f"after restart: {w}")
        w = ap.watch(after_seq=1, log_id=log_id)
        check([x["id"] for x in w["decided"]] == [2, 3, 4], f"from 1: {w}")

        # Another log: the cursor starts again.
        w = ap.watch(after_seq=4, log_id="0" * 32)
        check([x["id"] for x in w["decided"]] == [1, 2, 3, 4] and w["log_id"] == log_id,
              f"other log: {w}")

        for bad in ({"wait_ms": 60001}, {"limit": 1001}):
            r = ap.send({"watch": bad})
            check(r["error"] == {"status": "ERR_BAD_REQUEST", "message":
                                 "watch: limit must be 0..1000 and wait_ms 0..60000",
                                 "detail": ""}, f"{bad}: {r}")

        # A new database is a new log.
        ap.stop()
        os.unlink(ap.path("state/approvald/approvald.db"))
        for f in ("-wal", "-shm"):
            if os.path.exists(ap.path("state/approvald/approvald.db" + f)):
                os.unlink(ap.path("state/approvald/approvald.db" + f))
        ap.start()
        w = ap.watch(after_seq=4, log_id=log_id)
        check(w["decided"] == [] and w["last_seq"] == 0 and w["log_id"] != log_id, f"new log: {w}")
    return 0


run_test(main)
