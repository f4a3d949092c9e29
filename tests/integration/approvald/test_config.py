"""--check-config, --health, --help and --version; configuration errors are refused with
what is wrong."""

import os
import pwd
import subprocess

from ahptest import check, run_test
from apprlib import ME, Approvald, approvald_built


def exists(user):
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def run(ap, *argv):
    return subprocess.run([os.path.join(ap.bin, "approvald"), "--home", ap.home, *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30)


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "config") as ap:
        p = run(ap, "--help")
        check(p.returncode == 0 and p.stdout.startswith("usage: approvald") and
              "decide_groups" in p.stdout and "approvers_file" in p.stdout, p.stdout)
        p = run(ap, "--version")
        check(p.returncode == 0 and p.stdout.startswith("approvald "), p.stdout)
        p = run(ap)
        check(p.returncode == 2 and "usage: approvald" in p.stderr, p.stderr)
        p = run(ap, "--bogus")
        check(p.returncode == 2 and p.stderr.startswith('approvald: unknown argument "--bogus"'),
              p.stderr)

        ap.write("etc/approvers.conf", "ops users=" + ME + " groups=root\nteam-digest users=root\n")
        p = run(ap, *ap.sets(), "--check-config")
        check(p.returncode == 0, f"check-config: {p.stdout} {p.stderr}")
        check(p.stdout.splitlines() == [
            f"endpoint ipc://{ap.path('run/approvald.sock')}",
            "  allowed: " + " ".join(u for u in ("ahp-orchestrator", "root") if exists(u)),
            f"human_endpoint ipc://{ap.path('run/approvald-human.sock')}",
            f"  may decide: {ME}",
            f"approvers_file {ap.path('etc/approvers.conf')}: 2 profile rule(s)",
            f"  profile ops: {ME} group:root",
            "  profile team-digest: root",
            f"db {ap.path('state/approvald/approvald.db')}",
            "configuration OK"], f"check-config:\n{p.stdout}")

        for text, msg in (("Ops users=root\n", ':1: "Ops" is not a profile name'),
                          ("ops users=root\nops users=root\n", ":2: profile ops is given twice"),
                          ("ops people=root\n", ':1: "people=root": expected users=NAME'),
                          ("ops users=no-such-user-xyz\n", ':1: user "no-such-user-xyz"')):
            ap.write("etc/approvers.conf", text)
            p = run(ap, *ap.sets(), "--check-config")
            check(p.returncode == 1 and p.stderr.startswith(
                f"approvald: {ap.path('etc/approvers.conf')}{msg}"), f"{text!r}: {p.stderr}")
        os.unlink(ap.path("etc/approvers.conf"))
        for kv, msg in (("endpoint=tcp://127.0.0.1:5000",
                         "approvald: endpoint tcp://127.0.0.1:5000: only ipc:// endpoints are "
                         "supported\n"),
                        ("human_endpoint=tcp://127.0.0.1:5000",
                         "approvald: human_endpoint tcp://127.0.0.1:5000: only ipc:// endpoints "
                         "are supported\n"),
                        ("decide_users=no-such-user-xyz", None),
                        ("bogus=1", None),
                        ("log_level=loud", "approvald: log_level: must be debug, info, warn or "
                         "error\n")):
            p = run(ap, *ap.sets(), "--set", kv, "--check-config")
            check(p.returncode == 1 and p.stderr.startswith("approvald: "), f"{kv}: {p.stderr}")
            if msg is not None:
                check(p.stderr == msg, f"{kv}: {p.stderr!r}")
        ap.write("etc/approvald.conf", "decide_users = nobody\n")
        p = run(ap, "--set", "user=", "--check-config")
        # (decide_groups keeps its default, ahp, where that group exists.)
        check(p.returncode == 0 and p.stdout.splitlines()[3] in
              ("  may decide: nobody", "  may decide: nobody group:ahp"), p.stdout)
        os.unlink(ap.path("etc/approvald.conf"))

        p = run(ap, "--health")
        check(p.returncode == 1 and p.stderr.startswith("approvald: not healthy at "), p.stderr)
        ap.start()
        p = run(ap, "--health")
        check(p.returncode == 0 and p.stdout ==
              f"approvald: serving at ipc://{ap.path('run/approvald.sock')}\n", p.stdout)
    return 0


run_test(main)
