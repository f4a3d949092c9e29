#!/usr/bin/env python3
"""Started as root with the default `user`, servicesd binds its socket, then runs as
ahp-servicesd: every uid and gid of the process is that user's, no_new_privs is set, the
store's directory is that user's alone (0700), and it still reads its secrets (a directory
that user owns) at start and on SIGHUP. Root only (the user is created when missing, as
scripts/stack does); skipped otherwise."""
import os
import pwd
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, check, need_servicesd, ok_result, run_test)  # noqa: E402

USER = "ahp-servicesd"


def ensure_user():
    import fcntl
    with open("/run/ahp-stack-users.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                            "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group",
                            USER], check=False)
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        return None


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            out[k] = v.split()
    return out


def main(args):
    if need_servicesd(args):
        return 77
    if os.geteuid() != 0:
        print("needs root to test the privilege drop: skipped")
        return 77
    pw = ensure_user()
    if pw is None:
        print(f"cannot create user {USER}: skipped")
        return 77
    with Servicesd(args, "privs") as s:
        s.standard()
        del s.conf["user"]  # the default: ahp-servicesd
        # As scripts/stack lays it out: etc/secrets/ traversable, each daemon's dir its own.
        os.chmod(s.path("etc/secrets"), 0o711)
        sec = s.path("etc/secrets/servicesd")
        for d, _, files in os.walk(sec):
            os.chown(d, pw.pw_uid, pw.pw_gid)
            for f in files:
                os.chown(os.path.join(d, f), pw.pw_uid, pw.pw_gid)
        s.start()
        st = status(s.proc.pid)
        check(st["Uid"] == [str(pw.pw_uid)] * 4 and st["Gid"] == [str(pw.pw_gid)] * 4,
              f"uids {st['Uid']} gids {st['Gid']}, expected {pw.pw_uid}/{pw.pw_gid}")
        check(st["Groups"] in ([str(pw.pw_gid)], []), f"groups {st['Groups']}")
        check(st["NoNewPrivs"] == ["1"], f"NoNewPrivs {st['NoNewPrivs']}")
        check(st["CapEff"] == ["0000000000000000"], f"capabilities {st['CapEff']}")
        d = os.stat(os.path.dirname(s.db))
        check(d.st_uid == pw.pw_uid and d.st_mode & 0o777 == 0o700,
              f"store dir owner {d.st_uid} mode {oct(d.st_mode & 0o777)}")
        check(os.stat(s.db).st_uid == pw.pw_uid, "the store file is not the user's")
        check(f"running as user={USER}" in s.log(), "no privilege drop line")
        cr = s.call("lookup_wiki", {"topic": "durability"}, step=1)
        check(ok_result(cr)["topic"] == "durability", f"{cr}")
        # Reload as the dropped user: profiles and secrets are read again.
        s.write_profile("both", ["publish_summary"])
        s.hup()
        check("reloaded profiles" in s.log(), f"reload as {USER} failed:\n{s.log()}")
        check(s.describe("both")["describe"]["services"] == ["publish_summary"], "")
        cr = s.call("publish_summary", {"webhook_id": "t", "content": "x"}, step=2)
        check(ok_result(cr)["message_id"], f"{cr}")
    return 0


run_test(main)
