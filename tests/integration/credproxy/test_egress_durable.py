#!/usr/bin/env python3
"""credproxy's egress records are committed to egress.db in batches (at most 20 ms after the
first of a batch, see docs/credproxy.md): a clean stop must commit what is queued. Requests
made just before SIGTERM -- the last one a few ms before it, so its batch is still waiting --
are all in the database after the stop, by exact count, and still there after a restart; each
has its logfmt line in the log (lines are held for at most 50 ms and flushed on stop too)."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import check, get, run_standard  # noqa: E402

ALLOWED, REFUSED = 40, 3
RUN = "run-durable"


def rows(cp):
    db = cp.path("state/credproxy/egress.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT status, allowed FROM egress WHERE run = ? ORDER BY seq",
                           (RUN,)).fetchall()
    finally:
        con.close()


def run(cp, std):
    E = std.E
    for _ in range(REFUSED):
        r = cp.ask(get("evil.example", "/"), run=RUN)
        check(r.status == 403, f"refusal: {r!r}")
    with cp.conn(run=RUN) as c:
        for i in range(ALLOWED):
            r = c.request(get("wiki.local", f"/snippets/d{i}", E))
            check(r.status == 200, f"request {i}: {r!r}")
        # The last response is in: its record is queued, its batch not yet committed.
        t = time.monotonic()
        cp.stop()
        gap_ms = (time.monotonic() - t) * 1000
    check(cp.proc.returncode == 0, f"credproxy exit status {cp.proc.returncode} on SIGTERM")
    got = rows(cp)
    check(len(got) == ALLOWED + REFUSED,
          f"egress.db after SIGTERM: {len(got)} rows of run {RUN}, expected "
          f"{ALLOWED + REFUSED} (stop took {gap_ms:.0f} ms)")
    check(sum(1 for s, a in got if s == 200 and a == 1) == ALLOWED
          and sum(1 for s, a in got if s == 403 and a == 0) == REFUSED, f"rows: {got}")
    lines = [ln for ln in cp.log_lines() if " msg=egress " in ln and f"run={RUN}" in ln]
    check(len(lines) == ALLOWED + REFUSED, f"{len(lines)} egress log lines, expected "
          f"{ALLOWED + REFUSED}")
    # A restart keeps them (and adds none).
    cp.start()
    check(len(rows(cp)) == ALLOWED + REFUSED, "egress.db rows after a restart")
    cp.stop()


if __name__ == "__main__":
    run_standard("egress-durable", run)
