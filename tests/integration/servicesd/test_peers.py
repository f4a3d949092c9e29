#!/usr/bin/env python3
"""The socket's allow-list (SO_PEERCRED): a uid not on allow_users is closed as the listener
accepts it (it holds no descriptor of servicesd, which never sees it), and the client says so
with ERR_PERMISSION_DENIED; the allowed user is served. The refused client is run as `nobody` (setpriv), so this needs root; skipped
otherwise."""
import os
import pwd
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svclib import (Servicesd, call_req, check, me, need_servicesd, ok_result,  # noqa: E402
                    run_test)


def main(args):
    if need_servicesd(args):
        return 77
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        print("needs root and setpriv to run a client as another user: skipped")
        return 77
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        print("no user nobody: skipped")
        return 77
    with Servicesd(args, "peers") as s:
        m = s.standard()
        s.start()
        check(s.conf["allow_users"] == me(), "allow_users is the current user")
        mode = os.stat(s.sock).st_mode & 0o777
        check(mode == 0o666, f"socket mode {oct(mode)}: the allow-list decides, not the mode")
        outs = s.send(call_req("publish_summary", {"webhook_id": "t", "content": "x"}),
                      {"describe": {"profile": "both"}}, user="nobody")
        for o in outs:
            te = o.get("transport_error")
            check(te is not None and te["status"] == "ERR_PERMISSION_DENIED",
                  f"nobody was not refused: {o}")
            check(te is not None and te["message"] == f"uid {nobody.pw_uid} (gid "
                  f"{nobody.pw_gid}) may not use this socket (the daemon closes its "
                  "connections at accept)", f"{o}")
        check(not [ln for ln in s.log_lines() if f"uid={nobody.pw_uid}" in ln],
              f"servicesd saw the refused peer:\n{s.log()}")
        check(m.stats()["requests"] == 0 and s.rows() == [],
              "a refused peer's call was carried out")
        # The allowed user, on the same socket.
        cr = s.call("lookup_wiki", {"topic": "durability"})
        check(ok_result(cr)["topic"] == "durability", f"{cr}")
    return 0


run_test(main)
