#!/usr/bin/env python3
"""orchctl's inline decisions, driven through a pseudo-terminal (python3 pty).

Part 1 (always, no run needed): approvald alone and fakeorch, a stand-in for the
orchestrator's socket that shows a "run" from a JSON file the test rewrites, with the
orchestrator's `[approval] waiting on #N: ...` / `[question] waiting on #N: ...` lines as
the trigger. On a terminal, `orchctl submit` offers `approve #N? [y]es / [n]o / [s]kip: `:
y approves and n rejects with the reason typed at `reason: ` (recorded by approvald as the
user running orchctl), `answer #N: ` answers a question, s leaves the run waiting (submit
stops following as it does off a terminal); a decision approvald refuses (already decided)
or cannot take (not running) prints why and the CLI command, and the run is followed on; a
request decided elsewhere while the prompt is open closes the prompt. Off a terminal, with
--no-prompt and with --json there is no prompt at all.

Part 2 (when the orchestrator waits for approvals): the real stack with servicesd and
approvald; a profile gates publish_summary; `orchctl submit` on a terminal approves it
inline (mock-services gets exactly one post, the run succeeds) and, in a second run,
rejects it with a reason (no post; the model's tool result carries the reason); an ask_human
question answered at `answer #N: ` reaches the model as {"answer", "by"}."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../approvald"))
from ahptest import Stack, TestFailure, check, run_test  # noqa: E402
from apprlib import ME, Approvald, approvald_built  # noqa: E402

ARGS = {"webhook_id": "team-updates", "content": "Durability digest"}
PROMPT = "approve #{}? [y]es / [n]o / [s]kip: "


class PtyProc:
    """A command whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, argv, env=None):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env=env, close_fds=True, start_new_session=True)
        os.close(slave)
        self.out = ""

    def _read(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave end is closed (the child exited)
            return None
        if not data:
            return None
        self.out += data.decode(errors="replace").replace("\r\n", "\n")
        return True

    def expect(self, text, timeout=20, start=0):
        """Waits until text appears in the output (after offset start); returns the offset
        just after it."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.out.find(text, start)
            if i >= 0:
                return i + len(text)
            left = deadline - time.monotonic()
            if left <= 0 or self._read(min(left, 0.2)) is None:
                i = self.out.find(text, start)
                if i >= 0:
                    return i + len(text)
                raise TestFailure(f"no {text!r} in orchctl's terminal output:\n{self.out}")

    def send(self, text):
        os.write(self.master, text.encode())

    def finish(self, timeout=20):
        """Reads to the end; returns the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._read(0.2) is None:
                break
        try:
            rc = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure(f"orchctl did not end:\n{self.out}")
        while self._read(0.05):
            pass
        os.close(self.master)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.master)
        except OSError:
            pass


class FakeRun:
    """fakeorch on HOME/run/orchestrator.sock showing one run from a JSON file."""

    def __init__(self, args, home, run_id="r-appr1"):
        self.tools = os.path.abspath(args.tools or args.bin)
        self.file = os.path.join(home, "fakerun.json")
        self.run_id = run_id
        self.events = []
        self.set("running")
        self.proc = subprocess.Popen(
            [os.path.join(self.tools, "fakeorch"), "ipc://" + os.path.join(
                home, "run/orchestrator.sock"), self.file],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        check(line.strip() == "ready", f"fakeorch: {line!r}")

    def set(self, state, result=""):
        self.state = state
        self.result = result
        self._write()

    def add(self, kind, text, data=None):
        self.events.append({"seq": len(self.events) + 1, "ts_ms": int(time.time() * 1000),
                            "kind": kind, "text": text,
                            "data": json.dumps(data) if data is not None else ""})
        self._write()

    def wait_on(self, req, question=False):
        """The orchestrator's waiting line for request req (as approvald recorded it)."""
        if question:
            q = json.loads(req["arguments_json"])["question"]
            self.add("question", f'[question] waiting on #{req["id"]}: "{q}" — approvald '
                     f'answer {req["id"]} "…"', {"id": int(req["id"]), "question": q})
        else:
            self.add("approval", f'[approval] waiting on #{req["id"]}: publish_summary('
                     f'webhook_id="team-updates", content="Durability digest") — approvald '
                     f'approve {req["id"]} | approvald reject {req["id"]}',
                     {"id": int(req["id"]), "action": "publish_summary", "arguments": ARGS,
                      "digest": req["digest"], "expires_ms": int(req["expires_ms"]),
                      "rule": "approvals[0]: service publish_summary"})
        self.set("waiting_approval")

    def _write(self):
        run = {"run_id": self.run_id, "profile": "team-digest", "state": self.state,
               "task": "Post a digest", "result": self.result}
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"events": self.events, "run": run}, f)
        os.rename(tmp, self.file)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


def orchctl_argv(args, home, *argv):
    return [os.path.join(os.path.abspath(args.bin), "orchctl"), "--home", home, *argv]


def part1(args):
    with Approvald(args, "octl") as ap:
        ap.start()
        fake = FakeRun(args, ap.home)
        try:
            part1_cases(args, ap, fake)
        finally:
            fake.stop()


def part1_cases(args, ap, fake):
    submit = orchctl_argv(args, ap.home, "submit", "team-digest", "Post a digest")
    fake.add("run", "[run] started")

    # --- approve: y -> recorded as the user running orchctl; the run is followed on.
    r1 = ap.created(fake.run_id, 3, args=ARGS)
    fake.wait_on(r1)
    p = PtyProc(submit)
    try:
        at = p.expect(PROMPT.format(r1["id"]))
        check("[approval] waiting on #1: publish_summary(webhook_id=\"team-updates\"" in p.out,
              p.out)
        p.send("y\n")
        at = p.expect(f"approved #1 by {ME}\n", start=at)
        d = ap.cli_json("show", "1")
        check(d["state"] == "STATE_APPROVED" and d["decision"]["by"] == ME and
              int(d["decision"]["by_uid"]) == os.getuid() and
              d["decision"].get("comment", "") == "", f"#1 after y: {d}")
        # Still waiting (the orchestrator has not seen it yet): submit keeps following.
        time.sleep(0.6)
        check(p.proc.poll() is None, f"orchctl stopped while the decision was in flight:\n"
              f"{p.out}")
        fake.add("approval", f"[approval] #1 approved by {ME}")
        fake.set("running")
        fake.add("service", "[service] publish_summary → ok message_id=abc")
        fake.add("run", "[run] succeeded")
        fake.set("succeeded", "Published abc")
        check(p.finish() == 0, f"exit code; output:\n{p.out}")
        check(p.out.endswith("[run] succeeded\nResult: Published abc\n"), p.out)
        check(p.out.count("approve #1?") == 1, f"prompted twice:\n{p.out}")
    finally:
        p.kill()

    # --- reject: n, then the reason.
    r2 = ap.created(fake.run_id, 5, args=ARGS)
    fake.wait_on(r2)
    p = PtyProc(submit)
    try:
        at = p.expect(PROMPT.format(r2["id"]))
        p.send("maybe\n")
        at = p.expect("y approves, n rejects, s skips (the run keeps waiting)\n" +
                      PROMPT.format(r2["id"]), start=at)
        p.send("n\n")
        at = p.expect("reason: ", start=at)
        p.send("wrong channel\n")
        p.expect(f"rejected #2 by {ME}: wrong channel\n", start=at)
        d = ap.cli_json("show", "2")
        check(d["state"] == "STATE_REJECTED" and d["decision"]["by"] == ME and
              d["decision"]["comment"] == "wrong channel", f"#2 after n: {d}")
        fake.add("approval", f"[approval] #2 rejected by {ME}: wrong channel")
        fake.add("run", "[run] succeeded")
        fake.set("succeeded", "Not published")
        check(p.finish() == 0, p.out)
    finally:
        p.kill()

    # --- a question: one line is the answer.
    r3 = ap.created(fake.run_id, 7, action="ask_human", kind="KIND_QUESTION",
                    args={"question": "Which channel?"}, question="Which channel?")
    fake.wait_on(r3, question=True)
    p = PtyProc(submit)
    try:
        at = p.expect(f"answer #{r3['id']}: ")
        p.send("Verified by ops on call\n")
        p.expect(f"answered #3 by {ME}\n", start=at)
        d = ap.cli_json("show", "3")
        check(d["state"] == "STATE_ANSWERED" and
              d["decision"]["comment"] == "Verified by ops on call", f"#3: {d}")
        fake.add("question", f"[question] #3 answered by {ME}")
        fake.set("succeeded", "ok")
        check(p.finish() == 0, p.out)
    finally:
        p.kill()

    # --- skip: the run keeps waiting; submit stops following as off a terminal.
    r4 = ap.created(fake.run_id, 9, args=ARGS)
    fake.wait_on(r4)
    p = PtyProc(submit)
    try:
        at = p.expect(PROMPT.format(r4["id"]))
        p.send("s\n")
        p.expect("skipped; decide later with: approvald approve 4 | approvald reject 4\n",
                 start=at)
        check(p.finish() == 0, p.out)
        check(p.out.endswith(f"Run {fake.run_id} is waiting_approval; follow it later with: "
                             f"orchctl logs --follow {fake.run_id}\n"), p.out)
        check(ap.cli_json("show", "4")["state"] == "STATE_PENDING", "#4 was decided")
    finally:
        p.kill()

    # --- logs --follow offers it too; refused by approvald (decided meanwhile by the CLI
    # while orchctl did not know yet): why and the command, then the run is followed on.
    p = PtyProc(orchctl_argv(args, ap.home, "logs", "--follow", fake.run_id))
    try:
        at = p.expect(PROMPT.format(r4["id"]))
        ap.cli("approve", "4", "-m", "from the CLI", expect=0)
        p.send("n\n")
        at = p.expect("reason: ", start=at)
        p.send("too late\n")
        at = p.expect("orchctl: approvald refused: #4 was already approved by ", start=at)
        p.expect("(decide with: approvald approve 4 | approvald reject 4)\n", start=at)
        time.sleep(0.6)
        check(p.proc.poll() is None, f"orchctl stopped following:\n{p.out}")
        # The decision line quotes the comment: text that reads like a waiting line there
        # is not a request to ask about (only the line's start counts).
        fake.add("approval", f"[approval] #4 approved by {ME}: from the CLI, waiting on #99")
        time.sleep(1.5)
        check("#99?" not in p.out and p.proc.poll() is None, f"a comment prompted:\n{p.out}")
        fake.set("succeeded", "done")
        check(p.finish() == 0, p.out)
        check(ap.cli_json("show", "4")["decision"]["comment"] == "from the CLI", "#4 changed")
    finally:
        p.kill()

    # --- a prompt whose request is decided elsewhere (the decision line arrives) closes.
    r5 = ap.created(fake.run_id, 11, args=ARGS)
    fake.wait_on(r5)
    p = PtyProc(submit)
    try:
        at = p.expect(PROMPT.format(r5["id"]))
        ap.cli("reject", "5", "-m", "not today", expect=0)
        fake.add("approval", f"[approval] #5 rejected by {ME}: not today")
        fake.set("running")
        at = p.expect(f"[approval] #5 rejected by {ME}: not today\n", start=at, timeout=10)
        fake.set("succeeded", "done")
        check(p.finish() == 0, p.out)
        check(p.out.count("approve #5?") == 1 and "Result: done" in p.out, p.out)
    finally:
        p.kill()

    # --- approvald not running (--approvald elsewhere): why, the command; followed on.
    r6 = ap.created(fake.run_id, 13, args=ARGS)
    fake.wait_on(r6)
    gone = "ipc://" + ap.path("run/nothing-here.sock")
    p = PtyProc(orchctl_argv(args, ap.home, "--approvald", gone, "submit", "team-digest", "x"))
    try:
        at = p.expect(PROMPT.format(r6["id"]))
        p.send("y\n")
        at = p.expect(f"orchctl: approvald not running (no socket at {gone[6:]})\n"
                      "(decide with: approvald approve 6 | approvald reject 6)\n", start=at)
        check(ap.cli_json("show", "6")["state"] == "STATE_PENDING", "#6 was decided")
        ap.cli("approve", "6", expect=0)
        fake.add("approval", f"[approval] #6 approved by {ME}")
        fake.set("succeeded", "done")
        check(p.finish() == 0, p.out)
    finally:
        p.kill()

    # --- the user may not decide (another approvald that admits only nobody): why, the
    # command; followed on.
    with Approvald(args, "octl2", decide_users="nobody") as other:
        other.start()
        o1 = other.created(fake.run_id, 13, args=ARGS)
        check(o1["id"] == r6["id"] or int(o1["id"]) == 1, f"other's request {o1}")
        fake.events = [e for e in fake.events if e["seq"] <= 1]
        fake.wait_on(o1)
        p = PtyProc(orchctl_argv(args, ap.home, "--approvald", other.human_ep, "submit",
                                 "team-digest", "x"))
        try:
            at = p.expect(PROMPT.format(o1["id"]))
            p.send("y\n")
            at = p.expect(f"orchctl: approvald refused: {ME} may not decide (", start=at)
            p.expect("(decide with: approvald approve 1 | approvald reject 1)\n", start=at)
            time.sleep(0.6)
            check(p.proc.poll() is None, f"orchctl stopped following:\n{p.out}")
            fake.add("approval", "[approval] #1 approved by nobody")
            fake.set("succeeded", "done")
            check(p.finish() == 0, p.out)
        finally:
            p.kill()
        check(other.get(fake.run_id, 13)["request"]["state"] == "STATE_PENDING",
              "decided by a user who may not")

    # --- no prompt: off a terminal, --no-prompt, --json.
    r7 = ap.created(fake.run_id, 15, args=ARGS)
    fake.wait_on(r7)
    q = subprocess.run(submit, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       stdin=subprocess.DEVNULL, timeout=30)
    check(q.returncode == 0 and "approve #" not in q.stdout + q.stderr and
          q.stdout.endswith(f"Run {fake.run_id} is waiting_approval; follow it later with: "
                            f"orchctl logs --follow {fake.run_id}\n"), f"piped: {q}")
    for extra in (["--no-prompt"], ["--json"]):
        p = PtyProc(orchctl_argv(args, ap.home, *extra, "submit", "team-digest", "x"))
        try:
            check(p.finish() == 0, p.out)
            check("approve #" not in p.out and "[approval] waiting on #7" in p.out, p.out)
        finally:
            p.kill()
    check(ap.cli_json("show", "7")["state"] == "STATE_PENDING", "#7 was decided")


def orchestrator_waits(args):
    """True when this orchestrator waits for approvals (it has approvald_endpoint)."""
    with open(os.path.join(args.bin, "orchestrator"), "rb") as f:
        return b"approvald_endpoint" in f.read()


GATED_PROFILE = """\
name: digest-gated
model: mock:gated
system_prompt: |
  Post the digest.
tools: [exec_service]
services: [lookup_wiki, publish_summary]
approvals:
  - service: publish_summary
    expires: 1h
limits: { max_turns: 6, max_model_calls: 6 }
"""

GATED_SCENARIO = """\
steps:
  - tool_calls:
      - name: exec_service
        arguments:
          service_name: publish_summary
          args: { webhook_id: team-updates, content: "Durability digest" }
  - content: "{{result.0}}"
"""


ASK_PROFILE = """\
name: ask-inline
model: mock:ask
system_prompt: |
  Ask, then answer.
tools: [ask_human]
limits: { max_turns: 4, max_model_calls: 4 }
"""

ASK_SCENARIO = """\
steps:
  - tool_calls:
      - name: ask_human
        arguments: { question: "Which channel?" }
  - content: "{{result.0}}"
"""


def part2(args):
    for b in ("servicesd", "mock-services", "approvald"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"part 2 skipped: {b} is not built")
            return
    if not orchestrator_waits(args):
        print("part 2 skipped: this orchestrator does not wait for approvals yet")
        return
    with Stack(args, "octlappr", services=True, approvals=True) as st:
        st.write("etc/profiles/digest-gated.yaml", GATED_PROFILE)
        st.write_scenario("gated", GATED_SCENARIO)
        st.write("etc/profiles/ask-inline.yaml", ASK_PROFILE)
        st.write_scenario("ask", ASK_SCENARIO)
        st.start()
        argv = [os.path.join(st.bin, "orchctl"), "--home", st.home, "submit", "digest-gated",
                "Post the digest"]

        # Approve inline: published exactly once, the answer carries the webhook's id.
        p = PtyProc(argv)
        try:
            at = p.expect("approve #1? [y]es / [n]o / [s]kip: ", timeout=60)
            check(re.search(r'\[approval\] waiting on #1: publish_summary\(webhook_id='
                            r'"team-updates", content="Durability digest"\) — approvald '
                            r'approve 1 \| approvald reject 1\n', p.out), p.out)
            check(st.services_stats()["posts"] == 0, "published before the approval")
            p.send("y\n")
            p.expect(f"approved #1 by {ME}\n", start=at)
            check(p.finish(timeout=60) == 0, p.out)
            check("Result: " in p.out and "message_id" in p.out, p.out)
        finally:
            p.kill()
        run1 = p.out.splitlines()[0].strip()
        check(st.status(run1)["state"] == "succeeded", st.status(run1))
        check(st.services_stats()["posts"] == 1, f"posts {st.services_stats()}")
        d = st.approvald_json("show", "1")
        check(d["decision"]["by"] == ME and d["run_id"] == run1, f"#1: {d}")
        texts = [e["text"] for e in st.events(run1) if e["kind"] == "approval"]
        check(any(t.startswith(f"[approval] #1 approved by {ME}") for t in texts), texts)

        # Reject inline with a reason: nothing published, the model sees the reason.
        p = PtyProc(argv)
        try:
            at = p.expect("approve #2? [y]es / [n]o / [s]kip: ", timeout=60)
            p.send("n\n")
            at = p.expect("reason: ", start=at)
            p.send("wrong channel\n")
            p.expect(f"rejected #2 by {ME}: wrong channel\n", start=at)
            check(p.finish(timeout=60) == 0, p.out)
        finally:
            p.kill()
        run2 = p.out.splitlines()[0].strip()
        r = st.status(run2)
        check(r["state"] == "succeeded" and "rejected" in r["result"] and
              "wrong channel" in r["result"], f"run 2: {r}")
        check(st.services_stats()["posts"] == 1, f"posts {st.services_stats()}")
        rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='tool'", (run2,))
        err = json.loads(rows[0][0])["error"]
        check(err["code"] == "rejected" and err["by"] == ME and
              err["message"] == f"rejected by {ME}: wrong channel", f"tool result {err}")

        # A question answered inline reaches the model as the tool result.
        p = PtyProc([os.path.join(st.bin, "orchctl"), "--home", st.home, "submit", "ask-inline",
                     "Ask which channel"])
        try:
            at = p.expect('[question] waiting on #3: "Which channel?"', timeout=60)
            at = p.expect("answer #3: ", start=at)
            p.send("team-updates, verified by ops on call\n")
            p.expect(f"answered #3 by {ME}\n", start=at)
            check(p.finish(timeout=60) == 0, p.out)
        finally:
            p.kill()
        run3 = p.out.splitlines()[0].strip()
        r = st.status(run3)
        check(r["state"] == "succeeded" and json.loads(r["result"]) ==
              {"answer": "team-updates, verified by ops on call", "by": ME}, f"run 3: {r}")
        check(st.services_stats()["posts"] == 1, f"posts {st.services_stats()}")


def main(args):
    if not approvald_built(args):
        print("approvald is not built: skipped")
        return 77
    part1(args)
    part2(args)
    return 0


if __name__ == "__main__":
    run_test(main)
