#!/usr/bin/env python3
"""Malformed requests get a typed ahp.Error and servicesd keeps serving: a body that is not
protobuf (ERR_BAD_REQUEST), an empty body (no oneof member: ERR_BAD_REQUEST), an unknown oneof
member (a newer client's request: ERR_UNKNOWN_METHOD), a Call with a bad run_id, step 0, no
service or no profile (ERR_BAD_REQUEST), a body over the RPC limit (transport error
ERR_TOO_LARGE), and frames that are not the RPC format (transport errors, via rawsend)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, need_servicesd, ok_result,  # noqa: E402
                    run_test)


def err(o, status, words=()):
    check("reply" in o, f"expected a Reply with an ahp.Error: {o}")
    r = o["reply"]
    e = r.get("error")
    check(e is not None and e["status_name"] == status and "call" not in r
          and "describe" not in r, f"expected {status}: {r}")
    for w in words:
        check(w in e["message"], f"{status}: message lacks {w!r}: {e}")
    return e


def bad_call(**kw):
    c = {"run_id": "run-1", "profile": "both", "step": 1, "service": "lookup_wiki",
         "args_json": '{"topic": "durability"}'}
    c.update(kw)
    return {"call": c}


def ld(field, b):
    """A length-delimited protobuf field (wire type 2)."""
    n, v = len(b), b""
    while True:
        x, n = n & 0x7F, n >> 7
        v += bytes([x | (0x80 if n else 0)])
        if not n:
            return bytes([field << 3 | 2]) + v + b


def raw_call(service=b"lookup_wiki", profile=b"both", args=b'{"topic": "x"}', step=1):
    """A Request{call} built by hand, so that its strings can hold bytes that are not UTF-8
    (a conforming encoder would refuse them; servicesd must not echo them)."""
    c = ld(1, b"run-raw") + ld(2, profile) + bytes([3 << 3, step]) + ld(4, service) + \
        ld(5, args)
    return "hex:" + ld(1, c).hex()


def main(args):
    if need_servicesd(args):
        return 77
    with Servicesd(args, "frames") as s:
        m = s.standard()
        s.start()
        outs = s.send(
            "hex:ffffffffffffffffff",           # not protobuf
            "hex:",                             # empty: no body
            "hex:4a037a7a7a",                   # field 9 (unknown oneof member), "zzz"
            "hex:0a00",                         # call with every field empty
            bad_call(run_id="a b"),
            bad_call(run_id="x" * 65),
            bad_call(run_id=""),
            bad_call(step=0),
            bad_call(service=""),
            bad_call(service="s" * 65),
            bad_call(profile=""),
            {"describe": {"profile": ""}},
        )
        err(outs[0], "ERR_BAD_REQUEST", ["not an ahp.svcd.Request"])
        err(outs[1], "ERR_BAD_REQUEST", ["no body"])
        err(outs[2], "ERR_UNKNOWN_METHOD")
        for o in outs[3:11]:
            err(o, "ERR_BAD_REQUEST", ["run_id", "step"])
        err(outs[11], "ERR_NOT_FOUND")

        # Over the RPC limit (256 KiB of arguments + 64 KiB): refused by the transport.
        big = s.path("big.json")
        with open(big, "w") as f:
            json.dump(call_req("lookup_wiki", "x" * (400 * 1024)), f)
        (o,) = s.send("@" + big)
        check(o.get("transport_error", {}).get("status") == "ERR_TOO_LARGE", f"over max: {o}")

        # Frames that are not the RPC format (libahp answers kind 3 and drops them).
        rawsend = os.path.join(os.path.abspath(args.tools), "rawsend")
        if os.access(rawsend, os.X_OK):
            for frames in (["str:hello"], ["hex:58585858000000010000000000000007", "str:x"],
                           ["hex:4148503100000001", "str:x"],
                           ["hdr:1:5", "str:a", "str:b"], ["hdr:2:6", "hex:"]):
                p = subprocess.run([rawsend, s.endpoint, "--timeout", "5000", *frames],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=30)
                check(p.returncode == 0, f"rawsend {frames}: exit {p.returncode} {p.stderr}")
                r = json.loads(p.stdout)
                check(r["reply"] and r["kind"] == 3 and r["status"] == "ERR_BAD_REQUEST",
                      f"frames {frames}: {r}")
        else:
            print("no rawsend: frame-level cases skipped")

        # Strings that are not UTF-8: every answer stays valid UTF-8, the bytes escaped.
        outs = s.send(raw_call(service=b"look\xffup"), raw_call(profile=b"bo\xffth"),
                      raw_call(args=b'{"topic": "\xff\xfe"}', step=3),
                      "hex:" + ld(2, ld(1, b"pro\xfffile")).hex())
        cr = outs[0]["reply"]["call"]
        check(cr["error"]["code"] == "unknown_service" and cr["service"] == "look\\xffup"
              and cr["error"]["message"] == "there is no service named look\\xffup",
              f"an unknown name that is not UTF-8 must come back escaped: {cr}")
        cr = outs[1]["reply"]["call"]
        check(cr["error"]["code"] == "not_allowed" and "bo\\xffth" in cr["error"]["message"],
              f"{cr}")
        cr = outs[2]["reply"]["call"]
        check(cr["error"]["code"] == "validation" and "not valid JSON" in cr["error"]["message"]
              and "\ufffd" not in json.dumps(cr), f"{cr}")
        e = err(outs[3], "ERR_NOT_FOUND")
        check("pro\\xfffile" in e["message"], f"{e}")

        check(s.alive(), "servicesd died on a malformed request")
        cr = s.call("lookup_wiki", {"topic": "durability"}, run="run-ok", step=1)
        check(ok_result(cr)["topic"] == "durability", f"serving after bad input: {cr}")
        check(m.stats()["requests"] == 1, f"bad input reached the mock: {m.stats()}")
        check(s.rows() == [("run-ok:1", "done", "lookup_wiki")], f"rows: {s.rows()}")
        check("pro\xfffile" not in s.log(), "raw bytes in the log")
    return 0


run_test(main)
