"""approvald alone on a temp home, run as the current user: its orchestrator socket through
apprsend (JSON in, JSON out), its humans' socket through the approvald CLI."""

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ahptest import TestFailure, check, pid_alive, socket_accepts, wait_for

ME = pwd.getpwuid(os.getuid()).pw_name


def canonical(args):
    """approvald's canonical arguments JSON (jansson's JSON_COMPACT | JSON_SORT_KEYS, whose
    \\uXXXX escapes are upper case)."""
    s = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return re.sub(r"(\\+)u([0-9a-f]{4})",
                  lambda m: m.group(1) + "u" + m.group(2).upper()
                  if len(m.group(1)) % 2 == 1 else m.group(0), s)


def digest(action, args):
    return hashlib.sha256((action + "\n" + canonical(args)).encode()).hexdigest()


class Approvald:
    """Use as a context manager; start() runs `approvald serve` with conf (dict of --set
    values added to user= and decide_users=ME)."""

    def __init__(self, args, name, **conf):
        self.bin = os.path.abspath(args.bin)
        self.tools = os.path.abspath(args.tools or args.bin)
        self.keep = args.keep
        self.home = tempfile.mkdtemp(prefix=f"ahp-ap-{name[:10]}-", dir="/tmp")
        for d in ("etc", "run", "state", "log"):
            os.makedirs(os.path.join(self.home, d), exist_ok=True)
        self.conf = {"user": "", "decide_users": ME, "decide_groups": ""}
        self.conf.update(conf)
        self.proc = None
        self.logf = None
        self.orch_ep = "ipc://" + self.path("run/approvald.sock")
        self.human_ep = "ipc://" + self.path("run/approvald-human.sock")

    def path(self, rel):
        return os.path.join(self.home, rel)

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def sets(self):
        out = []
        for k, v in self.conf.items():
            out += ["--set", f"{k}={v}"]
        return out

    def start(self):
        self.logf = open(self.path("log/approvald.log"), "a")
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "approvald"), "--home", self.home, *self.sets(), "serve"],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: (self.proc.poll() is not None and self._died()) or
                 (socket_accepts(self.path("run/approvald.sock")) and
                  socket_accepts(self.path("run/approvald-human.sock"))),
                 10, "approvald's sockets")
        # The humans' socket is bound after the orchestrator's: both are up.
        return self

    def _died(self):
        raise TestFailure(f"approvald exited {self.proc.returncode}:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise TestFailure("approvald ignored SIGTERM for 10 s")
        rc = self.proc.returncode if self.proc is not None else None
        self.proc = None
        if self.logf is not None:
            self.logf.close()
            self.logf = None
        return rc

    def restart(self):
        rc = self.stop()
        check(rc == 0, f"approvald stopped with exit {rc}")
        return self.start()

    def log(self):
        try:
            with open(self.path("log/approvald.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            rc = self.stop()
            if exc_type is None:
                check(rc in (0, None), f"approvald exited {rc} on SIGTERM:\n{self.log()}")
                for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                    check(m not in self.log(), f"sanitizer report:\n{self.log()}")
        finally:
            if exc_type is not None:
                print(f"----- approvald.log -----\n{self.log()[-6000:]}", file=sys.stderr)
            if self.keep:
                print(f"kept {self.home}", file=sys.stderr)
            else:
                shutil.rmtree(self.home, ignore_errors=True)
        return False

    # --- the orchestrator's socket ---

    def send(self, body, sock="orch", timeout_ms=10000, hexbody=None):
        """One request (a dict: OrchRequest / HumanRequest as JSON, or hexbody bytes as
        hex); returns the reply as a dict."""
        ep = self.orch_ep if sock == "orch" else self.human_ep
        argv = [os.path.join(self.tools, "apprsend"), ep, sock]
        argv += ["--hex", hexbody] if hexbody is not None else ["-"]
        argv += ["--timeout", str(timeout_ms)]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout_ms / 1000 + 30,
                           input=json.dumps(body) if hexbody is None else "")
        check(p.returncode in (0, 3), f"apprsend exit {p.returncode}: {p.stderr}")
        return json.loads(p.stdout)

    def create(self, run_id, step, action="publish_summary", args=None, kind="KIND_APPROVAL",
               question="", expires_s=86400, profile="team-digest", dig=None):
        args = {} if args is None else args
        aj = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        if dig is None:
            dig = digest(action, json.loads(aj))
        return self.send({"create": {"run_id": run_id, "step": step, "profile": profile,
                                     "kind": kind, "action": action, "arguments_json": aj,
                                     "digest": dig, "question": question,
                                     "expires_s": expires_s}})

    def created(self, *a, **kw):
        """create, which must succeed; returns the request."""
        r = self.create(*a, **kw)
        check("create" in r and "error" not in r, f"create failed: {r}")
        return r["create"]["request"]

    def watch(self, after_seq=0, wait_ms=0, limit=0, log_id=""):
        return self.send({"watch": {"after_seq": after_seq, "wait_ms": wait_ms, "limit": limit,
                                    "log_id": log_id}}, timeout_ms=wait_ms + 10000)["watch"]

    def get(self, run_id, step):
        return self.send({"get": {"run_id": run_id, "step": step}})

    # --- the humans' CLI ---

    def cli(self, *argv, expect=None, user=None, timeout=30):
        """approvald CLI (as user via setpriv when given; needs root). Returns the
        CompletedProcess; expect: the exit code it must return."""
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

    def cli_json(self, *argv, expect=0, user=None):
        p = self.cli("--json", *argv, expect=expect, user=user)
        return json.loads(p.stdout)


def log_lines(text, msg):
    """The logfmt lines of approvald's log whose msg is msg, as dicts."""
    from ahptest import parse_logfmt
    out = []
    for line in text.splitlines():
        kv = parse_logfmt(line)
        if kv.get("msg") == msg:
            out.append(kv)
    return out


def approvald_built(args):
    return os.path.exists(os.path.join(args.bin, "approvald"))


def now_ms():
    return int(time.time() * 1000)
