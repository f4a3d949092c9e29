#!/usr/bin/env python3
"""orchestrator --check-config refuses a gateway_url every model call would fail on (a
trailing comment, a space, a URL libcurl cannot parse) with its reason, and accepts a good
one; a profile file name with control bytes is shown escaped, never raw."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import Stack, check, run_test

BAD = {
    "http://127.0.0.1:4711 # my stub":
        "must be a bare URL: no spaces, control characters, '#' or '?'",
    "http://127.0.0.1:1/a b": "must be a bare URL",
    "ftp://127.0.0.1/": "must start with http:// or https://",
    "http://[::1": "Bad IPv6 address",
}


def main(args):
    with Stack(args, "chkconf") as st:
        st.demo_skill()
        orch = os.path.join(st.bin, "orchestrator")

        def run(url):
            st.write_conf(gateway_url=url)
            return subprocess.run([orch, "--home", st.home, "--check-config"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  errors="replace", timeout=30)
        for url, why in BAD.items():
            p = run(url)
            check(p.returncode == 1, f"{url!r}: exit {p.returncode}")
            check(f"config gateway_url: {why}" in p.stderr, f"{url!r}: {p.stderr!r}")
        p = run("http://127.0.0.1:4711/")
        check(p.returncode == 0 and "configuration OK" in p.stdout, f"{p.stdout!r} {p.stderr!r}")

        # A profile whose file name carries a terminal escape: reported, escaped.
        st.write("etc/profiles/a\x1b]0;PWN\x07.yaml", "name: [broken\n")
        p = run("http://127.0.0.1:4711/")
        check(p.returncode == 1, f"bad profile: exit {p.returncode}")
        check("\x1b" not in p.stderr + p.stdout and "a\\x1b]0;PWN\\x07.yaml" in p.stderr,
              f"not escaped: {p.stderr!r}")


run_test(main)
