#!/usr/bin/env python3
"""An option that takes a value given last, with no value (every daemon's `--home` and `--set`,
`sandboxd exec`'s `--profile` and `--timeout`): exit 2 and "DAEMON: OPTION needs a value"
first, then the usage; nothing starts. Each used to say "unknown argument" or "unknown
option" about an option it knows."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../lib"))
from ahptest import check, run_test  # noqa: E402

DAEMONS = ("orchestrator", "credproxy", "servicesd", "approvald", "sandboxd")


def run(argv, home):
    env = dict(os.environ, AHP_HOME=home)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)


def main(args):
    seen = 0
    with tempfile.TemporaryDirectory(prefix="ahp-argv-") as home:
        for d in DAEMONS:
            exe = os.path.join(args.bin, d)
            if not os.access(exe, os.X_OK):
                continue
            seen += 1
            for opt in ("--home", "--set"):
                p = run([exe, opt], home)
                check(p.returncode == 2 and p.stderr.startswith(f"{d}: {opt} needs a value\n")
                      and "usage:" in p.stderr and p.stdout == "",
                      f"{d} {opt}: exit {p.returncode}, stderr {p.stderr!r}")
            # with a value it is taken: the next word is what is judged
            p = run([exe, "--home", home, "--bogus"], home)
            check(p.returncode == 2 and "--bogus" in p.stderr.splitlines()[0],
                  f"{d} --home H --bogus: exit {p.returncode}, stderr {p.stderr!r}")
            check(os.listdir(home) == [], f"{d}: something was made in HOME: {os.listdir(home)}")
        exe = os.path.join(args.bin, "sandboxd")
        if os.access(exe, os.X_OK):
            for opt in ("--profile", "--timeout"):
                p = run([exe, "--home", home, "exec", opt], home)
                check(p.returncode == 2 and
                      p.stderr.startswith(f"sandboxd: exec: {opt} needs a value\n"),
                      f"sandboxd exec {opt}: exit {p.returncode}, stderr {p.stderr!r}")
    check(seen >= 1, f"no daemon built in {args.bin}")
    return 0


if __name__ == "__main__":
    run_test(main)
