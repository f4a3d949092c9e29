#!/usr/bin/env python3
"""Real clients in real sandboxes (`sandboxd exec --profile P`, network: proxy) through
sandboxd's relay and credproxy, against loopback fixtures: curl, wget, Python's urllib and
`git clone` over smart HTTP (git-http-backend requiring the injected bearer token) all get
the credential; a host no rule names, a wrong method, a Host/target mismatch and a private
address are refused with the reason; `curl --noproxy '*'` and direct IP connects fail (no
route); a redirect followed by curl -L reaches the other host without the credential; an
echo shows [redacted:...]; HTTPS through interception works with the CA the sandbox is given
(SSL_CERT_FILE, CURL_CA_BUNDLE, ...); CONNECT to a host without injection is a blind tunnel
end to end. Needs root (sandboxd); run under flock /tmp/ahp-ctest.lock."""
import os
import shlex
import socket
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cplib import (STANDARD_EGRESS, Fixture, Stack, assert_no_secret, check,  # noqa: E402
                   git_fixture, host_ipv4, make_bare_repo, make_test_ca, need_credproxy,
                   new_secret, run_test, sbx_exec, stack_credproxy_conf, stack_secret)

PROFILE = "net-agent"
CA_VARS = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
           "GIT_SSL_CAINFO", "PIP_CERT")


def main(args):
    if os.geteuid() != 0:
        print("needs root for sandboxd; skipped")
        return 77
    if need_credproxy(args):
        return 77
    gitroot = tempfile.mkdtemp(prefix="ahp-gitroot-")
    os.chmod(gitroot, 0o755)
    make_bare_repo(gitroot, "repo", {"README": "hello from git over credproxy\n"})
    echo = Fixture("echo")
    fixtures = [echo]
    try:
        with Stack(args, "cpsbx", sandbox=True) as st:
            ca, crt, key = make_test_ca(st.path("etc/test-ca"))
            tls = Fixture("tls", certfile=crt, keyfile=key)
            fixtures.append(tls)
            git_tok = new_secret("gt")
            git = git_fixture(gitroot, git_tok)
            fixtures.append(git)
            run(st, echo, tls, git, git_tok, ca, crt)
    finally:
        for f in fixtures:
            f.stop()
        import shutil
        shutil.rmtree(gitroot, ignore_errors=True)
    return 0


def run(st, echo, tls, git, git_tok, test_ca, leaf):
    E, T, G = echo.port, tls.port, git.port
    wiki = stack_secret(st, "wiki-token", new_secret("wk"))
    stack_secret(st, "echo-token", new_secret("et"))
    stack_secret(st, "git-token", git_tok)
    stack_credproxy_conf(st, upstream_ca_file=test_ca)
    egress = STANDARD_EGRESS.format(E=E, T=T, B=9) + (
        f'  - host: "git.local:{G}"\n'
        f"    methods: [GET, POST]\n"
        f"    inject:\n"
        f'      Authorization: "Bearer {{{{secret:git-token}}}}"\n')
    st.write_profile(PROFILE, "none", tools=("exec",), skills="",
                     extra=("sandbox: { network: proxy, timeout_s: 60, pids_max: 128, "
                            "memory_mb: 512 }\negress:\n" + egress))
    st.start()
    cp_pid = st.pid("credproxy")
    check(cp_pid is not None, "scripts/stack did not start credproxy")

    def sh(script, what, want_rc=0):
        rc, out, err = sbx_exec(st, PROFILE, script)
        if want_rc is not None:
            check(rc == want_rc, f"{what}: exit {rc} (want {want_rc})\n$ {script}\n"
                  f"stdout: {out}\nstderr: {err}")
        return rc, out, err

    def last(fixture, path_part):
        s = [x for x in fixture.seen if path_part in x.path]
        check(s, f"{fixture.srv.name} never saw {path_part}: {fixture.seen}")
        return s[-1]

    base = f"http://wiki.local:{E}"

    # --- curl: injected, and the reflection comes back scrubbed.
    rc, out, err = sh(f"curl -sS -D - {base}/snippets/curl", "curl")
    check(out.startswith("HTTP/1.1 200"), f"curl: {out}")
    up = last(echo, "/snippets/curl")
    check(up.header_all("Authorization") == ["Bearer " + wiki], f"curl: not injected: {up}")
    check(up.header("User-Agent", ).startswith("curl/"), f"curl UA: {up}")
    check("Bearer [redacted:wiki-token]" in out, f"curl: no redaction in\n{out}")
    assert_no_secret(out + err, wiki, "curl's output")
    # --- wget and Python's urllib.
    rc, out, err = sh(f"wget -q -O - {base}/snippets/wget", "wget")
    up = last(echo, "/snippets/wget")
    check(up.header_all("Authorization") == ["Bearer " + wiki] and
          "wget" in up.header("User-Agent").lower(), f"wget: {up}")
    check("[redacted:wiki-token]" in out, f"wget output: {out}")
    py = ("import urllib.request as u; r = u.urlopen('%s/snippets/py', timeout=20); "
          "print(r.status); print(r.read().decode())" % base)
    rc, out, err = sh(f"python3 -c {shlex.quote(py)}", "python urllib")
    up = last(echo, "/snippets/py")
    check(out.startswith("200") and up.header_all("Authorization") == ["Bearer " + wiki],
          f"urllib: {out} {up}")
    check("Python-urllib" in up.header("User-Agent"), f"urllib UA: {up}")
    # --- git clone over smart HTTP: every request carries the token (the server answers
    # 401 to any that does not), and the files arrive.
    rc, out, err = sh(f"git clone -q http://git.local:{G}/repo.git /workspace/repo && "
                      f"cat /workspace/repo/README", "git clone")
    check(out == "hello from git over credproxy\n", f"git clone: {out} {err}")
    check(len(git.seen) >= 2 and all(s.header("Authorization") == "Bearer " + git_tok
                                     for s in git.seen), f"git requests: {git.seen}")
    check(any(s.method == "POST" and "git-upload-pack" in s.path for s in git.seen),
          f"no upload-pack POST: {git.seen}")
    assert_no_secret(out + err, git_tok, "git's output")

    # --- refusals reach the client with the reason.
    def refused_in(script, status, *words):
        rc, out, err = sh(script, f"refused {status}", want_rc=None)
        head = out.replace("\r\n", "\n").split("\n\n")[0]
        check(head.startswith(f"HTTP/1.1 {status}"), f"{script}: expected {status}:\n{out}{err}")
        why = [ln for ln in head.splitlines() if ln.lower().startswith("x-credproxy-reason:")]
        check(why, f"{script}: no X-Credproxy-Reason:\n{head}")
        for w in words:
            check(w.lower() in why[0].lower(), f"{script}: reason {why[0]!r} lacks {w!r}")
        return why[0]
    n = len(echo.seen)
    refused_in("curl -s -D - http://evil.example/", 403, "evil.example", f"profile {PROFILE}")
    refused_in(f"curl -s -D - -X DELETE {base}/snippets/x", 403, "method", f"profile {PROFILE}")
    refused_in(f"curl -s -D - {base}/admin", 403, "path", f"profile {PROFILE}")
    refused_in(f"curl -s -D - -H 'Host: evil.example' {base}/snippets/x", 400)
    refused_in(f"curl -s -D - http://a.corp.local:{E}/", 403, "loopback", f"profile {PROFILE}")
    # curl and Python rewrite numeric hosts (and 127.0.0.1 is in NO_PROXY): a raw request
    # to the proxy listener carries the odd spelling as an agent's own code could.
    raw = ("import socket; s = socket.create_connection(('127.0.0.1', 3128), 10); "
           "s.sendall(b'GET http://2130706433/ HTTP/1.1\\r\\nHost: 2130706433\\r\\n\\r\\n'); "
           "print(s.recv(4096).decode(errors='replace'))")
    refused_in(f"python3 -c {shlex.quote(raw)}", 400)
    check(len(echo.seen) == n, f"refused requests reached the upstream: {echo.seen[n:]}")
    # CONNECT to a port no rule names: curl reports the proxy's 403.
    rc, out, err = sh("curl -sS -o /dev/null -w '%{http_code}' https://wiki.local:8443/", "CONNECT",
                      want_rc=None)
    check(rc != 0 and ("403" in err or out.strip() == "403"), f"CONNECT :8443: {rc} {out} {err}")

    # --- no route around the proxy.
    rc, out, err = sh(f"curl --noproxy '*' -sS -m 5 http://127.0.0.1:{E}/direct", "noproxy",
                      want_rc=None)
    check(rc != 0, f"curl --noproxy reached something: {rc} {out}")
    rc, out, err = sh(f"curl --noproxy '*' -sS -m 5 http://wiki.local:{E}/direct", "noproxy name",
                      want_rc=None)
    check(rc != 0, f"curl --noproxy by name: {rc} {out}")
    ip = host_ipv4()
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", 0))
    lst.listen(8)
    lst.settimeout(0.2)
    accepted = []

    def acc():
        while not stop.is_set():
            try:
                accepted.append(lst.accept()[0])
            except OSError:
                pass
    stop = threading.Event()
    threading.Thread(target=acc, daemon=True).start()
    port = lst.getsockname()[1]
    targets = ["127.0.0.1"] + ([ip] if ip else [])
    for addr in targets:
        py = ("import socket,sys\ns=socket.socket(); s.settimeout(5)\n"
              "try:\n    s.connect((%r, %d)); print('CONNECTED')\n"
              "except OSError as e:\n    print('ERR', e.errno, e)\n" % (addr, port))
        rc, out, err = sh(f"python3 -c {shlex.quote(py)}", f"direct connect {addr}")
        check(out.startswith("ERR"), f"direct connect to {addr}:{port} from the sandbox: {out}")
    stop.set()
    lst.close()
    check(not accepted, f"a direct connection reached the host: {accepted}")
    n = len(echo.seen)
    check(all("/direct" not in s.path for s in echo.seen), "a --noproxy request arrived")

    # --- redirect: curl -L follows; the other host gets no credential.
    rc, out, err = sh(f"curl -sS -L 'http://redir.local:{E}/redir?to=http://other.local:{E}/landing'",
                      "redirect")
    seen = echo.seen[n:]
    check([s.header("Host") for s in seen] == [f"redir.local:{E}", f"other.local:{E}"],
          f"redirect chain: {seen}")
    check(seen[0].header_all("Authorization") == ["Bearer " + wiki], f"redir.local: {seen[0]}")
    check(seen[1].header_all("Authorization") == [], f"credential followed the redirect: {seen[1]}")
    check("Authorization" not in out, f"landing page shows a credential: {out}")
    # --- base64 reflection scrubbed inside the sandbox too.
    rc, out, err = sh(f"curl -sS {base}/snippets/b64 > /workspace/b64; cat /workspace/b64", "b64")
    check("[redacted:wiki-token]" in out, f"b64: {out}")
    assert_no_secret(out, wiki, "the base64 echo in the sandbox")

    # --- HTTPS: the sandbox is given credproxy's CA in the usual variables.
    with open(st.path("state/credproxy/ca.crt")) as f:
        ca_lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("-----")]
    # The bundle is the system store plus the platform CA (too long to print): each
    # variable names a file holding the CA's first and last base64 lines.
    first, lastl = ca_lines[0], ca_lines[-1]
    script = ("for v in " + " ".join(CA_VARS) + "; do eval \"f=\\${$v}\"; "
              f"echo \"$v=$f $(grep -cxF -e {shlex.quote(first)} -e {shlex.quote(lastl)} "
              "\"$f\" 2>&1)\"; done")
    rc, out, err = sh(script, "CA variables")
    for v in CA_VARS:
        got = [ln for ln in out.splitlines() if ln.startswith(v + "=")]
        check(got and got[0].split("=", 1)[1].startswith("/") and got[0].endswith(" 2"),
              f"{v} does not name a file holding credproxy's CA: {got}\n{out}")
    n = len(tls.seen)
    rc, out, err = sh(f"curl -sS https://tls.local:{T}/snippets/tls", "curl https")
    up = last(tls, "/snippets/tls")
    check(up.header_all("Authorization") == ["Bearer " + wiki], f"https injection: {up}")
    check("Bearer [redacted:wiki-token]" in out, f"https response: {out}")
    py = ("import urllib.request as u; print(u.urlopen('https://tls.local:%d/snippets/pytls', "
          "timeout=20).status)" % T)
    rc, out, err = sh(f"python3 -c {shlex.quote(py)}", "urllib https")
    check(out.strip() == "200", f"urllib https: {out} {err}")
    check(last(tls, "/snippets/pytls").header("Authorization") == "Bearer " + wiki, "urllib https")
    rc, out, err = sh(f"wget -q -O - https://tls.local:{T}/snippets/wgettls", "wget https")
    check(last(tls, "/snippets/wgettls").header("Authorization") == "Bearer " + wiki, "wget https")
    # --- a blind tunnel: the client sees the upstream's own certificate (test CA).
    with open(test_ca) as f:
        test_ca_pem = f.read()
    script = (f"cat > /tmp/test-ca.pem <<'EOF'\n{test_ca_pem}EOF\n"
              f"curl -sS --cacert /tmp/test-ca.pem -H 'Authorization: Bearer agent-own' "
              f"https://plain.local:{T}/blind")
    rc, out, err = sh(script, "blind tunnel")
    up = last(tls, "/blind")
    check(up.header_all("Authorization") == ["Bearer agent-own"], f"blind tunnel: {up}")
    # ...and the same host with credproxy's CA fails (it is not intercepted).
    rc, out, err = sh(f"curl -sS https://plain.local:{T}/blind2", "blind with platform CA",
                      want_rc=None)
    check(rc == 60 or "certificate" in err.lower(), f"blind tunnel verified with the platform CA? "
          f"{rc} {err}")

    # --- the egress log names the run's requests; no value anywhere in credproxy's log.
    log = st.log("credproxy")
    check("msg=egress" in log and f"profile={PROFILE}" in log, "no egress lines for the sandbox")
    for s in (wiki, git_tok):
        assert_no_secret(log, s, "credproxy.log")
    check(st.pid("credproxy") == cp_pid, "credproxy restarted during the test")


if __name__ == "__main__":
    run_test(main)
