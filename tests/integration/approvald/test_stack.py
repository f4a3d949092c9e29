"""scripts/stack with approvals=True: approvald starts after servicesd and before the
orchestrator, runs as ahp-approvald with its own 0700 state directory (as root), its humans'
socket serves root through run/ and refuses a user on no list, and it restarts and stops
with the stack."""

import os
import pwd
import stat
import subprocess

from ahptest import Stack, check, pid_alive, run_test


def main(args):
    for b in ("approvald", "orchestrator", "orchctl", "mock-llm"):
        if not os.path.exists(os.path.join(args.bin, b)):
            print(f"skipped: {b} is not built")
            return 77
    with Stack(args, "apprstack", credproxy=False, approvals=True) as s:
        s.started = True
        out = s._stack("start", s.home).stdout
        order = [l.split()[1] for l in out.splitlines()
                 if l.startswith("stack: ") and " started (pid " in l]
        check(order == ["mock-llm", "approvald", "orchestrator"], f"start order {order}")
        pid = s.pid("approvald")
        check(pid is not None and pid_alive(pid), "approvald is not running")
        st = s._stack("status", s.home).stdout
        check(any(l.startswith("approvald ") and l.endswith(" alive") for l in st.splitlines()),
              f"status:\n{st}")
        order = [l.split()[1] for l in s._stack("restart", s.home, "approvald")
                 .stdout.splitlines() if l.startswith("stack: ") and " started " in l]
        check(order == ["approvald"], f"restart printed {order}")
        pid = s.pid("approvald")
        p = subprocess.run([os.path.join(s.bin, "approvald"), "--home", s.home, "--health"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        check(p.returncode == 0, f"--health: {p.stdout} {p.stderr}")
        if os.geteuid() == 0:
            with open(f"/proc/{pid}/status") as f:
                uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
            u = pwd.getpwnam("ahp-approvald").pw_uid
            check(uids == [str(u)] * 4, f"approvald runs as {uids}, not ahp-approvald")
            d = os.stat(s.path("state/approvald"))
            check(d.st_uid == u and stat.S_IMODE(d.st_mode) == 0o700,
                  f"state/approvald: uid {d.st_uid} mode {oct(d.st_mode)}")
            check(os.path.exists(s.path("state/approvald/approvald.db")), "no approvald.db")
            p = s.approvald("list", expect=0)
            check(p.stdout == "no pending requests\n", p.stdout)
            p = s.approvald("list", user="nobody", expect=1)
            check(p.stderr.startswith("approvald: nobody may not use approvald"), p.stderr)
        s.stop()
        check(not os.path.exists(s.path("run/approvald.sock")) and
              not os.path.exists(s.path("run/approvald-human.sock")), "sockets left behind")
        check(not pid_alive(pid), "approvald still running after stop")
    return 0


run_test(main)
