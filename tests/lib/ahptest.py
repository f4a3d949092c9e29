"""Shared helpers for integration tests: a throwaway platform home run by scripts/stack,
orchctl and mock-llm wrappers, process control and bounded waits. Python 3 stdlib only."""

import argparse
import fcntl
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import urllib.error
import urllib.request
import zlib

TERMINAL = ("succeeded", "failed", "cancelled")


class TestFailure(AssertionError):
    pass


SBX_USER = "ahp-sandboxd"  # sandboxd's unprivileged worker (docs/security.md)


def ensure_system_user(name=SBX_USER):
    """Creates system user name (and its group) when missing, as scripts/stack does (same lock,
    same options); a no-op when not root. Returns its pwd entry or None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(["sh", "-c", 'exec 9>>/run/ahp-stack-users.lock; flock 9; '
                    'getent passwd "$0" >/dev/null || useradd --system --no-create-home '
                    '--home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$0"',
                    name], check=True, stdin=subprocess.DEVNULL)
    return pwd.getpwnam(name)


def check(cond, msg):
    """Fails the test with msg when cond is false."""
    if not cond:
        raise TestFailure(msg)


def wait_for(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def socket_accepts(path):
    """True when a unix socket at path accepts a connection. Readiness means this, not that
    the file exists: the file appears at bind(), a moment before listen()."""
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    finally:
        s.close()


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory holding orchestrator, orchctl, mock-llm")
    ap.add_argument("--src", required=True, help="repository root (for scripts/stack)")
    ap.add_argument("--tools", default="", help="directory holding test tools (rawsend)")
    ap.add_argument("--keep", action="store_true", help="keep the temp home for inspection")
    return ap.parse_args()


def unmount_under(prefix):
    """Lazily unmounts what a killed sandboxd left mounted below prefix (its sandboxes' disks,
    its /etc tmpfs), so deleting a test home never goes through a mount; the loop devices clear
    themselves."""
    try:
        with open("/proc/self/mountinfo") as f:
            mps = [ln.split()[4].replace("\\040", " ") for ln in f]
    except OSError:
        return
    for mp in sorted((m for m in mps if m.startswith(prefix.rstrip("/") + "/")), key=len,
                     reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


_UID_RANGE_LOCKS = []


def claim_uid_range(name, first, size, buckets):
    """A host uid range [base, base + size) of its own for a test's sandboxd, base = first +
    k * size with k in [0, buckets): k starts at a hash of name and moves on past the ranges
    another test holds (flock on /tmp/ahp-uidrange-<first>-<k>.lock, held until this process
    exits). ctest runs tests in parallel, and a test's cleanup kills every process of its
    range: two tests hashed to one range (it happened: 400 ranges) killed each other's
    sandboxes. Returns base."""
    start = zlib.crc32(name.encode()) % buckets
    for i in range(buckets):
        k = (start + i) % buckets
        fd = os.open(f"/tmp/ahp-uidrange-{first}-{k}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _UID_RANGE_LOCKS.append(fd)
        return first + k * size
    raise TestFailure(f"every one of the {buckets} uid ranges from {first} is taken")


def private_mount_ns(own, then):
    """argv running the shell snippet `then` and then the rest of argv ("$0" "$@") in a private
    mount namespace (unshare -m) that keeps only own's mounts of all the test homes' (/tmp/ahp-*).
    Such a namespace is a copy of every mount the host has at that moment, and a copy holds the
    filesystem, and so its loop device and image, for as long as the namespace lives: another
    test's sandbox disk mounted then could never be emptied for reuse (disk.c s_recycle waits
    for the image to be let go) nor its loop device cleared. The other homes' mounts are
    detached first thing, before `then` runs."""
    detach = ("awk -v own=" + shlex.quote(own.rstrip("/") + "/") +
              " 'index($5, \"/tmp/ahp-\") == 1 && index($5 \"/\", own) != 1 {print $5}' "
              "/proc/self/mountinfo | sort -r | while read -r m; do umount -l \"$m\" "
              "2>/dev/null; done")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'{detach}; {then} && exec "$0" "$@"']


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"


class Stack:
    """A platform home under a fresh temp dir, with its own profiles, skills and scenarios.

    Use as a context manager: the stack is stopped and the directory removed on exit; on
    failure the daemons' log tails are printed first."""

    CP_USER = "ahp-credproxy"
    SVC_USER = "ahp-servicesd"

    def __init__(self, args, name, mock_args="", sandbox=False, credproxy=True, services=False,
                 services_args="", approvals=False):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.src = os.path.abspath(args.src)
        # Short path: ipc:// socket paths are limited to ~107 bytes.
        self.home = tempfile.mkdtemp(prefix=f"ahp-{name[:12]}-", dir="/tmp")
        self.mock_args = mock_args
        self.services_args = services_args
        # Tests that need no exec tool run without sandboxd: fewer moving parts.
        # credproxy is the model route (providers.conf names mock-llm); without
        # it the stack points gateway_url at mock-llm directly. servicesd and
        # mock-services only for the tests of exec_service (services=True), approvald
        # only for those of approvals (approvals=True).
        self.skip = " ".join(d for d, on in (("sandboxd", sandbox), ("credproxy", credproxy),
                                             ("servicesd", services),
                                             ("mock-services", services),
                                             ("approvald", approvals))
                             if not on)
        self.started = False
        for d in ("etc/profiles", "etc/skills", "etc/mock-llm"):
            os.makedirs(os.path.join(self.home, d), exist_ok=True)

    # --- files ---

    def path(self, rel):
        return os.path.join(self.home, rel)

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(textwrap.dedent(text) if text.startswith("\n") else text)
        os.chmod(p, mode)
        return p

    def write_profile(self, name, scenario, tools=("skill",), skills="skills/demo",
                      system_prompt="You are a test agent. Follow the skill.", extra="",
                      file_name=None, services=None):
        """services: the profile's `services:` list (None = no such line)."""
        text = (f"name: {name}\n"
                f"model: mock:{scenario}\n"
                f"system_prompt: |\n  {system_prompt}\n"
                f"tools: [{', '.join(tools)}]\n")
        if services is not None:
            text += f"services: [{', '.join(services)}]\n"
        if skills:
            text += f"skills: {skills}\n"
        text += extra
        return self.write(f"etc/profiles/{file_name or name + '.yaml'}", text)

    def write_scenario(self, name, text):
        return self.write(f"etc/mock-llm/{name}.yaml", text)

    def write_skill(self, rel, text):
        return self.write(f"etc/skills/{rel}", text)

    def write_conf(self, **kv):
        """Writes orchestrator.conf. A gateway_url given without gateway_socket is reached
        over TCP (gateway_socket = ""), not through credproxy's provider route."""
        if "gateway_url" in kv and "gateway_socket" not in kv:
            kv["gateway_socket"] = '""'
        lines = "".join(f"{k} = {v}\n" for k, v in kv.items())
        return self.write("etc/orchestrator.conf", lines)

    def write_credproxy_conf(self, **kv):
        lines = "".join(f"{k} = {v}\n" for k, v in kv.items())
        return self.write("etc/credproxy.conf", lines)

    def write_providers(self, text):
        """Writes etc/providers.conf (NAME BASE-URL AUTH [SECRET] lines). scripts/stack adds
        its mock-llm line unless text names a provider 'mock'. SIGHUP credproxy (hup) for a
        running stack to take it."""
        return self.write("etc/providers.conf", text)

    def write_services_conf(self, text):
        """Writes etc/services.conf (NAME url=URL [secret=NAME] [timeout_ms=N] lines).
        scripts/stack adds its lookup_wiki / publish_summary lines pointing at mock-services
        unless text names that service. SIGHUP servicesd (hup) for a running stack."""
        return self.write("etc/services.conf", text)

    def _cp_ids(self, user=CP_USER):
        """uid/gid credproxy (or user) runs as when the stack starts it as root, or None."""
        if os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None  # scripts/stack creates it and chowns the dir at start
        return pw.pw_uid, pw.pw_gid

    def write_service_secret(self, name, value):
        """One secret file etc/secrets/servicesd/NAME (0600, servicesd's user), e.g.
        wiki-token / webhook-token, which mock-services reads too (restart it, and SIGHUP
        servicesd, for a running stack to take a new value). Written as is."""
        return self.write_secret(name, value, daemon="servicesd")

    def write_secret(self, name, value, daemon="credproxy"):
        """One secret file etc/secrets/DAEMON/NAME (0600, that daemon's user; credproxy by
        default); value str or bytes, written as is (no newline added)."""
        d = self.path(f"etc/secrets/{daemon}")
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        p = os.path.join(d, name)
        data = value.encode() if isinstance(value, str) else value
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(p, 0o600)
        ids = self._cp_ids(self.SVC_USER if daemon == "servicesd" else self.CP_USER)
        if ids is not None:
            os.chown(d, *ids)
            os.chown(p, *ids)
        return p

    def demo_skill(self):
        """A skill dir 'skills/demo' the default test profiles point at."""
        self.write_skill("demo/release-notes/SKILL.md",
                         "# Release notes\n\nList the changes, one line each.\n"
                         "Group them under Added, Fixed and Changed.\n")
        self.write_skill("demo/style/SKILL.md", "# Style\n\nShort sentences. No emoji.\n")

    # --- stack ---

    def _stack(self, *argv, check_rc=True, timeout=60):
        env = dict(os.environ, AHP_BIN=self.bin, MOCK_LLM_ARGS=self.mock_args,
                   MOCK_SERVICES_ARGS=self.services_args, AHP_STACK_SKIP=self.skip)
        p = subprocess.run([os.path.join(self.src, "scripts/stack"), *argv], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if check_rc and p.returncode != 0:
            raise TestFailure(f"scripts/stack {' '.join(argv)} failed ({p.returncode}):\n"
                              f"{p.stdout}")
        return p

    def start(self):
        self.started = True
        self._stack("start", self.home)

    def stop(self):
        if self.started:
            self._stack("stop", self.home, check_rc=False)

    def restart(self, daemon):
        self._stack("restart", self.home, daemon)

    def hup(self, daemon):
        """SIGHUP (reload) to a running daemon."""
        self.kill(daemon, signal.SIGHUP, wait=False)

    def pid(self, daemon):
        try:
            with open(self.path(f"run/{daemon}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill(self, daemon, sig=signal.SIGKILL, wait=True):
        pid = self.pid(daemon)
        check(pid is not None and pid_alive(pid), f"{daemon} is not running")
        os.kill(pid, sig)
        if wait:
            wait_for(lambda: not pid_alive(pid), 10, f"{daemon} pid {pid} to die")
        return pid

    def log(self, daemon):
        try:
            with open(self.path(f"log/{daemon}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def dump_logs(self, out=sys.stderr):
        for d in ("orchestrator", "credproxy", "mock-llm", "sandboxd", "servicesd",
                  "mock-services", "approvald"):
            text = self.log(d)
            if text:
                tail = "\n".join(text.splitlines()[-40:])
                print(f"----- {d}.log (tail) -----\n{tail}", file=out)

    def __enter__(self):
        return self

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

    def sanitizer_reports(self):
        """Daemon log lines from ASan/UBSan (SAN=1 builds); [] in a normal build."""
        found = []
        for name in sorted(os.listdir(self.path("log"))) if os.path.isdir(self.path("log")) else []:
            with open(self.path(f"log/{name}"), errors="replace") as f:
                for line in f:
                    if any(m in line for m in self.SANITIZER_MARKS):
                        found.append(f"{name}: {line.rstrip()}")
        return found

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.dump_logs()
        try:
            self.stop()
            # Daemons report leaks and UB when they exit: a clean stop is part of the test.
            reports = self.sanitizer_reports()
            if reports and exc_type is None:
                raise TestFailure("sanitizer reports in daemon logs:\n" + "\n".join(reports[:20]))
        finally:
            if self.args.keep:
                print(f"kept {self.home}", file=sys.stderr)
            else:
                unmount_under(self.home)
                shutil.rmtree(self.home, ignore_errors=True)
        return False

    # --- orchctl ---

    def orchctl(self, *argv, timeout=120, expect=None, input_text=None):
        """Runs orchctl against this home; returns the CompletedProcess. expect: exit code
        that must be returned (None = any)."""
        cmd = [os.path.join(self.bin, "orchctl"), "--home", self.home, *argv]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, input=input_text, errors="replace")
        if expect is not None and p.returncode != expect:
            raise TestFailure(f"orchctl {' '.join(argv)}: exit {p.returncode}, expected "
                              f"{expect}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def orchctl_json(self, *argv, expect=0, timeout=120):
        p = self.orchctl("--json", *argv, expect=expect, timeout=timeout)
        out = []
        for line in p.stdout.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    # --- approvald ---

    def approvald(self, *argv, timeout=60, expect=None, user=None):
        """Runs approvald's human CLI (list, show, approve, reject, answer) against this home;
        returns the CompletedProcess. expect: exit code that must be returned (None = any);
        user: run it as that user (setpriv; needs root)."""
        cmd = [os.path.join(self.bin, "approvald"), "--home", self.home, *argv]
        if user is not None:
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
                   *cmd]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, errors="replace")
        if expect is not None and p.returncode != expect:
            raise TestFailure(f"approvald {' '.join(argv)}: exit {p.returncode}, expected "
                              f"{expect}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def approvald_json(self, *argv, expect=0, timeout=60):
        """approvald --json ...: the reply as a dict."""
        return json.loads(self.approvald("--json", *argv, expect=expect, timeout=timeout).stdout)

    def submit(self, profile, task):
        """Submits with --detach; returns the run id."""
        lines = self.orchctl_json("submit", "--detach", profile, task)
        check(len(lines) == 1 and "run_id" in lines[0], f"submit printed {lines}")
        return lines[0]["run_id"]

    def status(self, run_id):
        return self.orchctl_json("status", run_id)[0]["run"]

    def events(self, run_id):
        """The whole timeline (events), without the closing run line."""
        return [e for e in self.orchctl_json("logs", run_id) if "seq" in e]

    def wait_state(self, run_id, states=TERMINAL, timeout=60):
        def pred():
            r = self.status(run_id)
            return r if r["state"] in states else None
        return wait_for(pred, timeout, f"run {run_id} to reach {states}", interval=0.1)

    # --- mock-llm ---

    def mock_port(self):
        with open(self.path("run/mock-llm.port")) as f:
            return int(f.read().strip())

    def mock_get(self, path):
        url = f"http://127.0.0.1:{self.mock_port()}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def stats(self):
        return self.mock_get("/stats")

    # --- mock-services ---

    def services_port(self):
        with open(self.path("run/mock-services.port")) as f:
            return int(f.read().strip())

    def services_request(self, path, method="GET"):
        url = f"http://127.0.0.1:{self.services_port()}{path}"
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def services_stats(self):
        """mock-services' GET /stats: requests, snippets, webhooks, posts, by_webhook,
        by_topic, idempotent_replays."""
        return self.services_request("/stats")

    def services_reset(self):
        return self.services_request("/stats/reset", method="POST")

    # --- credproxy ---

    def ca_cert(self):
        """The platform CA certificate credproxy made (what sandboxes trust)."""
        return self.path("state/credproxy/ca.crt")

    def egress_log(self, run=None):
        """credproxy's egress log lines (msg=egress) as dicts of their logfmt fields, oldest
        first; run: only that run's ("" = provider routes). credproxy writes its info lines
        every 50 ms, so this waits that long first."""
        time.sleep(0.15)
        out = []
        for line in self.log("credproxy").splitlines():
            if " msg=egress " not in line:
                continue
            kv = parse_logfmt(line)
            if run is None or kv.get("run") == run:
                out.append(kv)
        return out

    def egress_rows(self, sql="SELECT * FROM egress ORDER BY seq", params=()):
        """Rows of credproxy's durable egress log (read-only), as dicts."""
        uri = "file:" + self.path("state/credproxy/egress.db") + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()

    def egress_events(self, run_id):
        """The run's egress events (kind "egress") from its timeline, oldest first."""
        return [e for e in self.events(run_id) if e["kind"] == "egress"]

    def wait_egress(self, run_id, n, timeout=30):
        """Waits until the run's timeline holds at least n egress events; returns them."""
        def pred():
            ev = self.egress_events(run_id)
            return ev if len(ev) >= n else None
        return wait_for(pred, timeout, f"{n} egress event(s) of run {run_id}", interval=0.2)

    # --- journal (read-only look at the orchestrator's SQLite db) ---

    def db_rows(self, sql, params=()):
        uri = "file:" + self.path("state/orchestrator/orchestrator.db") + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


_LOGFMT = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line):
    """A logfmt line (libahp's log) as a dict; quoted values unescaped (\\" \\\\ \\n \\r
    \\t; \\xHH is kept as written: it stands for a byte that was not shown)."""
    out = {}
    for k, v in _LOGFMT.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r'\\(["\\nrt])',
                       lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)),
                       v[1:-1])
        out[k] = v
    return out


def fingerprint(messages):
    """mock-llm's request fingerprint: SHA-256 of the canonical JSON of [HEAD, N], HEAD the
    messages up to and including the first user message (system prompt and task: the
    conversation) and N the number of messages (the place in it). See docs/operations.md."""
    import hashlib
    head = next((i + 1 for i, m in enumerate(messages) if m.get("role") == "user"),
                len(messages))
    canon = json.dumps([messages[:head], len(messages)], sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def run_case(cases, make, skip=None, label=""):
    """main() of a file of named cases that ctest runs as `FILE --bin DIR [--keep] CASE`
    (tests/integration/sandboxd): parses those arguments; returns 77 (skipped) when
    skip(args, case) returns a reason (printed after "SKIP: "); otherwise makes the fixture
    d = make(abspath(--bin), CASE), runs cases[CASE](d), checks d.alive() when d.proc is set,
    prints "PASS <label><CASE>" or "FAIL ..." with a traceback and d.log_tail(), and always
    calls d.cleanup(keep=--keep) (a TestFailure there fails the test). d: an object with proc,
    alive(), log_tail() and cleanup(keep) (test_sandboxd.Daemon). Returns the exit status (0,
    1 or 77) for sys.exit."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("case", choices=sorted(cases))
    args = ap.parse_args()
    why = skip(args, args.case) if skip else None
    if why:
        print(f"SKIP: {why}")
        return 77
    name = label + args.case
    d = make(os.path.abspath(args.bin), args.case)
    rc = 0
    try:
        cases[args.case](d)
        if d.proc is not None:
            d.alive()
        print(f"PASS {name}")
    except Exception as e:  # noqa: BLE001 - any failure fails the test with its traceback
        traceback.print_exc()
        print(f"FAIL {name}: {e}\n{d.log_tail()}")
        rc = 1
    finally:
        try:
            d.cleanup(keep=args.keep)
        except TestFailure as e:
            print(f"FAIL {name} cleanup: {e}")
            rc = 1
    return rc


def run_test(fn):
    """Runs fn(args), prints PASS/FAIL, exits 0/1; fn returning 77 means skipped (ctest
    SKIP_RETURN_CODE)."""
    args = parse_args()
    try:
        rc = fn(args)
        if rc == 77:
            print("SKIPPED")
            sys.exit(77)
    except Exception:  # noqa: BLE001 - any failure fails the test with its traceback
        traceback.print_exc()
        print("FAIL", file=sys.stderr)
        sys.exit(1)
    print("PASS")
    sys.exit(0)
