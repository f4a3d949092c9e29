"""Who may decide: decide_users / decide_groups, or for a profile named in approvers_file only
the users and groups it lists; list/show for everyone the humans' socket admits; a user the
socket does not admit is closed as approvald's listener accepts it; SIGHUP reloads
approvers_file (a bad one keeps the previous). Needs root (the CLI runs as nobody and daemon
via setpriv)."""

import os
import re
import signal
import time

from ahptest import check, run_test
from apprlib import ME, Approvald, approvald_built, log_lines

ARGS = {"webhook_id": "team", "content": "hi"}


def main(args):
    if not approvald_built(args):
        return 77
    if os.geteuid() != 0:
        print("skipped: needs root to run the CLI as other users (setpriv)")
        return 77
    with Approvald(args, "perm") as ap:
        # nobody and daemon must reach the socket: the home and run/ are traversable.
        os.chmod(ap.home, 0o711)
        os.chmod(ap.path("run"), 0o711)
        ap.write("etc/approvers.conf", "# per-profile approvers\nops users=nobody\n\n")
        ap.start()
        a = ap.created("r-p1", 1, args=ARGS, profile="team-digest")
        b = ap.created("r-p1", 2, args=ARGS, profile="ops")
        c = ap.created("r-p1", 3, args=ARGS, profile="ops")

        # nobody is admitted (approvers_file names it): it lists, and decides for ops only.
        p = ap.cli("list", user="nobody", expect=0)
        check([l.split("  ")[0] for l in p.stdout.splitlines()] == ["#3", "#2", "#1"], p.stdout)
        ap.cli("show", "1", user="nobody", expect=0)
        p = ap.cli("approve", str(a["id"]), user="nobody", expect=1)
        check(p.stderr == "approvald: nobody may not decide (not in decide_users or "
              "decide_groups)\n", p.stderr)
        p = ap.cli("approve", str(b["id"]), "-m", "ops on call", user="nobody", expect=0)
        check(p.stdout == "approved #2 (publish_summary, run r-p1 step 2)\n", p.stdout)
        j = ap.cli_json("show", "2")
        check(j["decision"]["by"] == "nobody" and j["decision"]["by_uid"] == 65534, f"{j}")
        # The current user decides team-digest but not ops.
        p = ap.cli("approve", str(c["id"]), expect=1)
        check(p.stderr == f"approvald: {ME} may not decide for profile ops\n", p.stderr)
        ap.cli("approve", str(a["id"]), expect=0)
        check(ap.cli_json("show", "1")["decision"]["by"] == ME, "decider of #1")

        # daemon is on no list: refused by the socket itself.
        p = ap.cli("list", user="daemon", expect=1)
        check(p.stderr.startswith("approvald: daemon may not use approvald (not in "
                                  "decide_users, decide_groups or approvers_file): "), p.stderr)
        # closed at accept: the peer never holds a descriptor of approvald, which never
        # reads a byte of it (nor logs it); the CLI says why
        check("the daemon closes its connections at accept" in p.stderr, p.stderr)
        check(not re.search(r"peer uid=1 gid=1", ap.log()), "approvald saw the refused peer")
        refused = log_lines(ap.log(), "decision refused")
        check([(x["id"], x["by"]) for x in refused] == [("1", "nobody"), ("3", ME)],
              f"log: {refused}")

        # SIGHUP: a bad file keeps the previous rules; a good one replaces them.
        ap.write("etc/approvers.conf", "ops users=no-such-user-xyz\n")
        ap.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check("reload failed" in ap.log(), "bad reload not logged")
        ap.cli("list", user="nobody", expect=0)
        ap.write("etc/approvers.conf", f"ops users={ME} groups=daemon\n")
        ap.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check("reloaded allow-lists and approvers" in ap.log(), "reload not logged")
        p = ap.cli("list", user="nobody", expect=1)
        check("nobody may not use approvald" in p.stderr, p.stderr)
        ap.cli("list", user="daemon", expect=0)
        p = ap.cli("reject", str(c["id"]), "-m", "wrong channel", expect=0)
        check(p.stdout == "rejected #3 (publish_summary, run r-p1 step 3)\n", p.stdout)
    return 0


run_test(main)
