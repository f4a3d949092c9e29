#!/usr/bin/env python3
"""Chaos test of the whole platform (issue 11): many concurrent runs of the approvals tour
(profiles/team-digest-approved.yaml, mock-llm scenario approvals-tour: exec in the sandbox, a
wiki lookup and a publish through servicesd, the publish held for a human) on the whole stack,
while a driver SIGKILLs a random daemon of the five (orchestrator, sandboxd, credproxy,
servicesd, approvald) at random moments and restarts it with scripts/stack.

Around the runs, as an operator would:
- a test approver lists approvald's pending requests and approves each (it survives approvald's
  kills: a failed CLI call is tried again on the next round);
- an operator resumes the runs that failed with `platform failure in tool ...` (documented as
  resumable: a daemon was down when the tool would have started, nothing ran).

At the end (no more kills, every run ended or the drain timed out):
- every run succeeded;
- mock-llm served no journaled model call twice: each journaled model step is found by its
  request's fingerprint (the run's system prompt and task, the number of messages); no serve
  of it came after the step was journaled, and a serve before that did not count only if a kill
  of the orchestrator or credproxy (the model route) came between it and the next; mock-llm saw
  4 distinct calls per run (repeats are counted and printed);
- mock-services got exactly one publish per run (posts == runs, distinct message ids that are
  the ones the runs journaled);
- after a clean stop: no workspace, sandbox record or cgroup of this stack's sandboxd, and no
  process of the stack left;
- no daemon log holds a fatal error, a panic or a sanitizer report.

Prints the seed and the figures: kills survived per daemon, runs, resumes, repeats, duplicates,
leftovers. Parameters: --runs, --duration (seconds of kills), --concurrency, --seed, or the
environment CHAOS_RUNS, CHAOS_DURATION, CHAOS_CONCURRENCY, CHAOS_SEED. Exits 0 (PASS), 1
(FAIL), 77 (skipped: not root or a daemon not built). Takes /tmp/ahp-ctest.lock unless it
already runs under it (`flock /tmp/ahp-ctest.lock ...` hands the lock down as an open fd)."""

import argparse
import collections
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import (Stack, TestFailure, check, fingerprint, pid_alive,  # noqa: E402
                     wait_for)

PROFILE = "team-digest-approved"
DAEMONS = ("orchestrator", "sandboxd", "credproxy", "servicesd", "approvald")
MODEL_ROUTE = ("orchestrator", "credproxy")  # a kill of these may repeat a model call
MODEL_STEPS = 4  # exec, lookup_wiki, publish_summary, the answer
LOCK = "/tmp/ahp-ctest.lock"
FATAL = re.compile(r"level=fatal|\bfatal\b|\bpanic|AddressSanitizer|LeakSanitizer|"
                   r"runtime error:|Assertion .* failed|Segmentation fault|core dumped|"
                   r"double free|stack smashing", re.I)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory holding the daemons and CLIs")
    ap.add_argument("--src", required=True, help="repository root (scripts/stack, profiles)")
    ap.add_argument("--runs", type=int, default=env_int("CHAOS_RUNS", 30))
    ap.add_argument("--duration", type=int, default=env_int("CHAOS_DURATION", 90),
                    help="seconds during which daemons are killed and runs submitted")
    ap.add_argument("--concurrency", type=int, default=env_int("CHAOS_CONCURRENCY", 4),
                    help="runs in progress at once at most")
    ap.add_argument("--seed", type=int, default=env_int("CHAOS_SEED", 0),
                    help="seed of the kills' randomness (0: from the clock; printed)")
    ap.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 6.0),
                    metavar=("MIN", "MAX"), help="seconds between kills (uniform)")
    ap.add_argument("--down", type=float, nargs=2, default=(0.0, 1.5), metavar=("MIN", "MAX"),
                    help="seconds a killed daemon stays down (uniform)")
    ap.add_argument("--drain", type=int, default=env_int("CHAOS_DRAIN", 180),
                    help="seconds allowed after the kills for every run to end")
    ap.add_argument("--llm-latency-ms", type=int, default=env_int("CHAOS_LLM_LATENCY_MS", 400),
                    help="mock-llm's delay per model call: calls in flight when kills land")
    ap.add_argument("--services-latency-ms", type=int,
                    default=env_int("CHAOS_SERVICES_LATENCY_MS", 300),
                    help="mock-services' delay per lookup and publish")
    ap.add_argument("--keep", action="store_true", help="keep the temp home for inspection")
    return ap.parse_args()


def hold_ctest_lock():
    """Takes /tmp/ahp-ctest.lock (the stack tests' lock) unless an inherited descriptor
    already holds it; returns the file to keep open, or None."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == LOCK:
                return None
        except OSError:
            pass
    f = open(LOCK, "a")
    print(f"chaos: waiting for {LOCK}", flush=True)
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def install_repo_content(st):
    """The home gets exactly what the repo ships, as scripts/demo does."""
    etc = os.path.join(st.home, "etc")
    for src, dst in (("profiles", "profiles"), ("skills", "skills"),
                     ("mocks/mock-llm/scenarios", "mock-llm")):
        shutil.rmtree(os.path.join(etc, dst), ignore_errors=True)
        shutil.copytree(os.path.join(st.src, src), os.path.join(etc, dst))


def ts_of(line):
    """The epoch seconds of a libahp log line's ts= field (UTC, ms), or None."""
    m = re.search(r"\bts=(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", line)
    if m is None:
        return None
    import calendar
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


class Chaos:
    def __init__(self, args, st):
        self.args = args
        self.st = st
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.stop_kills = threading.Event()
        self.stop_all = threading.Event()
        self.kills = collections.Counter()  # daemon -> kills survived (restarted)
        self.kill_times = []  # (epoch seconds, daemon)
        self.unexpected = []  # (daemon, when) a daemon found dead that we did not kill
        self.restart_failures = []
        self.submitted = 0
        self.submit_errors = 0
        self.resumes = collections.Counter()  # run -> resumes
        self.resume_reasons = collections.Counter()
        self.approved = 0
        self.approver_errors = 0
        self.not_resumable = {}  # run -> error of a failure the operator does not resume
        self.errors = []  # exceptions of the threads

    # --- helpers ---

    def orch_json(self, *argv, timeout=30):
        """orchctl --json ARGV: the lines as dicts, or None when it failed (a daemon down)."""
        try:
            p = self.st.orchctl("--json", *argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if p.returncode != 0:
            return None
        try:
            return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        except ValueError:
            return None

    def runs(self):
        """Every run the orchestrator knows ({run_id: run}), or None when it does not answer."""
        out = self.orch_json("list", "--limit", "100000")
        if out is None or not out or "runs" not in out[0]:
            return None
        return {r["run_id"]: r for r in out[0]["runs"]}

    # --- the threads ---

    def thread(self, fn):
        def wrap():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - reported at the end
                import traceback
                self.errors.append(f"{fn.__name__}: {e!r}\n{traceback.format_exc()}")
                self.stop_kills.set()
        t = threading.Thread(target=wrap, name=fn.__name__, daemon=True)
        t.start()
        return t

    def killer(self):
        """SIGKILLs a random daemon every kill-every seconds, restarts it after `down`."""
        lo, hi = self.args.kill_every
        while not self.stop_kills.wait(self.rng.uniform(lo, hi)):
            self.watchdog()
            d = self.rng.choice(DAEMONS)
            down = self.rng.uniform(*self.args.down)
            pid = self.st.pid(d)
            if pid is None or not pid_alive(pid):
                continue  # the watchdog restarts it
            os.kill(pid, signal.SIGKILL)
            with self.lock:
                self.kill_times.append((time.time(), d))
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(down)
            if self.restart(d):
                self.kills[d] += 1
        self.watchdog()

    def restart(self, d):
        for attempt in range(3):
            p = self.st._stack("restart", self.st.home, d, check_rc=False, timeout=120)
            if p.returncode == 0:
                return True
            self.restart_failures.append(f"{d} (attempt {attempt + 1}): {p.stdout[-2000:]}")
            time.sleep(1)
        raise TestFailure(f"scripts/stack restart {d} failed 3 times:\n{p.stdout}")

    def watchdog(self):
        """A daemon dead without our kill is a finding: note it, restart it."""
        for d in DAEMONS:
            pid = self.st.pid(d)
            if pid is None or not pid_alive(pid):
                self.unexpected.append((d, time.time()))
                print(f"chaos: {d} (pid {pid}) died without a kill; restarting", flush=True)
                self.restart(d)

    def submitter(self):
        """Submits --runs runs spread over --duration, at most --concurrency in progress."""
        n = self.args.runs
        gap = self.args.duration * 0.8 / max(n, 1)
        i = 0
        while i < n and not self.stop_all.is_set():
            runs = self.runs()
            if runs is None:
                time.sleep(0.3)
                continue
            active = sum(1 for r in runs.values()
                         if r["state"] not in ("succeeded", "failed", "cancelled"))
            if active >= self.args.concurrency:
                time.sleep(0.2)
                continue
            task = f"Post a digest on durability for the team (chaos run {i + 1})"
            out = self.orch_json("submit", "--detach", PROFILE, task)
            if out is None:
                # Not accepted, or accepted and the reply lost to a kill: the final list
                # counts what the orchestrator has; a task submitted twice is a finding.
                self.submit_errors += 1
                time.sleep(0.5)
                if any(r.get("task") == task for r in (self.runs() or {}).values()):
                    i += 1
                continue
            i += 1
            self.submitted += 1
            time.sleep(gap)

    def approver(self):
        """The test approver: approves every pending request, surviving approvald's kills."""
        while not self.stop_all.wait(0.3):
            try:
                p = self.st.approvald("--json", "list", timeout=15)
            except subprocess.TimeoutExpired:
                self.approver_errors += 1
                continue
            if p.returncode != 0:
                self.approver_errors += 1
                continue
            try:
                reqs = json.loads(p.stdout).get("requests", [])
            except ValueError:
                self.approver_errors += 1
                continue
            for r in reqs:
                try:
                    q = self.st.approvald("approve", str(r["id"]), "-m", "chaos approver",
                                          timeout=15)
                except subprocess.TimeoutExpired:
                    self.approver_errors += 1
                    continue
                if q.returncode == 0:
                    self.approved += 1
                else:
                    self.approver_errors += 1

    def operator(self):
        """Resumes runs failed by a platform failure (resumable by design)."""
        while not self.stop_all.wait(1.0):
            out = self.orch_json("list", "--state", "failed", "--limit", "100000")
            if out is None or not out:
                continue
            for r in out[0].get("runs", []):
                err = r.get("error") or ""
                rid = r["run_id"]
                if not err.startswith("platform failure"):
                    self.not_resumable[rid] = err
                    continue
                if self.resumes[rid] >= 20:
                    self.not_resumable[rid] = f"still failing after 20 resumes: {err}"
                    continue
                p = self.st.orchctl("resume", rid, "--detach", timeout=30)
                if p.returncode == 0:
                    self.resumes[rid] += 1
                    self.resume_reasons[re.sub(r"\d+", "N", err)[:90]] += 1

    # --- the run ---

    def drive(self):
        t0 = time.monotonic()
        threads = [self.thread(f) for f in (self.killer, self.submitter, self.approver,
                                            self.operator)]
        # Kills go on for --duration (and while runs are still being submitted).
        while time.monotonic() - t0 < self.args.duration or threads[1].is_alive():
            if self.errors or time.monotonic() - t0 > self.args.duration * 3:
                break
            time.sleep(0.5)
        self.stop_kills.set()
        threads[0].join(timeout=180)
        print(f"chaos: kills over after {time.monotonic() - t0:.0f}s; draining", flush=True)
        deadline = time.monotonic() + self.args.drain
        runs = None
        while time.monotonic() < deadline and not self.errors:
            runs = self.runs()
            if runs is not None and len(runs) >= self.submitted and all(
                    r["state"] == "succeeded" for r in runs.values()) and not threads[1].is_alive():
                break
            time.sleep(1)
        self.stop_all.set()
        for t in threads[1:]:
            t.join(timeout=60)
        return self.runs()


POOL_SIZE = 2  # sandboxd's default pool_size: spares built ahead, without a record


def sandboxd_instance(st):
    """The cgroup name of the stack's sandboxd (FNV-1a of its state dir, as loop.c)."""
    h = 2166136261
    for b in st.path("state/sandboxd").encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"ahp-sandboxd-{h:08x}"


def sandboxd_state(st):
    """The stack's sandboxd on disk and in cgroups: {records, workspaces, trash, disks,
    mounts, cgroups} (names of sandboxes/*.meta, workspaces/s<slot>, trash entries, disk
    images disks/s<slot>.img as s<slot>, mount points under its state dir, and the s<slot>
    cgroup dirs of its instance in every hierarchy)."""
    state = st.path("state/sandboxd")
    out = {}
    for sub in ("sandboxes", "workspaces", "trash"):
        d = os.path.join(state, sub)
        out[sub] = sorted(os.listdir(d)) if os.path.isdir(d) else []
    d = os.path.join(state, "disks")
    # (.template-<MiB>.img: the empty filesystem new disks are copied from, kept)
    out["disks"] = sorted(x[:-4] for x in os.listdir(d)
                          if x.endswith(".img") and not x.startswith(".")) \
        if os.path.isdir(d) else []
    # (.ready-<MiB>-<k>.img: emptied images kept for the next disks while sandboxd
    # runs, reserved on the host; a stop deletes them)
    out["ready"] = sorted(x for x in os.listdir(d) if x.startswith(".ready-")) \
        if os.path.isdir(d) else []
    with open("/proc/self/mountinfo") as f:
        out["mounts"] = sorted(l.split()[4] for l in f if l.split()[4].startswith(state + "/"))
    inst = sandboxd_instance(st)
    cg = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(root) == inst:
            cg += [f"{root}/{x}" for x in dirs]
            dirs[:] = []
        elif root.count("/") > 8:
            dirs[:] = []
    out["cgroups"] = sorted(cg)
    return out


def sandboxd_leftovers(st, running):
    """What sandboxd holds beyond its pool once every run ended: any record, more than
    POOL_SIZE workspaces or cgroups, a cgroup without its workspace, the trash. Stopped
    (running False): any cgroup (the stop kills every sandbox); the pool's spares keep their
    workspaces over a stop (the next start deletes them as orphans), counted apart.
    Returns (leftovers, spare workspaces kept at a stop)."""
    s = sandboxd_state(st)
    left = [f"record {x}" for x in s["sandboxes"]] + [f"trash {x}" for x in s["trash"]]
    # sandboxd's own always-frozen cgroup (cgroup.c: keeps the kernel's freezer
    # key on, so a sandbox's kill patches no kernel code): not a sandbox's while
    # sandboxd runs; gone after a stop like every other
    sbx_cgroups = [c for c in s["cgroups"] if os.path.basename(c) != ".frozen"]
    slots = {os.path.basename(c) for c in sbx_cgroups}
    if running:
        if len(s["workspaces"]) > POOL_SIZE:
            left += [f"workspace {x}" for x in s["workspaces"]]
        if len(s["disks"]) > POOL_SIZE:
            left += [f"disk {x}" for x in s["disks"]]
        left += [f"cgroup {c}" for c in sbx_cgroups
                 if os.path.basename(c) not in s["workspaces"]]
        if len(slots) > POOL_SIZE:
            left += [f"cgroup {c}" for c in sbx_cgroups]
        return left, []
    left += [f"cgroup {c}" for c in s["cgroups"]]
    # a clean stop discards the spares' disks and unmounts everything (disk.c)
    left += [f"disk {x}" for x in s["disks"] + s["ready"]] + [f"mount {m}" for m in s["mounts"]]
    spares = s["workspaces"]
    if len(spares) > POOL_SIZE:
        left += [f"workspace {x}" for x in spares]
        spares = []
    return left, spares


def stack_processes(st):
    """Processes left running that belong to the stack (their command line names its home)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if st.home in cmd and "chaos.py" not in cmd:
            out.append(f"{p}: {cmd.strip()}")
    return out


def fatal_lines(st):
    found = []
    d = st.path("log")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), errors="replace") as f:
            for line in f:
                if FATAL.search(line):
                    found.append(f"{name}: {line.rstrip()[:300]}")
    return found


def model_serves(st):
    """mock-llm's served chat calls: {fingerprint prefix (16 hex): [epoch seconds, ...]}."""
    serves = collections.defaultdict(list)
    for line in st.log("mock-llm").splitlines():
        m = re.search(r"msg=\"?chat status=200 .*fingerprint=([0-9a-f]{16})", line)
        if m:
            serves[m.group(1)].append(ts_of(line))
    return serves


def main():
    args = parse_args()
    if args.seed == 0:
        args.seed = int(time.time() * 1000) % 1000000007
    print(f"chaos: seed={args.seed} runs={args.runs} duration={args.duration}s "
          f"concurrency={args.concurrency} kill_every={args.kill_every} down={args.down} "
          f"latency llm={args.llm_latency_ms}ms services={args.services_latency_ms}ms",
          flush=True)
    if os.geteuid() != 0:
        print("chaos needs root for sandboxd; skipped")
        return 77
    for b in DAEMONS + ("mock-llm", "mock-services", "orchctl"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}: skipped")
            return 77
    lock = hold_ctest_lock()  # noqa: F841 - held until exit
    failures = []
    with Stack(args, "chaos", sandbox=True, services=True, approvals=True,
               mock_args=f"--latency-ms {args.llm_latency_ms}",
               services_args=f"--latency-ms {args.services_latency_ms}") as st:
        install_repo_content(st)
        st.start()
        ch = Chaos(args, st)
        t0 = time.monotonic()
        runs = ch.drive()
        elapsed = time.monotonic() - t0
        if ch.errors:
            failures += ch.errors
        check(runs is not None, "the orchestrator does not answer at the end")

        # 1. Every run succeeded.
        states = collections.Counter(r["state"] for r in runs.values())
        bad = {rid: (r["state"], r.get("error")) for rid, r in runs.items()
               if r["state"] != "succeeded"}
        if bad:
            failures.append(f"{len(bad)} run(s) did not succeed: " +
                            "; ".join(f"{k} {v}" for k, v in list(bad.items())[:10]))
        tasks = collections.Counter(r.get("task") for r in runs.values())
        twice = [t for t, n in tasks.items() if n > 1]
        if twice:
            failures.append(f"tasks submitted twice: {twice[:5]}")

        # 2. Model calls: the journal's model steps against mock-llm's serves.
        steps = collections.Counter(rid for (rid,) in st.db_rows(
            "SELECT run_id FROM steps WHERE kind='model' AND status=0"))
        short = {rid: steps.get(rid, 0) for rid in runs if steps.get(rid, 0) != MODEL_STEPS}
        if short and not bad:
            failures.append(f"runs whose journal lacks {MODEL_STEPS} model steps: {short}")
        by_fp = st.stats().get("by_fingerprint", {})
        if len(by_fp) != MODEL_STEPS * len(runs):
            failures.append(f"mock-llm saw {len(by_fp)} distinct model calls, expected "
                            f"{MODEL_STEPS} x {len(runs)} runs")
        serves = model_serves(st)
        route_kills = sorted(t for t, d in ch.kill_times if d in MODEL_ROUTE)
        repeats = sum(n - 1 for n in by_fp.values() if n > 1)
        duplicates = []
        # Each journaled model step, by the fingerprint mock-llm gave its request (the
        # system prompt and task of the run, the number of messages): no serve after the
        # step was journaled, and each earlier serve that did not count needs a kill of the
        # model route between it and the next (from a latency before it: a request sent
        # before the kill is served after it).
        tasks_of = {rid: r.get("task") for rid, r in runs.items()}
        task_rows = dict(st.db_rows("SELECT id, task FROM runs"))
        slack = args.llm_latency_ms / 1000.0 + 1.0
        rows = [(rid, json.loads(intent), done_ms) for rid, intent, done_ms in st.db_rows(
            "SELECT run_id, intent, completed_ms FROM steps WHERE kind='model' AND status=0 "
            "ORDER BY run_id, seq")]
        system = {rid: it["system"] for rid, it, _ in rows if "system" in it}  # first call's
        for rid, it, done_ms in rows:
            task = task_rows.get(rid, tasks_of.get(rid))
            msgs = [{"role": "system", "content": system.get(rid, "")},
                    {"role": "user", "content": task}]
            fp = fingerprint(msgs + [{"role": "assistant"}] * (int(it["messages"]) - 2))[:16]
            times = sorted(serves.get(fp, []))
            if not times:
                duplicates.append(f"{rid} model call with {it['messages']} messages: "
                                  f"fingerprint {fp} never served")
                continue
            late = [t for t in times if t > done_ms / 1000.0 + 0.25]
            if late:
                duplicates.append(f"{rid} model call with {it['messages']} messages "
                                  f"({fp}) served again at {late} after it was journaled "
                                  f"at {done_ms / 1000.0:.3f}")
            for a, b in zip(times, times[1:]):
                if not any(a - slack <= k <= b for k in route_kills):
                    duplicates.append(f"{rid} {fp} served at {a:.3f} and again at {b:.3f} "
                                      "with no kill of the orchestrator or credproxy between")
        if duplicates:
            failures.append("model calls served twice: " + "; ".join(duplicates[:10]))
        route_kill_count = sum(ch.kills[d] for d in MODEL_ROUTE)
        if repeats > route_kill_count * args.concurrency:
            failures.append(f"{repeats} repeated model calls for {route_kill_count} kills "
                            f"of the model route at concurrency {args.concurrency}")

        # 3. Exactly one publish per run, the one the run journaled.
        s = st.services_stats()
        posts = s.get("posts")
        if posts != len(runs) or s.get("by_webhook", {}).get("team-updates") != len(runs):
            failures.append(f"mock-services saw {posts} publishes for {len(runs)} runs: {s}")
        ids = []
        for (res,) in st.db_rows("SELECT result FROM steps WHERE kind='tool' AND status=0"):
            try:
                v = json.loads(res)
            except (TypeError, ValueError):
                continue
            if isinstance(v, dict) and "message_id" in v:
                ids.append(v["message_id"])
        if len(set(ids)) != len(ids) or (not bad and len(ids) != len(runs)):
            failures.append(f"journaled publish ids: {len(ids)} ({len(set(ids))} distinct) "
                            f"for {len(runs)} runs")

        # 4. Leftovers: once every run ended (sandboxd running; discards are asynchronous),
        # then after a clean stop.
        left = []
        try:
            wait_for(lambda: not sandboxd_leftovers(st, True)[0], 20, "sandboxd to settle")
        except TestFailure:
            left += sandboxd_leftovers(st, True)[0]
        st.stop()
        st.started = False
        time.sleep(0.5)
        stopped, spares = sandboxd_leftovers(st, False)
        left += stopped + stack_processes(st)
        if left:
            failures.append(f"{len(left)} leftover(s): {left[:10]}")
            for rid in sorted({x[7:-5] for x in left if x.startswith("record ")})[:3]:
                failures.append(f"what the logs say of {rid}:\n  " + "\n  ".join(
                    f"{d}: {line[:260]}" for d in ("orchestrator", "sandboxd")
                    for line in st.log(d).splitlines() if rid in line))
        fatal = fatal_lines(st)
        if fatal:
            failures.append("fatal lines in daemon logs:\n  " + "\n  ".join(fatal[:20]))
        if ch.unexpected:
            failures.append(f"daemons died without a kill: {ch.unexpected}")

        print(f"chaos: figures (seed {args.seed}, {elapsed:.0f}s):")
        print(f"  kills survived: {sum(ch.kills.values())} "
              f"({', '.join(f'{d} {ch.kills[d]}' for d in DAEMONS)})")
        print(f"  runs: {len(runs)} ({dict(states)}), submit retries {ch.submit_errors}, "
              f"approvals {ch.approved}")
        print(f"  resumes: {sum(ch.resumes.values())} of {len(ch.resumes)} runs "
              f"{dict(ch.resume_reasons)}")
        print(f"  model calls: {sum(by_fp.values())} served for {len(by_fp)} distinct; "
              f"repeats {repeats} (kills of the model route {route_kill_count})")
        print(f"  duplicates: model {len(duplicates)}, publishes "
              f"{(posts or 0) - len(runs)} (posts {posts}, replays "
              f"{s.get('idempotent_replays')})")
        print(f"  leftovers: {len(left)} (pool spares' workspaces kept over the stop: "
              f"{len(spares)}); fatal log lines: {len(fatal)}; unexpected deaths: "
              f"{len(ch.unexpected)}; restart retries: {len(ch.restart_failures)}")
        if ch.not_resumable:
            print(f"  failed, not resumable: {dict(list(ch.not_resumable.items())[:5])}")
        if failures:
            st.dump_logs()
            raise TestFailure("\n".join(failures))
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    except Exception:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print("FAIL", file=sys.stderr)
        sys.exit(1)
    if rc == 77:
        print("SKIPPED")
        sys.exit(77)
    print("PASS")
    sys.exit(0)
