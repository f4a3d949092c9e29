#!/usr/bin/env python3
"""sandboxd's spawn path under back-to-back use (issue 10): every create+exec+destroy in a
tight loop succeeds within a bound, on a uid slot (and its disk and exec log) that the
previous sandbox freed a moment before, and never sees anything of that previous sandbox.

usage: test_spawn.py --bin DIR TEST     (exit 0 pass, 1 fail, 77 skip: needs root)

Regression: a Create that found no ready spare started a fresh sandbox on the slot just
freed; the Exec sent with it (the CLI pipelines the two) was answered, before the Create,
from that slot's exec log on disk, which still held the previous run's records (the
privileged parent deletes it asynchronously). The CLI always uses exec id "cli-1": it got
the previous run's result, dropped it as out of order and waited for a reply that never
came (the `sandboxd exec` loop hung near the 45th call).
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbxclient  # noqa: E402
from test_sandboxd import Daemon, Failure, cgroup_dir, check, err, needs_root, ok, run_case  # noqa: E402

N_LOOP = 150     # back-to-back runs per test
CALL_BOUND = 10  # seconds any one of them may take (one takes ~10-50 ms)

TESTS = {}


def test(fn):
    TESTS[fn.__name__[len("t_"):]] = fn
    return fn


def no_leftovers(d):
    """Once the loop is done and the daemon stopped: no sandbox process, no disk mounted, no
    loop device on an image of this home, no image but the templates (none made ahead
    either), no record."""
    check(d.stop() == 0, "sandboxd stopped cleanly")
    from test_sandboxd import loops_under, mounts_under, wait_for
    wait_for(lambda: not d.sandbox_procs(), 10, "sandbox processes to exit")
    state = d.path("state/sandboxd")
    check(mounts_under(state) == [], f"mounts left: {mounts_under(state)}")
    check(loops_under(state) == [], f"loop devices left: {loops_under(state)}")
    disks = [f for f in os.listdir(os.path.join(state, "disks"))
             if not f.startswith(".template-") and f != ".stopped"]
    check(disks == [], f"disk images left: {disks}")
    meta = os.path.join(state, "sandboxes")
    files = [f for f in os.listdir(meta) if not f.startswith(".")]
    check(files == [], f"records left: {files}")


@test
def t_oneshot_loop(d):
    """N_LOOP `sandboxd exec` one-shots back to back (default pool of 2: the loop drains it,
    so some Creates start a sandbox of their own on a slot freed just before): each exits 0
    within CALL_BOUND with its own output (the exec id is "cli-1" every time)."""
    d.profile("p")
    d.start()
    slow = []
    for i in range(N_LOOP):
        t0 = time.monotonic()
        try:
            rc, out, e = d.cli("exec", "--profile", "p", "--", "sh", "-c", f"echo run{i}",
                               timeout=CALL_BOUND)
        except subprocess.TimeoutExpired:
            raise Failure(f"one-shot {i} did not finish within {CALL_BOUND}s\n{d.log_tail()}")
        dt = time.monotonic() - t0
        check(rc == 0 and out == f"run{i}\n".encode(),
              f"one-shot {i}: exit {rc}, stdout {out!r}, stderr {e!r}")
        if dt > 2:
            slow.append((i, round(dt, 2)))
    print(f"{N_LOOP} one-shots; slower than 2 s: {slow}")
    no_leftovers(d)


@test
def t_rpc_loop(d):
    """N_LOOP create+exec+destroy over the RPC API with pool_size = 0 (every Create builds a
    sandbox on a slot freed just before), Exec pipelined behind Create as the CLI does, the
    same exec id each time: the Exec is answered by the new sandbox, with its own output,
    never from the previous run's records."""
    with open(d.path("etc/sandboxd.conf"), "a") as f:
        f.write("pool_size = 0\n")
    d.start()
    c = d.client(timeout=CALL_BOUND)
    for i in range(N_LOOP):
        sid = f"loop{i}"
        t0 = time.monotonic()
        cid = c.send(sbxclient.req_create(sid, profile="p"))
        eid = c.send(sbxclient.req_exec(sid, "1", f"echo run{i}; id -u"))
        got = {}
        while len(got) < 2:
            left = CALL_BOUND - (time.monotonic() - t0)
            if left <= 0:
                raise Failure(f"run {i}: no answer within {CALL_BOUND}s (got {got})\n"
                              f"{d.log_tail()}")
            rid, rep = c.recv(left)
            got[rid] = rep
        cr = ok(got[cid], f"create {i}")
        check(not cr["existed"], f"create {i}: {cr}")
        r = got[eid]
        check(err(r) == "ok", f"exec {i}: {r}")
        check(r["exec"]["stdout"] == f"run{i}\n1000\n".encode() and r["exec"]["exit_code"] == 0,
              f"exec {i} answered with another run's result: {r}")
        ok(c.destroy(sid, timeout=CALL_BOUND), f"destroy {i}")
    no_leftovers(d)


@test
def t_claim_starting(d):
    """Back-to-back Creates with the default pool claim spares that are still starting (the
    loop drains the pool faster than it refills): each gets its own run's limits all the
    same, set once its cgroup exists (memory.limit_in_bytes of its cgroup, /proc/meminfo
    inside)."""
    d.start()
    c = d.client(timeout=CALL_BOUND)
    for i in range(40):
        sid = f"lim{i}"
        mb = 64 + i
        cr = ok(c.create(sid, profile="p", limits={"memory_mb": mb}, timeout=CALL_BOUND),
                f"create {i}")
        slot = os.path.basename(os.path.dirname(cr["workspace"]))  # .../workspaces/sN/ws
        r = c.exec(sid, "1", "grep MemTotal /proc/meminfo", timeout=CALL_BOUND)
        check(err(r) == "ok" and r["exec"]["stdout"] == f"MemTotal: {mb * 1024:14d} kB\n".encode(),
              f"run {i} (memory_mb {mb}) sees {r}")
        cg = cgroup_dir(d, "memory", slot)
        if cg is not None:
            with open(os.path.join(cg, "memory.limit_in_bytes")) as f:
                got = int(f.read())
            check(got == mb << 20, f"run {i}: cgroup {cg} limit {got}, want {mb << 20}")
        ok(c.destroy(sid, timeout=CALL_BOUND), f"destroy {i}")
    no_leftovers(d)



if __name__ == "__main__":
    sys.exit(run_case(TESTS, lambda b, name: Daemon(b, "spawn_" + name), needs_root))
