"""Create on the orchestrator's socket: durable, idempotent on (run, step), a different call
for the same step is a conflict, a digest that does not match the arguments and every bad
field are refused; get and cancel."""

from ahptest import check, run_test
from apprlib import Approvald, approvald_built, digest, log_lines

ARGS = {"webhook_id": "team", "content": "Hello team, the digest is ready."}


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "create") as ap:
        ap.start()
        r = ap.create("r-1", 4, args=ARGS)
        check("error" not in r, f"create: {r}")
        req = r["create"]["request"]
        check(r["create"]["existed"] is False, f"first create existed: {r}")
        check(req["id"] == 1 and req["run_id"] == "r-1" and req["step"] == 4
              and req["state"] == "STATE_PENDING" and req["kind"] == "KIND_APPROVAL"
              and req["digest"] == digest("publish_summary", ARGS)
              and req["expires_ms"] - req["created_ms"] == 86400 * 1000
              and "decision" not in req, f"request: {req}")

        # The same call again, spelled differently (key order, spaces): the same request.
        again = ap.create("r-1", 4, args='{ "content": "Hello team, the digest is ready.",'
                          ' "webhook_id": "team" }')
        check(again["create"]["existed"] is True and again["create"]["request"]["id"] == 1
              and again["create"]["request"]["created_ms"] == req["created_ms"],
              f"second create: {again}")

        # Another call for the same step: a conflict naming the recorded request.
        c = ap.create("r-1", 4, args={"webhook_id": "other", "content": "x"})
        check(c["error"]["status"] == "ERR_CONFLICT" and c["error"]["message"] ==
              "step 4 of run r-1 already has request #1 for another call (publish_summary)",
              f"conflict: {c}")
        c = ap.create("r-1", 4, action="exec", args=ARGS)
        check(c["error"]["status"] == "ERR_CONFLICT", f"other action: {c}")
        c = ap.create("r-1", 4, args=ARGS, kind="KIND_QUESTION", question="ok?")
        check(c["error"]["status"] == "ERR_CONFLICT", f"other kind: {c}")

        # A digest for other arguments: refused, nothing recorded.
        m = ap.create("r-2", 1, args=ARGS, dig=digest("publish_summary", {"x": 1}))
        check(m["error"]["status"] == "ERR_BAD_REQUEST" and m["error"]["message"].startswith(
            "digest does not match the arguments"), f"mismatch: {m}")
        check(ap.get("r-2", 1)["error"]["status"] == "ERR_NOT_FOUND", "r-2 recorded")

        bad = [
            (dict(run_id="r 1"), "run_id must match [A-Za-z0-9-]{1,64}"),
            (dict(run_id="r" * 65), "run_id must match [A-Za-z0-9-]{1,64}"),
            (dict(step=0), "step must be >= 1"),
            (dict(profile="Team"), "profile must match [a-z0-9-]{1,64}"),
            (dict(action=""), "action must be 1..64 bytes of UTF-8"),
            (dict(action="a" * 65), "action must be 1..64 bytes of UTF-8"),
            (dict(args="[1, 2]"), "arguments_json is not a JSON object"),
            (dict(args='{"a": 1, "a": 2}'), None),
            (dict(args="{" + '"k": "' + "x" * (256 * 1024) + '"}'),
             "arguments_json is over 262144 bytes"),
            (dict(question="q" * 4097), "question must be at most 4096 bytes of UTF-8"),
            (dict(kind="KIND_QUESTION", question=" "), "a question needs its question text"),
            (dict(expires_s=0), "expires_s must be 1..2592000 (30 days)"),
            (dict(expires_s=2592001), "expires_s must be 1..2592000 (30 days)"),
        ]
        for i, (kw, msg) in enumerate(bad):
            a = kw.pop("args", ARGS)
            kw.setdefault("run_id", f"bad-{i}")
            kw.setdefault("step", 1)
            dig = "0" * 64 if isinstance(a, str) else None
            e = ap.create(args=a, dig=dig, **kw)
            check(e.get("error", {}).get("status") == "ERR_BAD_REQUEST", f"{kw}: {e}")
            if msg is not None:
                check(e["error"]["message"] == msg, f"{kw}: {e['error']['message']!r}")
        check(ap.watch()["decided"] == [], "a refused create was recorded")

        # Get: the recorded request; unknown step: not found.
        g = ap.get("r-1", 4)
        check(g["request"]["id"] == 1 and g["request"]["state"] == "STATE_PENDING", f"get: {g}")
        g = ap.get("r-1", 5)
        check(g["error"] == {"status": "ERR_NOT_FOUND", "message":
                             "no request for step 5 of run r-1", "detail": ""}, f"get: {g}")

        # Cancel: decided by "orchestrator"; again: unchanged; unknown: not found.
        ap.created("r-1", 6, args=ARGS)
        c = ap.send({"cancel": {"run_id": "r-1", "step": 6}})
        d = c["request"]["decision"]
        check(c["request"]["state"] == "STATE_CANCELLED" and d["by"] == "orchestrator"
              and d["by_uid"] == -1 and d["state"] == "STATE_CANCELLED" and d["seq"] == 1,
              f"cancel: {c}")
        c2 = ap.send({"cancel": {"run_id": "r-1", "step": 6}})
        check(c2["request"]["decision"] == d, f"second cancel: {c2}")
        c3 = ap.send({"cancel": {"run_id": "r-9", "step": 1}})
        check(c3["error"]["status"] == "ERR_NOT_FOUND", f"cancel unknown: {c3}")
        ap.cli("approve", "2", expect=1)
        w = ap.watch()
        check([x["id"] for x in w["decided"]] == [2] and w["last_seq"] == 1, f"watch: {w}")

        # Durable: after a restart the same create is the same request.
        ap.restart()
        again = ap.create("r-1", 4, args=ARGS)
        check(again["create"]["existed"] is True and again["create"]["request"]["id"] == 1,
              f"after restart: {again}")
        created = log_lines(ap.log(), "request created")
        check([(x["run"], x["step"], x["id"]) for x in created] ==
              [("r-1", "4", "1"), ("r-1", "6", "2")], f"log: {created}")
        dec = log_lines(ap.log(), "decision")
        check([(x["id"], x["by"], x["state"]) for x in dec] == [("2", "orchestrator",
                                                                 "cancelled")], f"log: {dec}")
    return 0


run_test(main)
