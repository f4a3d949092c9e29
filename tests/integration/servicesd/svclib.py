"""Helpers for the servicesd integration tests (Python 3 stdlib only).

- Mock: mocks/mock-services on an ephemeral loopback port (port file), with its own token
  files and failure-injection flags; /stats over HTTP.
- Servicesd: servicesd alone on a temp home (ipc:// endpoint under HOME/run), as the current
  user (`user = ""` when root) and allowing only the current user on its socket, with
  profiles, services.conf and 0600 secrets written by the test.
- svccall (tests/integration/servicesd/svccall.c) is the RPC client: every request is sent
  before any reply is read, and each Reply comes back as a dict (ahp.svcd.Reply as JSON).
"""

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import (TestFailure, check, parse_logfmt, run_test,  # noqa: E402,F401
                     socket_accepts, wait_for)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

WIKI_TOKEN = "wiki-tok-3f9a1c0e5b7d"
WEBHOOK_TOKEN = "hook-tok-8e2d4a6c1f0b"


def me():
    return pwd.getpwuid(os.geteuid()).pw_name


def exe(args, name, tools=False):
    d = args.tools if tools else args.bin
    p = os.path.join(os.path.abspath(d or "."), name)
    return p if os.access(p, os.X_OK) else None


def need_servicesd(args):
    """77 (skip) when servicesd, mock-services or svccall is not built; None otherwise."""
    for n, tools in (("servicesd", False), ("mock-services", False), ("svccall", True)):
        if exe(args, n, tools) is None:
            print(f"no {n} in {args.tools if tools else args.bin}: skipped")
            return 77
    return None


def no_sanitizer_reports(text, what):
    """Fails on ASan/UBSan output (SAN=1 builds) in text."""
    bad = [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKS)]
    check(not bad, f"sanitizer reports from {what}:\n" + "\n".join(bad[:20]))


def free_port():
    """A loopback port nothing listens on (bound then closed: connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------- mock-services


class Mock:
    """mock-services on 127.0.0.1:ephemeral. extra: flags such as --hang-ms 2000."""

    def __init__(self, args, d, name="mock", extra=(), wiki_token=WIKI_TOKEN,
                 webhook_token=WEBHOOK_TOKEN):
        self.exe = exe(args, "mock-services")
        self.dir = d
        self.name = name
        self.extra = list(extra)
        self.port_file = os.path.join(d, f"{name}.port")
        self.wiki_file = os.path.join(d, f"{name}.wiki-token")
        self.hook_file = os.path.join(d, f"{name}.webhook-token")
        for path, v in ((self.wiki_file, wiki_token), (self.hook_file, webhook_token)):
            with open(path, "w") as f:
                f.write(v + "\n")
            os.chmod(path, 0o600)
        self.proc = None
        self.logf = None
        self.port = None

    def start(self):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.logf = open(os.path.join(self.dir, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--port", "0", "--port-file", self.port_file,
             "--wiki-token-file", self.wiki_file, "--webhook-token-file", self.hook_file,
             *self.extra], stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure(f"mock-services exited {self.proc.returncode}:\n{self.log()}")
            try:
                with open(self.port_file) as f:
                    return int(f.read().strip() or 0)
            except (OSError, ValueError):
                return 0
        self.port = wait_for(ready, 15, "mock-services' port file")
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def http(self, method, path, body=None, headers=None, timeout=10):
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stats(self):
        st, body = self.http("GET", "/stats")
        check(st == 200, f"mock /stats: {st} {body!r}")
        return json.loads(body)

    def reset(self):
        st, body = self.http("POST", "/stats/reset", body=b"")
        check(st == 200, f"mock /stats/reset: {st} {body!r}")

    def log(self):
        try:
            with open(os.path.join(self.dir, f"{self.name}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None


# ----------------------------------------------------------------------- servicesd


def profile_yaml(name, services, tools=("exec_service",)):
    text = (f"name: {name}\nmodel: mock:none\nsystem_prompt: |\n  servicesd test profile\n"
            f"tools: [{', '.join(tools)}]\n")
    if services is not None:
        text += f"services: [{', '.join(services)}]\n"
    return text


class Servicesd:
    """servicesd alone on a temp home. Use as a context manager: stopped (with its mocks),
    home removed unless --keep, logs printed when the test fails."""

    def __init__(self, args, name):
        self.args = args
        self.exe = exe(args, "servicesd")
        self.svccall = exe(args, "svccall", tools=True)
        self.home = tempfile.mkdtemp(prefix=f"ahp-svc-{name[:10]}-", dir="/tmp")
        os.chmod(self.home, 0o711)
        for d in ("etc/profiles", "etc/secrets/servicesd", "run", "log", "state"):
            os.makedirs(self.path(d), exist_ok=True)
        for d in ("run", "log", "state", "etc"):
            os.chmod(self.path(d), 0o711)
        os.chmod(self.path("etc/secrets"), 0o700)
        os.chmod(self.path("etc/secrets/servicesd"), 0o700)
        self.proc = None
        self.logf = None
        self.mocks = []
        self.conf = {"user": "", "allow_users": me()}

    def path(self, rel):
        return os.path.join(self.home, rel)

    @property
    def sock(self):
        return self.path("run/servicesd.sock")

    @property
    def endpoint(self):
        return "ipc://" + self.sock

    @property
    def db(self):
        return self.path("state/servicesd/servicesd.db")

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def write_secret(self, name, value):
        return self.write(f"etc/secrets/servicesd/{name}", value + "\n", mode=0o600)

    def write_tokens(self, wiki=WIKI_TOKEN, webhook=WEBHOOK_TOKEN):
        self.write_secret("wiki-token", wiki)
        self.write_secret("webhook-token", webhook)

    def write_profile(self, name, services, tools=("exec_service",)):
        return self.write(f"etc/profiles/{name}.yaml", profile_yaml(name, services, tools))

    def write_services(self, text):
        return self.write("etc/services.conf", text)

    def point_at(self, mock, timeout_ms=None, services=("lookup_wiki", "publish_summary")):
        """services.conf: the services named, at mock (a Mock or a base URL)."""
        url = mock if isinstance(mock, str) else mock.url
        t = f" timeout_ms={timeout_ms}" if timeout_ms else ""
        return self.write_services("".join(f"{s} url={url}{t}\n" for s in services))

    def write_conf(self):
        return self.write("etc/servicesd.conf",
                          "".join(f"{k} = {v}\n" for k, v in self.conf.items()))

    def mock(self, name="mock", extra=(), **kw):
        m = Mock(self.args, self.path("log"), name, extra, **kw).start()
        self.mocks.append(m)
        return m

    def standard(self, mock_extra=(), timeout_ms=None):
        """The usual home: a mock with the real tokens, both services configured at it,
        profiles `both` (lookup_wiki, publish_summary) and `wiki` (lookup_wiki only)."""
        m = self.mock(extra=mock_extra)
        self.write_tokens()
        self.point_at(m, timeout_ms)
        self.write_profile("both", ["lookup_wiki", "publish_summary"])
        self.write_profile("wiki", ["lookup_wiki"])
        return m

    def cli(self, *argv, timeout=30):
        self.write_conf()
        p = subprocess.run([self.exe, "--home", self.home, *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout, errors="replace")
        no_sanitizer_reports(p.stderr, "servicesd " + " ".join(argv))
        return p

    def start(self, *sets):
        self.write_conf()
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        argv = [self.exe, "--home", self.home]
        for s in sets:
            argv += ["--set", s]
        argv.append("serve")
        self.logf = open(self.path("log/servicesd.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure(f"servicesd exited {self.proc.returncode} at start:\n"
                                  + self.log()[-4000:])
            return socket_accepts(self.sock) and "serving endpoint=" in self.log()
        wait_for(ready, 20, "servicesd's socket")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None

    def hup(self):
        """SIGHUP, then waits for the reload's log line (or its failure)."""
        before = self.log().count("reload")
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log().count("reload") > before, 10, "servicesd's reload line")

    def log(self):
        try:
            with open(self.path("log/servicesd.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self):
        return self.log().splitlines()

    def log_kv(self, msg):
        """Parsed log lines whose msg is msg."""
        return [kv for kv in map(parse_logfmt, self.log_lines()) if kv.get("msg") == msg]

    def rows(self, sql="SELECT key, state, service FROM calls ORDER BY key", params=()):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    # --- the client ---

    def send(self, *requests, timeout=10000, user=None, expect_rc=None):
        """Sends every request (a dict: an ahp.svcd.Request as JSON; a str: passed as is,
        e.g. "hex:..." or "@path") on one connection before reading any reply; returns the
        list of outcomes ({"reply": {...}} / {"transport_error": {...}} / {"timeout": True})
        in order. user: run svccall as that user (root only, with setpriv)."""
        argv = [self.svccall, self.endpoint, "--timeout", str(timeout)]
        for r in requests:
            argv.append(r if isinstance(r, str) else json.dumps(r))
        if user is not None:
            pw = pwd.getpwnam(user)
            argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                    "--clear-groups", *argv]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout / 1000 + 30)
        no_sanitizer_reports(p.stderr, "svccall")
        if expect_rc is not None:
            check(p.returncode == expect_rc,
                  f"svccall exit {p.returncode}, expected {expect_rc}:\n{p.stdout}\n{p.stderr}")
        elif p.returncode not in (0, 3):
            raise TestFailure(f"svccall exit {p.returncode}:\n{p.stdout}\n{p.stderr}")
        out = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
        check(len(out) == len(requests), f"svccall printed {len(out)} lines for "
              f"{len(requests)} requests:\n{p.stdout}\n{p.stderr}")
        return out

    def popen(self, *requests, timeout=10000):
        """svccall in the background (for a call that is in flight while the test acts)."""
        argv = [self.svccall, self.endpoint, "--timeout", str(timeout)]
        argv += [r if isinstance(r, str) else json.dumps(r) for r in requests]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def reply(self, request, timeout=10000):
        """One request -> its ahp.svcd.Reply as a dict (fails on a transport error)."""
        (o,) = self.send(request, timeout=timeout)
        check("reply" in o, f"no reply: {o}")
        return o["reply"]

    def call(self, service, args, run="run-1", step=1, profile="both", timeout=10000):
        """A Call -> its CallReply (fails when the Reply carries an ahp.Error instead)."""
        r = self.reply(call_req(service, args, run, step, profile), timeout)
        check("error" not in r and "call" in r, f"Call answered with no CallReply: {r}")
        return r["call"]

    def describe(self, profile):
        return self.reply({"describe": {"profile": profile}})

    # --- context manager ---

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        for m in self.mocks:
            m.stop()
        failed = exc_type is not None
        try:
            if not failed:
                # Daemons report leaks and UB when they exit: a clean stop is part of
                # the test.
                no_sanitizer_reports(self.log(), "servicesd")
                for m in self.mocks:
                    no_sanitizer_reports(m.log(), m.name)
        except TestFailure:
            failed = True
            raise
        finally:
            if failed:
                self._dump()
            self._cleanup()
        return False

    def _dump(self):
        sys.stderr.write(f"--- servicesd log ({self.home}):\n{self.log()[-6000:]}\n")
        for m in self.mocks:
            sys.stderr.write(f"--- {m.name} log:\n{m.log()[-3000:]}\n")

    def _cleanup(self):
        if getattr(self.args, "keep", False):
            print(f"kept {self.home}")
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def call_req(service, args, run="run-1", step=1, profile="both"):
    """A Request {call: ...}; args a dict (sent as JSON text) or a str (sent as is)."""
    aj = args if isinstance(args, str) else json.dumps(args)
    return {"call": {"run_id": run, "profile": profile, "step": step, "service": service,
                     "args_json": aj}}


def ok_result(cr):
    """The result object of a successful CallReply (fails with the error otherwise)."""
    check(not cr.get("error"), f"call failed: {cr}")
    check(cr.get("result_json"), f"no result_json: {cr}")
    return json.loads(cr["result_json"])


def err_of(cr, code):
    """The ServiceError of a CallReply, checked to have code."""
    e = cr.get("error")
    check(e is not None, f"expected error {code}, got a result: {cr}")
    check(e.get("code") == code, f"expected error {code}, got {e}")
    check(not cr.get("result_json"), f"error with a result_json: {cr}")
    return e

