#!/usr/bin/env python3
"""Model replies as real OpenAI-compatible servers send them, one table row each, from a
crafted model stub on 127.0.0.1.

- A bad tool call (no id, arguments that are not a JSON object, no or unknown name, a
  tool the profile does not offer) goes back to the model as a typed tool error and the
  run goes on.
- Shapes servers were seen to send are accepted: arguments as an object or "", duplicate
  ids, no usage, parallel calls, content as typed parts, \u0000 or lone surrogates or raw
  invalid bytes in the text (sanitized, and the timeline says so), an unasked-for SSE
  stream.
- A reply that is no usable answer fails the run with a clear, valid-UTF-8 reason: too
  large, not JSON, no message, cut at the token cap (finish_reason=length), empty, an
  error object sent with HTTP 200 (its message and code kept), a Retry-After longer than
  retry_max_ms.
The daemon keeps serving throughout."""
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


def finish(message, reason):
    return json.dumps({"choices": [{"index": 0, "message": message,
                                    "finish_reason": reason}]}).encode()


def sse(*chunks):
    out = b""
    for c in chunks:
        out += b"data: " + json.dumps({"choices": [c]}).encode() + b"\n\n"
    return out + b"data: [DONE]\n\n"


def sse_raw(*events, done=True):
    """Events given as raw data payloads (str); each becomes one 'data:' event."""
    out = b"".join(b"data: " + e.encode() + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def raw_content(text_json):
    """A reply whose content is the given JSON string literal, sent as is."""
    return (b'{"choices":[{"message":{"role":"assistant","content":' + text_json +
            b'},"finish_reason":"stop"}]}')


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
    # A name a provider would refuse back (HTTP 400 on the next request) is replaced.
    "badname": tools(call("my tool!\x1b[31m")),
    "notobject": tools("just a string"),
    "huge": reply({"role": "assistant", "content": "x" * (9 << 20)}),
    "garbage": b"this is not json at all",
    "nochoices": json.dumps({"choices": []}).encode(),
    # Unterminated, multi-byte text: the parser's error excerpt may cut a character.
    "cututf8": ('{"choices":[{"message":{"content":"' + "é" * 400).encode(),
    "toomany": tools(*[call("skill", cid=f"c{i}") for i in range(65)]),
    # Shapes real servers send.
    "argobject": tools(call("skill", args=None, fn_extra={"arguments": {"action": "list"}})),
    "argempty": tools(call("skill", args="")),
    "dupids": tools(call("skill", cid="same"), call("skill", cid="same")),
    "parallel": tools(call("skill", cid="a"),
                      call("skill", args='{"action":"read","path":"release-notes/SKILL.md"}',
                           cid="b")),
    "bom": b"\xef\xbb\xbf" + reply({"role": "assistant", "content": "after a BOM"}),
    "argnul": tools(call("skill", args='{"action":"li\\u0000st"}')),
    "nousage": finish({"role": "assistant", "content": "no usage here"}, "stop"),
    "parts": reply({"role": "assistant", "content": [
        {"type": "thinking", "thinking": "let me think"},
        {"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]}),
    "nul": raw_content(b'"a\\u0000b"'),
    "surrogate": raw_content(b'"x\\ud800y\\udc00z"'),
    "pair": raw_content(b'"smile \\ud83d\\ude00"'),
    "rawbytes": raw_content(b'"x\xff\xc0\x80y"'),
    "sse": sse({"index": 0, "delta": {"role": "assistant", "content": "Hel"}},
               {"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}),
    "ssetools": sse({"index": 0, "delta": {"tool_calls": [
                        {"index": 0, "id": "s1", "type": "function",
                         "function": {"name": "skill", "arguments": '{"act'}}]}},
                    {"index": 0, "delta": {"tool_calls": [
                        {"index": 0, "function": {"arguments": 'ion":"list"}'}}]},
                     "finish_reason": "tool_calls"}),
    # A stream that was cut, carried an error, or cannot be read is no answer.
    "ssecut": sse_raw('{"choices":[{"index":0,"delta":{"content":"The answer is"}}]}',
                      done=False),
    "sseerr": sse_raw('{"choices":[{"index":0,"delta":{"content":"partial "}}]}',
                      '{"error":{"message":"upstream overloaded","code":502}}'),
    "ssegarbage": sse_raw('{"choices":[{"index":0,"delta":{"content":"a"}}]}', "{oops"),
    "ssebadindex": sse_raw('{"choices":[{"index":0,"delta":{"content":"Running","tool_calls":'
                           '[{"index":64,"id":"t","function":{"name":"skill",'
                           '"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}'),
    # SSE rules real servers rely on: an event's data lines are joined with a newline, a
    # comment line is skipped, a repeated tool name is one name.
    "ssemultiline": (b': keep-alive\n\ndata: {"choices":[{"index":0,"delta":\n'
                     b'data: {"content":"ab"}}]}\n\n'
                     b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'),
    "ssenamerep": sse_raw('{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"n1",'
                          '"function":{"name":"skill","arguments":"{\\"action\\":"}}]}}]}',
                          '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
                          '"function":{"name":"skill","arguments":"\\"list\\"}"}}]},'
                          '"finish_reason":"tool_calls"}]}'),
    "length": finish({"role": "assistant", "content": "half a sen"}, "length"),
    "filtered": finish({"role": "assistant", "content": ""}, "content_filter"),
    "empty": finish({"role": "assistant", "content": ""}, "stop"),
    "blank": finish({"role": "assistant", "content": "  \n"}, "stop"),
    "nullonly": finish({"role": "assistant", "content": None}, "stop"),
    "err200": json.dumps({"error": {"message": "upstream overloaded", "code": 502}}).encode(),
    "err200key": json.dumps({"error": {"message": "invalid key", "type": "auth",
                                       "code": "invalid_api_key"}}).encode(),
    "err400": (400, {}, json.dumps({"error": {"message": "context too long"}}).encode()),
    "retryafter": (429, {"Retry-After": "3600"},
                   json.dumps({"error": {"message": "slow down"}}).encode()),
}

# Scenario -> (expected final state, substring of the result/error)
EXPECT = {
    "noid": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "badjson": ("succeeded", '"status":"bad_request","message":"arguments are not valid JSON'),
    "argnum": ("succeeded", "arguments must be a JSON object"),
    "argarray": ("succeeded", "arguments must be a JSON object"),
    "unknown": ("succeeded", '"status":"not_found"'),
    "notoffered": ("succeeded", '"status":"not_found"'),
    "noname": ("succeeded", '"status":"not_found"'),
    "badname": ("succeeded", '"status":"not_found","message":"the tool call had no valid '
                            'tool name'),
    "notobject": ("succeeded", '"status":"not_found"'),
    "huge": ("failed", "larger than"),
    "garbage": ("failed", "not JSON"),
    "nochoices": ("failed", "no choices[0].message"),
    "cututf8": ("failed", "not JSON"),
    "toomany": ("failed", "65 tool calls"),
    "argobject": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "argempty": ("succeeded", "action"),
    "dupids": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "parallel": ("succeeded", '"path":"release-notes/SKILL.md"'),
    "nousage": ("succeeded", "no usage here"),
    "bom": ("succeeded", "after a BOM"),
    "argnul": ("succeeded", r'arguments are not valid JSON: \\u0000 is not allowed'),
    "parts": ("succeeded", "Hello world"),
    "nul": ("succeeded", "a\ufffdb"),
    "surrogate": ("succeeded", "x\ufffdy\ufffdz"),
    "pair": ("succeeded", "smile \U0001f600"),
    "rawbytes": ("succeeded", "x\ufffd"),
    "sse": ("succeeded", "Hello"),
    "ssetools": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "ssecut": ("failed", "model call 1 failed: unusable event stream: the event stream ended "
                         "before [DONE] or a finish_reason (cut short)"),
    "sseerr": ("failed", "unusable event stream: the stream carried an error: "
                         "upstream overloaded"),
    "ssegarbage": ("failed", "unusable event stream: stream chunk 2 is not JSON"),
    "ssebadindex": ("failed", "streamed tool call index 64 is out of range (0..63)"),
    "ssemultiline": ("succeeded", "ab"),
    "ssenamerep": ("succeeded", '"files":["release-notes/SKILL.md"'),
    "length": ("failed", "model call 1 failed: model output truncated (finish_reason=length)"),
    "filtered": ("failed", "(finish_reason=content_filter)"),
    "empty": ("failed", "model returned an empty reply (no text and no tool calls)"),
    "blank": ("failed", "model returned an empty reply (no text and no tool calls)"),
    "nullonly": ("failed", "model returned an empty reply (no text and no tool calls)"),
    "err200": ("failed",
               "model call 1 failed after 1 attempts: provider error (code 502): "
               "upstream overloaded"),
    "err200key": ("failed",
                  "model call 1 failed: provider error (code invalid_api_key): invalid key"),
    "err400": ("failed", "model call 1 failed: HTTP 400 from the model gateway: "
                         "context too long"),
    "retryafter": ("failed", "the gateway asked to retry after 3600 s (Retry-After), over "
                             "retry_max_ms (1000 ms): HTTP 429: slow down"),
}

# Rows whose answer had text replaced: the model event says so, exactly.
SANITIZED = {"nul", "surrogate", "rawbytes"}
# Rows whose valid text must arrive unchanged (no replacement character at all).
EXACT = {"pair": "smile \U0001f600", "parts": "Hello world", "sse": "Hello",
         "ssemultiline": "ab"}


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
        status, headers = 200, {}
        if isinstance(body, tuple):
            status, headers, body = body
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream" if body.startswith(b"data:")
                         else "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
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
                          model_retries=0, retry_max_ms=1000)
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
                elif name in EXACT and text != EXACT[name]:
                    bad.append(f"{name}: result {text!r} != {EXACT[name]!r}")
                elif name in SANITIZED:
                    ev = [e for e in st.events(rid) if e["kind"] == "model"]
                    if not ev or ev[-1]["data"].get("sanitized") is not True or \
                            "reply sanitized" not in ev[-1]["text"]:
                        bad.append(f"{name}: timeline does not say it was sanitized: {ev}")
                elif "\ufffd" in text and name not in ("nul", "surrogate", "rawbytes"):
                    # orchctl replaces invalid UTF-8 it was given; the reason must be valid.
                    bad.append(f"{name}: invalid UTF-8 in {text[:400]!r}")
            # The invalid name went back to the model as invalid_tool_name; the journal
            # keeps the name as the model sent it.
            rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='model' "
                              "ORDER BY seq", (runs["badname"],))
            first = json.loads(rows[0][0])
            if first.get("invalid_tool_names") != ["my tool!\x1b[31m"] or \
                    first["message"]["tool_calls"][0]["function"]["name"] != \
                    "invalid_tool_name":
                bad.append(f"badname: journal {first}")
            # Non-text parts are kept in the journal, and the cut reply's text too.
            rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='model'",
                              (runs["parts"],))
            first = json.loads(rows[0][0])
            if first.get("content_parts", [{}])[0].get("thinking") != "let me think":
                bad.append(f"parts: thinking part not journaled: {first}")
            rows = st.db_rows("SELECT status, result FROM steps WHERE run_id=?",
                              (runs["length"],))
            cut = json.loads(rows[0][1])
            if rows[0][0] == 0 or cut.get("message", {}).get("content") != "half a sen" or \
                    cut.get("finish_reason") != "length":
                bad.append(f"length: step not journaled as failed with its text: {rows}")
            check(not bad, "\n".join(bad))
            # Still serving.
            p = st.orchctl("submit", "plain", "hello", expect=0, timeout=60)
            check("Result: plain" in p.stdout, p.stdout)
    finally:
        srv.shutdown()
        srv.server_close()


run_test(main)
