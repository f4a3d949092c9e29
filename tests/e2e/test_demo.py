#!/usr/bin/env python3
"""`make demo`, end to end: scripts/demo against the built tree (AHP_BIN, so nothing is
installed or built), stdin not a terminal. It must print the six stage lines in order, each
once, with the run's real timeline between them (the orchestrator killed with SIGKILL and
restarted inside stage 1, a sandboxed command, a skill read, the wiki fetched through
credproxy with the token injected, a typed lookup, the publish held for approval and
approved by the demo itself with approvald), end the tour with `Published <message_id> at
<posted_at>: <summary>`, stop the stack (no daemon of its home left) and exit 0.

No journaled model call was served twice: the conversation states are rebuilt from the
orchestrator's journal (as mock-llm fingerprints them) and checked against mock-llm's
per-fingerprint counts, which the demo saved before it stopped the stack; only the call in
flight at the kill may have been served a second time. (Starts sandboxd: run under the
ctest lock.)"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
from ahptest import check, fingerprint, pid_alive, run_test

STAGES = [
    "== 1/6 A durable run: ",
    "== 2/6 Sandboxed commands: ",
    "== 3/6 A skill: ",
    "== 4/6 Credential injection: ",
    "== 5/6 Typed services: ",
    "== 6/6 Human approval: ",
]
DAEMONS = ("mock-llm", "mock-services", "credproxy", "sandboxd", "servicesd", "approvald",
           "orchestrator")


def journal_fingerprints(db, run_id):
    """Fingerprints of the run's model steps that have a journaled reply, rebuilt from the
    steps table the way mock-llm computes them (system prompt and task, then every earlier
    journaled assistant message and tool result, in step order)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        task = con.execute("SELECT task FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        rows = con.execute("SELECT seq, kind, intent, status, result FROM steps "
                           "WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    finally:
        con.close()
    messages, done = None, []
    for seq, kind, intent, status, result in rows:
        intent = json.loads(intent)
        if kind == "model":
            if messages is None:
                messages = ([{"role": "system", "content": intent["system"]}]
                            if intent.get("system") else [])
                messages.append({"role": "user", "content": task})
            check(intent["messages"] == len(messages),
                  f"step {seq}: intent says {intent['messages']} messages, rebuilt "
                  f"{len(messages)}")
            check(status == 0, f"model step {seq} of a finished run has status {status}")
            done.append(fingerprint(messages))
            messages.append(json.loads(result)["message"])
        elif status is not None:
            messages.append({"role": "tool", "tool_call_id": intent["tool_call_id"],
                             "content": result})
    return done


def leftover_processes(home):
    """Pids of processes whose command line names the demo's home (its daemons do)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if home.encode() in cmd and pid_alive(int(d)):
            out.append((int(d), cmd.replace(b"\0", b" ").decode(errors="replace")))
    return out


def main(args):
    if os.geteuid() != 0:
        print("e2e.demo needs root for sandboxd; skipped")
        return 77
    for b in DAEMONS + ("orchctl",):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}; the demo needs it: skipped")
            return 77
    for tool in ("curl", "sqlite3"):
        if shutil.which(tool) is None:
            print(f"no {tool} on this host (make deps installs it); skipped")
            return 77
    home = tempfile.mkdtemp(prefix="ahp-demo-t-", dir="/tmp")
    try:
        body(args, home)
    except BaseException:
        for name in sorted(os.listdir(os.path.join(home, "log"))) if os.path.isdir(
                os.path.join(home, "log")) else []:
            with open(os.path.join(home, "log", name), errors="replace") as f:
                tail = f.read().splitlines()[-15:]
            print(f"--- {name}:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        subprocess.run(["sh", os.path.join(args.src, "scripts/stack"), "stop", home],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


def body(args, home):
    env = dict(os.environ, AHP_BIN=os.path.abspath(args.bin), AHP_DEMO_HOME=home)
    p = subprocess.run(["sh", os.path.join(args.src, "scripts/demo")], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=200)
    out = p.stdout
    print(out)
    check(p.returncode == 0, f"scripts/demo exited {p.returncode}:\n{p.stderr}")
    lines = out.splitlines()

    # The six stage lines, each once, in order, each followed by its stage's own events.
    at = []
    for s in STAGES:
        idx = [i for i, line in enumerate(lines) if line.startswith(s)]
        check(len(idx) == 1, f"stage line {s!r} appears {len(idx)} times")
        at.append(idx[0])
    check(at == sorted(at), f"stage lines out of order: {at}")
    blocks = [lines[a:b] for a, b in zip(at, at[1:] + [len(lines)])]

    def has(block, pattern):
        return any(re.search(pattern, line) for line in block)

    check(has(blocks[0], r"^\[demo\] kill -9 orchestrator \(pid \d+\) while model call \d+ "
                         r"is in flight$"), "stage 1 has no kill")
    check(has(blocks[0], r"^\[run\] restarted → running \(\d+ journaled steps replayed\)$"),
          "stage 1: the run did not resume from its journal")
    check(has(blocks[1], r"^\[sandbox\] \$ cat /etc/os-release") and
          has(blocks[1], r"^\[sandbox\]   → exit=0, "), "stage 2 has no sandboxed command")
    check(has(blocks[2], r"^\[skill\] read team-digest/SKILL\.md "), "stage 3 has no skill read")
    check(has(blocks[3], r"^\[egress\] GET wiki\.local:\d+/snippets/durability → 200 "
                         r"\(auth injected: Authorization\)$"),
          "stage 4: no credproxy-injected wiki fetch")
    check(has(blocks[4], r'^\[service\] lookup_wiki\(topic="durability"\) → ok, 2 snippets'),
          "stage 5 has no typed lookup")
    check(has(blocks[5], r"^\[approval\] waiting on #1: publish_summary\(webhook_id="
                         r'"team-updates"'), "stage 6 did not wait for an approval")
    check("[demo] not a terminal: the demo approves #1 itself" in blocks[5],
          "stage 6 does not say the demo approves by itself")
    check(has(blocks[5], r"^approved #1 \(publish_summary, run r-[0-9a-f]+ step \d+\)$"),
          "approvald approve printed no confirmation")
    check(has(blocks[5], r"^\[approval\] #1 approved by root: approved in the demo$"),
          "the timeline does not show who approved")
    posts = [line for line in lines if line.startswith("[service] publish_summary → ok")]
    check(len(posts) == 1, f"{len(posts)} publishes in the timeline")

    # The tour's last word: the Published line, then where the logs are and a real provider.
    pub = [i for i, line in enumerate(lines)
           if re.fullmatch(r"Published [0-9a-f]{12} at \d{10}: Checked on .+", line)]
    check(len(pub) == 1, f"{len(pub)} Published lines")
    msg_id = lines[pub[0]].split()[1]
    check(f"message_id={msg_id} " in posts[0], f"published {posts[0]!r}, answered {msg_id}")
    rest = "\n".join(lines[pub[0] + 1:])
    check(f"Logs: {home}/log/" in rest, f"no logs line after Published:\n{rest}")
    check("A real model: " in rest and "providers.conf" in rest, "no real-provider hint")
    check(lines[-1] == "Stack stopped.", f"last line {lines[-1]!r}")

    # No journaled model call served twice (mock-llm's counts, saved by the demo).
    run_id = re.search(r"^(r-[0-9a-f]+)$", out, re.M).group(1)
    done = journal_fingerprints(os.path.join(home, "state/orchestrator/orchestrator.db"),
                                run_id)
    with open(os.path.join(home, "demo-stats-end.json")) as f:
        served = json.load(f)["by_fingerprint"]
    with open(os.path.join(home, "demo-stats-at-kill.json")) as f:
        before_kill = json.load(f)["by_fingerprint"]
    check(len(done) == 7, f"{len(done)} journaled model calls")
    check(set(served) == set(done), f"mock-llm saw {len(served)} conversation states, the "
          f"journal has {len(done)}")
    again = [fp for fp in done if served[fp] != 1]
    check(len(again) <= 1 and all(served[fp] == 2 for fp in again),
          f"served counts {sorted(served.values())}")
    check(not set(again) & set(before_kill), "a call journaled before the kill was repeated")
    check(before_kill and all(served[fp] == 1 for fp in before_kill),
          f"before the kill {before_kill}, at the end {served}")
    check("duplicated journaled calls: 0" in out, "the demo did not report its durability check")

    # The stack is stopped: no pid file names a live daemon, no process runs from the home.
    for d in DAEMONS:
        pf = os.path.join(home, "run", f"{d}.pid")
        check(not os.path.exists(pf), f"{pf} left behind")
    left = leftover_processes(home)
    check(not left, f"processes left running: {left}")


run_test(main)
