#!/usr/bin/env python3
"""orchctl never lets untrusted text act on a terminal (issue 6, section 3). A model whose
exec command hides itself behind CR and an erase-line sequence, and one that writes the
clipboard with OSC 52, show in `orchctl logs`, `status`, `list`, submit's live timeline
and the Result line with every control character visible (\\x0d, \\x1b, \\x07), each
event on one line; `orchctl logs --json` keeps the exact text.

The commands run in a real sandbox (sandboxd needs root; skipped otherwise), where
`rm -rf /workspace/important` harms nothing; the timeline records them before they run."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test

HIDE = "rm -rf /workspace/important #\r\x1b[2K[sandbox] $ ls /workspace"
OSC52 = "printf ok\x1b]52;c;cm0gLXJmIC8K\x07"
ANSWER = "done\x1b]0;pwned\x07\nsecond line\x9b31m"
TASK = "clean up\x1b[8m hidden"


def scenario():
    return ("steps:\n"
            "  - tool_calls:\n      - name: exec\n"
            f"        arguments: {{ command: {json.dumps(HIDE)} }}\n"
            "  - tool_calls:\n      - name: exec\n"
            f"        arguments: {{ command: {json.dumps(OSC52)} }}\n"
            f"  - content: {json.dumps(ANSWER)}\n")


def esc(s):
    """What orchctl prints for s on one line: controls as \\xHH."""
    out = []
    for ch in s:
        c = ord(ch)
        if c < 0x20 or c == 0x7f:
            out.append("\\x%02x" % c)
        elif 0x80 <= c <= 0x9f:
            out.append("".join("\\x%02x" % b for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def main(args):
    if os.geteuid() != 0:
        print("term_output needs root for sandboxd; skipped")
        return 77
    with Stack(args, "termout", sandbox=True) as st:
        st.demo_skill()
        st.write_scenario("hide", scenario())
        st.write_profile("hide", "hide", tools=("exec",))
        st.start()

        p = st.orchctl("submit", "hide", TASK, expect=0, timeout=60)
        live = p.stdout
        run_id = live.splitlines()[0]
        hide_line = "[sandbox] $ " + esc(HIDE)
        osc_line = "[sandbox] $ " + esc(OSC52)
        check(hide_line == "[sandbox] $ rm -rf /workspace/important #\\x0d\\x1b[2K[sandbox] $ "
              "ls /workspace", f"the expected escaped line itself: {hide_line}")
        check("\x1b" not in live and "\r" not in live and "\x07" not in live,
              f"raw control characters in submit's output: {live!r}")
        check(hide_line in live.splitlines(), f"live timeline hides the command:\n{live}")
        check(osc_line in live.splitlines(), f"live timeline lets OSC 52 through:\n{live}")
        want_result = "Result: done\\x1b]0;pwned\\x07\nsecond line\\xc2\\x9b31m"
        check(want_result in live, f"Result line not escaped as {want_result!r}:\n{live!r}")

        # logs: the same lines, exactly
        p = st.orchctl("logs", run_id, expect=0)
        lines = p.stdout.splitlines()
        check(hide_line in lines and osc_line in lines,
              f"orchctl logs does not show the exact escaped commands:\n{p.stdout}")
        check(all("\x1b" not in l and "\r" not in l and "\x07" not in l for l in lines),
              f"raw control characters in orchctl logs: {p.stdout!r}")
        # --json: the exact stored text
        evs = st.events(run_id)
        texts = [e["text"] for e in evs]
        check("[sandbox] $ " + HIDE in texts, f"--json lost the raw command: {texts}")
        check("[sandbox] $ " + OSC52 in texts, f"--json lost the raw OSC 52 command: {texts}")
        cmds = [e["data"].get("command") for e in evs
                if e["kind"] == "sandbox" and isinstance(e["data"], dict)]
        check(HIDE in cmds and OSC52 in cmds, f"--json data.command not exact: {cmds}")

        # status and list: task and result escaped; --json exact
        p = st.orchctl("status", run_id, expect=0)
        check("task         clean up\\x1b[8m hidden\n" in p.stdout, f"status task:\n{p.stdout}")
        check("result       done\\x1b]0;pwned\\x07\n             second line\\xc2\\x9b31m\n"
              in p.stdout, f"status result:\n{p.stdout!r}")
        check("\x1b" not in p.stdout and "\x9b" not in p.stdout, f"raw in status: {p.stdout!r}")
        r = st.status(run_id)
        check(r["task"] == TASK and r["result"] == ANSWER, f"--json status not exact: {r}")
        p = st.orchctl("list", expect=0)
        check("clean up\\x1b[8m hidden" in p.stdout and "\x1b" not in p.stdout,
              f"list task cell:\n{p.stdout!r}")


if __name__ == "__main__":
    run_test(main)
