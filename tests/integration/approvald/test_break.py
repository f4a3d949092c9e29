"""Attacks on approvald found by review (issue 9). An argument name is the model's text too:
one holding `="team", content="…")` and padding must not pass, in `approvald list`, for other
arguments while pushing the real ones (webhook_id="attacker") out of the line: a name that is
not a plain name ([A-Za-z0-9_]{1,40}) is shown quoted and cut like a value. A Watch cursor past
the log's end is answered from the start."""

from ahptest import check, run_test
from apprlib import Approvald, approvald_built

SPOOF = 'webhook_id="team", content="weekly digest")' + " " * 50


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "break") as ap:
        ap.start()
        ap.created("r-b1", 1, args={SPOOF: "", "webhook_id": "attacker", "content": "x"})
        p = ap.cli("list", expect=0)
        check(p.stdout == '#1  pending  publish_summary("webhook_id=\\"team\\", content=\\"'
              'weekly diges…"="", webhook_id="attacker", …)  run r-b1  step 1  profile '
              'team-digest  expires in 23h59m\n' or
              p.stdout == '#1  pending  publish_summary("webhook_id=\\"team\\", content=\\"'
              'weekly diges…"="", webhook_id="attacker", …)  run r-b1  step 1  profile '
              'team-digest  expires in 1d\n', f"list: {p.stdout!r}")
        # Plain names stay bare; a 41-byte name is quoted and cut.
        ap.created("r-b1", 2, args={"webhook_id": "team", "a" * 41: 1})
        p = ap.cli("list", "--run", "r-b1", "--limit", "1", expect=0)
        check(p.stdout.startswith('#2  pending  publish_summary(webhook_id="team", "' +
                                  "a" * 40 + '…"=1)  run r-b1  step 2'), f"list: {p.stdout!r}")
        # Ids the CLI must refuse as usage errors (exit 2), before any request.
        for bad in ("-1", "7abc", "0", " 1", "+1", "18446744073709551615", "#", "1.0"):
            p = ap.cli("approve", bad, expect=2)
            check(p.stderr.startswith("usage: approvald"), f"{bad!r}: {p.stderr!r}")
        p = ap.cli("show", "9223372036854775807", expect=1)
        check(p.stderr == "approvald: no request #9223372036854775807\n", p.stderr)
        check(ap.cli_json("show", "1")["state"] == "STATE_PENDING", "#1 was decided")

        # A Watch cursor past the log's end (a database restored from an older copy keeps
        # its log_id) is answered from the start: else decisions up to it never arrive.
        ap.cli("approve", "2", expect=0)
        log_id = ap.watch()["log_id"]
        for after in (5, "18446744073709551615"):
            w = ap.watch(after_seq=after, log_id=log_id)
            check([int(r["id"]) for r in w.get("decided", [])] == [2] and
                  int(w["last_seq"]) == 1, f"watch after {after}: {w}")
        w = ap.watch(after_seq=1, log_id=log_id)
        check(w.get("decided", []) == [] and int(w["last_seq"]) == 1, f"watch after 1: {w}")
    return 0


run_test(main)
