#!/usr/bin/env python3
"""Writes the fuzz seed corpus (tests/fuzz/<target>/): small, hand-made inputs, each one shape
a parser must handle. Run from anywhere; rewrites only the files it names. Protobuf bodies are
encoded with protoc --encode from proto/*.proto, so they follow the schema."""
import json
import os
import struct
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def encode(msg, text):
    return subprocess.run(
        ["protoc", "--proto_path=" + PROTO, "--encode=" + msg,
         "common.proto", "sandboxd.proto", "orchestrator.proto", "testmsg.proto"],
        input=text.encode(), capture_output=True, check=True).stdout


# ---- model: HTTP 200 chat-completions bodies --------------------------------
def reply(message, **extra):
    r = {"id": "chatcmpl-1", "object": "chat.completion",
         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    r.update(extra)
    return json.dumps(r)


def call(i, name, args, **extra):
    c = {"id": "call_%d" % i, "type": "function", "function": {"name": name, "arguments": args}}
    c.update(extra)
    return c


usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
put("model", "text", reply({"role": "assistant", "content": "Hello."}, usage=usage))
put("model", "tool-call", reply({"role": "assistant", "content": None, "tool_calls": [
    call(0, "exec", "{\"command\":\"ls -la /workspace\"}")]}, usage=usage))
put("model", "args-object", reply({"role": "assistant", "content": None, "tool_calls": [
    call(0, "skill", {"action": "read", "path": "demo/SKILL.md"})]}))
put("model", "args-number", reply({"role": "assistant", "tool_calls": [call(0, "exec", 5)]}))
put("model", "args-empty-string", reply({"role": "assistant", "tool_calls": [
    call(0, "skill", "")]}))
put("model", "no-ids-no-args", reply({"role": "assistant", "tool_calls": [
    {"type": "function", "function": {"name": "exec"}}, {"function": {"name": 7}}, {}]}))
put("model", "duplicate-ids", reply({"role": "assistant", "tool_calls": [
    call(1, "exec", "{}"), call(1, "exec", "{}")]}))
put("model", "parallel", reply({"role": "assistant", "content": "Two at once.", "tool_calls": [
    call(i, "exec", "{\"command\":\"echo %d\"}" % i) for i in range(4)]},
    usage={"prompt_tokens": 3, "completion_tokens": 4}))
put("model", "too-many-calls", reply({"role": "assistant", "tool_calls": [
    call(i, "exec", "{}") for i in range(65)]}))
put("model", "long-id", reply({"role": "assistant", "tool_calls": [
    call(0, "exec", "{}", id="x" * 300)]}))
put("model", "error-body", json.dumps({"error": {"message": "upstream connect error",
                                                 "type": "server_error", "code": 502}}))
put("model", "finish-length", reply({"role": "assistant", "content": "The answer is"}).replace(
    '"stop"', '"length"'))
put("model", "content-parts", reply({"role": "assistant", "content": [
    {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Done."}]}))
put("model", "nul-escape", '{"choices":[{"message":{"role":"assistant","content":"a\\u0000b"}}]}')
put("model", "lone-surrogate",
    '{"choices":[{"message":{"role":"assistant","content":"x\\ud800y"}}]}')
put("model", "unicode",
    '{"choices":[{"message":{"role":"assistant","content":"caf\u00e9 \\ud83d\\ude00 \u202e"}}]}')
put("model", "invalid-utf8-raw",
    b'{"choices":[{"message":{"role":"assistant","content":"\xc0\x80 \xed\xa0\x80 \xff"}}]}')
put("model", "not-json-near", b'{"choices": [\xe2\x82\xac\xe2\x82')
put("model", "sse", "data: " + reply({"role": "assistant", "content": "hi"}) +
    "\n\ndata: [DONE]\n\n")
put("model", "empty", "")
put("model", "usage-negative", reply({"role": "assistant", "content": "x"},
                                     usage={"total_tokens": -5, "prompt_tokens": 9e18,
                                            "completion_tokens": 9223372036854775807}))
put("model", "deep-nesting", "[" * 3000 + "]" * 3000)
put("model", "choices-not-array", json.dumps({"choices": {"0": {"message": {}}}}))
put("model", "tool-calls-null", reply({"role": "assistant", "content": "ok", "tool_calls": None}))

# ---- jsonpb: selector byte (type | 0x80 for protobuf bytes) + payload -------
TYPES = ["ahp.sbx.Request", "ahp.sbx.Reply", "ahp.sbx.ExecResult", "ahp.orch.Request",
         "ahp.orch.Reply", "ahp.Error", "ahp.test.Outer", "ahp.test.Scalars"]


def jp(name, t, payload):
    put("jsonpb", name, bytes([TYPES.index(t)]) + json.dumps(payload).encode())


def jpb(name, t, text):
    put("jsonpb", name, bytes([0x80 | TYPES.index(t)]) + encode(t, text))


jp("sbx-create", "ahp.sbx.Request", {"create": {"run_id": "run-1", "profile": "demo",
                                                 "limits": {"memory_mb": 256, "output_kb": 64},
                                                 "network": "NET_PROXY"}})
jp("sbx-exec", "ahp.sbx.Request", {"exec": {"sandbox_id": "run-1", "exec_id": "e-1",
                                             "command": "ls -la", "timeout_s": "5"}})
jp("sbx-two-oneof", "ahp.sbx.Request", {"fetch": {"sandbox_id": "a"}, "list": {}})
jp("sbx-reply-exec", "ahp.sbx.Reply", {"error": {"status": "OK"}, "exec": {
    "exec_id": "e-1", "exit_code": -1, "stdout": "aGVsbG8K", "stderr": "_-8=",
    "cwd": "/workspace", "killed_by": 2}})
jp("exec-result-bad-b64", "ahp.sbx.ExecResult", {"stdout": "a", "truncated": True})
jp("orch-submit", "ahp.orch.Request", {"submit": {"profile": "demo", "task": "Say hi \u00e9"}})
jp("orch-events", "ahp.orch.Request", {"events": {"run_id": "r", "after_seq": "18446744073709551615",
                                                  "wait_ms": 30000.0}})
jp("orch-reply-list", "ahp.orch.Reply", {"list": {"runs": [
    {"run_id": "r1", "state": "failed", "tokens": 9007199254740993, "created_ms": -1}]}})
jp("error-unknown-enum", "ahp.Error", {"status": "ERR_NOPE", "message": "x"})
jp("error-unknown-field", "ahp.Error", {"status": 3, "what": 1})
jp("outer-all", "ahp.test.Outer", {"inner": {"name": "n", "n": 2, "tags": ["a", "b"]},
                                   "items": [{"name": "i"}], "nums": [1, "-2", 3.0],
                                   "colors": ["RED", 2], "blobs": ["", "AA=="],
                                   "detail": {"name": "d"}, "status": "ERR_LIMIT",
                                   "plain": -2147483648, "words": ["w"]})
jp("outer-null-fields", "ahp.test.Outer", {"inner": None, "text": None, "code": 5})
jp("scalars-edges", "ahp.test.Scalars", {
    "i32": 2147483647, "i64": "-9223372036854775808", "u32": 4294967295,
    "u64": "18446744073709551615", "s32": -1, "s64": -1, "f32": 1, "f64": "1",
    "sf32": -5, "sf64": 5, "fl": "NaN", "db": "-Infinity", "b": False,
    "s": "\u00fc\u2603", "by": "-_-_", "color": "GREEN"})
jp("scalars-out-of-range", "ahp.test.Scalars", {"i32": 2147483648, "fl": 1e300})
put("jsonpb", "scalars-fraction", bytes([7]) + b'{"u32": 1.5, "db": 1e999}')
put("jsonpb", "not-object", bytes([6]) + b'[1,2,3]')
jpb("pb-sbx-exec", "ahp.sbx.Request",
    'exec { sandbox_id: "run-1" exec_id: "e-2" command: "echo hi" timeout_s: 3 }')
jpb("pb-exec-result", "ahp.sbx.ExecResult",
    'exec_id: "e" exit_code: 1 stdout: "\\377\\376" cwd: "/workspace/d" killed_by: KILLED_TIMEOUT')
jpb("pb-orch-reply", "ahp.orch.Reply",
    'error { status: ERR_NOT_FOUND message: "no such run" } '
    'events { events { seq: 1 kind: "model" text: "[model] ok" data: "{}" } }')
jpb("pb-scalars", "ahp.test.Scalars",
    'i64: -1 u64: 18446744073709551615 fl: -0.0 db: 1e-310 by: "\\000\\001" color: RED')
jpb("pb-outer", "ahp.test.Outer",
    'items { name: "a" } items { tags: "x" } nums: 1 nums: -1 colors: GREEN code: 7')
# Protobuf strings are not checked by protobuf-c: an invalid UTF-8 cwd (issue 6's instance).
put("jsonpb", "pb-exec-result-bad-utf8-cwd",
    bytes([0x80 | TYPES.index("ahp.sbx.ExecResult")]) + b"\x32\x04/\xc0\x80d")

# ---- rpc: 16-byte header (AHP1, kind, request id) + body --------------------
def hdr(kind, rid):
    return b"AHP1" + struct.pack(">IQ", kind, rid)


put("rpc", "req-sbx-create", hdr(1, 1) + encode(
    "ahp.sbx.Request", 'create { run_id: "run-1" profile: "demo" limits { memory_mb: 256 } }'))
put("rpc", "req-sbx-exec", hdr(1, 2) + encode(
    "ahp.sbx.Request", 'exec { sandbox_id: "run-1" exec_id: "e" command: "pwd" }'))
put("rpc", "req-orch-submit", hdr(1, 3) + encode(
    "ahp.orch.Request", 'submit { profile: "demo" task: "hello" }'))
put("rpc", "req-orch-events", hdr(1, 0xFFFFFFFFFFFFFFFF) + encode(
    "ahp.orch.Request", 'events { run_id: "r" after_seq: 5 wait_ms: 100 max: 10 }'))
put("rpc", "req-empty-body", hdr(1, 9))
put("rpc", "reply-sbx-exec", hdr(2, 2) + encode(
    "ahp.sbx.Reply", 'exec { exec_id: "e" exit_code: 0 stdout: "hi\\n" cwd: "/workspace" }'))
# The instance of issue 6: a cwd that is not UTF-8 coming back from sandboxd.
put("rpc", "reply-sbx-exec-bad-cwd", hdr(2, 2) + b"\x1a\x08\x32\x06/\xc0\x80\xed\xa0")
put("rpc", "reply-sbx-list", hdr(2, 4) + encode(
    "ahp.sbx.Reply", 'list { sandboxes { sandbox_id: "a" network: NET_PROXY created_ms: 1 } }'))
put("rpc", "reply-orch-status", hdr(2, 5) + encode(
    "ahp.orch.Reply", 'status { run_id: "r" state: "running" tokens: 12 }'))
put("rpc", "transport-error", hdr(3, 6) + encode(
    "ahp.TransportError", 'error { status: ERR_TOO_LARGE message: "message of 9 bytes" }'))
put("rpc", "transport-error-empty", hdr(3, 0))
put("rpc", "bad-magic", b"AHP2" + struct.pack(">IQ", 1, 1) + b"\x0a\x00")
put("rpc", "bad-kind", hdr(4, 1))
put("rpc", "short-header", b"AHP1\x00\x00")
put("rpc", "truncated-varint", hdr(2, 7) + b"\x1a\xff\xff\xff\xff\x0f")

# ---- init: claimed-flag byte + one order (sbx_ctl_hdr_t + payload) ---------
CLAIM, EXEC = 6, 4


def order(t, payload):
    return struct.pack("<II", t, len(payload)) + payload


def exec_order(cwd, cmd, timeout=30000, cap=65536, cwd_len=None, cmd_len=None):
    e = struct.pack("<IIIIQII", timeout, 10, cap, 256, 64 << 20,
                    len(cwd) if cwd_len is None else cwd_len,
                    len(cmd) if cmd_len is None else cmd_len)
    return order(EXEC, e + cwd + cmd)


put("init", "claim-none", b"\x00" + order(CLAIM, struct.pack("<I", 0)))
put("init", "claim-proxy", b"\x00" + order(CLAIM, struct.pack("<I", 1)))
put("init", "claim-twice", b"\x01" + order(CLAIM, struct.pack("<I", 0)))
put("init", "exec", b"\x01" + exec_order(b"/workspace/src", b"make -j2 && ls"))
put("init", "exec-keep-cwd", b"\x01" + exec_order(b"", b"pwd"))
put("init", "exec-before-claim", b"\x00" + exec_order(b"", b"id"))
put("init", "exec-empty-command", b"\x01" + exec_order(b"/", b""))
put("init", "exec-bad-lengths", b"\x01" + exec_order(b"/w", b"ls", cwd_len=3, cmd_len=1))
put("init", "exec-cwd-too-long", b"\x01" + exec_order(b"/" + b"a" * 1023, b"ls"))
put("init", "exec-cap-too-big", b"\x01" + exec_order(b"", b"ls", cap=1024 * 1024 + 1))
put("init", "exec-len-overflow", b"\x01" + exec_order(b"", b"ls", cwd_len=0xFFFFFFFF,
                                                       cmd_len=3))
put("init", "go", b"\x01" + order(1, b""))
put("init", "short", b"\x01\x04\x00")
put("init", "header-len-lies", b"\x01" + struct.pack("<II", EXEC, 1000) + b"\x00" * 40)

# ---- done: cap selector (2 bytes, KiB - 1) + init's DONE payload --------------
def done(out, err, cwd, wstatus=0, flags=0, out_len=None, err_len=None, cwd_len=None,
         kb=64):
    d = struct.pack("<iIIIIIQ", wstatus, flags, 12,
                    len(out) if out_len is None else out_len,
                    len(err) if err_len is None else err_len,
                    len(cwd) if cwd_len is None else cwd_len, 1500)
    return struct.pack("<H", kb - 1) + d + out + err + cwd


put("done", "ok", done(b"hello\n", b"", b"/workspace"))
put("done", "cwd-unknown", done(b"x", b"y", b""))
put("done", "cwd-relative", done(b"", b"", b"workspace"))
put("done", "cwd-control", done(b"", b"", b"/w\x1b]0;x\x07"))
put("done", "cwd-not-utf8", done(b"", b"", b"/workspace/\xc0\x80"))
put("done", "nul-output", done(b"\x00" * 300, b"\xff\xfe", b"/"))
put("done", "over-cap", done(b"a" * 1025, b"", b"/", kb=1))
put("done", "sizes-lie", done(b"abc", b"", b"/", out_len=2))
put("done", "sizes-wrap", done(b"", b"", b"/", out_len=0xFFFFFFFF, err_len=2))
put("done", "short", struct.pack("<H", 0) + b"\x00" * 10)
put("done", "signalled", done(b"", b"killed", b"", wstatus=9, flags=1))

# ---- profile: YAML files ---------------------------------------------------
put("profile", "minimal.yaml", "name: minimal\nmodel: mock:scripted\nsystem_prompt: Be brief.\n")
put("profile", "full.yaml", """name: full-profile-1
model: openai:gpt-4o/2024-08:latest
system_prompt: |
  You write release notes.
tools: [exec, skill, exec_service, ask_human]
services: [lookup_wiki, publish_summary]
skills: skills/demo
sandbox:
  network: proxy
  memory_mb: 512
  pids_max: 128
  cpu_seconds: 20
  timeout_s: 60
  output_kb: 128
egress:
  - host: wiki.local
    methods: [GET, HEAD]
    inject: { Authorization: "Bearer {{secret:wiki-token}}", X-Trace: static }
  - host: "*.example.com"
    methods: [POST, DELETE]
approvals:
  - service: publish_summary
    expires: 2h
  - tool: exec
    match: '^(rm|git push)\\b'
limits: { max_turns: 12, max_model_calls: 34 }
""")
put("profile", "egress-ports-paths.yaml", """name: egress
model: mock:x
system_prompt: p
sandbox: { network: proxy }
egress:
  - host: wiki.local:8443
    methods: [GET, POST]
    paths: [/snippets/, /health]
    inject: { Authorization: "Bearer {{secret:Wiki_Token.1}}" }
  - host: "[fd00::1]:8080"
  - host: "*.example.com"
    paths: [/a/../b, "/x?y"]
  - host: 127.1
  - host: "*"
    inject: { Host: evil.example, Proxy-Authorization: x }
""")
put("profile", "skills-escape.yaml", "name: esc\nmodel: a:b\nsystem_prompt: x\n"
    "tools: [skill]\nskills: ../../../../etc\n")
put("profile", "bad-regex.yaml", "name: r\nmodel: a:b\nsystem_prompt: x\ntools: [exec]\n"
    "approvals:\n  - tool: exec\n    match: '(['\n")
put("profile", "out-of-range.yaml", "name: big\nmodel: a:b\nsystem_prompt: x\n"
    "sandbox: { output_kb: 10240, memory_mb: -1 }\n")
put("profile", "unknown-keys.yaml", "name: u\nmodel: a:b\nsystem_prompt: x\nbogus: 1\n"
    "sandbox: { swap: 3 }\n")
put("profile", "duplicate-key.yaml", "name: a\nname: b\nmodel: a:b\nsystem_prompt: x\n")
put("profile", "aliases.yaml", "name: &n al\nmodel: a:b\nsystem_prompt: *n\n"
    "tools: &t [exec, exec, *n]\nservices: *t\n")
put("profile", "laughs.yaml", "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b]\nname: *c\n")
put("profile", "invalid-utf8.yaml", b"name: bad\nmodel: a:b\nsystem_prompt: \"\xc0\x80\xff\"\n")
put("profile", "control-chars.yaml", "name: cc\nmodel: a:b\nsystem_prompt: \"\\e]0;x\\a\\0\"\n")
put("profile", "syntax-error.yaml", "name: [unclosed\nmodel: {a: \n")
put("profile", "bad-secret.yaml", "name: s\nmodel: a:b\nsystem_prompt: x\negress:\n"
    "  - host: h\n    inject: { A: \"{{secret:}}{{secret:a b}}{{secret\" }\n")
put("profile", "tags-and-docs.yaml", "--- !!map\nname: !!str t\nmodel: a:b\n"
    "system_prompt: x\n...\n---\nname: second\n")
put("profile", "empty.yaml", "")
# Found by fuzzing: a quoted value cut at 60 bytes ended inside a UTF-8 sequence.
put("profile", "regress-quote-cuts-utf8.yaml",
    "name: x\nmodel: " + "a" * 59 + "\u00e9b\nsystem_prompt: x\n")

# ---- skill: tool arguments (JSON) or a bare path for action=read -----------
def sk(name, args):
    put("skill", name, json.dumps(args))


sk("list", {"action": "list"})
sk("read", {"action": "read", "path": "demo/SKILL.md"})
sk("read-dir", {"action": "read", "path": "docs"})
sk("read-fifo", {"action": "read", "path": "docs/pipe.md"})
sk("read-symlink-file", {"action": "read", "path": "escape.md"})
sk("read-symlink-dir", {"action": "read", "path": "outside/SKILL.md"})
sk("read-dotdot", {"action": "read", "path": "demo/../../secret.md"})
sk("read-absolute", {"action": "read", "path": "/etc/passwd"})
sk("read-hidden", {"action": "read", "path": ".hidden/SKILL.md"})
sk("read-bad-utf8-content", {"action": "read", "path": "docs/bad-utf8.md"})
sk("read-missing-path", {"action": "read"})
sk("read-path-number", {"action": "read", "path": 7})
sk("read-long-path", {"action": "read", "path": "a/" * 520})
sk("search", {"action": "search", "query": "needle"})
sk("search-empty", {"action": "search", "query": ""})
sk("search-unicode", {"action": "search", "query": "\u00e9t\u00e9"})
sk("unknown-action", {"action": "delete\u001b[2J", "path": "x"})
sk("no-action", {"path": "demo/SKILL.md"})
put("skill", "path-raw", "docs/guide.md")
put("skill", "path-dot-components", "./demo//SKILL.md")
put("skill", "path-trailing-slash", "demo/")

# ---- proxyv2: the bytes at the start of a relay connection ------------------
PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pp2(tlvs, ver_cmd=0x21, fam=0x00, length=None, addr=b""):
    body = addr + tlvs
    return (PP2_SIG + bytes([ver_cmd, fam])
            + struct.pack(">H", len(body) if length is None else length) + body)


def tlv(t, v):
    return bytes([t]) + struct.pack(">H", len(v)) + v


RUN, PROFILE = 0xE0, 0xE1
ok_tlvs = tlv(RUN, b"run-1") + tlv(PROFILE, b"wiki-bot")
put("proxyv2", "ok", pp2(ok_tlvs))
put("proxyv2", "ok-then-request", pp2(ok_tlvs) + b"GET http://wiki.local/ HTTP/1.1\r\n\r\n")
put("proxyv2", "ok-profile-first", pp2(tlv(PROFILE, b"p") + tlv(RUN, b"cli-0123456789abcdef")))
put("proxyv2", "ok-longest", pp2(tlv(RUN, b"r" * 128) + tlv(PROFILE, b"A.Z_a:z-09" * 12 + b"ab")))
put("proxyv2", "ok-unknown-tlvs", pp2(tlv(0x04, b"") + tlv(0x01, b"h2") + ok_tlvs
                                      + tlv(0x03, b"\x01\x02\x03\x04") + tlv(0xEE, b"\x00\xff")))
put("proxyv2", "ok-ipv4", pp2(ok_tlvs, fam=0x11, addr=b"\x7f\x00\x00\x01" * 2 + b"\x1f\x90" * 2))
put("proxyv2", "ok-unix", pp2(ok_tlvs, fam=0x31, addr=b"\x00" * 216))
put("proxyv2", "partial", pp2(ok_tlvs)[:20])
put("proxyv2", "http", b"GET http://wiki.local/ HTTP/1.1\r\nHost: wiki.local\r\n\r\n")
put("proxyv2", "v1-text", b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n")
put("proxyv2", "version-1", pp2(ok_tlvs, ver_cmd=0x11))
put("proxyv2", "local", pp2(ok_tlvs, ver_cmd=0x20))
put("proxyv2", "family-unknown", pp2(ok_tlvs, fam=0x40))
put("proxyv2", "ipv6-short", pp2(ok_tlvs, fam=0x21))
put("proxyv2", "too-long", pp2(ok_tlvs + tlv(0x04, b"\x00" * 600)))
put("proxyv2", "length-max", pp2(ok_tlvs, length=0xFFFF))
put("proxyv2", "tlv-overrun", pp2(tlv(RUN, b"run-1") + bytes([PROFILE, 0x00, 0x40]) + b"p"))
put("proxyv2", "tlv-cut", pp2(ok_tlvs + b"\xE2\x00"))
put("proxyv2", "run-twice", pp2(ok_tlvs + tlv(RUN, b"other")))
put("proxyv2", "profile-twice", pp2(tlv(PROFILE, b"a") + ok_tlvs))
put("proxyv2", "run-missing", pp2(tlv(PROFILE, b"p")))
put("proxyv2", "profile-missing", pp2(tlv(RUN, b"r")))
put("proxyv2", "run-empty", pp2(tlv(RUN, b"") + tlv(PROFILE, b"p")))
put("proxyv2", "run-too-long", pp2(tlv(RUN, b"r" * 129) + tlv(PROFILE, b"p")))
put("proxyv2", "profile-bad-byte", pp2(tlv(RUN, b"r") + tlv(PROFILE, b"wiki bot\r\n")))
put("proxyv2", "profile-nul", pp2(tlv(RUN, b"r") + tlv(PROFILE, b"a\x00b")))

# ---- cphost: a host, authority or path, and (after the first byte, a chunk size) a
# response stream for the scrubber -------------------------------------------
for name, text in [
        ("host", "wiki.local"), ("host-upper-dot", "Wiki.LOCAL."), ("host-ipv4", "127.0.0.1"),
        ("host-ipv4-short", "127.1"), ("host-hex", "0x7f.0.0.1"), ("host-int", "2130706433"),
        ("host-octal", "0177.0.0.1"), ("host-ipv6", "[::ffff:127.0.0.1]"),
        ("host-ipv6-zone", "[fe80::1%eth0]"), ("host-idn", "b\u00fccher.example"),
        ("host-punycode", "xn--bcher-kva.example"), ("host-long-label", "a" * 64 + ".b"),
        ("authority", "wiki.local:8443"), ("authority-v6", "[::1]:443"),
        ("authority-userinfo", "user:pw@wiki.local:80"), ("authority-bad-port", "x:65536"),
        ("path", "/snippets/durability"), ("path-dotdot", "/a/%2e%2E/b"),
        ("path-semicolon", "/a/..;/b"), ("path-encoded-slash", "/a%2Fb"),
        ("path-bad-percent", "/a%zz")]:
    put("cphost", name, text)
put("cphost", "scrub-raw", "\x05hello s3cr3t-wiki-token bye")
put("cphost", "scrub-base64", "\x01YXMzY3IzdC13aWtpLXRva2VuIQ== YWJzM2NyM3Qtd2lraS10b2tlbiE=")
put("cphost", "scrub-percent", "\x07q=tok%2Fen%2Bval%3Due%26x&r=tok%2fen%2bval%3due%26x")
put("cphost", "scrub-overlap", "\x02aaaaaaaaaaas3cr3t-wiki-tokenaaaaaaaaa")
put("cphost", "scrub-nul", b"\x03s3cr3t\x00-wiki-token\x00s3cr3t-wiki-token")

# ---- cpreq: role byte (0 relay, 1 api, 2 dev) + what the client sends -------
CPREQ_PP2 = pp2(tlv(RUN, b"run-1") + tlv(PROFILE, b"fz"))
for name, role, text in [
        ("dev-get", 2, b"GET http://a.local/ HTTP/1.1\r\nHost: a.local\r\n\r\n"),
        ("dev-pipeline", 2, b"GET http://a.local/1 HTTP/1.1\r\n\r\nGET http://nope.local/ HTTP/1.1\r\n\r\n"
                            b"HEAD http://a.local/2 HTTP/1.0\r\n\r\n"),
        ("dev-post-chunked", 2, b"POST http://a.local/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"5\r\nhello\r\n0\r\n\r\n"),
        ("dev-post-cl", 2, b"PUT http://a.local/p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        ("dev-cl-te", 2, b"POST http://a.local/ HTTP/1.1\r\nContent-Length: 3\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("dev-obs-fold", 2, b"GET http://a.local/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
        ("dev-host-mismatch", 2, b"GET http://a.local/ HTTP/1.1\r\nHost: b.local\r\n\r\n"),
        ("dev-path", 2, b"GET http://b.local:9/x/../y HTTP/1.1\r\n\r\nGET http://b.local:9/x/%2e%2e/ HTTP/1.1\r\n\r\n"),
        ("dev-numeric", 2, b"GET http://2130706433/ HTTP/1.1\r\n\r\nGET http://[::ffff:127.0.0.1]/ HTTP/1.1\r\n\r\n"),
        ("dev-wildcard-loopback", 2, b"GET http://c.w.local/ HTTP/1.1\r\n\r\n"),
        ("dev-unresolvable", 2, b"GET http://d.w.local/ HTTP/1.1\r\n\r\n"),
        ("dev-connect", 2, b"CONNECT b.local:9 HTTP/1.1\r\nHost: b.local:9\r\n\r\n\x16\x03\x01\x00\x05hello"),
        ("dev-connect-intercept", 2, b"CONNECT a.local:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello"),
        ("dev-connect-refused", 2, b"CONNECT evil.local:25 HTTP/1.1\r\n\r\n"),
        ("dev-userinfo", 2, b"GET http://u:p@a.local/ HTTP/1.1\r\n\r\n"),
        ("dev-upgrade", 2, b"GET http://a.local/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        ("dev-garbage", 2, b"\x00\x01\x02 not http at all\r\n\r\n"),
        ("api-provider", 1, b"POST /providers/keyed/v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
        ("api-healthz", 1, b"GET /healthz HTTP/1.1\r\n\r\nGET /providers/nope/x HTTP/1.1\r\n\r\n"),
        ("api-connect", 1, b"CONNECT a.local:443 HTTP/1.1\r\n\r\n"),
        ("relay-ok", 0, CPREQ_PP2 + b"GET http://a.local/ HTTP/1.1\r\n\r\n"),
        ("relay-unknown-profile", 0, pp2(tlv(RUN, b"r") + tlv(PROFILE, b"other")) + b"GET http://a.local/ HTTP/1.1\r\n\r\n"),
        ("relay-no-header", 0, b"GET http://a.local/ HTTP/1.1\r\n\r\n"),
]:
    put("cpreq", name, bytes([role]) + text)
# A refused keep-alive request followed by bytes that are not HTTP: resuming the parser in its
# error state made http-parser abort the process (found by make fuzz).
put("cpreq", "crash-paused-parser-in-error",
    b"\x02POST http://GETa.local/ HTTP/1.1\r\nTransfer-Encodingnkettp://GETd\r\n\r\n"
    b"5\r\nhello\r\n0\r\ro\r\n0\r\n\r\n")
# An integer given as a string with non-ASCII characters: the error quoted 32 bytes of it and
# cut a character in two, so the error was not UTF-8 (found by make fuzz).
put("jsonpb", "crash-error-cuts-utf8", __import__("base64").b64decode(
    "B3siaTMyIjogMjE0NzQ4MzY0NywgImk2NCI6ICItIzkyMjMzNzQ0MDdtZVltb3J5X20zNzA5NTUxNjE1XHUwMGZj"
    "XHUyNjAzIiwgImJ5IjogIi1fLV8iLCAiY29sb3IiOiAiR1JFRU4ifQ=="))

# ---- svcargs: selector byte (service index << 1 | 1 for an upstream's answer) + payload --
# Service indexes follow common/include/ahp/services.def: 0 lookup_wiki, 1 publish_summary.
def sa(name, service, payload, answer=False):
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    put("svcargs", name, bytes([service << 1 | (1 if answer else 0)]) + payload)


sa("lookup-ok", 0, {"topic": "durability"})
sa("lookup-spaces-dots", 0, {"topic": "sandboxing 1.0_beta-2"})
sa("lookup-dotdot", 0, {"topic": ".."})
sa("lookup-slash", 0, {"topic": "a b/c"})
sa("lookup-unknown-field", 0, {"topic": "x", "limit": 3})
sa("lookup-wrong-type", 0, {"topic": 5})
sa("lookup-missing", 0, {})
sa("lookup-null", 0, {"topic": None})
sa("lookup-too-long", 0, {"topic": "a" * 129})
sa("lookup-unicode", 0, '{"topic": "caf\\u00e9 \\ud83d\\ude00 \\u202e"}')
sa("lookup-nul", 0, '{"topic": "a\\u0000b"}')
sa("lookup-not-object", 0, '["durability"]')
sa("lookup-not-json", 0, b'{"topic": \xe2\x82')
sa("lookup-duplicate-key", 0, '{"topic": "a", "topic": "b"}')
sa("lookup-deep", 0, "[" * 3000 + "]" * 3000)
sa("publish-ok", 1, {"webhook_id": "ops.team-1", "content": "Durability: fsync, WAL.\n"})
sa("publish-pattern", 1, {"webhook_id": "a/b", "content": "x"})
sa("publish-empty-content", 1, {"webhook_id": "a", "content": ""})
sa("publish-long-content", 1, {"webhook_id": "a", "content": "\u20ac" * 4001})
sa("publish-content-number", 1, {"webhook_id": "a", "content": 1.5})
sa("publish-control-id", 1, '{"webhook_id": "\\u001b[2J", "content": "x"}')
sa("answer-lookup-ok", 0, {"topic": "durability", "snippets": [
    {"url": "https://wiki.example/durability", "excerpt": "fsync before acknowledging."},
    {"url": "https://wiki.example/wal", "excerpt": "Write-ahead logs.", "rank": 2}],
    "took_ms": 3}, answer=True)
sa("answer-lookup-empty", 0, {"topic": "nothing", "snippets": []}, answer=True)
sa("answer-lookup-wrong-type", 0, {"topic": "x", "snippets": [{"url": 3, "excerpt": "e"}]},
   answer=True)
sa("answer-lookup-too-many", 0, {"topic": "x", "snippets": [
    {"url": "u", "excerpt": "e"}] * 101}, answer=True)
sa("answer-lookup-nested-extra", 0, {"topic": "x", "snippets": [
    {"url": "u", "excerpt": "e", "meta": {"a": [1, {"b": None}]}}]}, answer=True)
sa("answer-lookup-html", 0, "<html><body>502 Bad Gateway</body></html>", answer=True)
sa("answer-publish-ok", 1, {"message_id": "4f12a87bc394", "posted_at": 1764495000},
   answer=True)
sa("answer-publish-string-time", 1, {"message_id": "4f12a87bc394", "posted_at": "1764495000"},
   answer=True)
sa("answer-publish-bad-id", 1, {"message_id": "4F12", "posted_at": 1}, answer=True)
sa("answer-publish-negative", 1, {"message_id": "4f12a87bc394", "posted_at": -1}, answer=True)
sa("answer-publish-huge-time", 1, '{"message_id": "4f12a87bc394", "posted_at": 1e300}',
   answer=True)
sa("answer-publish-empty", 1, b"", answer=True)
