#!/usr/bin/env python3
"""Who may talk to whom (docs/security.md): the orchestrator, started as root by
scripts/stack, runs as ahp-orchestrator with no capabilities and owns its journal; its
orchctl socket admits root, its own user and group ahp, and refuses anyone else with a
typed permission_denied (exit 5, exact message, one log line) before reading the request;
sandboxd admits root and the orchestrator's user only; a configured user that does not exist
is a configuration error. (Starts sandboxd: run under the ctest lock.)"""
import grp
import json
import os
import pwd
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

NOBODY = 65534

SCENARIO = """
steps:
  - content: "done: {{task}}"
"""


def status_fields(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def orchctl_as(st, uid, gid, *argv):
    """orchctl run by uid:gid with no supplementary groups (setpriv, util-linux)."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
           os.path.join(st.bin, "orchctl"), "--home", st.home, *argv]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)


def main(args):
    if os.geteuid() != 0:
        print("needs root (scripts/stack creates system users; setpriv to another uid)")
        return 77
    with Stack(args, "peers", sandbox=True) as st:
        st.demo_skill()
        st.write_scenario("short", SCENARIO)
        st.write_profile("alpha", "short")
        st.start()
        user = pwd.getpwnam("ahp-orchestrator")
        ahp = grp.getgrnam("ahp")

        # The orchestrator runs as its own user, without capabilities, and
        # cannot gain any.
        pid = st.pid("orchestrator")
        s = status_fields(pid)
        check(s["Uid"] == [str(user.pw_uid)] * 4, f"Uid {s['Uid']}, want {user.pw_uid} x4")
        check(s["Gid"] == [str(user.pw_gid)] * 4, f"Gid {s['Gid']}, want {user.pw_gid} x4")
        check(s.get("Groups", []) == [str(user.pw_gid)], f"Groups {s.get('Groups')}")
        for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            check(int(s[cap][0], 16) == 0, f"{cap} = {s[cap][0]}")
        check(s["NoNewPrivs"] == ["1"], f"NoNewPrivs {s['NoNewPrivs']}")
        check(f"running as user=ahp-orchestrator uid={user.pw_uid} gid={user.pw_gid}"
              in st.log("orchestrator"), "no privilege-drop log line")

        # Its journal is its own; the directories above it are not.
        for rel in ("state/orchestrator", "state/orchestrator/orchestrator.db"):
            stt = os.lstat(st.path(rel))
            check((stt.st_uid, stt.st_gid) == (user.pw_uid, user.pw_gid),
                  f"{rel} owned by {stt.st_uid}:{stt.st_gid}")
        check(os.lstat(st.path("state")).st_uid == 0, "state/ must stay root's")
        check(os.lstat(st.path("run")).st_uid == 0, "run/ must stay root's")

        # Root (this test) is admitted, and the run works under the dropped user.
        p = st.orchctl("submit", "alpha", "one", expect=0, timeout=60)
        check("Result: done: one" in p.stdout, p.stdout)

        # Anyone else is closed as the listener accepts it (it holds no descriptor of the
        # orchestrator, which never reads a byte of it); orchctl says why, typed.
        before = st.db_rows("SELECT COUNT(*) FROM runs")[0][0]
        p = orchctl_as(st, NOBODY, NOBODY, "submit", "--detach", "alpha", "sneaky")
        check(p.returncode == 5, f"exit {p.returncode}, want 5\n{p.stdout}\n{p.stderr}")
        check(p.stderr == "orchctl: permission_denied: uid 65534 (gid 65534) may not use "
              "this socket (the daemon closes its connections at accept)\n",
              f"stderr: {p.stderr!r}")
        check(p.stdout == "", f"stdout: {p.stdout!r}")
        p = orchctl_as(st, NOBODY, NOBODY, "--json", "list")
        check(p.returncode == 5, f"--json exit {p.returncode}")
        check(json.loads(p.stdout) == {"error": {
            "status": "permission_denied",
            "message": "uid 65534 (gid 65534) may not use this socket (the daemon closes "
                       "its connections at accept)", "detail": "",
            "exit_code": 5}},
            f"--json: {p.stdout!r}")
        check(st.db_rows("SELECT COUNT(*) FROM runs")[0][0] == before,
              "a refused submit created a run")
        check(not re.search(r'peer uid=65534 gid=65534', st.log("orchestrator")),
              "the orchestrator saw the refused peer")

        # sandboxd: root may use it (sandboxd exec), others may not.
        sbx = [os.path.join(st.bin, "sandboxd"), "--home", st.home, "exec", "--profile",
               "alpha", "--", "echo", "hi"]
        p = subprocess.run(sbx, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60)
        check(p.returncode == 0 and p.stdout == "hi\n", f"root: {p.returncode} {p.stderr}")
        p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", *sbx], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        check(p.returncode == 125, f"sandboxd exec as nobody: exit {p.returncode}\n{p.stderr}")
        check("sandboxd: permission_denied: uid 65534 (gid 65534) may not use this socket\n"
              in p.stderr, f"sandboxd exec as nobody: {p.stderr!r}")
        check(re.search(r'peer uid=65534 gid=65534 pid=\d+ refused on ' +
                        re.escape(st.path("run/sandboxd-exec.sock")), st.log("sandboxd")),
              "no refusal line in sandboxd's log")

        # A member of group ahp (here: as primary group) may use orchctl.
        p = orchctl_as(st, NOBODY, ahp.gr_gid, "--json", "list")
        check(p.returncode == 0, f"member of ahp: exit {p.returncode}\n{p.stderr}")

        # Listing a user admits it after SIGHUP, without a restart.
        st.write("etc/orchestrator.conf",
                 open(st.path("etc/orchestrator.conf")).read() + "orchctl_users = root,nobody\n")
        st.kill("orchestrator", 1, wait=False)
        wait_for(lambda: orchctl_as(st, NOBODY, NOBODY, "list").returncode == 0, 15,
                 "nobody admitted after SIGHUP", interval=0.2)

        # A name that does not exist is a configuration error.
        orch = os.path.join(st.bin, "orchestrator")
        for key, msg in (("orchctl_users=root,no-such-user-ahp",
                          'config orchctl_users/orchctl_groups: user "no-such-user-ahp" does '
                          'not exist'),
                         ("orchctl_groups=no-such-group-ahp",
                          'config orchctl_users/orchctl_groups: group "no-such-group-ahp" '
                          'does not exist'),
                         ("user=no-such-user-ahp",
                          'config user: user "no-such-user-ahp" does not exist'),
                         ("user=root", 'config user: "root" is root')):
            p = subprocess.run([orch, "--home", st.home, "--set", key, "--check-config"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=30)
            check(p.returncode == 1, f"--check-config --set {key}: exit {p.returncode}")
            # (the log line escapes the quotes)
            check(msg.replace('"', '\\"') in p.stdout,
                  f"--check-config --set {key}:\n{p.stdout}")
        p = subprocess.run([orch, "--home", st.home, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        check(p.returncode == 0 and "configuration OK" in p.stdout, p.stdout)


run_test(main)
