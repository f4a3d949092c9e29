#!/usr/bin/env python3
"""What still works inside a sandbox under the default-deny seccomp policy: the host's own
tools (the host allowlist binds /usr) run inside a real sandboxd sandbox, each asserting its
exact output. A tool that fails here needs a syscall the allowlist lacks: add it to the table
in sandboxd/seccomp.c with a reason.

usage: test_tools.py --bin DIR TOOL     (exit 0 pass, 1 fail, 77 skip: needs root / the tool)

TOOL: shell (sh, bash, coreutils, tar, find, sed, awk), python (threads, subprocess,
multiprocessing, asyncio, sockets on loopback), git (init, commit, log, clone), curl (to an
HTTP server started inside the sandbox on loopback, and file://), gcc_make (compile and run a
threaded C program), node_npm (worker_threads, http on loopback, npm), pip (--version, and an
offline install of a local package). Python 3 stdlib only.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sandboxd import Daemon, needs_root, ok  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import check, run_case  # noqa: E402

# Room for node, npm, gcc and pip; each command gets at most 60 s.
LIMITS = {"memory_mb": 1024, "pids_max": 256, "cpu_seconds": 60, "timeout_s": 60,
          "output_kb": 256}

TOOLS = {}


def tool(*binaries):
    """Registers a check that needs these host binaries (skipped when one is missing)."""
    def reg(fn):
        TOOLS[fn.__name__[len("t_"):]] = (binaries, fn)
        return fn
    return reg


class Sandbox:
    def __init__(self, d, name):
        self.c = d.client(timeout=90)
        self.sid = "tools-" + name.replace("_", "-")
        ok(self.c.create(self.sid, profile="tools", limits=LIMITS), "create")
        self.n = 0

    def sh(self, script, want_exit=0):
        """Runs script (sh -c) in the sandbox; returns its stdout. Asserts the exit code."""
        self.n += 1
        r = ok(self.c.exec(self.sid, str(self.n), script, 0, 90), f"exec {script[:60]!r}")
        out = r["stdout"].decode(errors="replace")
        errout = r["stderr"].decode(errors="replace")
        print(f"$ {script.strip()[:200]}\n-> exit {r['exit_code']} killed_by={r['killed_by']}")
        if out.strip():
            print(out.rstrip()[-3000:])
        if errout.strip():
            print("stderr: " + errout.rstrip()[-3000:])
        check(r["killed_by"] == "none" and r["exit_code"] == want_exit,
              f"exit {r['exit_code']} (killed_by {r['killed_by']}), expected {want_exit}: "
              f"{errout[-2000:]}")
        return out


def lines(out):
    return out.strip("\n").split("\n")


@tool("sh", "bash", "ls", "cp", "sort", "tar", "find", "sed", "awk", "xargs")
def t_shell(s):
    out = s.sh(r"""set -e
cd /workspace
bash -c 'a=(x y z); echo "bash ${#a[@]} $((6*7))"'
mkdir -p d/e && printf 'b\na\nc\n' > d/e/f.txt && ln -s f.txt d/e/l
ls d/e | tr '\n' ' '; echo
cp -a d d2 && readlink d2/e/l && sort d2/e/f.txt | tr '\n' ' '; echo
tar -czf t.tgz d && mkdir x && tar -xzf t.tgz -C x && find x -type f | sort
sed 's/a/A/' d/e/f.txt | tr '\n' ' '; echo
awk '{n++; s = s $1} END {print n, s}' d/e/f.txt
find d -name '*.txt' -print0 | xargs -0 wc -l | awk '{print $1}'
mkfifo p && (echo through-fifo > p &) && cat p
sleep 0.05 & wait $! && echo waited
timeout 5 sh -c 'echo in-timeout'
chmod 600 d/e/f.txt && stat -c %a d/e/f.txt
echo "$(id -u) $(pwd)"
du -s d >/dev/null && df /workspace >/dev/null && echo df-ok
head -c 3 /dev/urandom | od -An -tx1 | wc -w
date +%Y | grep -c '^20'
""")
    check(lines(out) == ["bash 3 42", "f.txt l ", "f.txt", "a b c ", "x/d/e/f.txt", "b A c ",
                         "3 bac", "3", "through-fifo", "waited", "in-timeout", "600",
                         "1000 /workspace", "df-ok", "3", "1"], f"shell output: {out!r}")


@tool("python3")
def t_python(s):
    out = s.sh(r"""python3 - <<'EOF'
import asyncio, hashlib, json, multiprocessing, os, socket, sqlite3, subprocess, threading

res = []
ts = [threading.Thread(target=lambda i=i: res.append(i * i)) for i in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print("threads", sorted(res) == [i * i for i in range(8)])
print("subprocess", subprocess.run(["sh", "-c", "echo hi"], capture_output=True,
                                   text=True).stdout.strip())
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(fam)
    srv.bind((host, 0))
    srv.listen()
    port = srv.getsockname()[1]
    def serve():
        c, _ = srv.accept()
        c.sendall(c.recv(100).upper())
        c.close()
    t = threading.Thread(target=serve)
    t.start()
    cl = socket.create_connection((host, port), timeout=5)
    cl.sendall(b"ping")
    print("socket", fam.name, cl.recv(100).decode())
    t.join()
a, b = socket.socketpair()
a.sendall(b"pair")
print("socketpair", b.recv(10).decode())
db = sqlite3.connect("/workspace/t.db")
db.execute("create table t(x)")
db.execute("insert into t values (42)")
db.commit()
print("sqlite", db.execute("select x from t").fetchone()[0])
with multiprocessing.Pool(2) as p:
    print("pool", p.map(abs, [-1, -2, -3]))
async def main():
    async def handle(r, w):
        w.write((await r.read(4)).upper())
        await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    w.write(b"ping")
    await w.drain()
    data = await r.read(4)
    w.close()
    srv.close()
    await srv.wait_closed()
    return data.decode()
print("asyncio", asyncio.run(main()))
print("sha256", hashlib.sha256(b"x").hexdigest()[:8], json.dumps({"a": 1}))
EOF""")
    check(lines(out) == ["threads True", "subprocess hi", "socket AF_INET PING",
                         "socket AF_INET6 PING", "socketpair pair", "sqlite 42",
                         "pool [1, 2, 3]", "asyncio PING", 'sha256 2d711642 {"a": 1}'],
          f"python output: {out!r}")


@tool("git")
def t_git(s):
    out = s.sh(r"""set -e
cd /workspace
git init -q -b main repo && cd repo
git config user.email agent@example.invalid && git config user.name Agent
echo one > f && git add f && git commit -qm first
echo two >> f && git commit -qam second
git log --format=%s | tr '\n' ' '; echo
git rev-list --count HEAD
git checkout -qb topic && echo three >> f && git commit -qam third && git checkout -q main
git merge -q --ff-only topic && cat f | tr '\n' ' '; echo
git gc -q
test -z "$(git fsck --no-progress 2>&1)" && echo fsck-ok
git clone -q /workspace/repo /workspace/clone && git -C /workspace/clone log --oneline | wc -l
""")
    check(lines(out) == ["second first ", "2", "one two three ", "fsck-ok", "3"],
          f"git output: {out!r}")


@tool("curl", "python3")
def t_curl(s):
    out = s.sh(r"""set -e
mkdir -p /workspace/www && echo hello-from-inside > /workspace/www/hello.txt
cd /workspace/www
python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &
srv=$!
i=0; until curl -s -o /dev/null http://127.0.0.1:8080/ || [ $i -gt 100 ]; do i=$((i+1)); sleep 0.05; done
curl -sS http://127.0.0.1:8080/hello.txt
curl -sS http://localhost:8080/hello.txt
curl -sS -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/missing
curl -sS file:///workspace/www/hello.txt
kill $srv
""")
    check(lines(out) == ["hello-from-inside", "hello-from-inside", "404", "hello-from-inside"],
          f"curl output: {out!r}")


@tool("gcc", "make")
def t_gcc_make(s):
    out = s.sh(r"""set -e
mkdir -p /workspace/c && cd /workspace/c
cat > hello.c <<'EOF'
#include <pthread.h>
#include <stdio.h>
static void *square(void *a) { long v = (long)a; return (void *)(v * v); }
int main(void) {
	pthread_t t[4];
	long sum = 0;
	for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, square, (void *)(i + 1));
	for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
	printf("hello %ld\n", sum);
	return 0;
}
EOF
printf 'main.o: hello.c\n\t$(CC) -O2 -Wall -c -o $@ $<\nhello: main.o\n\t$(CC) -pthread -o $@ $<\n' > Makefile
make -s -j2 hello && ./hello
make -q hello && echo up-to-date
""")
    check(lines(out) == ["hello 30", "up-to-date"], f"gcc/make output: {out!r}")


@tool("node", "npm")
def t_node_npm(s):
    out = s.sh(r"""set -e
cd /workspace
node -e '
const { Worker } = require("worker_threads");
const w = new Worker("require(\"worker_threads\").parentPort.postMessage(6 * 7)", { eval: true });
w.on("message", (m) => { console.log("worker " + m); w.terminate(); });'
node -e '
const http = require("http");
const srv = http.createServer((q, r) => r.end("node-http")).listen(0, "127.0.0.1", () => {
  http.get("http://127.0.0.1:" + srv.address().port + "/", (res) => {
    let d = ""; res.on("data", (c) => d += c);
    res.on("end", () => { console.log(d); srv.close(); });
  });
});'
node -e 'require("fs").writeFileSync("n.txt", "fs-ok"); console.log(require("child_process").execSync("cat n.txt").toString())'
npm --version | grep -cE '^[0-9]+\.[0-9]+\.[0-9]+$'
mkdir -p proj && cd proj && npm init -y >/dev/null && npm pkg get name
""")
    check(lines(out) == ["worker 42", "node-http", "fs-ok", "1", '"proj"'],
          f"node/npm output: {out!r}")


@tool("python3")
def t_pip(s):
    out = s.sh(r"""set -e
python3 -m pip --version | grep -c '^pip '
mkdir -p /workspace/pkg/ahpdemo && cd /workspace/pkg
echo 'X = 7' > ahpdemo/__init__.py
printf 'from setuptools import setup\nsetup(name="ahpdemo", version="1.0", packages=["ahpdemo"])\n' > setup.py
python3 -m pip install -q --no-index --no-build-isolation --disable-pip-version-check \
  --target /workspace/site /workspace/pkg 2>&1 | grep -v -i warning || true
PYTHONPATH=/workspace/site python3 -c 'import ahpdemo; print("ahpdemo", ahpdemo.X)'
""")
    check(lines(out) == ["1", "ahpdemo 7"], f"pip output: {out!r}")


def skip(args, name):
    """Skipped unless root and the tool's binaries are on the host (the sandbox sees the
    host's /usr: what is missing here is missing inside)."""
    why = needs_root(args, name)
    if why:
        return why
    missing = [b for b in TOOLS[name][0]
               if shutil.which(b, path="/usr/local/bin:/usr/bin:/bin") is None]
    if missing:
        return f"not installed on the host: {' '.join(missing)} (scripts/install-deps)"
    return None


def case(name, fn):
    def run(d):
        d.start()
        fn(Sandbox(d, name))
    return run


if __name__ == "__main__":
    sys.exit(run_case({name: case(name, fn) for name, (_, fn) in TOOLS.items()},
                      lambda b, name: Daemon(b, "tools-" + name), skip, label="tools."))
