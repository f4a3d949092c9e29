#!/usr/bin/env python3
"""Malformed and oversized orchctl requests get typed errors and the daemon keeps serving.
Frames are hand-made and sent by rawsend (a DEALER socket; Python's stdlib has no zmq)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test

SCENARIO = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - content: "still serving: {{result.0.files.0}}"
"""

MIB = 1024 * 1024


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def vi(num, value):
    return varint(num << 3) + varint(value)


def submit_req(profile, task):
    return ld(1, ld(1, profile.encode()) + ld(2, task.encode()))


def status_req(run_id):
    return ld(2, ld(1, run_id.encode()))


def hdr(kind=1, rid=7):
    return f"hdr:{kind}:{rid}"


class Sender:
    def __init__(self, st, tools):
        self.st = st
        self.tool = os.path.join(tools, "rawsend")
        self.endpoint = "ipc://" + st.path("run/orchestrator.sock")
        self.n = 0

    def body_file(self, data):
        self.n += 1
        p = self.st.path(f"frame{self.n}.bin")
        with open(p, "wb") as f:
            f.write(data)
        return "file:" + p

    def send(self, *frames, timeout=5000):
        p = subprocess.run([self.tool, self.endpoint, "--timeout", str(timeout), *frames],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout / 1000 + 30)
        check(p.returncode in (0, 3), f"rawsend failed ({p.returncode}): {p.stderr}")
        return json.loads(p.stdout)

    def expect_error(self, what, frames, statuses, kinds=(2, 3), rid=None):
        r = self.send(*frames)
        check(r["reply"], f"{what}: no reply")
        check(r.get("kind") in kinds, f"{what}: reply kind {r.get('kind')} not in {kinds}: {r}")
        check(r.get("status") in statuses, f"{what}: status {r.get('status')} not in {statuses}")
        check(r.get("message"), f"{what}: error without a message: {r}")
        if rid is not None:
            check(r.get("request_id") == rid, f"{what}: request id {r.get('request_id')} != {rid}")
        alive(self.st, what)
        return r


def alive(st, after):
    pid = st.pid("orchestrator")
    check(pid and os.path.exists(f"/proc/{pid}"), f"orchestrator died after: {after}")


def main(args):
    with Stack(args, "badreq") as st:
        st.demo_skill()
        st.write_scenario("short", SCENARIO)
        st.write_profile("short", "short")
        st.start()
        s = Sender(st, args.tools)
        BAD = ("ERR_BAD_REQUEST",)

        # Sanity: a well-formed status request for an unknown run is a typed not-found.
        s.expect_error("unknown run", [hdr(1, 11), s.body_file(status_req("run-nope"))],
                       ("ERR_NOT_FOUND",), kinds=(2,), rid=11)

        # Transport level: wrong frame count, bad magic, short header, wrong kind.
        s.expect_error("one frame", ["str:hello"], BAD, kinds=(3,))
        s.expect_error("three frames", [hdr(), "str:a", "str:b"], BAD, kinds=(3,))
        s.expect_error("bad magic", ["hex:58585858000000010000000000000007", "str:x"], BAD,
                       kinds=(3,))
        s.expect_error("short header", ["hex:4148503100000001", "str:x"], BAD, kinds=(3,))
        s.expect_error("reply kind as request", [hdr(2, 9), s.body_file(status_req("r"))],
                       BAD, kinds=(3,))

        # Body level: not protobuf, no oneof body, an unknown oneof field, empty fields.
        s.expect_error("garbage body", [hdr(1, 21), "hex:ffffffffffffffffff"], BAD, rid=21)
        s.expect_error("empty body", [hdr(1, 22), "hex:"],
                       ("ERR_BAD_REQUEST", "ERR_UNKNOWN_METHOD"), rid=22)
        s.expect_error("unknown method", [hdr(1, 23), s.body_file(ld(15, b"zzz"))],
                       ("ERR_BAD_REQUEST", "ERR_UNKNOWN_METHOD"), rid=23)
        s.expect_error("submit without profile", [hdr(1, 24), s.body_file(submit_req("", "t"))],
                       BAD, rid=24)
        s.expect_error("submit without task", [hdr(1, 25), s.body_file(submit_req("short", ""))],
                       BAD, rid=25)
        s.expect_error("status without run id", [hdr(1, 26), s.body_file(status_req(""))],
                       ("ERR_BAD_REQUEST", "ERR_NOT_FOUND"), rid=26)
        s.expect_error("bad profile name",
                       [hdr(1, 27), s.body_file(submit_req("../../etc/passwd", "t"))],
                       ("ERR_BAD_REQUEST", "ERR_NOT_FOUND"), rid=27)
        s.expect_error("long-poll over 30 s",
                       [hdr(1, 29), s.body_file(ld(3, ld(1, b"r-0") + vi(3, 999999)))],
                       BAD, rid=29)
        s.expect_error("invalid utf-8 in task",
                       [hdr(1, 28), s.body_file(ld(1, ld(1, b"short") + ld(2, b"\xff\xfe")))],
                       BAD, rid=28)

        # Oversized: just over the message ceiling gets a typed too-large error...
        # (the orchestrator's ceiling is 1 MiB: ORCH_RPC_MAX_MSG)
        big = submit_req("short", "x" * (MIB + 4096))
        s.expect_error("oversized message", [hdr(1, 31), s.body_file(big)],
                       ("ERR_TOO_LARGE",))
        # ...and far over it, libzmq drops the connection: no reply, daemon unharmed.
        huge = s.body_file(b"\0" * (4 * MIB))
        s.send(hdr(1, 32), huge, timeout=2000)
        alive(st, "huge message")
        # A task over the orchestrator's 64 KiB task limit, inside the message ceiling.
        s.expect_error("oversized task", [hdr(1, 33), s.body_file(submit_req("short", "y" * (200 * 1024)))],
                       ("ERR_TOO_LARGE", "ERR_BAD_REQUEST"), kinds=(2,), rid=33)

        # After all that, the daemon still serves: a run completes.
        p = st.orchctl("submit", "short", "after the storm", expect=0, timeout=60)
        check("Result: still serving: release-notes/SKILL.md" in p.stdout, p.stdout)
        # No stray runs were created by the rejected submits.
        runs = st.orchctl_json("list")[0]["runs"]
        check(len(runs) == 1, f"rejected requests created runs: {runs}")


run_test(main)
