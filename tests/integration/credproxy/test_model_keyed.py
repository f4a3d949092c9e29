#!/usr/bin/env python3
"""A model run whose provider requires a key completes only through credproxy: the
orchestrator (which holds no key) calls the provider route, credproxy injects the bearer
key from its secrets (providers.conf `keyed http://127.0.0.1:PORT bearer llm-key`), and a
provider fixture that answers 401 without the key forwards to mock-llm. With credproxy
stopped the run fails and the provider sees nothing; with a wrong key the provider's 401
reaches the run's error; back with the right key (SIGHUP), runs complete again. The key
is in no orchestrator file, environment, journal or log."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import (Stack, assert_no_secret, check, keyed_llm_fixture, keyed_profile,  # noqa: E402
                   need_credproxy, new_secret, run_test, stack_credproxy_conf,
                   stack_providers_add, stack_secret, wait_for)

SCENARIO = """
steps:
  - content: "keyed answer for {{task}}"
"""


def main(args):
    if need_credproxy(args):
        return 77
    with Stack(args, "cpmodel") as st:
        key = new_secret("sk")
        fx = keyed_llm_fixture(key, st.mock_port)
        try:
            run(st, fx, key)
        finally:
            fx.stop()
    return 0


def run(st, fx, key):
    stack_secret(st, "llm-key", key)
    stack_credproxy_conf(st)
    line = f"keyed http://127.0.0.1:{fx.port} bearer llm-key"
    stack_providers_add(st, line)
    st.write_scenario("keyedscn", SCENARIO)
    keyed_profile(st, "keyed-agent", "keyedscn")
    st.write_conf(model_retries=0)
    st.start()
    check(st.pid("credproxy"), "scripts/stack did not start credproxy")
    if stack_providers_add(st, line):  # the stack rewrote providers.conf: tell credproxy
        os.kill(st.pid("credproxy"), signal.SIGHUP)

    p = st.orchctl("submit", "keyed-agent", "task one", expect=0, timeout=60)
    run_id = p.stdout.splitlines()[0].strip()
    r = st.status(run_id)
    check(r["state"] == "succeeded" and r["result"] == "keyed answer for task one", f"run: {r}")
    calls = [s for s in fx.seen if "/chat/completions" in s.path]
    check(len(calls) == r["model_calls"] == 1, f"provider calls {calls}, run {r}")
    check(calls[0].path == "/v1/chat/completions", f"provider path {calls[0].path}")
    check(calls[0].header_all("Authorization") == ["Bearer " + key], f"key not injected: {calls[0]}")
    check(st.stats()["chat_completions"] == 1, f"mock-llm: {st.stats()}")

    # --- the orchestrator holds no key: not in its environment, config, journal or log.
    opid = st.pid("orchestrator")
    with open(f"/proc/{opid}/environ", "rb") as f:
        assert_no_secret(f.read(), key, "the orchestrator's environment")
    with open(st.path("etc/orchestrator.conf"), "rb") as f:
        assert_no_secret(f.read(), key, "orchestrator.conf")
    for d in ("state/orchestrator", "log"):
        for dirpath, _, files in os.walk(st.path(d)):
            for n in files:
                with open(os.path.join(dirpath, n), "rb") as f:
                    assert_no_secret(f.read(), key, os.path.join(dirpath, n))

    # --- without credproxy: the run fails, the provider sees nothing.
    n = len(fx.seen)
    st.kill("credproxy", signal.SIGTERM)
    p = st.orchctl("submit", "keyed-agent", "task two", timeout=90)
    check(p.returncode != 0, f"a run completed without credproxy:\n{p.stdout}\n{p.stderr}")
    run2 = p.stdout.splitlines()[0].strip()
    check(st.status(run2)["state"] == "failed", f"run without credproxy: {st.status(run2)}")
    check(len(fx.seen) == n, f"the provider was reached without credproxy: {fx.seen[n:]}")
    st.restart("credproxy")

    # --- a wrong key: the provider's 401 reaches the run.
    stack_secret(st, "llm-key", "sk-wrong-" + "0" * 24)
    os.kill(st.pid("credproxy"), signal.SIGHUP)

    def fails_with_401():
        p = st.orchctl("submit", "keyed-agent", "task three", timeout=90)
        rid = p.stdout.splitlines()[0].strip() if p.stdout.strip() else None
        return (p.returncode != 0 and rid and st.status(rid)) or None
    r3 = wait_for(fails_with_401, 20, "a run with the wrong key to fail", interval=0.5)
    check("401" in (r3.get("error") or ""), f"error of a run with the wrong key: {r3}")
    check(fx.seen[-1].header("Authorization") == "Bearer sk-wrong-" + "0" * 24,
          f"the rotated (wrong) key was not what credproxy sent: {fx.seen[-1]}")

    # --- the right key again: runs complete.
    stack_secret(st, "llm-key", key)
    os.kill(st.pid("credproxy"), signal.SIGHUP)

    def succeeds():
        p = st.orchctl("submit", "keyed-agent", "task four", timeout=90)
        return p.returncode == 0 and p
    wait_for(succeeds, 20, "a run to succeed with the key restored", interval=0.5)
    log = st.log("credproxy") + st.log("orchestrator")
    assert_no_secret(log, key, "the daemons' logs")


if __name__ == "__main__":
    run_test(main)
