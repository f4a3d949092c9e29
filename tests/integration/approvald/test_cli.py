"""The human CLI: list, show, approve, reject and answer with their exact output and exit
codes; a second decision is refused naming who decided; approve/reject/answer only where
they fit; unknown ids; usage errors; approvald not running."""

import re

from ahptest import check, run_test
from apprlib import ME, Approvald, approvald_built

ARGS = {"webhook_id": "team", "content": "Hello team, the weekly digest is ready to go out."}


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "cli") as ap:
        p = ap.cli("list", expect=3)
        check(p.stderr == f"approvald: not running (no socket at {ap.path('run/approvald-human.sock')})\n",
              f"not running: {p.stderr!r}")
        ap.start()
        p = ap.cli("list", expect=0)
        check(p.stdout == "no pending requests\n", f"empty list: {p.stdout!r}")

        ap.created("r-a1", 4, args=ARGS)
        ap.created("r-a1", 5, action="exec", args={"argv": ["ls", "-l"], "timeout_s": 30},
                   profile="ops")
        ap.created("r-b2", 2, action="ask_human", kind="KIND_QUESTION",
                   question="Which channel should the digest go to?")
        p = ap.cli("list", expect=0)
        lines = p.stdout.splitlines()
        check(len(lines) == 3, f"list: {p.stdout}")
        check(re.fullmatch(r'#3  pending  ask_human: "Which channel should the digest go to\?"'
                           r"  run r-b2  step 2  profile team-digest  expires in 23h59m",
                           lines[0]), f"line 0: {lines[0]!r}")
        check(re.fullmatch(r'#2  pending  exec\(argv=\["ls","-l"\], timeout_s=30\)  run r-a1  '
                           r"step 5  profile ops  expires in 23h59m", lines[1]),
              f"line 1: {lines[1]!r}")
        check(re.fullmatch(r'#1  pending  publish_summary\(webhook_id="team", content="Hello '
                           r'team, the weekly digest is ready t…"\)  run r-a1  step 4  '
                           r"profile team-digest  expires in 23h59m", lines[2]),
              f"line 2: {lines[2]!r}")
        p = ap.cli("list", "--run", "r-b2", expect=0)
        check(p.stdout.startswith("#3  pending  ") and p.stdout.count("\n") == 1,
              f"--run: {p.stdout}")

        # show: every field, the arguments pretty-printed, no decision yet.
        p = ap.cli("show", "1", expect=0)
        out = p.stdout.splitlines()
        check(out[0] == "#1  pending  approval" and out[1] == "run        r-a1"
              and out[2] == "step       4" and out[3] == "profile    team-digest"
              and out[4] == "action     publish_summary" and out[5].startswith("digest     ")
              and out[6].startswith("created    ") and out[6].endswith(" UTC")
              and re.fullmatch(r"expires    \S+ \S+ UTC \(in 23h59m\)", out[7])
              and out[8:] == ["arguments", "  {", '    "webhook_id": "team",',
                              '    "content": "Hello team, the weekly digest is ready to go out."',
                              "  }", "decision   none yet: approvald approve 1 | approvald "
                              "reject 1"], f"show:\n{p.stdout}")

        # approve: one line, exit 0; the recorded decision is the caller's.
        p = ap.cli("approve", "1", "-m", "looks right", expect=0)
        check(p.stdout == "approved #1 (publish_summary, run r-a1 step 4)\n", f"approve: {p.stdout!r}")
        j = ap.cli_json("show", "#1")
        d = j["decision"]
        check(j["state"] == "STATE_APPROVED" and d["by"] == ME and d["comment"] == "looks right"
              and d["state"] == "STATE_APPROVED" and d["seq"] == 1, f"show --json: {j}")
        p = ap.cli("show", "1", expect=0)
        check(re.search(rf"^decision   approved by {ME} \(uid \d+\) at \S+ \S+ UTC\n"
                        r"comment    looks right\n\Z", p.stdout, re.M), f"show: {p.stdout}")

        # A second decision: refused, naming who decided and when.
        for verb in ("approve", "reject"):
            p = ap.cli(verb, "1", "-m", "again", expect=1)
            check(re.fullmatch(rf"approvald: #1 was already approved by {ME} at "
                               r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", p.stderr),
                  f"second {verb}: {p.stderr!r}")
            check(p.stdout == "", f"second {verb} printed {p.stdout!r}")

        # reject; answer; each only where it fits.
        p = ap.cli("answer", "2", "yes", expect=1)
        check(p.stderr == "approvald: #2 is an approval: approve or reject it\n", p.stderr)
        p = ap.cli("approve", "3", expect=1)
        check(p.stderr == "approvald: #3 is a question: answer it (approvald answer ID TEXT)\n",
              p.stderr)
        p = ap.cli("answer", "3", "   ", expect=1)
        check(p.stderr == "approvald: #3 needs a non-empty answer\n", p.stderr)
        p = ap.cli("reject", "2", "-m", "wrong channel", expect=0)
        check(p.stdout == "rejected #2 (exec, run r-a1 step 5)\n", p.stdout)
        p = ap.cli("answer", "3", "Verified by ops on call", expect=0)
        check(p.stdout == "answered #3 (ask_human, run r-b2 step 2)\n", p.stdout)
        p = ap.cli("show", "3", expect=0)
        check(p.stdout.splitlines()[5] == "question   Which channel should the digest go to?"
              and p.stdout.endswith("answer     Verified by ops on call\n")
              and "arguments" not in p.stdout, f"show question:\n{p.stdout}")

        p = ap.cli("list", expect=0)
        check(p.stdout == "no pending requests\n", f"list after: {p.stdout!r}")
        p = ap.cli("list", "--all", expect=0)
        check([l.split("  ")[:2] for l in p.stdout.splitlines()] ==
              [["#3", "answered"], ["#2", "rejected"], ["#1", "approved"]]
              and all(l.endswith(f"  by {ME}") for l in p.stdout.splitlines()),
              f"list --all:\n{p.stdout}")
        j = ap.cli_json("list", "--all")
        check([r["id"] for r in j["requests"]] == [3, 2, 1]
              and j["requests"][0]["decision"]["comment"] == "Verified by ops on call", f"{j}")
        w = ap.watch()
        check([(r["id"], r["decision"]["seq"], r["state"]) for r in w["decided"]] ==
              [(1, 1, "STATE_APPROVED"), (2, 2, "STATE_REJECTED"), (3, 3, "STATE_ANSWERED")]
              and w["last_seq"] == 3 and w["more"] is False, f"watch: {w}")

        # Unknown ids, bad ids, usage.
        p = ap.cli("approve", "9", expect=1)
        check(p.stderr == "approvald: no request #9\n", p.stderr)
        p = ap.cli("show", "9", expect=1)
        check(p.stderr == "approvald: no request #9\n", p.stderr)
        for argv in (["approve"], ["approve", "x"], ["approve", "0"], ["show"],
                     ["show", "1", "2"], ["answer", "3"], ["list", "--bogus"], ["frobnicate"],
                     ["approve", "1", "-m"]):
            p = ap.cli(*argv, expect=2)
            check("usage: approvald" in p.stderr, f"{argv}: {p.stderr}")
        p = ap.cli("--json", "approve", "9", expect=1)
        check(p.stdout == "", p.stdout)

        # Not running any more: exit 3 at once.
        ap.stop()
        ap.cli("approve", "1", expect=3)
    return 0


run_test(main)
