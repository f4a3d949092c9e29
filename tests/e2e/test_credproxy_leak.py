#!/usr/bin/env python3
"""Secret-leak scan after a run that used injected secrets (issue 7, Tests). A model run
through a keyed provider (the key injected by credproxy) runs exec in a proxy-mode sandbox,
whose curl gets a wiki token injected by credproxy from an upstream that reflects it (raw and
base64). Afterwards no secret value — raw, base64 at any alignment or percent-encoded — is
in: the orchestrator's /proc/PID/environ or memory, its journal (db and WAL), any
file under HOME/log, any file anywhere in HOME outside etc/secrets (workspaces, sandboxd and
credproxy state, egress.db), the sandbox's environment and files, or the memory of a process
in a sandbox that just received a reflected secret. Needs root (sandboxd; reading /proc/PID/mem)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "../lib"))
sys.path.insert(0, os.path.join(here, "../integration/credproxy"))
from cplib import (Fixture, Stack, assert_no_secret, check, keyed_llm_fixture,  # noqa: E402
                   keyed_profile, need_credproxy, new_secret, run_test, sbx_exec,
                   stack_credproxy_conf, stack_providers_add, stack_secret, wait_for)

PROFILE = "leaky"


def scenario(E):
    cmd = (f"curl -sS http://wiki.local:{E}/snippets/leak > /workspace/echo.txt; "
           f"curl -sS http://wiki.local:{E}/snippets/b64 >> /workspace/echo.txt; "
           f"curl -sS http://wiki.local:{E}/snippets/pct >> /workspace/echo.txt; "
           f"env > /workspace/env.txt; cat /workspace/echo.txt")
    return ("steps:\n"
            "  - tool_calls:\n"
            "      - name: exec\n"
            f"        arguments: {{ command: \"{cmd}\" }}\n"
            "  - content: \"done exit={{result.0.exit_code}} {{result.0.stdout}}\"\n")


def read_memory(pid, outdir):
    """The memory of pid (the process keeps running): every readable mapping, read through
    /proc/PID/mem as gcore would dump it. Mappings over 1 GiB are left out: they are the
    sanitizers' shadow memory (terabytes of reservation in a SAN build), never data the
    process wrote a secret into; outdir is unused (kept for the callers)."""
    del outdir
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or hi - lo > (1 << 30):
                continue
            name = fields[5] if len(fields) > 5 else ""
            if name in ("[vvar]", "[vsyscall]"):
                continue
            try:
                mem.seek(lo)
                chunks.append(mem.read(hi - lo))
            except OSError:
                continue  # a guard page or a mapping that went away
    data = b"".join(chunks)
    check(len(data) > 0, f"could not read any memory of pid {pid}")
    return data


def main(args):
    if os.geteuid() != 0:
        print("needs root for sandboxd; skipped")
        return 77
    if need_credproxy(args):
        return 77
    echo = Fixture("echo")
    cores = tempfile.mkdtemp(prefix="ahp-cores-")
    try:
        with Stack(args, "cpleak", sandbox=True) as st:
            llm_key = new_secret("sk")
            fx = keyed_llm_fixture(llm_key, st.mock_port)
            try:
                run(st, echo, fx, llm_key, cores)
            finally:
                fx.stop()
    finally:
        echo.stop()
        shutil.rmtree(cores, ignore_errors=True)
    return 0


def run(st, echo, fx, llm_key, cores):
    E = echo.port
    wiki = stack_secret(st, "wiki-token", new_secret("wk"))
    stack_secret(st, "llm-key", llm_key)
    stack_credproxy_conf(st)
    line = f"keyed http://127.0.0.1:{fx.port} bearer llm-key"
    stack_providers_add(st, line)
    st.write_scenario("leakscn", scenario(E))
    egress = (f'  - host: "wiki.local:{E}"\n'
              f"    paths: [/snippets/]\n"
              f"    inject:\n"
              f'      Authorization: "Bearer {{{{secret:wiki-token}}}}"\n'
              f'      X-Api-Key: "{{{{secret:wiki-token}}}}"\n')
    keyed_profile(st, PROFILE, "leakscn", tools=("exec",),
                  extra="sandbox: { network: proxy, timeout_s: 30 }\negress:\n" + egress)
    st.write_conf(model_retries=0)
    st.start()
    if stack_providers_add(st, line):
        os.kill(st.pid("credproxy"), signal.SIGHUP)
    secrets = [wiki, llm_key]

    p = st.orchctl("submit", PROFILE, "leak check", expect=0, timeout=120)
    run_id = p.stdout.splitlines()[0].strip()
    r = st.status(run_id)
    check(r["state"] == "succeeded", f"run: {r}")
    check("[redacted:wiki-token]" in r["result"], f"the reflected token was not redacted in "
          f"the run's result: {r['result']!r}")
    # The secrets were really used: injected upstream.
    check(any(s.header("X-Api-Key") == wiki for s in echo.seen), "wiki token never injected")
    check(any(s.header("Authorization") == "Bearer " + llm_key for s in fx.seen),
          "llm key never injected")
    for s in secrets:
        assert_no_secret(p.stdout + p.stderr, s, "orchctl's output")

    # --- a process in a sandbox that just received a reflected secret: environment, memory.
    argv = [os.path.join(st.bin, "sandboxd"), "--home", st.home, "exec", "--profile", PROFILE,
            "--", "sh", "-c", f"curl -sS http://wiki.local:{E}/snippets/mem > /tmp/m; "
            f"curl -sS http://wiki.local:{E}/snippets/b64 >> /tmp/m; cat /tmp/m; "
            f"exec python3 -c 'import time; d = open(\"/tmp/m\").read(); time.sleep(30)' "
            f"leak-marker-31"]
    bg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def sbx_proc():
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{d}/cmdline", "rb") as f:
                            cl = f.read()
                    except OSError:
                        continue
                    if b"leak-marker-31" in cl and b"python3" in cl.split(b"\0")[0]:
                        return int(d)
            return None
        pid = wait_for(sbx_proc, 30, "the sandboxed python to start")
        time.sleep(0.5)
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
        for s in secrets:
            assert_no_secret(env, s, "a sandboxed process's environment")
        mem = read_memory(pid, cores)
        check(b"[redacted:wiki-token]" in mem, "the sandboxed process's memory lacks the "
              "redacted reflection (wrong process?)")
        for s in secrets:
            assert_no_secret(mem, s, "a sandboxed process's memory")
    finally:
        bg.kill()
        bg.wait(30)

    # --- the sandbox's environment.
    rc, out, err = sbx_exec(st, PROFILE, "env; tr '\\0' '\\n' < /proc/self/environ; "
                                         "cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'")
    for s in secrets:
        assert_no_secret(out + err, s, "the sandbox's environment")

    # --- the orchestrator: environment and memory.
    opid = st.pid("orchestrator")
    with open(f"/proc/{opid}/environ", "rb") as f:
        env = f.read()
    mem = read_memory(opid, cores)
    check(b"leak check" in mem, "the orchestrator's core lacks the task (wrong process?)")
    for s in secrets:
        assert_no_secret(env, s, "the orchestrator's environment")
        assert_no_secret(mem, s, "the orchestrator's memory")
    # sandboxd too: it relays the bytes, and must not keep them.
    spid = st.pid("sandboxd")
    if spid:
        mem = read_memory(spid, cores)
        for s in secrets:
            assert_no_secret(mem, s, "sandboxd's memory")

    # --- credproxy itself: its own unprivileged user, the only one that can read the
    # secrets; the secrets are not in its environment either.
    import pwd
    import stat
    cpid = st.pid("credproxy")
    cp_uid = pwd.getpwnam("ahp-credproxy").pw_uid
    with open(f"/proc/{cpid}/status") as f:
        uids = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    check(all(int(u) == cp_uid for u in uids), f"credproxy runs as uids {uids}, not {cp_uid}")
    with open(f"/proc/{cpid}/environ", "rb") as f:
        env = f.read()
    for s in secrets:
        assert_no_secret(env, s, "credproxy's environment")
    sd = st.path("etc/secrets/credproxy")
    sst = os.stat(sd)
    check(sst.st_uid == cp_uid and stat.S_IMODE(sst.st_mode) == 0o700,
          f"secrets dir owner {sst.st_uid} mode {oct(sst.st_mode)}")
    for n in os.listdir(sd):
        fst = os.stat(os.path.join(sd, n))
        check(fst.st_uid == cp_uid and stat.S_IMODE(fst.st_mode) == 0o600,
              f"secret {n}: owner {fst.st_uid} mode {oct(fst.st_mode)}")

    # --- every file in HOME but credproxy's secrets: journal (db, WAL), logs, workspaces,
    # sandboxd and credproxy state (egress.db), configuration. Stop first so that every
    # log and WAL is flushed.
    st.stop()
    st.started = False
    secret_dir = st.path("etc/secrets")
    scanned = 0
    for dirpath, dirnames, files in os.walk(st.home):
        if dirpath == secret_dir or dirpath.startswith(secret_dir + os.sep):
            continue
        for n in files:
            path = os.path.join(dirpath, n)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read(64 << 20)
            for s in secrets:
                assert_no_secret(data, s, path)
            scanned += 1
    for must in ("state/orchestrator/orchestrator.db", "log/credproxy.log",
                 "log/orchestrator.log", "log/sandboxd.log"):
        check(os.path.exists(st.path(must)), f"{must} missing: the scan would prove nothing")
    check(scanned > 5, f"only {scanned} files scanned")


if __name__ == "__main__":
    run_test(main)
