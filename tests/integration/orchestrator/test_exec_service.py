#!/usr/bin/env python3
"""The exec_service tool on the real stack (orchestrator, servicesd, mock-services, mock-llm):

- a scripted model looks up the wiki and publishes a summary: the timeline has one
  [service] line per call in the documented shape, the model got the typed results, and
  mock-services saw exactly one post;
- the tool description is servicesd's for the profile: narrowing `services:` to
  [lookup_wiki] removes publish_summary from it (seen in the request the model received),
  and a publish call is refused by servicesd (not_allowed) all the same;
- malformed calls get typed validation errors naming the field (the orchestrator's own
  shape checks, and servicesd's argument checks); a `service:` approval rule gates the
  service it names (with no approvald running, it fails closed: nothing published);
- servicesd absent: the run fails with a resumable reason naming servicesd, and resumes
  once it is back;
- kill -9 of the orchestrator while a publish is in flight: after a restart the run
  completes, the publish is answered from servicesd's store (replayed), and mock-services
  saw exactly one post; kill -9 of servicesd at the same point: the orchestrator sends the
  call again once servicesd is back, and there is still exactly one post.

Needs servicesd and mock-services; skipped (77) when they are not built."""
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

FLOW = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: durability } }
  - tool_calls:
      - name: exec_service
        arguments:
          service_name: publish_summary
          args:
            webhook_id: team-updates
            content: "Durability digest for {{task}}: {{result.0.snippets.0.excerpt}} ({{result.0.snippets.0.url}})"
  - content: "Published {{result.1.message_id}} at {{result.1.posted_at}}; wiki {{result.0.topic}} gave {{result.0.snippets.1.url}}"
"""

# Narrowed profile: the model still tries to publish (a model may ask for anything).
NARROW = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: sandboxing } }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: team, content: hi } }
  - content: "lookup {{result.0.snippets.0.url}}; publish {{result.1.error.code}} retryable={{result.1.error.retryable}}"
"""

# Malformed calls, one per step; the answer quotes each typed error.
BAD = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: 5, args: {} }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: "durability" }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, topic: durability }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: "no/slashes?" } }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: send_email, args: {} }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: "a b", content: x } }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: "say \\"hi\\"\\tnow" } }
  - content: "{{result.0.error.code}}/{{result.0.error.field}} {{result.1.error.code}}/{{result.1.error.field}} {{result.2.error.code}}/{{result.2.error.field}} {{result.3.error.code}}/{{result.3.error.field}} {{result.4.error.code}} {{result.5.error.code}}/{{result.5.error.field}} {{result.6.error.code}}"
"""

GATED = """
steps:
  - tool_calls:
      - name: exec_service
        arguments: { service_name: lookup_wiki, args: { topic: replay } }
  - tool_calls:
      - name: exec_service
        arguments: { service_name: publish_summary, args: { webhook_id: team, content: hi } }
  - content: "lookup {{result.0.topic}}; publish {{result.1.error.status}}"
"""

TASK = "release 0.8"
LOOKUP_LINE = re.compile(r'^\[service\] lookup_wiki\(topic="durability"\) → ok, 2 snippets '
                         r'\(\d+ ms\)$')
PUBLISH_LINE = re.compile(r'^\[service\] publish_summary → ok message_id=[0-9a-f]{12} '
                          r'\(\d+ ms\)( \(replayed\))?$')


class Recorder(http.server.BaseHTTPRequestHandler):
    """A model gateway that forwards to mock-llm and keeps every request body, so the test
    sees the tool description each model call carried."""
    protocol_version = "HTTP/1.1"
    target = None  # callable -> mock-llm port
    bodies = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with Recorder.lock:
            Recorder.bodies.append(json.loads(body))
        req = urllib.request.Request(f"http://127.0.0.1:{Recorder.target()}{self.path}",
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, out = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def service_tool(body):
    for t in body.get("tools", []):
        if t.get("function", {}).get("name") == "exec_service":
            return t
    return None


def service_events(st, run_id):
    return [e for e in st.events(run_id) if e["kind"] == "service"]


def tool_results(st, run_id):
    """The journaled tool results (what the model received), in step order."""
    rows = st.db_rows("SELECT result FROM steps WHERE run_id=? AND kind='tool' ORDER BY seq",
                      (run_id,))
    return [json.loads(r[0]) for r in rows]


def check_flow(st, run_id, replayed_ok=False):
    r = st.status(run_id)
    check(r["state"] == "succeeded", f"state {r['state']}: {r.get('error')}")
    res = tool_results(st, run_id)
    check(len(res) == 2, f"tool results {res}")
    look, pub = res
    check(look.get("topic") == "durability" and len(look.get("snippets", [])) == 2,
          f"lookup result {look}")
    check(re.fullmatch(r"[0-9a-f]{12}", pub.get("message_id", "")) is not None and
          int(pub.get("posted_at", 0)) > 1_600_000_000, f"publish result {pub}")
    want = (f"Published {pub['message_id']} at {pub['posted_at']}; wiki durability gave "
            f"{look['snippets'][1]['url']}")
    check(r["result"] == want, f"answer {r['result']!r} != {want!r}")
    ev = service_events(st, run_id)
    texts = [e["text"] for e in ev]
    lk = [t for t in texts if t.startswith("[service] lookup_wiki")]
    pb = [t for t in texts if t.startswith("[service] publish_summary")]
    check(len(lk) == 1 and LOOKUP_LINE.match(lk[0]), f"lookup line {lk}")
    check(pb and PUBLISH_LINE.match(pb[-1]), f"publish line {pb}")
    check(f"message_id={pub['message_id']}" in pb[-1], f"publish line {pb[-1]} vs {pub}")
    if not replayed_ok:
        check(len(pb) == 1 and "(replayed)" not in pb[0], f"publish lines {pb}")
    data = ev[texts.index(lk[0])]["data"]
    check(data.get("service") == "lookup_wiki" and data.get("arguments") == {"topic": "durability"}
          and data.get("result") == look and data.get("replayed") is False and
          isinstance(data.get("duration_ms"), int), f"lookup event data {data}")
    pdata = ev[texts.index(pb[-1])]["data"]
    check(pdata.get("service") == "publish_summary" and pdata.get("result") == pub and
          pdata["arguments"]["webhook_id"] == "team-updates", f"publish event data {pdata}")
    kinds = {e["kind"] for e in st.events(run_id)}
    check("sandbox" not in kinds, f"service work produced sandbox events: {kinds}")
    return pub


def test_flow_and_narrow(args):
    Recorder.bodies = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Stack(args, "execsvc", credproxy=False, services=True) as st:
            Recorder.target = st.mock_port
            st.write_scenario("svc-flow", FLOW)
            st.write_scenario("svc-narrow", NARROW)
            st.write_scenario("svc-bad", BAD)
            st.write_scenario("svc-gated", GATED)
            both = ("lookup_wiki", "publish_summary")
            st.write_profile("svc-full", "svc-flow", tools=("exec_service",), skills=None,
                             services=both)
            st.write_profile("svc-narrow", "svc-narrow", tools=("exec_service",), skills=None,
                             services=("lookup_wiki",))
            st.write_profile("svc-bad", "svc-bad", tools=("exec_service",), skills=None,
                             services=both)
            st.write_profile("svc-gated", "svc-gated", tools=("exec_service",), skills=None,
                             services=both,
                             extra="approvals:\n  - service: publish_summary\n")
            st.write_conf(gateway_url=f"http://127.0.0.1:{srv.server_address[1]}")
            st.start()

            # 1. lookup then publish.
            p = st.orchctl("submit", "svc-full", TASK, expect=0, timeout=60)
            run_id = p.stdout.splitlines()[0].strip()
            check("[service] lookup_wiki(topic=\"durability\") → ok, 2 snippets" in p.stdout,
                  f"live timeline:\n{p.stdout}")
            check_flow(st, run_id)
            s = st.services_stats()
            check(s["posts"] == 1 and s["by_webhook"] == {"team-updates": 1} and
                  s["snippets"] == 1, f"mock-services stats {s}")
            full = [b for b in Recorder.bodies if b.get("model") == "svc-flow"]
            check(len(full) == 3, f"{len(full)} model requests for svc-flow")
            tool = service_tool(full[0])
            check(tool is not None, f"no exec_service tool in {full[0].get('tools')}")
            enum = tool["function"]["parameters"]["properties"]["service_name"].get("enum")
            check(enum == ["lookup_wiki", "publish_summary"], f"service enum {enum}")
            check(all(service_tool(b) == tool for b in full), "tool changed between calls")

            # 2. narrowed: no publish in the description, and servicesd refuses it.
            p = st.orchctl("submit", "svc-narrow", TASK, expect=0, timeout=60)
            nrun = p.stdout.splitlines()[0].strip()
            r = st.status(nrun)
            check(r["state"] == "succeeded", f"narrow state {r['state']}: {r.get('error')}")
            check(re.fullmatch(r"lookup \S+; publish not_allowed retryable=false", r["result"]),
                  f"narrow answer {r['result']!r}")
            narrow = [b for b in Recorder.bodies if b.get("model") == "svc-narrow"]
            tool = service_tool(narrow[0])
            check(tool is not None, "no exec_service tool for the narrowed profile")
            enum = tool["function"]["parameters"]["properties"]["service_name"].get("enum")
            check(enum == ["lookup_wiki"], f"narrowed enum {enum}")
            check("publish_summary" not in json.dumps(tool), f"publish in {tool}")
            texts = [e["text"] for e in service_events(st, nrun)]
            check(any(t.startswith("[service] publish_summary(") and "→ not_allowed: " in t
                      for t in texts), f"narrow timeline {texts}")
            check(st.services_stats()["posts"] == 1, "the refused publish reached the mock")

            # 2b. widened again and reloaded (SIGHUP to both): the next run's description
            # is fetched again and lists publish_summary, which servicesd now allows.
            st.write_profile("svc-narrow", "svc-narrow", tools=("exec_service",), skills=None,
                             services=both)
            n_orch = st.log("orchestrator").count("profiles reloaded")
            n_svc = st.log("servicesd").count("reloaded profiles")
            st.hup("servicesd")
            st.hup("orchestrator")
            wait_for(lambda: st.log("orchestrator").count("profiles reloaded") > n_orch and
                     st.log("servicesd").count("reloaded profiles") > n_svc, 10, "the reloads")
            seen = len(Recorder.bodies)
            p = st.orchctl("submit", "svc-narrow", TASK, expect=0, timeout=60)
            wrun = p.stdout.splitlines()[0].strip()
            r = st.status(wrun)
            check(re.fullmatch(r"lookup \S+; publish  retryable=", r["result"]),
                  f"widened answer {r['result']!r}")
            tool = service_tool([b for b in Recorder.bodies[seen:]
                                 if b.get("model") == "svc-narrow"][0])
            enum = tool["function"]["parameters"]["properties"]["service_name"].get("enum")
            check(enum == ["lookup_wiki", "publish_summary"], f"widened enum {enum}")
            check(st.services_stats()["posts"] == 2, "the widened publish did not post")

            # 3. malformed calls: typed errors naming the field.
            p = st.orchctl("submit", "svc-bad", TASK, expect=0, timeout=60)
            brun = p.stdout.splitlines()[0].strip()
            r = st.status(brun)
            check(r["state"] == "succeeded", f"bad state {r['state']}: {r.get('error')}")
            want = ("validation/service_name validation/args validation/topic "
                    "validation/topic unknown_service validation/webhook_id validation")
            check(r["result"] == want, f"bad answer {r['result']!r} != {want!r}")
            texts = [e["text"] for e in service_events(st, brun)]
            check(len(texts) == 7 and texts[0].startswith("[service] exec_service → validation: ")
                  and texts[5].startswith('[service] publish_summary(webhook_id="a b", '
                                          'content="x") → validation: ')
                  and texts[6].startswith('[service] lookup_wiki(topic="say \\"hi\\"\\x09now") '
                                          '→ validation: '), f"bad timeline {texts}")
            check(st.services_stats()["posts"] == 2, "a malformed publish reached the mock")

            # 4. a service: approval rule gates publish_summary only. approvald is not
            # running in this stack: the gated call fails closed after the grace (10 s),
            # the run failed resumably with a reason naming approvald, nothing published.
            grun = st.submit("svc-gated", TASK)
            r = st.wait_state(grun, timeout=60)
            check(r["state"] == "failed" and "approvald" in r["error"] and
                  r["error"].startswith("platform failure in tool exec_service: approvald: "),
                  f"gated {r['state']}: {r.get('error')!r}")
            check(st.services_stats()["posts"] == 2, "the gated publish reached the mock")
    finally:
        srv.shutdown()


def test_absent_and_crash(args):
    with Stack(args, "svccrash", services=True, services_args="--hang-ms 2000") as st:
        st.write_scenario("svc-flow", FLOW)
        st.write_profile("svc-full", "svc-flow", tools=("exec_service",), skills=None,
                         services=("lookup_wiki", "publish_summary"))
        st.start()

        # 5. servicesd absent: the run fails resumably, naming servicesd; resume works.
        st.kill("servicesd")
        run_id = st.submit("svc-full", TASK)
        r = st.wait_state(run_id, timeout=40)
        check(r["state"] == "failed" and "servicesd" in r["error"] and r.get("resumable"),
              f"without servicesd: {r}")
        st.restart("servicesd")
        st.orchctl("resume", run_id, expect=0, timeout=90)
        check_flow(st, run_id)
        check(st.services_stats()["posts"] == 1, f"stats {st.services_stats()}")
        st.services_reset()

        # 6. kill -9 the orchestrator while the publish is in flight (the mock holds it
        # for 2 s), let servicesd finish it, restart: the run completes from servicesd's
        # record of the call, and the webhook got one post.
        run_id = st.submit("svc-full", TASK)

        def publishing():
            rows = st.db_rows("SELECT seq, completed_ms FROM steps WHERE run_id=? AND "
                              "kind='tool' ORDER BY seq", (run_id,))
            return len(rows) == 2 and rows[1][1] is None
        wait_for(publishing, 30, "the publish step to start")
        time.sleep(0.3)
        st.kill("orchestrator")
        wait_for(lambda: st.services_stats()["posts"] == 1, 15, "the mock to take the post")
        time.sleep(1.0)  # servicesd records the outcome
        st.restart("orchestrator")
        r = st.wait_state(run_id, timeout=60)
        pub = check_flow(st, run_id, replayed_ok=True)
        s = st.services_stats()
        check(s["posts"] == 1 and s["by_webhook"] == {"team-updates": 1}, f"stats {s}")
        pb = [e for e in service_events(st, run_id)
              if e["text"].startswith("[service] publish_summary →")]
        check(pb[-1]["text"].endswith("(replayed)") and pb[-1]["data"]["replayed"] is True,
              f"publish after restart {[e['text'] for e in pb]}")
        check(pb[-1]["data"]["result"] == pub, "replayed result differs")
        st.services_reset()

        # 7. kill -9 servicesd while the publish is in flight, and start it again: the
        # orchestrator learns of the loss at once (interrupted), sends the same key again
        # once servicesd is back, servicesd sends the publish again with the same
        # Idempotency-Key (publish_summary is KEYED), and the webhook has one post.
        run_id = st.submit("svc-full", TASK)
        wait_for(publishing, 30, "the publish step to start")
        time.sleep(0.3)
        st.kill("servicesd")
        st.restart("servicesd")
        r = st.wait_state(run_id, timeout=60)
        pub = check_flow(st, run_id, replayed_ok=True)
        texts = [e["text"] for e in service_events(st, run_id)]
        check(any(t.startswith("[service] publish_summary → interrupted; sending again "
                               "(attempt 2/3") for t in texts), f"timeline {texts}")
        s = st.services_stats()
        check(s["posts"] == 1 and s["by_webhook"] == {"team-updates": 1}, f"stats {s}")


def main(args):
    for b in ("servicesd", "mock-services"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"{b} is not built in {args.bin}; exec_service needs it: skipped")
            return 77
    test_flow_and_narrow(args)
    test_absent_and_crash(args)
    return 0


run_test(main)
