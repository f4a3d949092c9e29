#!/usr/bin/env python3
"""Integration test of mock-llm: starts the real binary on an ephemeral loopback port and drives
conversations, restarts, failure injection and bad requests through HTTP. Python 3 stdlib only.

usage: test_mock_llm.py MOCK_LLM_BINARY SCENARIO_DIR
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CHAT = "/providers/mock/v1/chat/completions"


def fingerprint(messages):
    """The request fingerprint as docs/operations.md defines it: SHA-256 of the canonical
    JSON of [HEAD, N], HEAD the messages up to and including the first user message and N
    the number of messages."""
    head = next((i + 1 for i, m in enumerate(messages) if m.get("role") == "user"),
                len(messages))
    canon = json.dumps([messages[:head], len(messages)], sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Mock:
    """One mock-llm process on an ephemeral port, its port published through --port-file."""

    def __init__(self, binary, scenarios, tmp, *extra):
        self.port_file = os.path.join(tmp, "mock-llm.port")
        self.log_path = os.path.join(tmp, "mock-llm.log")
        self.log = open(self.log_path, "ab")
        # A SIGKILLed predecessor leaves its port file; wait for ours, not that one.
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.proc = subprocess.Popen(
            [binary, "--scenarios", scenarios, "--port", "0", "--port-file", self.port_file]
            + list(extra),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        self.port = None
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, f"mock-llm exited early: {self.tail()}")
            try:
                with open(self.port_file) as f:
                    text = f.read()
                if text.endswith("\n") and text.strip().isdigit():
                    self.port = int(text)
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        check(self.port, "mock-llm did not write its port file")

    def tail(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    host = "127.0.0.1"

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def request(self, path, body=None, method=None, raw=None, timeout=30):
        """Returns (status, headers, parsed JSON body)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url(path), data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read())

    def chat(self, model, messages, **kw):
        return self.request(CHAT, {"model": model, "messages": messages, **kw})

    def stats(self):
        status, _, body = self.request("/stats")
        check(status == 200, f"/stats -> {status}")
        return body

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mock-llm did not stop on signal")
        self.log.close()
        return self.proc.returncode


def ok_reply(status, body, what):
    check(status == 200, f"{what}: HTTP {status} {body}")
    check(body["object"] == "chat.completion", f"{what}: object {body.get('object')}")
    choice = body["choices"][0]
    usage = body["usage"]
    check(usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, f"{what}: usage {usage}")
    check(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
          f"{what}: total_tokens")
    return choice


def tool_calls(choice):
    check(choice["finish_reason"] == "tool_calls", f"expected tool calls, got {choice}")
    out = []
    for c in choice["message"]["tool_calls"]:
        check(c["type"] == "function", f"call type {c}")
        out.append((c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])))
    return out


def assistant_turn(choice):
    msg = {"role": "assistant", "content": choice["message"]["content"]}
    if choice["message"].get("tool_calls"):
        msg["tool_calls"] = choice["message"]["tool_calls"]
    return msg


def tool_msg(call_id, result):
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}


SKILL_TEXT = "# Writing release notes\n   - **Breaking changes** first.\n"
RESULTS = {
    "list": {"files": ["release-notes/SKILL.md", "release-notes/template.md"]},
    "read": {"path": "release-notes/SKILL.md", "content": SKILL_TEXT, "truncated": False,
             "bytes": len(SKILL_TEXT)},
    "search": {"matches": [{"path": "release-notes/SKILL.md", "line": 2,
                            "text": "   - **Breaking changes** first."}], "truncated": False},
    "exec": {"exit_code": 0, "stdout": "PRETTY_NAME=\"Debian GNU/Linux 12\"\n/workspace\n",
             "stderr": "", "truncated": False, "cwd": "/workspace", "duration_ms": 3},
}


def fake_tool(name, args):
    """What the orchestrator would answer, shaped as CONVENTIONS.md says."""
    if name == "skill":
        return RESULTS[args["action"]]
    return RESULTS[name]


def test_scripted_conversation(m, expected_fps):
    """Drives scripted.yaml to its end, feeding tool results back like the orchestrator."""
    messages = [{"role": "system", "content": "You write release notes."},
                {"role": "user", "content": "Release notes for ahp 0.2 (Ünïcode ✓)"}]
    seen = []
    for turn in range(10):
        status, _, body = m.chat("mock:scripted", messages, tools=[{"type": "function"}])
        fp = fingerprint(messages)
        expected_fps[fp] = expected_fps.get(fp, 0) + 1
        choice = ok_reply(status, body, f"turn {turn}")
        if choice["finish_reason"] == "stop":
            final = choice["message"]["content"]
            break
        calls = tool_calls(choice)
        for i, (cid, _, _) in enumerate(calls):
            check(cid == f"call_{fp[:12]}_{i}", f"call id {cid} not derived from {fp}")
        seen.append([(n, a) for _, n, a in calls])
        messages.append(assistant_turn(choice))
        for cid, name, args in calls:
            messages.append(tool_msg(cid, fake_tool(name, args)))
    else:
        raise AssertionError("scripted scenario never finished")
    check(seen == [
        [("skill", {"action": "list"})],
        [("skill", {"action": "read", "path": "release-notes/SKILL.md"})],
        [("skill", {"action": "search", "query": "breaking"})],
        [("exec", {"command": "cat /etc/os-release | head -3; echo $PWD"})],
    ], f"scripted tool calls: {seen}")
    for want in ["Release notes for ahp 0.2 (Ünïcode ✓)",            # {{task}}
                 f"release-notes/SKILL.md ({len(SKILL_TEXT)} bytes)",  # result.1
                 "line 2:", "> " + RESULTS["search"]["matches"][0]["text"],  # result.2
                 "exit 0, cwd /workspace", "PRETTY_NAME=\"Debian GNU/Linux 12\""]:  # result.3
        check(want in final, f"final answer lacks {want!r}:\n{final}")
    check("{{" not in final, f"unrendered template in final answer:\n{final}")
    # Past the end of the script the final step repeats.
    messages.append({"role": "assistant", "content": final})
    messages.append({"role": "user", "content": "again"})
    status, _, body = m.chat("scripted", messages)
    fp = fingerprint(messages)
    expected_fps[fp] = expected_fps.get(fp, 0) + 1
    check(ok_reply(status, body, "past end")["finish_reason"] == "stop", "past end not final")
    return messages


def test_templates(m, expected_fps):
    """Template corner cases, typed YAML arguments, content with tool calls, several calls."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "part one, "},
                                             {"type": "text", "text": "part two"}]}]
    status, _, body = m.chat("tmpl", messages)
    expected_fps[fingerprint(messages)] = expected_fps.get(fingerprint(messages), 0) + 1
    choice = ok_reply(status, body, "tmpl step 0")
    check(choice["message"]["content"] == "looking: part one, part two",
          f"content with tool calls: {choice['message']}")
    calls = tool_calls(choice)
    check(len(calls) == 2, f"two calls expected: {calls}")
    check(calls[0][2] == {"n": 3, "ratio": 0.5, "flag": True, "none": None, "quoted": "3",
                          "list": ["a", "part one, part two"], "nested": {"t": "part one, part two"}},
          f"typed arguments: {calls[0][2]}")
    check(calls[1][1] == "skill" and calls[1][2] == {"action": "list"}, f"second call {calls[1]}")
    messages.append(assistant_turn(choice))
    messages.append(tool_msg(calls[0][0], {"a": {"b": [1, 2, {"c": "deep/value"}]},
                                           "x": 1.5, "obj": {"k": "v", "a": [1]}}))
    messages.append({"role": "tool", "tool_call_id": calls[1][0], "content": "not json"})
    status, _, body = m.chat("tmpl", messages)
    expected_fps[fingerprint(messages)] = expected_fps.get(fingerprint(messages), 0) + 1
    got = ok_reply(status, body, "tmpl step 1")["message"]["content"]
    want = ("deep=deep/value last=[1,2,{\"c\":\"deep/value\"}] neg=deep/value x=1.5 "
            "obj={\"a\":[1],\"k\":\"v\"} raw=not json lastraw=not json missing=[] "
            "oob=[] unknown={{ nope }} task=part one, part two")
    check(got == want, f"templates:\n got {got!r}\nwant {want!r}")


def test_fingerprint_canon(m, expected_fps):
    """Fingerprints must equal Python's json.dumps for escapes, non-ASCII and floats."""
    # Everything up to the first user message is hashed: the odd values are put there.
    messages = [
        {"role": "system", "content": "slash / backslash \\ quote \" tab \t nl \n"},
        {"role": "system", "content": "n", "z": 1, "a": [0.1, 1e16, 1e15, 1e-05, 0.0001, 1.0,
                                                         -0.0, 123456789.123, 2.5e-300, 10,
                                                         -7, True, False, None]},
        {"role": "user", "content": "ctl \x1b[31m \x7f \x00 é ☃ 😀 \u2028 \ufeff",
         "ü": 1, "u": 2, "U": 3, "é": {"b": 1, "a": 2}},
        {"role": "user", "content": "after the first user message: not hashed"},
    ]
    # Sent once with ASCII escapes and once raw: the mock hashes the parsed value.
    for ensure_ascii in (True, False):
        raw = json.dumps({"model": "echo", "messages": messages},
                         ensure_ascii=ensure_ascii).encode("utf-8")
        status, _, body = m.request(CHAT, raw=raw)
        ok_reply(status, body, f"canon ensure_ascii={ensure_ascii}")
    fp = fingerprint(messages)
    expected_fps[fp] = expected_fps.get(fp, 0) + 2
    check(m.stats()["by_fingerprint"].get(fp) == 2,
          f"fingerprint {fp} not counted twice: {m.stats()['by_fingerprint']}")
    # The place in the conversation counts, not what comes after the task: a different last
    # message at the same place is the same request (a repeated call), one more is another.
    other = messages[:3] + [{"role": "user", "content": "something else"}]
    check(fingerprint(other) == fp, "the Python definition hashes only the head and N")
    status, _, body = m.chat("echo", other)
    ok_reply(status, body, "same place, other tail")
    longer = messages + [{"role": "user", "content": "one more"}]
    status, _, body = m.chat("echo", longer)
    ok_reply(status, body, "one message more")
    expected_fps[fp] += 1
    expected_fps[fingerprint(longer)] = 1
    got = m.stats()["by_fingerprint"]
    check(got.get(fp) == 3 and got.get(fingerprint(longer)) == 1 and fingerprint(longer) != fp,
          f"same place counted together, the next apart: {got}")


def test_restart(binary, scen, tmp):
    """A restart mid-conversation (SIGTERM, then SIGKILL) continues at the same place."""
    m = Mock(binary, scen, tmp)
    messages = [{"role": "user", "content": "restart test"}]
    replies = []
    for turn in range(2):
        status, _, body = m.chat("scripted", messages)
        choice = ok_reply(status, body, f"restart turn {turn}")
        replies.append(choice)
        messages.append(assistant_turn(choice))
        for cid, name, args in tool_calls(choice):
            messages.append(tool_msg(cid, fake_tool(name, args)))
    check(m.stop() == 0, "SIGTERM exit status")
    check(not os.path.exists(m.port_file), "port file left behind after SIGTERM")
    for sig in (signal.SIGKILL, None):
        m = Mock(binary, scen, tmp)
        check(m.stats()["chat_completions"] == 0, "a fresh mock-llm has fresh counters")
        status, _, body = m.chat("scripted", messages)
        calls = tool_calls(ok_reply(status, body, "after restart"))
        check([(n, a) for _, n, a in calls] == [("skill", {"action": "search", "query": "breaking"})],
              f"after restart the conversation did not continue at step 2: {calls}")
        check(calls[0][0] == f"call_{fingerprint(messages)[:12]}_0", "ids stable across restarts")
        if sig is not None:
            m.proc.send_signal(sig)
            m.proc.wait(timeout=10)
            m.log.close()
        else:
            check(m.stop() == 0, "SIGTERM exit status")
    # Replaying an earlier request after a restart gives the same answer.
    m = Mock(binary, scen, tmp)
    status, _, body = m.chat("scripted", messages[:1])
    check(ok_reply(status, body, "replay")["message"] == replies[0]["message"],
          "replayed first request differs after restart")
    m.stop()


def test_fail_every(binary, scen, tmp):
    for fail_status in (429, 500):
        m = Mock(binary, scen, tmp, "--fail-every", "2", "--fail-status", str(fail_status))
        try:
            msgs = [{"role": "user", "content": "x"}]
            codes = []
            for i in range(6):
                status, headers, body = m.chat("echo", msgs)
                codes.append(status)
                if status == fail_status:
                    check(body["error"]["code"] == "injected", f"injected error body {body}")
                    if fail_status == 429:
                        check(headers.get("Retry-After") == "1", f"Retry-After: {dict(headers)}")
            check(codes == [200, fail_status] * 3, f"--fail-every 2: {codes}")
            s = m.stats()
            check(s["failures_injected"] == 3 and s["chat_completions"] == 3,
                  f"stats after injection: {s}")
            check(s["by_fingerprint"] == {fingerprint(msgs): 3}, f"only served calls count: {s}")
        finally:
            m.stop()


def test_listen(binary, scen, tmp):
    """--listen ADDR binds that address instead of 127.0.0.1 (compose binds the container's
    address); an address that is not numeric is refused at start."""
    m = Mock(binary, scen, tmp, "--listen", "127.0.0.2")
    try:
        m.host = "127.0.0.2"
        status, _, body = m.request("/healthz")
        check(status == 200 and body == {"status": "ok"}, f"/healthz on 127.0.0.2 {status} {body}")
        s = socket.socket()
        try:
            s.settimeout(5)
            check(s.connect_ex(("127.0.0.1", m.port)) != 0, "--listen 127.0.0.2 also on 127.0.0.1")
        finally:
            s.close()
    finally:
        m.stop()
    r = subprocess.run([binary, "--scenarios", scen, "--listen", "localhost"],
                       capture_output=True, text=True, timeout=10)
    check(r.returncode != 0 and "listen on localhost" in r.stderr,
          f"--listen localhost: {r.returncode} {r.stderr}")


def test_bad_requests(m, tmp, scen):
    # An announced oversize body is refused before it is read: send only the headers.
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    conn.putrequest("POST", CHAT)
    conn.putheader("Content-Length", str((1 << 20) + 1))
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    r = conn.getresponse()
    body = json.loads(r.read())
    check(r.status == 413 and body["error"]["code"] == "too_large", f"oversize: {r.status} {body}")
    conn.close()
    # Exactly at the cap is accepted (then refused for its content, not its size).
    raw = b'{"model":"echo","messages":[' + b" " * ((1 << 20) - 30) + b"]}"
    check(len(raw) == 1 << 20, "cap-sized body")
    status, _, body = m.request(CHAT, raw=raw)
    check(status == 400 and "empty" in body["error"]["message"], f"cap-sized: {status} {body}")

    # Oversize without Content-Length (chunked): read, dropped, then refused.
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    conn.putrequest("POST", CHAT)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    chunk = b"x" * 65536
    for _ in range(20):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    check(r.status == 413, f"chunked oversize: {r.status}")
    conn.close()

    for raw, code in [(b'{"model": "echo", "messages": [', "invalid_json"),
                      (b"\xff\xfe", "invalid_json"),
                      (b'["not an object"]', "invalid_request"),
                      (b'{"model": "echo"}', "invalid_request"),
                      (b'{"model": "echo", "messages": []}', "invalid_request"),
                      (b'{"model": "echo", "messages": [{"content": "no role"}]}', "invalid_request"),
                      (b'{"model": 7, "messages": [{"role": "user"}]}', "invalid_request")]:
        status, _, body = m.request(CHAT, raw=raw)
        check(status == 400 and body["error"]["code"] == code, f"{raw!r}: {status} {body}")

    for model in ("no-such-scenario", "../scenarios/echo", "a/b", "..", ".hidden", "x" * 65):
        status, _, body = m.chat(model, [{"role": "user", "content": "x"}])
        check(status == 404 and body["error"]["code"] == "model_not_found",
              f"model {model!r}: {status} {body}")

    with open(os.path.join(scen, "broken.yaml"), "w") as f:
        f.write("steps:\n  - content: ok\n  - tool_calls:\n      - name: skill\n        argz: {}\n")
    status, _, body = m.chat("broken", [{"role": "user", "content": "x"}])
    check(status == 500 and "broken.yaml:5:9" in body["error"]["message"],
          f"bad scenario should name file:line:col: {status} {body}")
    os.unlink(os.path.join(scen, "broken.yaml"))

    status, _, body = m.request("/v1/chat/completions", method="GET")
    check(status == 405, f"GET on completions: {status}")
    status, _, body = m.request("/nope")
    check(status == 404, f"unknown path: {status}")
    check(m.proc.poll() is None, "mock-llm died on bad input")


def test_concurrency(binary, scen, tmp):
    """250 concurrent completions with 300 ms latency each must overlap, not queue."""
    m = Mock(binary, scen, tmp, "--latency-ms", "300")
    try:
        n = 250

        def one(i):
            return m.chat("echo", [{"role": "user", "content": f"c{i}"}], timeout=60)[0]

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
            codes = list(ex.map(one, range(n)))
        elapsed = time.monotonic() - start
        check(codes == [200] * n, f"concurrent statuses: {set(codes)}")
        check(elapsed >= 0.3, f"latency not applied: {elapsed:.2f}s")
        check(elapsed < 0.3 * n / 10, f"requests were serialized: {elapsed:.2f}s for {n}")
        s = m.stats()
        check(s["chat_completions"] == n and len(s["by_fingerprint"]) == n, f"stats {s}")
    finally:
        m.stop()


TMPL_SCENARIO = """\
description: test-only scenario exercising templates
steps:
  - content: "looking: {{task}}"
    tool_calls:
      - name: probe
        arguments:
          n: 3
          ratio: 0.5
          flag: true
          none: ~
          quoted: "3"
          list: [a, "{{task}}"]
          nested: { t: "{{ task }}" }
      - name: skill
        arguments: { action: list }
  - content: >-
      deep={{result.0.a.b.2.c}} last={{result.0.a.b}} neg={{result.0.a.b.-1.c}}
      x={{result.0.x}} obj={{result.0.obj}} raw={{result.1}} lastraw={{last_result}}
      missing=[{{result.0.a.zz}}] oob=[{{result.9.a}}] unknown={{ nope }} task={{task}}
"""


def main():
    binary, src_scen = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    tmp = tempfile.mkdtemp(prefix="ahp-mockllm-")
    m = None
    try:
        scen = os.path.join(tmp, "scenarios")
        shutil.copytree(src_scen, scen)
        with open(os.path.join(scen, "tmpl.yaml"), "w") as f:
            f.write(TMPL_SCENARIO)

        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
        check(r.returncode == 0 and "--fail-every" in r.stdout, "--help")
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        check(r.returncode == 0 and r.stdout.startswith("mock-llm "), "--version")
        r = subprocess.run([binary, "--scenarios", scen, "--fail-status", "404"],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode != 0, "--fail-status 404 must be refused")

        m = Mock(binary, scen, tmp)
        status, _, body = m.request("/healthz")
        check(status == 200 and body == {"status": "ok"}, f"/healthz {status} {body}")
        status, _, body = m.request("/providers/mock/v1/models")
        ids = [d["id"] for d in body["data"]]
        for want in ("scripted", "skills-only", "long", "toolerror", "tmpl"):
            check(want in ids, f"/v1/models lacks {want}: {ids}")

        expected = {}
        test_scripted_conversation(m, expected)
        test_templates(m, expected)
        s = m.stats()
        check(s["by_fingerprint"] == expected, f"by_fingerprint {s['by_fingerprint']} != {expected}")
        check(s["chat_completions"] == sum(expected.values()), f"chat_completions {s}")
        check(s["by_scenario"] == {"scripted": 6, "tmpl": 2}, f"by_scenario {s['by_scenario']}")
        check(s["requests"] == 2 + 8, f"requests counts every HTTP request: {s}")

        status, _, _ = m.request("/stats/reset", method="POST", raw=b"")
        check(status == 200, "reset")
        s = m.stats()
        # The reset reply itself is the one request counted since.
        check(s["chat_completions"] == 0 and s["by_fingerprint"] == {} and s["requests"] == 1,
              f"after reset: {s}")

        test_fingerprint_canon(m, {})
        test_bad_requests(m, tmp, scen)
        check(m.stop() == 0, "SIGTERM exit status")
        m = None

        test_restart(binary, scen, tmp)
        test_listen(binary, scen, tmp)
        test_fail_every(binary, scen, tmp)
        test_concurrency(binary, scen, tmp)
        print("mock-llm integration: all checks passed")
        return 0
    except Exception:
        if m is not None:
            sys.stderr.write("--- mock-llm log tail ---\n" + m.tail() + "\n")
        raise
    finally:
        if m is not None:
            m.stop(signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
