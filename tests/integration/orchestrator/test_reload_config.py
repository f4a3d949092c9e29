#!/usr/bin/env python3
"""SIGHUP reloads the configuration (section 7 of issue 6): a restarted mock-llm keeps its
port, so a running orchestrator still reaches it; when the port is taken meanwhile,
scripts/stack moves gateway_url and the orchestrator follows on the SIGHUP the stack sends;
gateway_url and model_retries change on SIGHUP; restart-only keys (endpoint, user) are
logged as ignored at every reload until a restart; a bad file is refused whole and the
running configuration stays."""
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


def hup_and_wait(st, marker):
    """SIGHUPs the orchestrator; waits until marker is logged one more time than before."""
    n = st.log("orchestrator").count(marker)
    st.kill("orchestrator", signal.SIGHUP, wait=False)
    wait_for(lambda: st.log("orchestrator").count(marker) > n, 15,
             f"'{marker}' in the orchestrator log", interval=0.1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(args):
    # The orchestrator's own gateway_url is what moves here: without credproxy the stack
    # points it at mock-llm (test_model_route covers the route through credproxy).
    with Stack(args, "reloadcfg", credproxy=False) as st:
        st.demo_skill()
        st.write_scenario("short", SCENARIO)
        st.write_profile("alpha", "short")
        st.start()
        run_ok(st, "one")
        port = st.mock_port()
        orch_pid = st.pid("orchestrator")

        # A restarted mock keeps its port: the orchestrator needs nothing.
        st.restart("mock-llm")
        check(st.mock_port() == port, f"mock-llm moved from {port} to {st.mock_port()}")
        reloads = st.log("orchestrator").count("config reloaded")
        run_ok(st, "two")
        check(st.log("orchestrator").count("config reloaded") == reloads,
              "the stack sent a SIGHUP although the gateway did not change")

        # Its port taken meanwhile: a new port, gateway_url follows, the stack
        # SIGHUPs the orchestrator, which picks it up.
        st.kill("mock-llm", signal.SIGTERM)
        squat = socket.socket()
        squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squat.bind(("127.0.0.1", port))
        squat.listen(1)
        try:
            st.restart("mock-llm")
            new_port = st.mock_port()
            check(new_port != port, "mock-llm got a port that is taken")
            wait_for(lambda: f"gateway=http://127.0.0.1:{new_port}" in st.log("orchestrator"),
                     15, "the orchestrator to reload the new gateway", interval=0.1)
            run_ok(st, "three")
        finally:
            squat.close()
        check(open(st.path("run/mock-llm.lastport")).read().strip() == str(new_port),
              "run/mock-llm.lastport does not hold the new port")

        # gateway_url and model_retries change on SIGHUP, without a restart.
        conf = open(st.path("etc/orchestrator.conf")).read()
        dead = free_port()
        st.write("etc/orchestrator.conf",
                 conf.replace(f"127.0.0.1:{new_port}", f"127.0.0.1:{dead}") +
                 "model_retries = 0\n")
        hup_and_wait(st, "config reloaded changed=gateway_url,model_retries "
                     f"gateway=http://127.0.0.1:{dead} ")
        before = st.stats()["chat_completions"]
        p = st.orchctl("submit", "alpha", "four", timeout=60)
        check(p.returncode == 1, f"submit against a dead gateway: exit {p.returncode}\n"
              f"{p.stdout}\n{p.stderr}")
        check(st.stats()["chat_completions"] == before, "a request reached the old gateway")
        st.write("etc/orchestrator.conf", conf)
        hup_and_wait(st, "config reloaded changed=gateway_url,model_retries "
                     f"gateway=http://127.0.0.1:{new_port} ")
        run_ok(st, "five")

        # Restart-only keys: logged as ignored, every reload, until a restart.
        other = st.path("run/other.sock")
        st.write("etc/orchestrator.conf",
                 conf + f"endpoint = ipc://{other}\nuser = nobody\n")
        for i in (1, 2):
            hup_and_wait(st, "config reloaded changed=none")
            log = st.log("orchestrator")
            for key in ("endpoint", "user"):
                n = log.count(f'msg="config {key} changed; ignored until restart"')
                check(n == i, f"{key}: logged {n} time(s) after {i} reload(s)")
        check(not os.path.exists(other), "the endpoint moved without a restart")
        run_ok(st, "six")

        # A bad file is refused whole: nothing of it applies.
        st.write("etc/orchestrator.conf", conf.replace(f"127.0.0.1:{new_port}",
                                                       f"127.0.0.1:{dead}") +
                 "model_retries = 999\n")
        hup_and_wait(st, "config reload refused; the running configuration stays")
        check("orchestrator.conf:" in st.log("orchestrator") and
              "'model_retries' = 999 is out of range [0, 20]" in st.log("orchestrator"),
              "the reason is not logged")
        run_ok(st, "seven")
        check(st.pid("orchestrator") == orch_pid, "the orchestrator restarted")


run_test(main)
