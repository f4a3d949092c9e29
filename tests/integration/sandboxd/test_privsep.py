#!/usr/bin/env python3
"""sandboxd least-privilege tests (issue 10 part 4): the dispatch table's per-type size caps, the
bounded list of unknown init pids, cleanup after an interrupted Destroy, the freezer kill, and the
privilege split (an unprivileged RPC worker, a single-threaded root spawner, restarts).

usage: test_privsep.py --bin DIR TEST     (exit 0 pass, 1 fail, 77 skip: needs root)
"""

import argparse
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbxclient  # noqa: E402
from test_sandboxd import Daemon, err, ok, run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import TestFailure as Failure, check, wait_for  # noqa: E402

TESTS = {}


def test(fn):
    TESTS[fn.__name__[len("t_"):]] = fn
    return fn


def error_of(rep):
    check("error" in rep, f"expected an error reply: {rep}")
    return rep["error"]["status"], rep["error"].get("message", "")


@test
def t_dispatch_caps(d):
    """Each request type has its own size cap, checked before the body is decoded: one byte
    over it is ERR_TOO_LARGE naming the type and both sizes; at the cap it is decoded."""
    d.start()
    c = d.client()
    ok(c.create("good"))
    caps = {"create": 512, "exec": 64 * 1024 + 512, "fetch": 256, "destroy": 128, "list": 64}

    def padded(kind, body_fields, cap):
        # the request is field <kind> around body_fields + an unknown field padding it to cap+1
        num = {"create": 1, "exec": 2, "fetch": 3, "destroy": 4, "list": 5}[kind]
        for pad in range(max(0, cap - len(body_fields) - 24), cap + 1):
            inner = body_fields + (sbxclient.field_bytes(15, b"x" * pad, True) if pad else b"")
            body = sbxclient.field_bytes(num, inner, True)
            if len(body) == cap + 1:
                return body
        raise Failure(f"cannot pad a {kind} request to {cap + 1} bytes")

    fields = {
        "create": sbxclient.field_bytes(1, "cap-run"),
        "exec": sbxclient.field_bytes(1, "good") + sbxclient.field_bytes(2, "e1")
        + sbxclient.field_bytes(3, "true"),
        "fetch": sbxclient.field_bytes(1, "good") + sbxclient.field_bytes(2, "e1"),
        "destroy": sbxclient.field_bytes(1, "nosuch"),
        "list": b"",
    }
    for kind, cap in caps.items():
        body = padded(kind, fields[kind], cap)
        st, msg = error_of(c.call(body))
        check(st == "too_large", f"{kind} of {len(body)} bytes: {st} {msg}")
        check(msg == f"{kind} request of {cap + 1} bytes (max {cap})", f"{kind}: message {msg!r}")
    # a destroy with a long id is refused by size, not by the id check
    st, msg = error_of(c.destroy("x" * 200))
    check(st == "too_large", f"destroy with a 200-byte id: {st} {msg}")
    # under the caps the same requests are served
    check(run(c, "good", "e1", "echo fine")["stdout"] == b"fine\n", "exec under the cap")
    check(err(c.destroy("nosuch")) == "not_found", "destroy under the cap")
    check(len(ok(c.list())) == 1, "list under the cap")
    d.alive()


def instance_dirs(d):
    """This daemon's cgroup instance directories, one per hierarchy it uses."""
    h = 2166136261
    for ch in d.path("state/sandboxd").encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    name = "ahp-sandboxd-%08x" % h
    out = {}
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if root.count("/") > 7:
            dirs[:] = []
            continue
        if name in dirs:
            hier = root[len("/sys/fs/cgroup/"):].split("/")[0] or "unified"
            out[hier] = os.path.join(root, name)
            dirs.remove(name)
    return out


def procs_of_uid(uid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            out.append(int(p))
                        break
        except OSError:
            pass
    return out


@test
def t_freezer_kill(d):
    """A tree that keeps forking up to pids_max is killed completely by Destroy, through the
    freezer (cgroup v1) or cgroup.kill (v2), and its cgroup is gone in every hierarchy."""
    # no pool: a spare refilled into the freed uid slot would look like a survivor
    with open(d.path("etc/sandboxd.conf"), "a") as f:
        f.write("pool_size = 0\n")
    d.start()
    c = d.client()
    cr = ok(c.create("bomb", limits={"pids_max": 48, "timeout_s": 60}))
    slot = os.path.basename(cr["workspace"])  # "sN": the cgroup's name too
    uid = d.uid_base + int(slot[1:])
    inst = instance_dirs(d)
    check(inst, "sandboxd's cgroup instance directories exist")
    v1 = "unified" not in inst
    if v1:
        check("freezer" in inst, f"a v1 sandbox is in a freezer cgroup: {sorted(inst)}")
    # a loop that forks until pids_max refuses, and keeps trying
    c.send(sbxclient.req_exec("bomb", "b1", "while :; do (sleep 300 &) 2>/dev/null; done"))
    wait_for(lambda: len(procs_of_uid(uid)) >= 40, 20, "the tree to reach pids_max")
    cg = {h: os.path.join(p, slot) for h, p in inst.items()}
    for h, p in cg.items():
        check(os.path.isdir(p), f"the sandbox's {h} cgroup exists: {p}")
    if v1:
        with open(os.path.join(cg["freezer"], "cgroup.procs")) as f:
            n = len(f.read().split())
        check(n >= 40, f"the tree's tasks are in the freezer cgroup: {n}")
    c2 = d.client()
    t0 = time.monotonic()
    ok(c2.destroy("bomb"))
    wait_for(lambda: not procs_of_uid(uid), 10, "every process of the tree to be gone")
    wait_for(lambda: not any(os.path.exists(p) for p in cg.values()), 10,
             "the sandbox's cgroups to be removed")
    took = time.monotonic() - t0
    check(took < 5, f"the tree was killed and its cgroup removed in {took:.2f}s")
    d.alive()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("test", choices=sorted(TESTS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: sandboxd needs root (namespaces, uid maps, cgroups)")
        return 77
    d = Daemon(os.path.abspath(args.bin), "privsep-" + args.test)
    rc = 0
    try:
        TESTS[args.test](d)
        if d.proc is not None:
            d.alive()
        print(f"PASS {args.test}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL {args.test}: {e}\n{d.log_tail()}")
        rc = 1
    finally:
        try:
            d.cleanup(keep=args.keep)
        except Failure as e:
            print(f"FAIL {args.test} cleanup: {e}")
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
