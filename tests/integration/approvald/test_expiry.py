"""Expiry: the timer rejects a pending request when it expires (by "expiry", audited, heard by
a held Watch); a decision after expiry is refused and the request shows rejected by expiry,
even when it comes before the timer has run."""

import re
import time

from ahptest import check, run_test, wait_for
from apprlib import Approvald, approvald_built, log_lines

ARGS = {"webhook_id": "team", "content": "hi"}


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "expiry") as ap:
        ap.start()
        # The timer: expires_s=1; a Watch held for 5 s hears of it when it happens.
        r = ap.created("r-e1", 1, args=ARGS, expires_s=1)
        t0 = time.monotonic()
        w = ap.watch(after_seq=0, wait_ms=5000)
        took = time.monotonic() - t0
        check(len(w["decided"]) == 1 and w["last_seq"] == 1, f"watch: {w}")
        x = w["decided"][0]
        d = x["decision"]
        check(x["id"] == r["id"] and x["state"] == "STATE_REJECTED" and d["by"] == "expiry"
              and d["by_uid"] == -1 and d["comment"] == "expired after 1s"
              and d["at_ms"] >= r["expires_ms"], f"expired: {x}")
        check(0.5 < took < 2.5, f"the watch took {took:.2f}s (expiry at 1 s)")
        p = ap.cli("list", "--all", expect=0)
        check(p.stdout.startswith("#1  rejected  publish_summary(") and
              p.stdout.endswith("  by expiry\n"), p.stdout)
        p = ap.cli("approve", "1", expect=1)
        check(re.fullmatch(r"approvald: #1 was already rejected by expiry at \S+ \S+ UTC\n",
                           p.stderr), p.stderr)
        p = ap.cli("show", "1", expect=0)
        check(re.search(r"^decision   rejected by expiry at \S+ \S+ UTC\n"
                        r"comment    expired after 1s\n\Z", p.stdout, re.M), p.stdout)

        # A decision after expiry before the timer runs: approvald is stopped while the
        # request expires, so the first thing after the restart may be the decision; either
        # way it is refused and the request is rejected by expiry, once.
        ap.created("r-e1", 2, args=ARGS, expires_s=1)
        ap.stop()
        time.sleep(1.3)
        ap.start()
        p = ap.cli("approve", "2", "-m", "too late", expect=1)
        check(re.fullmatch(r"approvald: #2 (expired at \S+ \S+ UTC \(rejected by expiry\)|"
                           r"was already rejected by expiry at \S+ \S+ UTC)\n", p.stderr),
              p.stderr)
        j = ap.cli_json("show", "2")
        check(j["state"] == "STATE_REJECTED" and j["decision"]["by"] == "expiry"
              and j["decision"]["comment"] == "expired after 1s", f"{j}")
        # Longer spans read as the contract says.
        ap.created("r-e1", 3, args=ARGS, expires_s=86400)
        w = ap.watch(after_seq=1)
        check([(x["id"], x["decision"]["by"]) for x in w["decided"]] == [(2, "expiry")]
              and w["last_seq"] == 2, f"watch: {w}")
        dec = log_lines(ap.log(), "decision")
        check([(x["id"], x["by"], x["state"]) for x in dec] ==
              [("1", "expiry", "rejected"), ("2", "expiry", "rejected")], f"log: {dec}")
        p = ap.cli("list", expect=0)
        check(p.stdout.startswith("#3  pending") and p.stdout.count("\n") == 1, p.stdout)
    return 0


run_test(main)
