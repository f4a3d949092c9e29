"""Helpers for the credproxy integration tests (Python 3 stdlib only).

- CredProxy: a credproxy started alone on a temp home (credproxy.conf, profiles, secrets
  0600, a hosts_file mapping test names to 127.0.0.1, a test CA for upstream TLS), driven
  over its relay unix socket with a hand-built PROXY v2 header (proxyv2.h) and over its
  api socket.
- Upstream fixtures on loopback: an HTTP(S) echo server that records every request and
  reflects headers and body (raw, base64, percent-encoded), redirects, chunked/SSE
  streaming held open until the test releases it, slow responses, 429 with Retry-After,
  and a git smart-HTTP server (git-http-backend) that requires a bearer token.
- A raw HTTP/1.1 client: exact bytes out, status/reason/headers/body in.
"""

import base64
import http.server
import os
import pwd
import re
import select
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import (Stack, TestFailure, check, pid_alive, run_test, socket_accepts,  # noqa: E402,F401
                     wait_for)

CP_USER = "ahp-credproxy"
# Names the hosts_file maps to 127.0.0.1 (credproxy resolves them; no DNS involved).
TEST_HOSTS = ("wiki.local", "echo.local", "redir.local", "other.local", "tls.local",
              "plain.local", "a.corp.local", "b.corp.local", "git.local", "api.local",
              "stream.local", "slow.local", "noinject.local", "bad.local")

# Names under *.corp.local mapped to special-purpose addresses: a wildcard rule reaching any
# of them is refused (403, the class named) before anything is connected to.
SPECIAL_HOSTS = {"priv.corp.local": "10.1.2.3", "meta.corp.local": "169.254.169.254",
                 "cgnat.corp.local": "100.64.0.1", "zero.corp.local": "0.0.0.0"}
# (IPv6 entries are not used: credproxy resolves with AI_ADDRCONFIG, and a host without a
# global IPv6 address gets no AAAA answers; the IPv6 classes are unit-tested in addr.)

# ----------------------------------------------------------------------- PROXY v2

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_RUN = 0xE0
PP2_TYPE_PROFILE = 0xE1


def proxy_v2(run, profile, extra_tlvs=()):
    """The header sandboxd writes (common/include/ahp/proxyv2.h): signature, ver_cmd 0x21,
    fam 0x00 (AF_UNSPEC), big-endian length, TLVs RUN and PROFILE (plus extra (type,
    bytes) TLVs, e.g. unknown ones that must be skipped)."""
    tlvs = b""
    for t, v in [(PP2_TYPE_RUN, run.encode()), (PP2_TYPE_PROFILE, profile.encode()),
                 *extra_tlvs]:
        tlvs += struct.pack("!BH", t, len(v)) + v
    return PP2_SIG + bytes([0x21, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs


# ----------------------------------------------------------------------- raw HTTP client


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def why(self):
        return self.header("X-Credproxy-Reason", "")

    def __repr__(self):
        b = self.body[:300]
        return f"<{self.status} {self.reason} {self.headers} body={b!r}>"


class Conn:
    """One client connection to a unix or TCP socket; keeps unread bytes between responses."""

    def __init__(self, path=None, addr=None, header=b"", timeout=15):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""
        if header:
            self.sock.sendall(header)

    def send(self, data):
        self.sock.sendall(data)

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_until(self, marker, limit=1 << 20):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise TestFailure(f"no {marker!r} in the first {limit} bytes")
            self._more()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """Status line and headers of the next response, without its body."""
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        check(len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        return Response(status, reason, headers, b"", raw)

    def read_chunk(self):
        """One chunk of a chunked body: bytes, or b'' for the last chunk (trailers read)."""
        line = self.read_until(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while self.read_until(b"\r\n") != b"\r\n":
                pass
            return b""
        data = self.read_exact(size)
        check(self.read_exact(2) == b"\r\n", "chunk not followed by CRLF")
        return data

    def read_body(self, resp, method="GET"):
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return b""
        if method == "CONNECT" and 200 <= resp.status < 300:
            return b""
        if "chunked" in te:
            out = b""
            while True:
                c = self.read_chunk()
                if not c:
                    return out
                out += c
        if cl is not None:
            return self.read_exact(int(cl))
        out = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TestFailure(f"body without length never ended (got {len(out)} bytes)")
            if not chunk:
                return out
            out += chunk

    def response(self, method="GET"):
        resp = self.read_head()
        resp.body = self.read_body(resp, method)
        return resp

    def request(self, raw, method=None):
        if isinstance(raw, str):
            raw = raw.encode()
        if method is None:
            method = raw.split(b" ", 1)[0].decode("latin-1")
        self.send(raw)
        return self.response(method)

    def closed(self, timeout=5):
        """True when the peer closes (EOF or reset) within timeout; unread bytes are kept."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


def get(host, path="/", port=None, method="GET", headers=(), body=b"", host_header=None):
    """An absolute-form request as a forward-proxy client sends it."""
    auth = host if port is None else f"{host}:{port}"
    lines = [f"{method} http://{auth}{path} HTTP/1.1",
             f"Host: {host_header if host_header is not None else auth}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ----------------------------------------------------------------------- fixtures


class Recorded:
    def __init__(self, method, path, headers, body, server):
        self.method = method
        self.path = path
        self.headers = headers  # list of (name, value)
        self.body = body
        self.server = server

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name):
        v = self.header_all(name)
        return v[0] if v else None

    def __repr__(self):
        return f"<{self.server} {self.method} {self.path} {self.headers}>"


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Reflects every request; special paths (matched anywhere in the path):
    /redir?to=URL  302 to URL          /sse       chunked SSE held until server.release is set
    /slow?s=N      sleeps N s first    /ratelimit 429 + Retry-After: 7
    /b64           body: base64 forms  /pct       body: percent-encoded forms
    /status?c=N    answers N           else       200, headers and body reflected
    /garbage       not HTTP            /hugehead  a 48 KiB response header
    /truncated     Content-Length 100, 10 bytes sent, then closed
    Every response reflects the Authorization header in X-Seen-Authorization."""

    protocol_version = "HTTP/1.1"
    server_version = "fixture"

    def log_message(self, *a):
        pass

    def _record(self):
        body = b""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                body = self.rfile.read(n)
        rec = Recorded(self.command, self.path, list(self.headers.items()), body,
                       self.server.name)
        with self.server.lock:
            self.server.seen.append(rec)
        return rec

    def _send(self, code, body, ctype="text/plain", extra=()):
        if code in (204, 304):
            body = b""
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        auth = self.headers.get("Authorization")
        if auth is not None:
            self.send_header("X-Seen-Authorization", auth)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        rec = self._record()
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        p = u.path
        if "/redir" in p:
            self._send(302, b"moved\n", extra=[("Location", q.get("to", "/"))])
        elif "/ratelimit" in p:
            self._send(429, b'{"error":{"message":"slow down","type":"rate_limit"}}',
                       "application/json", extra=[("Retry-After", "7")])
        elif "/status" in p:
            self._send(int(q.get("c", "200")), b"status\n")
        elif "/garbage" in p:
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif "/hugehead" in p:
            self.send_response(200)
            self.send_header("X-Huge", "h" * (48 * 1024))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif "/truncated" in p:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
        elif "/slow" in p:
            time.sleep(float(q.get("s", "5")))
            self._send(200, b"slow\n")
        elif "/sse" in p:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

            def chunk(b):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                self.wfile.flush()
            chunk(b"data: first\n\n")
            released = self.server.release.wait(30)
            chunk(b"data: last released=%d\n\n" % int(released))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif "/b64" in p or "/pct" in p:
            out = b""
            for k, v in rec.headers:
                vb = v.encode("latin-1")
                if "/b64" in p:
                    out += (b"%s std=%s url=%s\n" % (k.encode(), base64.b64encode(vb),
                                                      base64.urlsafe_b64encode(vb)))
                else:
                    out += (b"%s upper=%s lower=%s\n" % (k.encode(), pct(vb, upper=True).encode(),
                                                          pct(vb, upper=False).encode()))
            self._send(200, out)
        else:
            out = b"".join(b"%s: %s\n" % (k.encode(), v.encode("latin-1"))
                           for k, v in rec.headers)
            out += b"\n" + rec.body
            self._send(200, out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


def pct(b, upper=True):
    """Percent-encoded as a reflecting server would (RFC 3986: every byte but the
    unreserved ones), with upper- or lower-case hex."""
    s = urllib.parse.quote(b, safe="")
    return s if upper else re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        # http.server writes a head and a body in two sends: without TCP_NODELAY each
        # kept-alive response waits for a delayed ACK (~40 ms).
        conn, addr = super().get_request()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return conn, addr

    def handle_error(self, request, client_address):
        """A client (credproxy) that goes away mid-response is no fixture error."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Fixture:
    """An echo server on 127.0.0.1:<random port>, optionally TLS (certfile/keyfile)."""

    def __init__(self, name, handler=EchoHandler, certfile=None, keyfile=None):
        self.srv = _Server(("127.0.0.1", 0), handler)
        self.srv.name = name
        self.srv.seen = []
        self.srv.lock = threading.Lock()
        self.srv.release = threading.Event()
        self.tls = certfile is not None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self):
        with self.srv.lock:
            return list(self.srv.seen)

    def release(self):
        self.srv.release.set()

    def stop(self):
        if getattr(self, "stopped", False):
            return
        self.stopped = True
        self.srv.release.set()
        self.srv.shutdown()
        self.srv.server_close()


class GitHandler(http.server.BaseHTTPRequestHandler):
    """git smart HTTP through /usr/lib/git-core/git-http-backend; answers 401 unless
    Authorization is "Bearer <server.token>" (so a clone proves the injection)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        auth = self.headers.get("Authorization")
        with self.server.lock:
            self.server.seen.append(Recorded(self.command, self.path, list(self.headers.items()),
                                             b"", self.server.name))
        if auth != "Bearer " + self.server.token:
            msg = b"bearer token required\n"
            self.send_response(401)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        u = urllib.parse.urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.server.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(u.path),
            "QUERY_STRING": u.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for k in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(k):
                env["HTTP_" + k.upper().replace("-", "_")] = self.headers[k]
        p = subprocess.run(["/usr/lib/git-core/git-http-backend"], input=body, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        head, _, out = p.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, out = p.stdout.partition(b"\n\n")
        status = 200
        hdrs = []
        for ln in head.replace(b"\r\n", b"\n").split(b"\n"):
            k, _, v = ln.decode("latin-1").partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                hdrs.append((k, v.strip()))
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _handle


def git_fixture(root, token):
    """A git smart-HTTP server for bare repositories under root, requiring token."""
    f = Fixture("git", handler=GitHandler)
    f.srv.root = root
    f.srv.token = token
    return f


def make_bare_repo(root, name, files):
    """root/name.git with one commit holding files {path: text}."""
    work = tempfile.mkdtemp(prefix="ahp-gitw-")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", HOME=work)
    subprocess.run(["git", "init", "-q", "-b", "main", work], check=True, env=env)
    for rel, text in files.items():
        with open(os.path.join(work, rel), "w") as f:
            f.write(text)
    subprocess.run(["git", "-C", work, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", work, "commit", "-q", "-m", "init"], check=True, env=env)
    dst = os.path.join(root, name + ".git")
    subprocess.run(["git", "clone", "-q", "--bare", work, dst], check=True, env=env)
    shutil.rmtree(work, ignore_errors=True)
    return dst


# ----------------------------------------------------------------------- test CA


def make_test_ca(d, names=("tls.local", "plain.local")):
    """A test CA (d/ca.crt) and a leaf for names + 127.0.0.1 (d/leaf.crt, d/leaf.key),
    made with the openssl CLI. Returns (ca_crt, leaf_crt, leaf_key)."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, x) for x in ("leaf.key", "leaf.csr", "leaf.crt"))
    ext = os.path.join(d, "leaf.ext")

    def run(*argv):
        p = subprocess.run(["openssl", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        check(p.returncode == 0, f"openssl {' '.join(argv)}:\n{p.stdout}")
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=ahp upstream test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}")
    with open(ext, "w") as f:
        san = ",".join([f"DNS:{n}" for n in names] + ["IP:127.0.0.1"])
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    for p in (ca_crt, crt, key):
        os.chmod(p, 0o644)
    return ca_crt, crt, key


# ----------------------------------------------------------------------- credproxy


def ensure_cp_user():
    """The user credproxy drops to when started as root (created once per host)."""
    if os.geteuid() != 0:
        return
    import fcntl
    with open("/run/ahp-stack-users.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(CP_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", "--user-group", CP_USER],
                           check=False)


def credproxy_bin(args):
    p = os.path.join(os.path.abspath(args.bin), "credproxy")
    return p if os.access(p, os.X_OK) else None


class CredProxy:
    """credproxy alone on a temp home. Use as a context manager (stopped, home removed)."""

    def __init__(self, args, name):
        self.args = args
        self.exe = credproxy_bin(args)
        self.home = tempfile.mkdtemp(prefix=f"ahp-cp-{name[:10]}-", dir="/tmp")
        os.chmod(self.home, 0o711)
        for d in ("etc/profiles", "etc/secrets/credproxy", "run", "log", "state"):
            os.makedirs(self.path(d), exist_ok=True)
        os.chmod(self.path("etc/secrets"), 0o700)
        os.chmod(self.path("etc/secrets/credproxy"), 0o700)
        self.proc = None
        self.logf = None
        self.sets = []
        self.secrets = {}
        self.conf = {}
        self.write("etc/hosts", "".join(f"127.0.0.1 {h}\n" for h in TEST_HOSTS) +
                   "".join(f"{a} {h}\n" for h, a in SPECIAL_HOSTS.items()))
        self.conf["hosts_file"] = self.path("etc/hosts")

    def path(self, rel):
        return os.path.join(self.home, rel)

    @property
    def relay(self):
        return self.path("run/credproxy.sock")

    @property
    def api(self):
        return self.path("run/credproxy-api.sock")

    @property
    def ca(self):
        return self.path("state/credproxy/ca.crt")

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def write_secret(self, name, value):
        self.secrets[name] = value
        self.write(f"etc/secrets/credproxy/{name}", value + "\n", mode=0o600)
        return value

    def write_profile(self, name, egress_yaml, extra=""):
        """egress_yaml: the YAML list under 'egress:' (already indented by two spaces)."""
        text = (f"name: {name}\nmodel: mock:none\nsystem_prompt: |\n  test profile\n"
                f"sandbox: {{ network: proxy }}\n{extra}egress:\n{egress_yaml}")
        return self.write(f"etc/profiles/{name}.yaml", text)

    def write_providers(self, text):
        return self.write("etc/providers.conf", text)

    def write_conf(self):
        return self.write("etc/credproxy.conf",
                          "".join(f"{k} = {v}\n" for k, v in self.conf.items()))

    def _own(self):
        """As root, credproxy drops to ahp-credproxy after binding: give it its state and
        secrets (it reads secrets again on SIGHUP)."""
        if os.geteuid() != 0:
            return
        ensure_cp_user()
        try:
            pw = pwd.getpwnam(CP_USER)
        except KeyError:
            return
        os.makedirs(self.path("state/credproxy"), exist_ok=True)
        for d in ("state/credproxy", "etc/secrets/credproxy"):
            for dirpath, dirnames, filenames in os.walk(self.path(d)):
                os.chown(dirpath, pw.pw_uid, pw.pw_gid)
                for n in filenames:
                    os.chown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)
        os.chown(self.path("etc/secrets"), pw.pw_uid, pw.pw_gid)
        os.chmod(self.path("state"), 0o711)
        os.chmod(self.path("run"), 0o711)
        os.chmod(self.path("log"), 0o711)

    def cli(self, *argv, timeout=30):
        p = subprocess.run([self.exe, "--home", self.home, *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout, errors="replace")
        return p

    def start(self, *sets):
        self.sets = list(sets)
        self.write_conf()
        self._own()
        argv = [self.exe, "--home", self.home]
        for s in self.sets:
            argv += ["--set", s]
        argv.append("serve")
        self.logf = open(self.path("log/credproxy.log"), "ab")
        since = self.logf.tell()  # this start's lines (the log is appended to)
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def ready():
            """Its "serving" line: the sockets are bound before the privilege drop and
            accept (into the backlog) while it still makes its CA and loads its
            profiles; the line comes after all of it."""
            if self.proc.poll() is not None:
                raise TestFailure(f"credproxy exited {self.proc.returncode} at start:\n"
                                  + self.log()[-4000:])
            with open(self.path("log/credproxy.log"), "rb") as f:
                f.seek(since)
                serving = b"serving relay=" in f.read()
            return serving and socket_accepts(self.relay) and socket_accepts(self.api)
        wait_for(ready, 20, "credproxy's sockets and its serving line")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None

    def log(self):
        try:
            with open(self.path("log/credproxy.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self):
        return self.log().splitlines()

    def egress_lines(self):
        return [ln for ln in self.log_lines() if "msg=egress" in ln]

    # --- clients ---

    def conn(self, profile="wiki-bot", run="run-1", timeout=15):
        return Conn(path=self.relay, header=proxy_v2(run, profile), timeout=timeout)

    def ask(self, raw, profile="wiki-bot", run="run-1", timeout=15):
        """One request on a fresh relay connection."""
        with self.conn(profile, run, timeout) as c:
            return c.request(raw)

    def api_ask(self, raw, timeout=15):
        with Conn(path=self.api, timeout=timeout) as c:
            return c.request(raw)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            tail = "\n".join(self.log_lines()[-60:])
            print(f"----- credproxy.log (tail) -----\n{tail}", file=sys.stderr)
        self.stop()
        if getattr(self.args, "keep", False):
            print(f"kept {self.home}", file=sys.stderr)
        else:
            shutil.rmtree(self.home, ignore_errors=True)
        return False


def need_credproxy(args):
    """77 (skip) when credproxy is not built; None otherwise."""
    if credproxy_bin(args) is None:
        print(f"no credproxy in {args.bin}: skipped")
        return 77
    return None


def run_standard(name, fn, with_tls=False, start=True, sets=(), prepare=None):
    """main() of a direct credproxy test (run through run_test: exits 0 pass, 1 fail, 77 when
    credproxy is not built): on a CredProxy home named name with the Standard fixtures
    (with_tls: the TLS ones too), calls prepare(cp, std) when given, starts credproxy with
    `--set` sets unless start is false, then runs fn(cp, std), which raises on failure. The
    fixtures are stopped and the home removed whatever happens."""
    def main(args):
        if need_credproxy(args):
            return 77
        with CredProxy(args, name) as cp:
            std = Standard(cp, with_tls=with_tls)
            try:
                if prepare:
                    prepare(cp, std)
                if start:
                    cp.start(*sets)
                fn(cp, std)
            finally:
                std.stop()
        return 0
    run_test(main)


def b64_cores(secret):
    """Substrings that base64 of any text holding secret must contain (each alignment,
    standard and URL-safe), minus the partial groups at either end."""
    out = set()
    s = secret.encode() if isinstance(secret, str) else secret
    for k in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            e = enc(b"\0" * k + s)
            start = ((k + 2) // 3) * 4
            end = (len(b"\0" * k + s) // 3) * 4
            if end - start >= 8:
                out.add(e[start:end])
    return out


def assert_no_secret(data, secret, where):
    """No raw, base64 (any alignment) or percent-encoded (either case) form of secret."""
    if isinstance(data, str):
        data = data.encode("latin-1", "replace")
    s = secret.encode()
    check(s not in data, f"secret value in {where}: {data[:2000]!r}")
    for core in b64_cores(secret):
        check(core not in data, f"base64 form of the secret in {where}: {data[:2000]!r}")
    for up in (True, False):
        check(pct(s, up).encode() not in data,
              f"percent-encoded secret in {where}: {data[:2000]!r}")


def wait_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


# ----------------------------------------------------------------------- the standard setup

def new_secret(prefix):
    """A secret long enough to be scrubbed, with bytes that percent-encoding changes."""
    import secrets as _s
    return f"{prefix}-{_s.token_hex(12)}/+={_s.token_hex(4)}"


STANDARD_EGRESS = """\
  - host: "wiki.local:{E}"
    methods: [GET, POST]
    paths: [/snippets/]
    inject:
      Authorization: "Bearer {{{{secret:wiki-token}}}}"
      X-Api-Key: "{{{{secret:wiki-token}}}}"
  - host: "echo.local:{E}"
    methods: [GET, POST, PUT]
    inject:
      Authorization: "Bearer {{{{secret:echo-token}}}}"
  - host: "redir.local:{E}"
    inject:
      Authorization: "Bearer {{{{secret:wiki-token}}}}"
  - host: "other.local:{E}"
  - host: "stream.local:{E}"
  - host: "*.corp.local:{E}"
  - host: "tls.local:{T}"
    methods: [GET, POST]
    inject:
      Authorization: "Bearer {{{{secret:wiki-token}}}}"
  - host: "plain.local:{T}"
  - host: "bad.local:{B}"
    inject:
      Authorization: "Bearer {{{{secret:wiki-token}}}}"
"""


class Standard:
    """Fixtures and a credproxy home with profile wiki-bot (STANDARD_EGRESS), secrets
    wiki-token, echo-token and llm-key, providers mock/limited/xkey/named/open, and a
    test CA for the TLS upstreams. with_tls: also the TLS fixtures (openssl CLI)."""

    def __init__(self, cp, with_tls=False):
        self.cp = cp
        self.echo = Fixture("echo")
        self.fixtures = [self.echo]
        self.tls = self.bad = None
        T = B = 9
        if with_tls:
            ca, crt, key = make_test_ca(cp.path("test-ca"))
            self.test_ca = ca
            self.leaf = crt
            self.tls = Fixture("tls", certfile=crt, keyfile=key)
            # An upstream whose certificate no trusted CA signed: credproxy must refuse it.
            _, bcrt, bkey = make_test_ca(cp.path("rogue-ca"), names=("bad.local",))
            self.bad = Fixture("bad", certfile=bcrt, keyfile=bkey)
            self.fixtures += [self.tls, self.bad]
            T, B = self.tls.port, self.bad.port
            cp.conf["upstream_ca_file"] = ca
        self.E, self.T, self.B = self.echo.port, T, B
        self.wiki = cp.write_secret("wiki-token", new_secret("wk"))
        self.echo_tok = cp.write_secret("echo-token", new_secret("et"))
        self.llm = cp.write_secret("llm-key", new_secret("sk"))
        cp.write_profile("wiki-bot", STANDARD_EGRESS.format(E=self.E, T=T, B=B))
        cp.write_providers(
            f"# test providers\n"
            f"mock http://127.0.0.1:{self.E} bearer llm-key\n"
            f"limited http://127.0.0.1:{self.E}/ratelimit bearer llm-key\n"
            f"xkey http://api.local:{self.E} x-api-key llm-key\n"
            f"named http://127.0.0.1:{self.E}/named header:X-Custom-Key llm-key\n"
            f"open http://127.0.0.1:{self.E} none\n")

    def all_secrets(self):
        return [self.wiki, self.echo_tok, self.llm]

    def stop(self):
        for f in self.fixtures:
            f.stop()

    def seen_since(self, n, fixture=None):
        return (fixture or self.echo).seen[n:]

    def assert_log_clean(self):
        """No secret value, in any form, anywhere in credproxy's log."""
        log = self.cp.log()
        for s in self.all_secrets():
            assert_no_secret(log, s, "credproxy.log")


def refused(resp, status, *words, profile="wiki-bot"):
    """resp is credproxy's refusal: exactly status, X-Credproxy-Reason holding every word
    (case-insensitive) and, for 403, the profile's name; a one-line text/plain body."""
    check(resp.status == status, f"expected {status}, got {resp!r}")
    why = resp.why
    check(why, f"{status} without X-Credproxy-Reason: {resp!r}")
    for w in words:
        check(w.lower() in why.lower(), f"reason {why!r} does not mention {w!r}")
    if status == 403 and profile:
        check(f"profile {profile}" in why, f"reason {why!r} does not name profile {profile}")
    ctype = (resp.header("Content-Type") or "").lower()
    check(ctype.startswith("text/plain"), f"refusal Content-Type {ctype!r}")
    text = resp.body.decode("utf-8", "replace")
    check(text.strip() and "\n" not in text.strip(), f"refusal body is not one line: {text!r}")
    return why


# ----------------------------------------------------------------------- the whole stack


def stack_secret(st, name, value):
    """A credproxy secret in a Stack home (Stack.write_secret when the stack has it)."""
    ws = getattr(st, "write_secret", None)
    if ws is not None:
        ws(name, value)
    else:
        p = st.path(f"etc/secrets/credproxy/{name}")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.chmod(os.path.dirname(os.path.dirname(p)), 0o700)
        os.chmod(os.path.dirname(p), 0o700)
        with open(p, "w") as f:
            f.write(value + "\n")
        os.chmod(p, 0o600)
    return value


def stack_credproxy_conf(st, **kv):
    """HOME/etc/credproxy.conf for a Stack home: the test hosts file plus kv."""
    hosts = st.write("etc/hosts-test", "".join(f"127.0.0.1 {h}\n" for h in TEST_HOSTS))
    conf = {"hosts_file": hosts, **kv}
    return st.write("etc/credproxy.conf", "".join(f"{k} = {v}\n" for k, v in conf.items()))


def stack_providers_add(st, line):
    """Adds line to HOME/etc/providers.conf (kept if the stack rewrites its own lines)."""
    p = st.path("etc/providers.conf")
    old = ""
    if os.path.exists(p):
        with open(p) as f:
            old = f.read()
    if line not in old.splitlines():
        with open(p, "w") as f:
            f.write(old + ("" if old.endswith("\n") or not old else "\n") + line + "\n")
        os.chmod(p, 0o644)
        return True
    return False


def sbx_exec(st, profile, script, timeout=90, keep=False):
    """`sandboxd --home H exec --profile P -- sh -c script`: (rc, stdout, stderr) as text."""
    argv = [os.path.join(st.bin, "sandboxd"), "--home", st.home, "exec", "--profile", profile]
    if keep:
        argv.append("--keep")
    argv += ["--", "sh", "-c", script]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, text=True, errors="replace")
    check(p.returncode != 125, f"sandboxd exec could not reach sandboxd: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def host_ipv4():
    """The host's first global IPv4 address, or None."""
    p = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for ln in p.stdout.splitlines():
        parts = ln.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None



class KeyedLLMHandler(http.server.BaseHTTPRequestHandler):
    """A model provider that requires "Authorization: Bearer <server.key>" (401 otherwise)
    and answers by forwarding to mock-llm (server.upstream() gives its port)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = Recorded(self.command, self.path, list(self.headers.items()), body, "keyed")
        with self.server.lock:
            self.server.seen.append(rec)
        if self.headers.get_all("Authorization") != ["Bearer " + self.server.key]:
            msg = b'{"error":{"message":"invalid api key","type":"auth"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        import urllib.request
        import urllib.error
        req = urllib.request.Request(f"http://127.0.0.1:{self.server.upstream()}{self.path}",
                                     data=body if self.command == "POST" else None,
                                     method=self.command,
                                     headers={"Content-Type": self.headers.get(
                                         "Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, ctype, out = r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, out = e.code, e.headers.get("Content-Type"), e.read()
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _handle


def keyed_llm_fixture(key, upstream_port_fn):
    f = Fixture("keyed", handler=KeyedLLMHandler)
    f.srv.key = key
    f.srv.upstream = upstream_port_fn
    return f


def keyed_profile(st, name, scenario, provider="keyed", tools=(), extra=""):
    """A profile whose model is provider:scenario (Stack.write_profile says mock:)."""
    text = (f"name: {name}\nmodel: {provider}:{scenario}\nsystem_prompt: |\n  test agent\n"
            f"tools: [{', '.join(tools)}]\n{extra}")
    return st.write(f"etc/profiles/{name}.yaml", text)


class Cases:
    """Runs named cases, collecting wrong outcomes so that every case runs and all are
    reported together (check() at the end fails the test with the list)."""

    def __init__(self):
        self.failures = []

    def run(self, name, fn, *a):
        try:
            return fn(*a)
        except (TestFailure, OSError, EOFError) as e:
            self.failures.append(f"{name}: {e}")
            return None

    def check(self):
        check(not self.failures, f"{len(self.failures)} case(s) failed:\n" +
              "\n".join(self.failures))
