#!/usr/bin/env python3
"""Malformed and oversized model replies, from a crafted model stub on 127.0.0.1: a bad
tool call (no id, arguments that are not a JSON object, no or unknown name, a tool the
profile does not offer) goes back to the model as a typed tool error and the run goes
on; a reply that cannot be used at all (too large, not JSON, no message) fails the run
with a clear, valid-UTF-8 reason; the daemon keeps serving throughout."""
import http.server
import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test


def call(name=None, args='{"action":"list"}', cid="c1", fn_extra=None):
    fn = {} if name is None else {"name": name}
    if args is not None:
        fn["arguments"] = args
    if fn_extra:
        fn.update(fn_extra)
    tc = {"type": "function", "function": fn}
    if cid is not None:
        tc["id"] = cid
    return tc


def reply(message):
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": message,
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                 "total_tokens": 2}}).encode()


def tools(*calls):
    return reply({"role": "assistant", "content": None, "tool_calls": list(calls)})


# First reply per scenario (the model field); the second reply echoes the last tool
# message back as the final answer, so the run's result is what the model was told.
FIRST = {
    "noid": tools(call("skill", cid=None)),
    "badjson": tools(call("skill", args="{not json")),
    "argnum": tools(call("skill", args=5)),
    "argarray": tools(call("skill", args="[1,2]")),
    "unknown": tools(call("frobnicate")),
    "notoffered": tools(call("exec", args='{"command":"id"}')),
    "noname": tools(call(None)),
    "notobject": tools("just a string"),
    "huge": reply({"role": "assistant", "content": "x" * (9 << 20)}),
    "garbage": b"this is not json at all",
    "nochoices": json.dumps({"choices": []}).encode(),
    # Unterminated, multi-byte text: the parser's error excerpt may cut a character.
    "cututf8": ('{"choices":[{"message":{"content":"' + "é" * 400).encode(),
    "toomany": tools(*[call("skill", cid=f"c{i}") for i in range(65)]),
}

# Scenario -> (expected final state, substring of the result/error)
EXPECT = {
    "noid": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "badjson": ("succeeded", '"status":"bad_request"'),
    "argnum": ("succeeded", "arguments must be a JSON object"),
    "argarray": ("succeeded", "arguments must be a JSON object"),
    "unknown": ("succeeded", '"status":"not_found"'),
    "notoffered": ("succeeded", '"status":"not_found"'),
    "noname": ("succeeded", '"status":"not_found"'),
    "notobject": ("succeeded", '"status":"not_found"'),
    "huge": ("failed", "larger than"),
    "garbage": ("failed", "not JSON"),
    "nochoices": ("failed", "no choices[0].message"),
    "cututf8": ("failed", "not JSON"),
    "toomany": ("failed", "65 tool calls"),
}


class Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n))
        msgs = req["messages"]
        if any(m["role"] == "assistant" for m in msgs):
            tool_msgs = [m for m in msgs if m["role"] == "tool"]
            body = reply({"role": "assistant",
                          "content": tool_msgs[-1]["content"] if tool_msgs else "none"})
        else:
            body = FIRST.get(req["model"], reply({"role": "assistant", "content": "plain"}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(args):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    # The orchestrator hangs up on the oversized reply: not the stub's error to print.
    srv.handle_error = lambda request, client_address: None
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Stack(args, "modelrep") as st:
            st.demo_skill()
            for name in list(FIRST) + ["plain"]:
                st.write_profile(name.replace("_", "-"), name)
            st.write_conf(gateway_url=f"http://127.0.0.1:{srv.server_address[1]}",
                          model_retries=0)
            st.start()
            runs = {name: st.submit(name, "go") for name in FIRST}
            bad = []
            for name, rid in runs.items():
                r = st.wait_state(rid, timeout=60)
                want_state, want_text = EXPECT[name]
                text = r["result"] if want_state == "succeeded" else r["error"]
                if r["state"] != want_state:
                    bad.append(f"{name}: state {r['state']} (error {r['error'][:300]!r})")
                elif want_text not in text:
                    bad.append(f"{name}: {want_text!r} not in {text[:400]!r}")
                elif "\ufffd" in text:
                    # orchctl replaces invalid UTF-8 it was given; the reason must be valid.
                    bad.append(f"{name}: invalid UTF-8 in {text[:400]!r}")
            check(not bad, "\n".join(bad))
            # Still serving.
            p = st.orchctl("submit", "plain", "hello", expect=0, timeout=60)
            check("Result: plain" in p.stdout, p.stdout)
    finally:
        srv.shutdown()
        srv.server_close()


run_test(main)
