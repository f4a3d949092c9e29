#!/usr/bin/env python3
"""orchctl's command line (issue 6, section 7): a task from stdin (`-`) or --task-file;
the limits stated in --help; every --json error in the one documented shape; a task of
only white space refused by orchctl (exit 2) and by the orchestrator (bad_request);
cancel's help and errors agree; usage errors exit 2 (list --state bogus too); no resume
hint when a limit ended the run (RunInfo.resumable); a submit that follows its run through
an orchestrator restart says it is reconnecting, at once, and finishes."""
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

TASK_MAX = 64 * 1024  # ORCH_TASK_MAX in orchestrator/orch.h

SHORT = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
  - content: "task was: {{task}}"
"""

LOOP = """
steps:
  - tool_calls:
      - name: skill
        arguments: { action: list }
"""

LATENCY_MS = 250
LONG_STEPS = 12


def long_scenario():
    steps = "".join("  - tool_calls:\n      - name: skill\n        arguments: { action: list }\n"
                    for _ in range(LONG_STEPS))
    return "steps:\n" + steps + "  - content: \"long done\"\n"


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def ld(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


def usage_err(p, msg):
    """orchctl exited 2 with exactly this usage error line on stderr."""
    line = f"orchctl: usage: {msg} (see orchctl --help)\n"
    check(p.returncode == 2 and p.stderr.endswith(line),
          f"expected exit 2 and {line!r}, got {p.returncode}:\n{p.stderr!r}")


def json_err(p, status, message, detail, code):
    want = {"error": {"status": status, "message": message, "detail": detail,
                      "exit_code": code}}
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    check(p.returncode == code, f"exit {p.returncode} != {code}: {p.stdout} {p.stderr}")
    check(len(lines) >= 1 and json.loads(lines[-1]) == want,
          f"--json error is not {want}:\n{p.stdout!r}")


def main(args):
    with Stack(args, "orchctl", mock_args=f"--latency-ms {LATENCY_MS}") as st:
        st.demo_skill()
        st.write_scenario("short", SHORT)
        st.write_profile("short", "short")
        st.write_scenario("loop", LOOP)
        st.write_profile("turns", "loop", extra="limits: { max_turns: 2, max_model_calls: 50 }\n")
        st.write_profile("calls", "loop", extra="limits: { max_turns: 50, max_model_calls: 2 }\n")
        st.write_scenario("long", long_scenario())
        st.write_profile("long", "long")
        st.write_profile("nomodel", "nosuch-scenario")

        # --- before the orchestrator runs: unreachable is exit 3, JSON shape too ---
        p = st.orchctl("--json", "status", "r-x")
        json_err(p, "unavailable", "orchestrator not running: no socket at "
                 f"{st.path('run/orchestrator.sock')} (start it with scripts/stack start DIR,"
                 " or pass --home)", "", 3)
        st.start()

        # --- --help states the limits and the error shape ---
        h = st.orchctl("--help", expect=0).stdout
        for s in (f"task            1..{TASK_MAX} bytes of UTF-8, not only white space, no NUL",
                  "RUN             1..31 characters of A-Z a-z 0-9 - _",
                  '{"error":{"status":S,"message":M,"detail":D,"exit_code":N}}',
                  "cancel RUN                      cancel a queued, running or waiting run",
                  "TASK '-' reads the task from stdin", "--task-file FILE"):
            check(s in h, f"--help lacks {s!r}")

        # --- task from stdin and from a file, byte for byte ---
        p = st.orchctl("submit", "short", "-", input_text="from stdin\nline two\n", expect=0)
        rid = p.stdout.splitlines()[0]
        check(st.status(rid)["task"] == "from stdin\nline two\n", "stdin task not exact")
        check("Result: task was: from stdin\nline two" in p.stdout, f"stdin run: {p.stdout}")
        f = st.write("task.txt", "from a file ✓")
        p = st.orchctl("submit", "short", "--task-file", f, expect=0)
        check(st.status(p.stdout.splitlines()[0])["task"] == "from a file ✓", "file task")
        big = st.write("big.txt", "a" * TASK_MAX)
        rid = st.orchctl_json("submit", "--detach", "short", "--task-file", big)[0]["run_id"]
        check(len(st.status(rid)["task"]) == TASK_MAX, "a task of exactly the limit is taken")
        st.write("big.txt", "a" * (TASK_MAX + 1))
        usage_err(st.orchctl("submit", "short", "--task-file", big),
                  f"the task is longer than {TASK_MAX} bytes")
        usage_err(st.orchctl("submit", "short", "--task-file", "/nonexistent/t"),
                  "cannot read the task from /nonexistent/t: No such file or directory")
        with open(st.path("bad.txt"), "wb") as fh:
            fh.write(b"caf\xc3(")
        usage_err(st.orchctl("submit", "short", "--task-file", st.path("bad.txt")),
                  "the task is not valid UTF-8")
        with open(st.path("nul.txt"), "wb") as fh:
            fh.write(b"a\0b")
        usage_err(st.orchctl("submit", "short", "--task-file", st.path("nul.txt")),
                  "the task contains a NUL byte")
        usage_err(st.orchctl("submit", "short", "-", input_text=""), "the task is empty")
        usage_err(st.orchctl("submit", "short", "x", "--task-file", f),
                  "orchctl submit PROFILE TASK|- (quote the task), or submit PROFILE "
                  "--task-file FILE")
        usage_err(st.orchctl("status", "r-x", "--task-file", f), "--task-file goes with submit")

        # --- white space only: refused by orchctl and by the orchestrator ---
        for blank in (" ", " \t\n", "\u00a0\u3000\u2003"):
            usage_err(st.orchctl("submit", "short", blank), "the task is only white space")
        usage_err(st.orchctl("submit", "short", "-", input_text="\n\n"),
                  "the task is only white space")
        body = st.path("blank.bin")
        with open(body, "wb") as fh:
            fh.write(ld(1, ld(1, b"short") + ld(2, " \t\u3000\n".encode())))
        r = subprocess.run([os.path.join(args.tools, "rawsend"),
                            "ipc://" + st.path("run/orchestrator.sock"), "--timeout", "5000",
                            "hdr:1:5", "file:" + body], capture_output=True, text=True,
                           timeout=30)
        rep = json.loads(r.stdout)
        check(rep.get("status") == "ERR_BAD_REQUEST" and
              rep.get("message") == "task is only white space",
              f"the orchestrator accepted a blank task: {rep}")

        # --- usage errors exit 2, in JSON too ---
        usage_err(st.orchctl("list", "--state", "bogus"),
                  "--state takes queued, running, waiting_approval, succeeded, failed or "
                  "cancelled")
        json_err(st.orchctl("--json", "list", "--state", "bogus"), "usage",
                 "--state takes queued, running, waiting_approval, succeeded, failed or "
                 "cancelled", "see orchctl --help", 2)
        usage_err(st.orchctl("status", "r/../x"),
                  "orchctl status RUN (a run id is 1..31 characters of A-Z a-z 0-9 - _)")
        usage_err(st.orchctl("cancel"), "orchctl cancel RUN")
        usage_err(st.orchctl("list", "--limit", "0"), "--limit takes a number in 1..100000")
        usage_err(st.orchctl("--timeout", "5", "list"),
                  "--timeout takes milliseconds in 100..600000")
        usage_err(st.orchctl("frobnicate"), "unknown command 'frobnicate'")
        usage_err(st.orchctl("list", "--bogus"), "unknown option '--bogus'")
        json_err(st.orchctl("--json", "submit", "short", " "), "usage",
                 "the task is only white space", "see orchctl --help", 2)
        json_err(st.orchctl("frobnicate", "--json"), "usage", "unknown command 'frobnicate'",
                 "see orchctl --help", 2)
        p = st.orchctl("--json")
        json_err(p, "usage", "no COMMAND given", "see orchctl --help", 2)
        check(p.stderr == "orchctl: usage: no COMMAND given (see orchctl --help)\n",
              f"--json with no command printed more than the usage line: {p.stderr!r}")
        # An option's value is never the next option.
        json_err(st.orchctl("--home", "--json", "list"), "usage",
                 "option --home needs a value", "see orchctl --help", 2)

        # --- server errors: the same shape ---
        json_err(st.orchctl("--json", "status", "r-nosuch"), "not_found", "no run r-nosuch",
                 "", 4)
        p = st.orchctl("status", "r-nosuch", expect=4)
        check(p.stderr == "orchctl: not_found: no run r-nosuch\n", f"stderr {p.stderr!r}")

        # --- cancel: help and errors agree ---
        done = st.orchctl_json("list", "--state", "succeeded")[0]["runs"][0]["run_id"]
        msg = f"run {done} is succeeded; only a queued, running or waiting run can be cancelled"
        p = st.orchctl("cancel", done, expect=5)
        check(p.stderr == f"orchctl: invalid_state: {msg}\n", f"cancel stderr {p.stderr!r}")
        json_err(st.orchctl("--json", "cancel", done), "invalid_state", msg, "", 5)

        # --- no resume hint when a limit ended the run ---
        for prof, reason in (("turns", "max_turns (2) reached"),
                             ("calls", "max_model_calls (2) reached")):
            p = st.orchctl("submit", prof, "loop forever", expect=1, timeout=60)
            rid = p.stdout.splitlines()[0]
            check(f"Run {rid} failed: {reason}\n(a limit of the profile was reached: resuming "
                  "as it is stops at the same limit; raise the limit in the profile, reload, "
                  "then resume)\n" in p.stdout,
                  f"{prof}: no limit line:\n{p.stdout}")
            check("orchctl resume" not in p.stdout, f"{prof}: a resume hint:\n{p.stdout}")
            r = st.status(rid)
            check(r["state"] == "failed" and r["error"] == reason and r["resumable"] is False,
                  f"{prof}: {r}")
            s = st.orchctl("status", rid, expect=0).stdout
            check("resumable    no (it would fail the same way)\n" in s, f"status:\n{s}")
            p = st.orchctl("logs", rid, expect=0)
            check("orchctl resume" not in p.stdout, f"logs shows a resume hint:\n{p.stdout}")
        # a failure that resuming can fix keeps its hint
        p = st.orchctl("submit", "nomodel", "no such scenario", expect=1, timeout=120)
        rid = p.stdout.splitlines()[0]
        check(f"(resume it with: orchctl resume {rid})\n" in p.stdout, f"hint:\n{p.stdout}")
        check(st.status(rid)["resumable"] is True, "a provider failure is resumable")

        # --- a following submit rides out an orchestrator restart, and says so ---
        proc = subprocess.Popen([os.path.join(st.bin, "orchctl"), "--home", st.home, "submit",
                                 "long", "survive a restart"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out_lines, err_lines = [], []

        def reader(stream, sink):
            for line in stream:
                sink.append((time.monotonic(), line))
        ts = [threading.Thread(target=reader, args=(proc.stdout, out_lines)),
              threading.Thread(target=reader, args=(proc.stderr, err_lines))]
        for t in ts:
            t.start()
        wait_for(lambda: sum("[model]" in l for _, l in out_lines) >= 2, 60, "two model calls")
        t_kill = time.monotonic()
        st.kill("orchestrator")
        wait_for(lambda: err_lines, 5, "orchctl to say it is reconnecting")
        said = err_lines[0][0] - t_kill
        check(err_lines[0][1] == "orchctl: orchestrator not answering; reconnecting…\n",
              f"first stderr line {err_lines[0][1]!r}")
        check(said < 2.0, f"orchctl took {said:.1f}s to notice the orchestrator had gone")
        time.sleep(1.0)
        st.restart("orchestrator")
        rc = proc.wait(120)
        for t in ts:
            t.join()
        err = "".join(l for _, l in err_lines)
        out = "".join(l for _, l in out_lines)
        check(rc == 0 and "Result: long done\n" in out, f"exit {rc}:\n{out}\n{err}")
        check(err == "orchctl: orchestrator not answering; reconnecting…\n"
              "orchctl: reconnected\n", f"stderr {err!r}")
        print(f"reconnecting line {said * 1000:.0f} ms after the kill")


if __name__ == "__main__":
    run_test(main)
