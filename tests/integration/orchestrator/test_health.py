#!/usr/bin/env python3
"""--health of all five daemons (issue 11: the compose healthchecks; one libahp probe).
Before the stack starts no socket file exists: each probe exits 1 at once (well under a
second) with "DAEMON: not healthy at ENDPOINT: ...". While the stack runs: exit 0 and
"DAEMON: serving at ENDPOINT". Stopped: the orchestrator, credproxy, servicesd and approvald killed with SIGKILL
(their stale socket files stay, so the probe waits its 2 s for a reply that never comes),
sandboxd with SIGTERM (it tears its pooled sandboxes down and removes its socket): exit 1
with the message, within 3 s."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test  # noqa: E402

# daemon -> its socket under HOME/run (the endpoint --health asks)
SOCKETS = {"orchestrator": "orchestrator.sock", "credproxy": "credproxy-ctl.sock",
           "sandboxd": "sandboxd.sock", "servicesd": "servicesd.sock",
           "approvald": "approvald.sock"}


def health(st, daemon):
    """Runs DAEMON --home HOME --health; returns (process, seconds taken)."""
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(st.bin, daemon), "--home", st.home, "--health"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    return p, time.monotonic() - t0


def endpoint(st, daemon):
    return f"ipc://{st.path('run/' + SOCKETS[daemon])}"


def check_down(st, daemon, within):
    p, took = health(st, daemon)
    want = f"{daemon}: not healthy at {endpoint(st, daemon)}: "
    check(p.returncode == 1 and p.stderr.startswith(want) and p.stdout == "",
          f"{daemon} down: exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}")
    check(took < within, f"{daemon} down: the probe took {took:.2f}s (limit {within}s)")
    return p


def main(args):
    if os.geteuid() != 0:
        print("integration.orchestrator.health needs root for sandboxd; skipped")
        return 77
    for b in ("orchestrator", "credproxy", "sandboxd", "servicesd", "approvald", "orchctl",
              "mock-llm", "mock-services"):
        if not os.path.exists(os.path.join(args.bin, b)):
            print(f"skipped: {b} is not built")
            return 77
    with Stack(args, "health", sandbox=True, services=True, approvals=True) as st:
        # No socket file: refused at once, without waiting for ZeroMQ.
        for d in SOCKETS:
            check(not os.path.exists(st.path("run/" + SOCKETS[d])), f"{d}: socket exists")
            p = check_down(st, d, 1.0)
            check("No such file or directory" in p.stderr, p.stderr)

        st.start()
        for d in SOCKETS:
            p, took = health(st, d)
            check(p.returncode == 0 and p.stdout == f"{d}: serving at {endpoint(st, d)}\n"
                  and p.stderr == "",
                  f"{d} up: exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}")
            check(took < 2.0, f"{d} up: the probe took {took:.2f}s")

        # Stopped: SIGKILL leaves the socket file, so the probe waits out its 2 s.
        for d in ("orchestrator", "credproxy", "servicesd", "approvald"):
            st.kill(d)
            check(os.path.exists(st.path("run/" + SOCKETS[d])), f"{d}: no stale socket")
            p = check_down(st, d, 3.0)
            check("within 2000 ms" in p.stderr or "waited 2000 ms" in p.stderr, p.stderr)
        st.kill("sandboxd", signal.SIGTERM)
        check_down(st, "sandboxd", 3.0)
    return 0


run_test(main)
