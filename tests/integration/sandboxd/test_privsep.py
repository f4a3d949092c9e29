#!/usr/bin/env python3
"""sandboxd least-privilege tests (issue 10 part 4): the dispatch table's per-type size caps, the
bounded list of unknown init pids, cleanup after an interrupted Destroy, the freezer kill, and the
privilege split (an unprivileged RPC worker, a single-threaded root spawner, restarts).

usage: test_privsep.py --bin DIR TEST     (exit 0 pass, 1 fail, 77 skip: needs root)
"""

import os
import tempfile
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sbxclient  # noqa: E402
from test_sandboxd import Daemon, err, needs_root, ok, run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import TestFailure as Failure, check, run_case, socket_accepts, wait_for  # noqa: E402

TESTS = {}


def test(fn):
    TESTS[fn.__name__[len("t_"):]] = fn
    return fn


def error_of(rep):
    check("error" in rep, f"expected an error reply: {rep}")
    return rep["error"]["status"], rep["error"].get("message", "")


def slot_of(workspace):
    """The uid slot name "sN" of a workspace path: state/workspaces/sN/ws (the sandbox's
    disk is mounted at sN, its /workspace is ws/ on it), which is its cgroup's name too."""
    head, tail = os.path.split(workspace.rstrip("/"))
    return os.path.basename(head) if tail == "ws" else tail


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
    slot = slot_of(cr["workspace"])  # "sN": the cgroup's name too
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


def status(pid):
    """/proc/PID/status as a dict (first field of each value for the id lines)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = status(p)
        except OSError:
            continue
        if st.get("PPid") == str(pid):
            out.append((int(p), st.get("Name", "")))
    return out


def worker_of(d):
    ws = [p for p, n in children(d.proc.pid) if n == "sandboxd-worker"]
    check(len(ws) == 1, f"one sandboxd-worker child of {d.proc.pid}: {children(d.proc.pid)}")
    return ws[0]


@test
def t_split(d):
    """The process started as root stays root with one thread, even after spawning and serving;
    its child the worker runs as the unprivileged user with no capabilities, owns the RPC
    socket and the exec store; inits are the root process's children."""
    import pwd
    pw = pwd.getpwnam("ahp-sandboxd")
    d.start()
    c = d.client()
    ok(c.create("a"))
    check(run(c, "a", "1", "echo hi")["stdout"] == b"hi\n", "exec works")
    ok(c.create("b", profile="p", network=1))  # proxy mode: the CA refresh is a call to the parent
    ok(c.destroy("b"))
    parent = status(d.proc.pid)
    check(parent["Uid"].split() == ["0"] * 4, f"the spawner is root: {parent['Uid']}")
    check(parent["Threads"] == "1", f"the spawner has one thread: {parent['Threads']}")
    w = worker_of(d)
    ws = status(w)
    check(ws["Uid"].split() == [str(pw.pw_uid)] * 4, f"the worker's uids: {ws['Uid']}")
    check(ws["Gid"].split() == [str(pw.pw_gid)] * 4, f"the worker's gids: {ws['Gid']}")
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(ws[cap], 16) == 0, f"the worker has no capabilities: {cap} {ws[cap]}")
    check(ws["NoNewPrivs"] == "1", "the worker has no_new_privs")
    names = [n for _, n in children(d.proc.pid)]
    check(names.count("sandboxd-init") >= 1, f"inits are the spawner's children: {names}")
    check(os.stat(d.sock).st_uid == pw.pw_uid, "the worker owns its RPC socket")
    execs = d.path("state/sandboxd/execs")
    check(os.stat(execs).st_uid == pw.pw_uid, "the worker owns execs/")
    for f in os.listdir(execs):
        check(os.stat(os.path.join(execs, f)).st_uid == pw.pw_uid, f"the worker owns {f}")
    check(os.stat(d.path("state/sandboxd/sandboxes")).st_uid == pw.pw_uid,
          "the worker owns sandboxes/")
    check(os.stat(d.path("state/sandboxd/workspaces")).st_uid == 0, "workspaces/ stays root's")
    d.alive()


@test
def t_worker_restart(d):
    """A worker killed (even in the middle of a Destroy) is replaced by the same spawner: the
    sandboxes it ran are killed and their cgroups removed, a destroyed one's workspace is
    discarded, a live one's is kept and revived by the new worker; the spawner stays
    single-threaded."""
    with open(d.path("etc/sandboxd.conf"), "a") as f:
        f.write("pool_size = 0\n")
    d.start()
    c = d.client()
    keep = ok(c.create("keep"))["workspace"]
    gone = ok(c.create("gone"))["workspace"]
    run(c, "keep", "1", "echo kept > /workspace/f")
    run(c, "gone", "1", "echo doomed > /workspace/f")
    keep_uid = d.uid_base + int(slot_of(keep)[1:])
    gone_uid = d.uid_base + int(slot_of(gone)[1:])
    check(procs_of_uid(keep_uid) and procs_of_uid(gone_uid), "both sandboxes run")
    parent = d.proc.pid
    w1 = worker_of(d)
    # the Destroy is sent and the worker killed at once
    c.send(sbxclient.req_destroy("gone"))
    os.kill(w1, signal.SIGKILL)
    wait_for(lambda: not procs_of_uid(keep_uid) and not procs_of_uid(gone_uid), 10,
             "the dead worker's sandboxes to be killed")
    wait_for(lambda: [p for p, n in children(parent) if n == "sandboxd-worker" and p != w1],
             10, "a new worker")
    check(d.proc.poll() is None and d.proc.pid == parent, "the spawner lives on")
    check(status(parent)["Threads"] == "1", "the spawner is still single-threaded")
    inst = instance_dirs(d)
    for h, p in inst.items():
        for slot in (slot_of(keep), slot_of(gone)):
            check(not os.path.exists(os.path.join(p, slot)), f"{h} cgroup {slot} removed")
    # the new worker binds the socket a moment after it appears (the old one's file is there
    # until then: a connect is refused)
    wait_for(lambda: socket_accepts(d.sock), 10, "the new worker's socket")
    c2 = d.client()
    wait_for(lambda: "error" not in c2.list(), 10, "the new worker to answer")
    # the destroyed sandbox is gone with its workspace (if the Destroy got through), or is
    # still there intact; the live one comes back with its files
    r = run(c2, "keep", "2", "cat /workspace/f")
    check(r["stdout"] == b"kept\n", f"the kept workspace survives: {r}")
    rep = c2.exec("gone", "2", "cat /workspace/f")
    if err(rep) == "not_found":
        wait_for(lambda: not os.path.exists(gone), 10, "the destroyed workspace to be discarded")
    else:
        check(ok(rep)["stdout"] == b"doomed\n", f"an undestroyed sandbox is intact: {rep}")
    check(worker_of(d) != w1, "a new worker serves")
    d.alive()


@test
def t_interrupted_destroy(d):
    """sandboxd SIGKILLed (both processes) right after a Destroy was sent: when it comes back,
    the destroyed sandbox is either gone with its workspace discarded (the Destroy got in) or
    intact; no process, cgroup or workspace of it is left half-done, and the other sandbox's
    workspace is kept."""
    with open(d.path("etc/sandboxd.conf"), "a") as f:
        f.write("pool_size = 0\n")
    d.start()
    c = d.client()
    keep = ok(c.create("keep"))["workspace"]
    gone = ok(c.create("gone"))["workspace"]
    run(c, "keep", "1", "echo kept > /workspace/f")
    run(c, "gone", "1", "echo doomed > /workspace/f; (sleep 300 &) ; (sleep 300 &)")
    c.send(sbxclient.req_destroy("gone"))
    time.sleep(0.02)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    wait_for(lambda: not d.sandbox_procs(), 10, "every sandbox process to die with sandboxd")
    d.start()
    c = d.client()
    inst = instance_dirs(d)
    for h, p in inst.items():
        check(not os.path.exists(os.path.join(p, slot_of(gone))),
              f"{h}: the leftover cgroup was removed at start")
    ids = [s["sandbox_id"] for s in ok(c.list())]
    if "gone" in ids:
        r = run(c, "gone", "2", "cat /workspace/f")
        check(r["stdout"] == b"doomed\n", f"an undestroyed sandbox is intact: {r}")
    else:
        wait_for(lambda: not os.path.exists(gone), 10, "the destroyed workspace to be discarded")
        check(err(c.exec("gone", "2", "true")) == "not_found", "the destroyed id is unknown")
    check(run(c, "keep", "2", "cat /workspace/f")["stdout"] == b"kept\n", "kept workspace")
    d.alive()


@test
def t_restart_limit(d):
    """A worker that keeps dying stops sandboxd (exit 1) after 5 restarts in a minute, killing
    every sandbox; nothing is left running."""
    d.start()
    c = d.client()
    ok(c.create("x"))
    parent = d.proc.pid
    seen = set()
    for i in range(6):
        wait_for(lambda: [p for p, n in children(parent) if n == "sandboxd-worker"
                          and p not in seen] or d.proc.poll() is not None, 10, "a worker")
        if d.proc.poll() is not None:
            break
        w = worker_of(d)
        seen.add(w)
        os.kill(w, signal.SIGKILL)
    wait_for(lambda: d.proc.poll() is not None, 10, "sandboxd to give up")
    check(d.proc.returncode == 1, f"sandboxd exits 1: {d.proc.returncode}")
    check(len(seen) == 6, f"it restarted the worker 5 times: {len(seen)} workers")
    check("died 5 times" in d.log_tail(60), "the log says why")
    wait_for(lambda: not d.sandbox_procs(), 10, "no sandbox process left")
    d.proc = None


@test
def t_user_missing(d):
    """A worker user that does not exist is a clear error at start; user = root is allowed
    with a warning."""
    with open(d.path("etc/sandboxd.conf"), "a") as f:
        f.write("user = ahp-no-such-user\n")
    try:
        d.start()
    except Failure:
        pass
    if d.proc is not None:
        d.proc.wait(10)
        check(d.proc.returncode == 1, f"exit 1: {d.proc.returncode}")
    # said before anything starts (the configuration is resolved as --check-config does)
    check('sandboxd: user "ahp-no-such-user" (the worker\'s) does not exist' in d.log_tail(),
          f"the log names the missing user: {d.log_tail()}")
    p = subprocess.run([os.path.join(d.bin, "sandboxd"), "--home", d.home, "--check-config"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 1 and 'user "ahp-no-such-user" (the worker\'s) does not exist'
          in p.stderr, f"--check-config refuses it too: {p.returncode} {p.stderr!r}")
    d.stop()
    conf = d.path("etc/sandboxd.conf")
    with open(conf) as f:
        text = f.read().replace("user = ahp-no-such-user", "user = root")
    with open(conf, "w") as f:
        f.write(text)
    d.start()
    check("user = root: the worker" in d.log_tail(), "a warning for user = root")
    check(status(worker_of(d))["Uid"].split()[0] == "0", "the worker stays root")
    c = d.client()
    ok(c.create("r"))
    check(run(c, "r", "1", "echo ok")["stdout"] == b"ok\n", "it serves")



@test
def t_unreachable_state(d):
    """A state_dir under a directory the worker cannot search (a 0700 mktemp -d above it)
    is a clear error at start naming that directory; it used to start and then fail every
    sandbox with "no control socket" in a tight loop of pool refills."""
    outer = tempfile.mkdtemp(prefix="ahp-sbx-outer-", dir="/tmp")  # mode 0700, root's
    try:
        with open(d.path("etc/sandboxd.conf"), "a") as f:
            f.write(f"state_dir = {outer}/state\n")
        try:
            d.start()
        except Failure:
            pass
        if d.proc is not None:
            d.proc.wait(10)
            check(d.proc.returncode == 1, f"exit 1: {d.proc.returncode}")
        want = f"cannot search {outer} (mode 0700): give it search permission"
        check(want in d.log_tail(), f"the log names {outer}")
        d.proc = None
    finally:
        shutil.rmtree(outer, ignore_errors=True)



if __name__ == "__main__":
    sys.exit(run_case(TESTS, lambda b, name: Daemon(b, "privsep-" + name), needs_root))
