"""mitmproxy addon for bench/proxy: the injection a Python egress proxy does, rule for rule.

Like credproxy's bench profile: requests to an allowed host:port with an allowed method get
`Authorization: Bearer <secret>` (the secret read once from BENCH_SECRET_FILE); anything else is
answered 403 by the proxy itself. BENCH_ALLOW is a comma-separated list of host:port.

    mitmdump -s bench/proxy/inject_addon.py   (with BENCH_SECRET_FILE and BENCH_ALLOW set)
"""
import os

from mitmproxy import http


class Inject:
    def __init__(self):
        with open(os.environ["BENCH_SECRET_FILE"]) as f:
            self.value = "Bearer " + f.read().strip()
        self.allow = set()
        for hp in os.environ.get("BENCH_ALLOW", "").split(","):
            if hp:
                host, _, port = hp.rpartition(":")
                self.allow.add((host, int(port)))

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if req.method != "GET" or (req.pretty_host, req.port) not in self.allow:
            flow.response = http.Response.make(
                403, b"no rule\n", {"Content-Type": "text/plain"})
            return
        req.headers["Authorization"] = self.value


addons = [Inject()]
