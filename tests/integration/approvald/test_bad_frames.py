"""Malformed input on both sockets: frames the RPC layer cannot read (garbage, a bad header,
oversize), bodies that are not the socket's request (garbage, empty, an unknown oneof
member), and a human's Decide sent to the orchestrator's socket: each gets a typed error,
nothing is recorded or decided, and approvald keeps serving."""

import json
import os
import subprocess

from ahptest import check, run_test
from apprlib import Approvald, approvald_built

ARGS = {"webhook_id": "team", "content": "hi"}


def rawsend(ap, ep, *frames):
    p = subprocess.run([os.path.join(ap.tools, "rawsend"), ep, "--timeout", "5000", *frames],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    check(p.returncode in (0, 3), f"rawsend: {p.returncode} {p.stderr}")
    return json.loads(p.stdout)


def main(args):
    if not approvald_built(args):
        return 77
    if not os.path.exists(os.path.join(args.tools or args.bin, "rawsend")):
        return 77
    with Approvald(args, "frames") as ap:
        ap.start()
        req = ap.created("r-f1", 1, args=ARGS)
        big = ap.path("big.bin")
        with open(big, "wb") as f:
            f.write(b"\x0a" * (400 * 1024))
        for sock, ep, name in (("orch", ap.orch_ep, "OrchRequest"),
                               ("human", ap.human_ep, "HumanRequest")):
            # The RPC layer: garbage frames, a header of the wrong kind, oversize.
            r = rawsend(ap, ep, "str:garbage", "str:more")
            check(r["reply"] is True and r["kind"] == 3 and r["status"] == "ERR_BAD_REQUEST",
                  f"{sock} garbage: {r}")
            r = rawsend(ap, ep, "hdr:2:5", "hex:")
            check(r["reply"] is True and r["kind"] == 3 and r["status"] == "ERR_BAD_REQUEST",
                  f"{sock} reply-kind header: {r}")
            r = rawsend(ap, ep, "hdr:1:6", f"file:{big}")
            check(r["reply"] is True and r["kind"] == 3 and r["status"] == "ERR_TOO_LARGE",
                  f"{sock} oversize: {r}")
            # Bodies: garbage, empty, an unknown oneof member (field 9).
            for hexbody, status, msg in (
                    ("ffffffff", "ERR_BAD_REQUEST", f"the request is not an ahp.appr.{name}"),
                    ("", "ERR_BAD_REQUEST", "the request has no body"),
                    ("4801", "ERR_UNKNOWN_METHOD", "this approvald does not know that request"),
                    ("4a00", "ERR_UNKNOWN_METHOD", "this approvald does not know that request")):
                r = ap.send(None, sock=sock, hexbody=hexbody)
                check(r.get("error") == {"status": status, "message": msg, "detail": ""},
                      f"{sock} body {hexbody!r}: {r}")
        # Show on the humans' socket with a bad id; list with a bad run id.
        r = ap.send({"show": {"id": 0}}, sock="human")
        check(r["error"]["status"] == "ERR_NOT_FOUND" and r["error"]["message"] ==
              "no request #0", f"show 0: {r}")
        r = ap.send({"list": {"run_id": "a b"}}, sock="human")
        check(r["error"]["status"] == "ERR_BAD_REQUEST", f"list bad run: {r}")
        r = ap.send({"decide": {"id": req["id"], "state": "STATE_APPROVED",
                                "comment": "x" * 4097}}, sock="human")
        check(r["error"] == {"status": "ERR_BAD_REQUEST", "message":
                             "the comment must be at most 4096 bytes of UTF-8", "detail": ""},
              f"long comment: {r}")
        # Decide #1 APPROVED with the comment bytes ff fe (not UTF-8).
        r = ap.send(None, sock="human", hexbody="1a08080110011a02fffe")
        check(r["error"] == {"status": "ERR_BAD_REQUEST", "message":
                             "the comment must be at most 4096 bytes of UTF-8", "detail": ""},
              f"bad utf-8 comment: {r}")

        # A human's Decide (HumanRequest field 3: id 1, APPROVED) on the orchestrator's
        # socket is no decision: there field 3 is a Get, and this one does not parse.
        r = ap.send(None, sock="orch", hexbody="1a0408011001")
        check(r.get("error", {}).get("status") == "ERR_BAD_REQUEST", f"decide on orch: {r}")
        r = ap.send(None, sock="orch", hexbody="1a0c080110011a06617070726f76")
        check(r.get("error", {}).get("status") == "ERR_BAD_REQUEST", f"decide on orch: {r}")

        # Nothing was decided or recorded, and both sockets still serve.
        check(ap.watch()["decided"] == [], "something was decided")
        p = ap.cli("list", expect=0)
        check(p.stdout.startswith("#1  pending  ") and p.stdout.count("\n") == 1, p.stdout)
        check(ap.get("r-f1", 1)["request"]["state"] == "STATE_PENDING", "not pending")
        ap.cli("approve", "1", expect=0)
    return 0


run_test(main)
