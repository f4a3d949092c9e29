#!/usr/bin/env python3
"""sandboxd workspace retention: a Destroy with keep_workspace (what the orchestrator sends when
a run fails) keeps the workspace for a later Create of the same id, within retain_failed_max
(oldest deleted first, also at start) and retain_failed_s. Same harness as test_sandboxd.py.

usage: test_retain.py --bin DIR TEST     (exit 0 pass, 1 fail, 77 skip: needs root)
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sandboxd import Daemon, err, needs_root, ok, run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import check, run_case, wait_for  # noqa: E402

TESTS = {}


def test(fn):
    TESTS[fn.__name__[len("t_"):]] = fn
    return fn


def conf(d, key, value):
    """Sets one key in sandboxd.conf (a key may appear only once)."""
    p = d.path("etc/sandboxd.conf")
    with open(p) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith(key + " ")]
    with open(p, "w") as f:
        f.write("\n".join(lines + [f"{key} = {value}"]) + "\n")


def meta(d, sid):
    return d.path(f"state/sandboxd/sandboxes/{sid}.meta")


def log_text(d):
    with open(d.path("log/sandboxd.log"), errors="replace") as f:
        return f.read()


def make_kept(c, sid):
    """A sandbox that wrote /workspace/note, destroyed with keep_workspace. The note's host
    path (workspaces are named by uid slot, and a pool spare may reuse a freed slot's path)."""
    ws = ok(c.create(sid, limits={"memory_mb": 64}))["workspace"]
    run(c, sid, "1", f"echo {sid} > /workspace/note")
    ok(c.destroy(sid, keep=True))
    return os.path.join(ws, "note")


@test
def t_retain_count(d):
    conf(d, "retain_failed_max", 2)
    d.start()
    c = d.client()
    ws = {}
    for sid in ("r1", "r2", "r3"):
        ws[sid] = make_kept(c, sid)
        time.sleep(0.05)  # distinct kept_ms: the order is the age
    # r1 is the oldest of three over a limit of two: deleted, record and all
    wait_for(lambda: not os.path.exists(ws["r1"]) and not os.path.exists(meta(d, "r1")), 10,
             "the oldest retained workspace to be deleted")
    check("sandbox r1: retained workspace deleted (over retain_failed_max; kept 0s ago)"
          in log_text(d), "the deletion is logged with its reason\n" + d.log_tail())
    for sid in ("r2", "r3"):
        check(open(ws[sid]).read() == f"{sid}\n", f"{sid} is retained")
    check(err(c.exec("r2", "2", "true")) == "not_found", "a kept sandbox is not revived by Exec")
    check(err(c.create("r1")) == "ok" and
          run(c, "r1", "1", "ls -A /workspace")["stdout"] == b"", "r1 starts afresh")
    ok(c.destroy("r1"))
    # a Create of the same id continues with the retained workspace
    cr = ok(c.create("r2", limits={"memory_mb": 64}))
    check(cr["existed"] and os.path.join(cr["workspace"], "note") == ws["r2"],
          f"Create reuses the workspace: {cr}")
    r = run(c, "r2", "2", "cat /workspace/note")
    check(r["stdout"] == b"r2\n", f"the resumed sandbox sees its file: {r['stdout']}")
    # in use again: no longer retained, even over the limit
    make_kept(c, "r4")
    time.sleep(0.5)
    check(os.path.exists(ws["r2"]), "a recreated workspace is not retained")
    check(os.path.exists(ws["r3"]), "two retained (r3, r4): none deleted")
    ok(c.destroy("r2", keep=True))  # r3 < r4 < r2
    wait_for(lambda: not os.path.exists(ws["r3"]), 10, "r3 (now the oldest) to be deleted")
    check(os.path.exists(ws["r2"]), "r2 retained again")
    # the limit also applies at start (here: lowered while stopped)
    check(d.stop() == 0, "clean stop")
    conf(d, "retain_failed_max", 1)
    d.start()
    wait_for(lambda: not os.path.exists(meta(d, "r4")), 10, "r4 to be deleted at start")
    check(os.path.exists(ws["r2"]), "the newest (r2) stays")
    wait_for(lambda: not os.listdir(d.path("state/sandboxd/trash")), 10, "the trash to empty")


@test
def t_retain_age(d):
    conf(d, "retain_failed_s", 2)
    d.start()
    c = d.client()
    ws = make_kept(c, "old")
    t0 = time.monotonic()
    check(os.path.exists(ws), "kept at first")
    wait_for(lambda: not os.path.exists(ws), 15, "the workspace to be deleted when it is 2 s old")
    check(time.monotonic() - t0 >= 1.5, "not deleted before its age")
    check("sandbox old: retained workspace deleted (older than retain_failed_s; kept 2s ago)"
          in log_text(d), "logged\n" + d.log_tail())
    # retain_failed_max = 0 keeps nothing: keep_workspace is then an ordinary Destroy
    check(d.stop() == 0, "clean stop")
    conf(d, "retain_failed_max", 0)
    d.start()
    c = d.client()
    ws = make_kept(c, "none")
    wait_for(lambda: not os.path.exists(ws), 10, "deletion with retain_failed_max = 0")
    check('msg="sandbox none destroyed"\n' in log_text(d), "an ordinary destroy\n" + d.log_tail())



if __name__ == "__main__":
    sys.exit(run_case(TESTS, lambda b, name: Daemon(b, "retain-" + name), needs_root))
