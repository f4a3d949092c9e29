#!/usr/bin/env python3
"""Runs one sandbox escape attempt against a real sandboxd and asserts containment.

usage: run_attack.py --sandboxd BIN --probe BIN [--keep-home] [--policy-json FILE] ATTACK

A fresh home (profiles, sandboxd.conf with a read-only bind of the probe at /opt/ahp-test,
other daemons' secrets, a fake orchestrator database and daemon sockets) is laid out under a
mkdtemp dir, sandboxd is started on it, and the attack runs as
`sandboxd --home DIR exec --profile sec -- /opt/ahp-test/probe ...`. The probe must exit 0
with "RESULT ... ok=0"; host-side effects (files untouched, processes alive, listeners never
reached, no secret anywhere) are checked here. Python 3 stdlib only.

Syscall probes are exact: every OUTCOME line the probe prints (key=policy entry, got=errno)
must be what `sandboxd policy --json` says for that entry (the errno, 0 for allowed, SIGSYS for
a killed process), and each syscall attack must report exactly its set of keys
(OUTCOME_KEYS). --policy-json FILE takes the expectations from a file instead (to hold an
older sandboxd to today's policy).

Network safety: the probe itself refuses to send to any non-loopback address unless its
network namespace is loopback-only; host listeners here bind loopback (or, for the host-IP
test, are only ever targeted from inside the sandbox).
"""

import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import pty
import re
import resource
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import claim_uid_range, ensure_system_user, socket_accepts  # noqa: E402

PROBE_IN_SANDBOX = "/opt/ahp-test/probe"
RESULT_RE = re.compile(r'^RESULT attack=(\S+) ok=([01]) errno=(\S+) detail="(.*)"$', re.M)
OUTCOME_RE = re.compile(r'^OUTCOME key=(\S+) got=(\S+) what="(.*)"$', re.M)

# Probe attack -> the policy entries its syscall attempts must be decided by (all of them
# reported, nothing else). See the OUTCOME lines in probe.c.
OUTCOME_KEYS = {
    "mount": {"mount", "fsopen", "open_tree"},
    "umount": {"umount2"},
    "pivot_root": {"pivot_root"},
    "chroot": {"chroot"},
    "unshare": {"unshare"},
    "clone_ns": {"clone_ns"},
    "clone3": {"clone3"},
    "setns": {"setns"},
    "ptrace_init": {"ptrace"},
    "ptrace_sibling": {"ptrace"},
    "process_vm": {"process_vm_readv", "process_vm_writev"},
    "bpf": {"bpf"},
    "keyctl": {"add_key", "keyctl", "request_key"},
    "kexec": {"kexec_load", "kexec_file_load"},
    "module": {"init_module", "finit_module", "delete_module"},
    "perf": {"perf_event_open"},
    "userfaultfd": {"userfaultfd"},
    "io_uring": {"io_uring_setup"},
    "open_by_handle": {"open_by_handle_at", "name_to_handle_at"},
    "raw_socket": {"socket_raw"},
    "packet_socket": {"socket_raw", "socket_family", "socket_packet"},
    "netlink_socket": {"socket_raw", "socket_family"},
    "mknod": {"mknodat_chr", "mknodat_blk", "mknod_chr", "mknod_blk"},
    "sethostname": {"sethostname", "setdomainname"},
    "settime": {"clock_settime", "settimeofday"},
    "tty": {"ioctl_tiocsti"},
    "other_abi": {"other_abi"},
    "ioctl_highbits": {"ioctl_tiocsti", "ioctl_tioclinux", "ioctl"},
    "unlisted": {"clone3", "unlisted:sysfs", "unlisted:ustat", "unlisted:nr1000"},
    "personality": {"personality_query", "personality_other", "personality_linux"},
}


class Policy:
    """What `sandboxd policy --json` says each OUTCOME key must get."""

    def __init__(self, doc):
        self.doc = doc
        self.by_name = {}
        for row in doc["rows"]:
            for n in row["names"]:
                self.by_name[n] = row["action"]
        self.by_rule = {r["id"]: r["action"] for r in doc["argument_rules"]}
        self.rule_calls = {r["syscall"] for r in doc["argument_rules"]}

    @staticmethod
    def _got(action):
        return {"allow": "0", "kill_process": "SIGSYS"}.get(action, action)

    def expect(self, key):
        if key == "other_abi":
            return self._got(self.doc["other_abi"])
        if key.startswith("unlisted:"):
            name = key[len("unlisted:"):]
            check(name not in self.by_name and name not in self.rule_calls,
                  f"probe key {key}: the policy names {name}, it is not unlisted")
            return self.doc["default"]
        if key in self.by_rule:
            return self._got(self.by_rule[key])
        check(key in self.by_name, f"probe key {key!r} is neither a syscall of the policy nor "
              "an argument rule id (typo in probe.c?)")
        action = self.by_name[key]
        check(action != "notify", f"probe key {key}: a notify entry has no fixed outcome")
        return self._got(action)
EXEC_TIMEOUT = 45


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"


class Listener:
    """A host socket that records every connection / datagram it gets, from a thread."""

    def __init__(self, family, kind, addr):
        self.sock = socket.socket(family, kind)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.kind = kind
        self.hits = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def _run(self):
        while not self.stop:
            try:
                if self.kind == socket.SOCK_STREAM:
                    c, peer = self.sock.accept()
                    self.hits.append(repr(peer))
                    c.close()
                else:
                    data, peer = self.sock.recvfrom(4096)
                    self.hits.append(repr(peer))
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def snapshot(root):
    """Path -> (mode, uid, gid, size, mtime_ns, sha256 or link target) for a host tree."""
    out = {}
    if not os.path.lexists(root):
        return out
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            paths.append(os.path.join(dirpath, n))
    for p in paths:
        st = os.lstat(p)
        extra = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                extra = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, extra)
    return out


class Home:
    """The sandboxd home for one test, with host-side fixtures, and the daemon."""

    def __init__(self, args):
        self.args = args
        self.sandboxd = os.path.abspath(args.sandboxd)
        ensure_system_user()  # sandboxd's worker user (docs/security.md)
        # Short path: ipc:// socket paths are limited to ~107 bytes.
        self.dir = tempfile.mkdtemp(prefix="ahp-sec-", dir="/tmp")
        # World-traversable on purpose: only the sandbox's isolation, never file modes,
        # may keep the sandbox away from these files.
        os.chmod(self.dir, 0o755)
        self.outputs = []      # every stdout/stderr the sandbox produced (secret scan)
        self.policy = None     # Policy, loaded by start()
        self.listeners = []
        self.children = []     # host helper processes to kill at the end
        self.proc = None
        self.log = None
        self.secret_credproxy = "AHPSECRET-" + secrets.token_hex(16)
        self.secret_servicesd = "AHPSECRET-" + secrets.token_hex(16)
        self.secret_env = "AHPSECRET-" + secrets.token_hex(16)
        try:
            self._layout()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def path(self, *rel):
        return os.path.join(self.dir, *rel)

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def _layout(self):
        for d in ("etc/profiles", "run", "state", "log", "probe"):
            os.makedirs(self.path(d), mode=0o755, exist_ok=True)
        shutil.copy2(os.path.abspath(self.args.probe), self.path("probe", "probe"))
        os.chmod(self.path("probe", "probe"), 0o755)
        os.chmod(self.path("probe"), 0o755)
        # Each attack gets its own host uid range: ctest runs tests in parallel, and two
        # daemons handing out the same host uids would blur what a test observes.
        self.uid_base = claim_uid_range(self.args.attack, 2000000, 1000, 1000)
        self.write("etc/sandboxd.conf", f"ro_bind = {self.path('probe')}:/opt/ahp-test\n"
                   f"uid_base = {self.uid_base}\nuid_count = 1000\n")
        base = ("model: mock:scripted\n"
                "system_prompt: |\n  Security probe.\n"
                "tools: [exec]\n")
        limits = ("  memory_mb: 256\n  pids_max: 64\n  cpu_seconds: 20\n"
                  "  timeout_s: 40\n  output_kb: 256\n")
        self.write("etc/profiles/sec.yaml",
                   "name: sec\n" + base + "sandbox:\n  network: none\n" + limits)
        self.write("etc/profiles/sec-proxy.yaml",
                   "name: sec-proxy\n" + base + "sandbox:\n  network: proxy\n" + limits)
        # Other daemons' secrets, readable by anyone on the host (see __init__).
        self.write("etc/secrets/credproxy/wiki-token", self.secret_credproxy + "\n")
        self.write("etc/secrets/servicesd/svc-token", self.secret_servicesd + "\n")
        for d in ("etc/secrets", "etc/secrets/credproxy", "etc/secrets/servicesd"):
            os.chmod(self.path(d), 0o755)
        # A stand-in for the orchestrator's journal.
        os.makedirs(self.path("state", "orchestrator"), exist_ok=True)
        with open(self.path("state", "orchestrator", "orchestrator.db"), "wb") as f:
            f.write(b"SQLite format 3\0" + b"\0" * 4080)
        os.chmod(self.path("state", "orchestrator", "orchestrator.db"), 0o644)

    # --- daemon ---

    def load_policy(self):
        if self.args.policy_json:
            with open(self.args.policy_json) as f:
                self.policy = Policy(json.load(f))
            return
        r = subprocess.run([self.sandboxd, "--home", self.dir, "policy", "--json"],
                           capture_output=True, timeout=20)
        check(r.returncode == 0, f"`sandboxd policy --json` exited {r.returncode}: "
              + r.stderr.decode(errors="replace"))
        self.policy = Policy(json.loads(r.stdout))

    def start(self):
        self.load_policy()
        self.log = open(self.path("log", "sandboxd.log"), "ab")
        env = dict(os.environ)
        # A secret in the daemon's own environment must never reach a sandbox.
        env["AHP_TEST_DAEMON_SECRET"] = self.secret_env
        self.proc = subprocess.Popen([self.sandboxd, "--home", self.dir], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, env=env)
        sock = self.path("run", "sandboxd.sock")
        deadline = time.monotonic() + 15
        while not socket_accepts(sock):
            if self.proc.poll() is not None:
                raise Failure(f"sandboxd exited with {self.proc.returncode} during start\n"
                              + self.log_tail())
            if time.monotonic() > deadline:
                raise Failure("sandboxd did not create run/sandboxd.sock within 15s\n"
                              + self.log_tail())
            time.sleep(0.05)

    def log_tail(self, n=40):
        try:
            with open(self.path("log", "sandboxd.log"), errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return ""
        return "--- sandboxd log (tail) ---\n" + "".join(lines[-n:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None

    def cleanup(self):
        self.stop()
        for l in self.listeners:
            l.close()
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait()
        if not self.args.keep_home:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"home kept at {self.dir}")

    # --- running things in the sandbox ---

    def exec(self, argv, profile="sec", keep=False, stdin=subprocess.DEVNULL, env_extra=None):
        cmd = [self.sandboxd, "--home", self.dir, "exec", "--profile", profile]
        if keep:
            cmd.append("--keep")
        cmd += ["--"] + argv
        env = dict(os.environ)
        # A secret in the CLI's environment must not reach the sandbox either.
        env["OPENAI_API_KEY"] = self.secret_env
        if env_extra:
            env.update(env_extra)
        try:
            r = subprocess.run(cmd, stdin=stdin, capture_output=True, timeout=EXEC_TIMEOUT,
                               env=env)
        except subprocess.TimeoutExpired:
            raise Failure(f"`{' '.join(cmd)}` did not return within {EXEC_TIMEOUT}s")
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace")
        self.outputs.append(out + err)
        print(f"$ {' '.join(argv)}  -> exit {r.returncode}")
        if out.strip():
            print(out.rstrip())
        if err.strip():
            print("stderr: " + err.rstrip())
        return r.returncode, out, err

    def probe(self, attack, *args, profile="sec", keep=False, stdin=subprocess.DEVNULL,
              expect_blocked=True, host_kills=None):
        """Runs the probe in a sandbox; asserts containment. Returns the parsed result.
        host_kills: {what: signal} the host's kernel itself kills with (host_kills())."""
        rc, out, err = self.exec([PROBE_IN_SANDBOX, attack] + [str(a) for a in args],
                                 profile=profile, keep=keep, stdin=stdin)
        check(rc != 125, "sandboxd exec could not reach the daemon (exit 125)\n"
              + err + self.log_tail())
        m = RESULT_RE.search(out)
        check(m is not None, f"no RESULT line from probe {attack} (exit {rc})\n"
              f"stdout: {out}\nstderr: {err}\n" + self.log_tail())
        res = {"attack": m.group(1), "ok": int(m.group(2)), "errno": m.group(3),
               "detail": m.group(4), "rc": rc}
        check(res["attack"] == attack, f"probe answered for {res['attack']}, not {attack}")
        if expect_blocked:
            if res["ok"] == 1 or rc == 1:
                raise Failure(f"ESCAPE: probe {attack} succeeded: {res['detail']}")
            check(rc == 0, f"probe {attack} exited {rc} (2 = usage error): {out} {err}")
        self.check_outcomes(attack, out, host_kills or {})
        return res

    def host_kills(self, attack):
        """{what: signal} for each OUTCOME of `probe ATTACK` run on the host, outside any
        sandbox and filter, that the host's kernel answers by killing the process: there
        the kernel refuses the call before any seccomp filter sees it (int 0x80 under a PVM
        guest kernel is a SIGSEGV), and a sandbox on that host can only get the same."""
        # no core file of the killed child in the test's directory
        r = subprocess.run([os.path.abspath(self.args.probe), attack], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=EXEC_TIMEOUT,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
        out = r.stdout.decode(errors="replace")
        kills = {what: got for _, got, what in OUTCOME_RE.findall(out) if got.startswith("SIG")}
        if kills:
            print(f"the host's own kernel kills these without a filter: {kills}")
        return kills

    def check_outcomes(self, attack, out, host_kills):
        """Each OUTCOME is exactly what the policy specifies (or, for a call the host's
        kernel kills by itself, that signal); the attack reports its keys."""
        outcomes = OUTCOME_RE.findall(out)
        seen = {k for k, _, _ in outcomes}
        want = OUTCOME_KEYS.get(attack, set())
        check(seen == want, f"probe {attack} reported outcomes for {sorted(seen)}, "
              f"expected exactly {sorted(want)}")
        wrong = []
        for key, got, what in outcomes:
            exp = host_kills.get(what) or self.policy.expect(key)
            if got != exp:
                wrong.append(f"{what}: got {got}, policy {key} says {exp}")
        check(not wrong, f"probe {attack}: outcomes differ from the policy: " + "; ".join(wrong))
        print(f"{len(outcomes)} outcomes of {attack} as the policy specifies"
              + (f" ({len(host_kills)} as the host's kernel does)" if host_kills else ""))

    def daemon_alive(self):
        check(self.proc.poll() is None,
              f"sandboxd died (exit {self.proc.returncode})\n" + self.log_tail())

    # --- host-side helpers ---

    def listen(self, family, kind, addr):
        l = Listener(family, kind, addr)
        self.listeners.append(l)
        return l

    def workspaces_with(self, name):
        """Host paths of directories under state/ that hold a file called name."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.path("state")):
            if name in filenames:
                found.append(dirpath)
        return found

    def sandbox_host_uid(self):
        """Host uid the sandbox's user is mapped to (from the probe's uid_map)."""
        return host_uid_of(self.probe("whoami"))


def host_uid_of(res):
    """Host uid of the probe that produced res (its detail holds uid= and uid_map=)."""
    m = re.search(r"uid=(\d+) .*uid_map=\s*(\d+)\s+(\d+)\s+(\d+)", res["detail"])
    check(m is not None, f"cannot parse the probe's ids: {res['detail']}")
    uid, inner, outer, count = (int(x) for x in m.groups())
    check(inner <= uid < inner + count, f"uid {uid} not in its own map {res['detail']}")
    return outer + (uid - inner)


# ------------------------------------------------------------------------------------------
# Attacks. Each takes the Home (daemon running) and raises Failure on any escape.

ATTACKS = {}


def attack(name):
    def reg(fn):
        ATTACKS[name] = fn
        return fn
    return reg


def simple(name, probe_attack, *args, profile="sec"):
    """An attack that is one probe run with no host-side fixture."""
    ATTACKS[name] = lambda h: h.probe(probe_attack, *args, profile=profile)


def host_views(h, rel):
    """The ways a sandbox could try to name a host file of this home."""
    p = h.path(rel)
    return [p, "/proc/1/root" + p, "/proc/self/root" + p, "/proc/2/root" + p]


# --- host files outside the allowlist ---

simple("read_shadow", "read", "/etc/shadow", "/etc/gshadow", "/proc/1/root/etc/shadow",
       "/etc/sudoers")


@attack("read_secret_credproxy")
def _(h):
    rel = "etc/secrets/credproxy/wiki-token"
    paths = host_views(h, rel) + host_views(h, "etc/secrets") + [
        "/etc/secrets/credproxy/wiki-token", "/run/secrets/wiki-token",
        "/run/secrets/credproxy/wiki-token", "/var/lib/ahp/etc/secrets/credproxy/wiki-token",
        "/etc/secrets", "/run/secrets"]
    h.probe("absent", *paths)
    h.probe("read", *paths)
    h.probe("find_name", "wiki-token", "credproxy")


@attack("read_secret_servicesd")
def _(h):
    rel = "etc/secrets/servicesd/svc-token"
    paths = host_views(h, rel) + [
        "/etc/secrets/servicesd/svc-token", "/run/secrets/svc-token",
        "/var/lib/ahp/etc/secrets/servicesd/svc-token"]
    h.probe("absent", *paths)
    h.probe("read", *paths)
    h.probe("find_name", "svc-token", "servicesd")


@attack("read_state_dir")
def _(h):
    paths = []
    for rel in ("state", "state/sandboxd", "run", "log", "log/sandboxd.log", "etc/sandboxd.conf",
                "etc/profiles", "etc"):
        paths += host_views(h, rel)
    paths += ["/var/lib/ahp", h.dir]
    h.probe("absent", *paths)


@attack("read_orchestrator_db")
def _(h):
    paths = (host_views(h, "state/orchestrator/orchestrator.db") +
             ["/var/lib/ahp/state/orchestrator/orchestrator.db"])
    h.probe("absent", *paths)
    h.probe("read", *paths)
    h.probe("find_name", "orchestrator.db")


@attack("daemon_sockets")
def _(h):
    fakes = []
    for d in ("orchestrator", "credproxy", "servicesd", "approvald"):
        p = h.path("run", f"{d}.sock")
        fakes.append(h.listen(socket.AF_UNIX, socket.SOCK_STREAM, p))
        os.chmod(p, 0o777)
    paths = []
    for d in ("sandboxd", "sandboxd-exec", "orchestrator", "credproxy", "servicesd",
              "approvald"):
        paths += host_views(h, f"run/{d}.sock")[:2]
    paths += ["/run/sandboxd.sock", "/var/lib/ahp/run/sandboxd.sock",
              "/var/lib/ahp/run/sandboxd-exec.sock"]
    h.probe("connect_unix", *paths)
    time.sleep(0.3)
    for l in fakes:
        check(not l.hits, f"a daemon socket on the host was reached: {l.hits}")


@attack("abstract_unix_socket")
def _(h):
    name = "ahp-sec-" + secrets.token_hex(6)
    l = h.listen(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + name)
    h.probe("connect_unix", "@" + name)
    time.sleep(0.3)
    check(not l.hits, f"host abstract unix socket reached: {l.hits}")


@attack("other_workspace")
def _(h):
    marker = "ahp-marker-" + secrets.token_hex(6)
    content = "run-A-" + secrets.token_hex(8)
    res = h.probe("plant", marker, content, keep=True)
    check("planted=1" in res["detail"], f"run A could not write its workspace: {res['detail']}")
    dirs = h.workspaces_with(marker)
    check(len(dirs) == 1, f"run A's workspace not found on the host under state/: {dirs}")
    ws_a = dirs[0]
    with open(os.path.join(ws_a, marker)) as f:
        check(f.read() == content, "run A's marker has the wrong content")
    ws_id = os.path.basename(ws_a)
    host_file = os.path.join(ws_a, marker)
    paths = [host_file, ws_a, "/proc/1/root" + host_file, "/workspace/" + marker,
             f"/workspace/../{ws_id}/{marker}", f"/workspace/../../{ws_id}/{marker}",
             f"/tmp/{marker}"]
    h.probe("absent", *paths)
    h.probe("find_name", marker)


def find_host_pid(argv, timeout):
    """Pid of a host process whose argv is exactly argv (waits up to timeout seconds)."""
    want = ("\0".join(argv) + "\0").encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == want:
                        return int(d)
            except OSError:
                pass
        time.sleep(0.05)
    raise Failure(f"no host process {argv} within {timeout}s")


@attack("concurrent_sandbox")
def _(h):
    """A second sandbox running at the same time cannot see, signal or read the first."""
    marker = "ahp-live-" + secrets.token_hex(6)
    tag = f"9.{secrets.randbelow(10**6):06d}"   # a unique `sleep` argument to find A by
    a = subprocess.Popen([h.sandboxd, "--home", h.dir, "exec", "--profile", "sec", "--",
                          "sh", "-c", f"{PROBE_IN_SANDBOX} plant {marker} x && exec sleep {tag}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    h.children.append(a)
    pid_a = find_host_pid(["sleep", tag], 15)
    dirs = h.workspaces_with(marker)
    check(len(dirs) == 1, f"run A's workspace not found: {dirs}")
    ws_a = dirs[0]
    h.probe("proc_pids", f"{pid_a}:{tag}")
    h.probe("kill", pid_a)
    h.probe("absent", ws_a, os.path.join(ws_a, marker), f"/proc/{pid_a}/root",
            f"/proc/1/root{ws_a}")
    h.probe("find_name", marker)
    check(pid_alive(pid_a), "ESCAPE: run B killed run A's process")
    try:
        out, _ = a.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        raise Failure("run A did not finish")
    h.outputs.append(out.decode(errors="replace"))
    check(a.returncode == 0, f"run A ended with {a.returncode} (disturbed by run B?): {out!r}")


# --- writing outside /workspace and /tmp ---

@attack("write_usr")
def _(h):
    names = ["/usr/bin/ahp-probe-x", "/usr/ahp-probe-x", "/usr/lib/ahp-probe-x",
             "/bin/ahp-probe-x", "/lib/ahp-probe-x", "/usr/sbin/ahp-probe-x"]
    h.probe("create", *names)
    h.probe("openw", "/usr/bin/env", "/bin/sh")
    for n in names:
        check(not os.path.lexists(n), f"{n} appeared on the host")


@attack("write_etc")
def _(h):
    before = snapshot("/etc/passwd")
    h.probe("openw", "/etc/passwd", "/etc/hosts", "/etc/resolv.conf", "/etc/group")
    h.probe("create", "/etc/ahp-probe-x", "/etc/cron.d/ahp-probe-x", "/etc/ld.so.preload")
    check(snapshot("/etc/passwd") == before, "host /etc/passwd changed")
    check(not os.path.lexists("/etc/ahp-probe-x"), "/etc/ahp-probe-x appeared on the host")


@attack("write_root")
def _(h):
    h.probe("create", "/ahp-probe-x", "/opt/ahp-test/ahp-probe-x", "/opt/ahp-probe-x",
            "/var/ahp-probe-x", "/home/ahp-probe-x", "/root/ahp-probe-x", "/run/ahp-probe-x")
    h.probe("mkdir", "/ahp-probe-d", "/opt/ahp-probe-d", "/opt/ahp-test/ahp-probe-d")
    for p in ("/ahp-probe-x", "/ahp-probe-d", h.path("probe", "ahp-probe-x"),
              h.path("probe", "ahp-probe-d")):
        check(not os.path.lexists(p), f"{p} appeared on the host")


# --- mount namespace ---

simple("mount", "mount")
simple("umount", "umount")
simple("pivot_root", "pivot_root")
simple("chroot", "chroot")


@attack("mount_table")
def _(h):
    """The host's root mount must not be reachable anywhere (old root detached after
    pivot_root) and every disk-backed mount but /workspace must be read-only."""
    key = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                key = f"{fields[2]}:{fields[3]}"
    check(key is not None, "cannot find the host's root mount")
    h.probe("mounts", key)


# --- namespaces, processes ---

simple("unshare", "unshare")
simple("clone_newns", "clone_ns")
simple("clone3_newns", "clone3")
simple("setns", "setns", "1", "self")
simple("ptrace_init", "ptrace_init")
simple("ptrace_sibling", "ptrace_sibling")
simple("process_vm_readv", "process_vm")
simple("proc_pid1_root", "proc_root")


@attack("proc_pids")
def _(h):
    h.probe("proc_pids", f"{os.getpid()}:run_attack", f"{h.proc.pid}:sandboxd",
            f"{os.getppid()}:ctest")


@attack("signal_outside")
def _(h):
    # Victims with the sandboxes' own host uids, so only namespaces (not permissions)
    # protect them; each reports any SIGWINCH (what kill(-1, ...) sends) on its stdout.
    # sandboxd hands out host uids from a small compact range (pool spares included), so
    # one victim per uid in that range guarantees one shares the attacker's uid whichever
    # sandbox serves the attack. /bin/sh, not this interpreter: the victim's uid may not
    # be able to read the interpreter's install dir.
    base = h.sandbox_host_uid()
    script = "trap 'echo WINCH' WINCH; echo ready; while :; do sleep 0.1; done"
    victims = {}
    for uid in range(max(h.uid_base, base - 8), base + 9):
        def drop(uid=uid):
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        v = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE,
                             preexec_fn=drop, cwd="/")
        h.children.append(v)
        check(v.stdout.readline().strip() == b"ready", f"victim uid {uid} did not start")
        victims[uid] = v
    first = next(iter(victims.values()))
    res = h.probe("kill", first.pid, h.proc.pid)
    # Only meaningful if a victim really had the attacking sandbox's host uid.
    attacker = host_uid_of(res)
    check(attacker in victims, f"precondition: the attacking sandbox ran as host uid "
          f"{attacker}, outside the victims' uids {min(victims)}..{max(victims)}")
    time.sleep(0.3)
    h.daemon_alive()
    for uid, v in victims.items():
        check(pid_alive(v.pid), f"ESCAPE: host victim (uid {uid}) was killed from the sandbox")
        os.set_blocking(v.stdout.fileno(), False)
        got = v.stdout.read() or b""
        check(b"WINCH" not in got, f"ESCAPE: kill(-1) from the sandbox reached host uid {uid}")


# --- kernel surface ---

simple("bpf", "bpf")
simple("keyctl", "keyctl")
simple("kexec", "kexec")
simple("module_load", "module")
simple("perf_event_open", "perf")
simple("userfaultfd", "userfaultfd")
simple("io_uring", "io_uring")
simple("open_by_handle_at", "open_by_handle")


# --- sockets and network ---

simple("raw_socket", "raw_socket")
simple("packet_socket", "packet_socket")
simple("netlink_socket", "netlink_socket")
# TEST-NET (documentation) addresses only; 192.0.2.0/24 is avoided because some CI
# machines use it for real. The probe sends nothing unless the netns is loopback-only.
simple("connect_public", "connect", "198.51.100.1:80", "203.0.113.1:443")
simple("connect_private", "connect", "10.255.255.1:80", "172.16.255.1:80",
       "192.168.255.1:80", "169.254.169.254:80")
simple("connect_ipv6", "connect", "[2001:db8::1]:80", "[64:ff9b::c633:6401]:80",
       "[::ffff:198.51.100.1]:80", "[fe80::1]:80")
simple("connect_public_proxy_mode", "connect", "198.51.100.1:80", "10.255.255.1:80",
       profile="sec-proxy")


def host_addresses():
    """Non-loopback IPv4/IPv6 addresses of this host."""
    addrs = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                a, dev = line.split()[0], line.split()[-1]
                if dev != "lo" and not a.startswith("fe80"):
                    addrs.append("[" + ":".join(a[i:i + 4] for i in range(0, 32, 4)) + "]")
    except OSError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        try:
            r = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                            struct.pack("256s", name.encode()[:15]))
            addrs.append(socket.inet_ntoa(r[20:24]))
        except OSError:
            pass
    s.close()
    return addrs


@attack("connect_host_ip")
def _(h):
    """A service on the host's own (non-loopback) addresses must be unreachable."""
    l4 = h.listen(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0))
    addrs = host_addresses()
    if not addrs:
        print("host has no non-loopback address; testing TEST-NET only")
        addrs = ["198.51.100.1"]
    h.probe("connect", *[f"{a}:{l4.port}" for a in addrs])
    time.sleep(0.3)
    check(not l4.hits, f"ESCAPE: host listener reached: {l4.hits}")


def loopback_attack(profile):
    def run(h):
        l = h.listen(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
        targets = [f"127.0.0.1:{l.port}"]
        if profile == "sec-proxy":
            # The proxy listener inside the netns is 3128: the host's 3128 (if any) and any
            # other host port must stay out of reach.
            targets.append("127.0.0.1:22")
        h.probe("connect", *targets, profile=profile)
        time.sleep(0.3)
        check(not l.hits, f"ESCAPE: host loopback listener reached: {l.hits}")
    return run


ATTACKS["connect_host_loopback"] = loopback_attack("sec")
ATTACKS["connect_host_loopback_proxy_mode"] = loopback_attack("sec-proxy")


@attack("connect_ipv6_loopback")
def _(h):
    try:
        l = h.listen(socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0))
    except OSError as e:
        print(f"host has no ::1 ({e}); probing a fixed port")
        h.probe("connect", "[::1]:9")
        return
    h.probe("connect", f"[::1]:{l.port}")
    time.sleep(0.3)
    check(not l.hits, f"ESCAPE: host [::1] listener reached: {l.hits}")


def dns_attack(profile):
    def run(h):
        u4 = h.listen(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
        targets = ["1.1.1.1:53", "8.8.8.8:53", "10.0.0.1:53", "[2001:4860:4860::8888]:53",
                   f"127.0.0.1:{u4.port}"]
        u6 = None
        try:
            u6 = h.listen(socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 0))
            targets.append(f"[::1]:{u6.port}")
        except OSError:
            pass
        h.probe("dns", *targets, profile=profile)
        time.sleep(0.3)
        check(not u4.hits, f"ESCAPE: host UDP 127.0.0.1 listener got {u4.hits}")
        check(u6 is None or not u6.hits, f"ESCAPE: host UDP ::1 listener got {u6 and u6.hits}")
    return run


ATTACKS["dns"] = dns_attack("sec")
ATTACKS["dns_proxy_mode"] = dns_attack("sec-proxy")


# --- /proc, /sys, /dev ---

simple("proc_sysrq", "openw", "/proc/sysrq-trigger")
simple("proc_core_pattern", "openw", "/proc/sys/kernel/core_pattern",
       "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
       "/proc/sys/fs/binfmt_misc/register", "/proc/sys/kernel/hostname")
simple("sys_write", "sysfs")
simple("cgroup_release_agent", "cgroup")
simple("kernel_memory", "read", "/proc/kcore", "/proc/kmsg", "/dev/mem", "/dev/kmem",
       "/dev/port", "/dev/kmsg")
simple("dev_nodes", "dev")
simple("mknod", "mknod")


# --- privilege ---

simple("capabilities", "caps")
simple("no_new_privs", "no_new_privs")
simple("seccomp_filter", "seccomp")
simple("setuid_binary", "setuid")
simple("settime", "settime")


@attack("sethostname")
def _(h):
    before = socket.gethostname()
    h.probe("sethostname")
    check(socket.gethostname() == before, "ESCAPE: the host's hostname changed")


@attack("sysv_ipc")
def _(h):
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x41480000 | secrets.randbelow(0xffff)
    ipc_creat, ipc_rmid = 0o1000, 0
    shm = libc.shmget(key, 4096, ipc_creat | 0o666)
    msq = libc.msgget(key, ipc_creat | 0o666)
    check(shm >= 0 and msq >= 0, f"cannot create host SysV objects: errno {ctypes.get_errno()}")
    try:
        h.probe("sysv_ipc", key)
    finally:
        libc.shmctl(shm, ipc_rmid, None)
        libc.msgctl(msq, ipc_rmid, None)


@attack("tty")
def _(h):
    """Even when the CLI runs on a terminal, the sandbox gets no terminal (TIOCSTI)."""
    master, slave = pty.openpty()
    try:
        h.probe("tty", stdin=slave)
    finally:
        os.close(slave)
        os.close(master)


simple("leaked_fds", "fds")


# --- exact seccomp outcomes: other ABIs, the low-32-bit argument filters, the default ---

@attack("x32_and_int80")
def _(h):
    """x32 syscall numbers and int 0x80 die by the filter's SIGSYS; where the host's kernel
    itself kills one of them with no filter at all (int 0x80 on a PVM guest: SIGSEGV), the
    sandbox must get exactly that signal (never a return)."""
    h.probe("other_abi", host_kills=h.host_kills("other_abi"))


simple("ioctl_high_bits", "ioctl_highbits")
simple("unlisted_syscalls", "unlisted")
simple("personality", "personality")


# --- cleanup must not follow links out of the workspace ---

@attack("symlink_cleanup")
def _(h):
    # Learn the workspace layout from a kept run, so the relative links planted below point
    # inside this test's home (never above it), whatever the depth.
    marker = "ahp-layout-" + secrets.token_hex(4)
    res = h.probe("plant", marker, "x", keep=True)
    check("planted=1" in res["detail"], f"cannot write /workspace: {res['detail']}")
    dirs = h.workspaces_with(marker)
    check(len(dirs) == 1, f"workspace not found under state/: {dirs}")
    up = os.path.relpath(h.dir, dirs[0])
    check(up.startswith("..") and all(c == ".." for c in up.split("/")),
          f"workspace {dirs[0]} is not below the home")

    hostdir = h.path("hostmarker")
    os.makedirs(os.path.join(hostdir, "sub"), mode=0o755)
    h.write("hostmarker/keep.txt", "keep me\n")
    h.write("hostmarker/sub/keep2.txt", "keep me too\n", mode=0o600)
    hostfile = h.write("hostmarker-file", "host file\n", mode=0o640)
    watched = [hostdir, hostfile, h.path("etc"), h.path("probe"),
               h.path("state", "orchestrator", "orchestrator.db")]
    before = {p: snapshot(p) for p in watched}

    cleanup_marker = "ahp-cleanup-" + secrets.token_hex(4)
    res = h.probe("symlinks", hostdir, hostfile, up, cleanup_marker)
    m = re.search(r"planted=(\d+)/(\d+)", res["detail"])
    check(m is not None and m.group(1) == m.group(2),
          f"not every trap was planted: {res['detail']}")
    # Destroy happens when the one-shot run ends; give an asynchronous cleanup a moment.
    deadline = time.monotonic() + 10
    while h.workspaces_with(cleanup_marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(not h.workspaces_with(cleanup_marker),
          "the run's workspace was not removed after the run ended (without --keep)")
    h.daemon_alive()
    for p in watched:
        after = snapshot(p)
        if after != before[p]:
            gone = sorted(set(before[p]) - set(after))
            changed = sorted(k for k in before[p] if k in after and before[p][k] != after[k])
            new = sorted(set(after) - set(before[p]))
            raise Failure(f"ESCAPE: workspace cleanup touched host files under {p}: "
                          f"removed={gone} changed={changed} added={new}")


# --- secret leak scan ---

@attack("secret_leak_scan")
def _(h):
    """No secret (other daemons' files, the daemon's or the CLI's environment) is visible
    anywhere in the sandbox, in anything it printed, in its workspace or in sandboxd's log
    and state."""
    h.probe("scan", "AHPSECRET-", keep=True)
    # The CLI passes its words as argv: a shell line goes through sh -c.
    h.exec(["sh", "-c", "env; tr '\\0' '\\n' < /proc/self/environ; ls -la / /etc /workspace /tmp 2>&1; "
            "cat /etc/* 2>/dev/null | head -c 200000"], keep=True)
    h.daemon_alive()
    values = [h.secret_credproxy, h.secret_servicesd, h.secret_env]
    for out in h.outputs:
        for v in values:
            check(v not in out, "ESCAPE: a secret appeared in sandbox output")
        check("AHPSECRET-" not in out, "ESCAPE: a secret-shaped value appeared in sandbox output")
    h.stop()   # flush the log
    secret_dir = h.path("etc", "secrets")
    for dirpath, dirnames, filenames in os.walk(h.dir):
        if dirpath.startswith(secret_dir):
            continue
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                with open(p, "rb") as f:
                    data = f.read(16 << 20)
            except OSError:
                continue
            for v in values:
                check(v.encode() not in data, f"ESCAPE: a secret was found in {p}")


# ------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sandboxd", required=True, help="path to the sandboxd binary")
    ap.add_argument("--probe", required=True, help="path to the probe binary")
    ap.add_argument("--keep-home", action="store_true", help="keep the temp home")
    ap.add_argument("--policy-json", help="expected outcomes from this `sandboxd policy --json` "
                    "output instead of the binary's own")
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    ap.add_argument("attack", nargs="?")
    args = ap.parse_args()
    if args.list:
        print("\n".join(sorted(ATTACKS)))
        return 0
    if args.attack not in ATTACKS:
        print(f"unknown attack {args.attack!r}; try --list", file=sys.stderr)
        return 2
    for b in (args.sandboxd, args.probe):
        if not os.access(b, os.X_OK):
            print(f"not an executable: {b}", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("SKIP: sandboxd needs root to build sandboxes", file=sys.stderr)
        return 77
    h = Home(args)
    try:
        h.start()
        ATTACKS[args.attack](h)
        if h.proc.poll() is None:
            h.daemon_alive()
        print(f"PASS security.{args.attack}: contained")
        return 0
    except Failure as e:
        print(f"FAIL security.{args.attack}: {e}", file=sys.stderr)
        if h.proc is not None and "sandboxd log" not in str(e):
            print(h.log_tail(), file=sys.stderr)
        return 1
    finally:
        h.cleanup()


if __name__ == "__main__":
    sys.exit(main())
