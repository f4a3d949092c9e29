#!/usr/bin/env python3
"""The model route goes through credproxy (issue 7, Provider routes): the orchestrator's
model calls take credproxy's provider route over its unix socket (gateway_socket), where
providers.conf names mock-llm; the orchestrator's configuration names no gateway. Each call
is in credproxy's egress log as a provider-route record (no run, the provider named). When
mock-llm moves to another port, scripts/stack rewrites providers.conf and SIGHUPs credproxy,
and runs go on. With credproxy down a model call fails with a reason that names its socket,
and the run resumes once credproxy is back."""
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test, wait_for

SCENARIO = """
steps:
  - content: "done: {{task}}"
"""


def run_ok(st, task):
    p = st.orchctl("submit", "alpha", task, expect=0, timeout=60)
    check(f"Result: done: {task}" in p.stdout, p.stdout)


def main(args):
    if not os.path.exists(os.path.join(args.bin, "credproxy")):
        print("credproxy is not built; skipped")
        return 77
    with Stack(args, "modelroute") as st:
        st.demo_skill()
        st.write_scenario("short", SCENARIO)
        st.write_profile("alpha", "short")
        st.write_conf(model_retries=0)
        st.start()
        port = st.mock_port()
        conf = open(st.path("etc/orchestrator.conf")).read()
        check("gateway" not in conf, f"orchestrator.conf names a gateway:\n{conf}")
        providers = open(st.path("etc/providers.conf")).read()
        check(f"\nmock http://127.0.0.1:{port} none\n" in providers, providers)
        check(f"gateway_socket={st.path('run/credproxy-api.sock')} " in st.log("orchestrator"),
              "the orchestrator does not say which socket it uses")

        before = st.stats()["chat_completions"]
        run_ok(st, "one")
        check(st.stats()["chat_completions"] == before + 1, "the call did not reach mock-llm")
        # cp.h puts the provider's name in host; credproxy may log the upstream's host and
        # name the provider in rule ("provider:mock").
        # credproxy writes its info lines every 50 ms: wait for this one.
        def routed_now():
            return [e for e in st.egress_log(run="")
                    if e.get("host") == "mock" or e.get("rule") == "provider:mock"]
        wait_for(lambda: routed_now(), 5, "the provider route's log line")
        routed = routed_now()
        check(routed and routed[-1]["method"] == "POST" and
              routed[-1]["path"] == "/v1/chat/completions" and routed[-1]["status"] == "200" and
              routed[-1]["decision"] == "allow", f"provider route not logged: {routed}")

        # mock-llm's port taken meanwhile: providers.conf follows, credproxy reloads.
        st.kill("mock-llm", signal.SIGTERM)
        squat = socket.socket()
        squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squat.bind(("127.0.0.1", port))
        squat.listen(1)
        try:
            cp_pid = st.pid("credproxy")
            st.restart("mock-llm")
            new_port = st.mock_port()
            check(new_port != port, "mock-llm got a port that is taken")
            providers = open(st.path("etc/providers.conf")).read()
            check(f"\nmock http://127.0.0.1:{new_port} none\n" in providers and
                  f":{port} " not in providers, providers)
            check(st.pid("credproxy") == cp_pid, "credproxy was restarted, not reloaded")
            # The reload is asynchronous: the first call may still meet the old port.
            wait_for(lambda: st.orchctl("submit", "alpha", "two", timeout=60).returncode == 0,
                     30, "a run through the reloaded route", interval=0.5)
        finally:
            squat.close()

        # credproxy down: the call fails, naming the socket; resumable.
        st.kill("credproxy", signal.SIGTERM)
        p = st.orchctl("submit", "alpha", "three", timeout=60)
        check(p.returncode == 1, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        run_id = st.orchctl_json("list", "--limit", "1")[0]["runs"][0]["run_id"]
        r = st.status(run_id)
        want = f"cannot connect to the model gateway (credproxy) at {st.path('run/credproxy-api.sock')}"
        check(r["state"] == "failed" and want in r["error"], f"{r['state']}: {r['error']!r}")
        st.restart("credproxy")
        p = st.orchctl("resume", run_id, timeout=60)
        check(p.returncode == 0 and "Result: done: three" in p.stdout, p.stdout + p.stderr)
    return 0


run_test(main)
