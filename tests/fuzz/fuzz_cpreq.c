/*
 * credproxy's whole client side: the bytes a sandbox (relay, after a PROXY v2
 * header), the orchestrator (api) or a local client (dev) sends, fed through
 * a real connection into the real engine (proxy.c) with a real policy.
 *
 * The first input byte picks the role; the rest is written to one end of a
 * socketpair whose other end the proxy serves (cp_proxy_adopt), then the
 * write side is shut and the event loop runs until the proxy has closed the
 * connection. Upstreams are names in a hosts file pointing at 127.0.0.1
 * port 9 (nothing listens: connect is refused at once); there is no
 * nameserver, so nothing leaves the machine. Invariant: every connection is
 * closed within a bounded number of loop turns, and nothing leaks (ASan).
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "ahp/log.h"
#include "ahp/profile.h"
#include "ahp/secrets.h"
#include "cp.h"
#include "fuzz.h"

static struct event_base *s_base;
static cp_proxy_t *s_proxy;

static void
s_write(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

static void
s_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static void
s_init(void)
{
	char dir[] = "/tmp/fuzz-cpreq-XXXXXX";
	FUZZ_CHECK(mkdtemp(dir) != NULL);
	char p[512];
	snprintf(p, sizeof p, "%s/profiles", dir);
	FUZZ_CHECK(mkdir(p, 0755) == 0);
	snprintf(p, sizeof p, "%s/secrets", dir);
	FUZZ_CHECK(mkdir(p, 0700) == 0);
	snprintf(p, sizeof p, "%s/profiles/fz.yaml", dir);
	s_write(p,
	        "name: fz\nmodel: mock:x\nsystem_prompt: x\ntools: [exec]\n"
	        "egress:\n"
	        "  - host: a.local\n    methods: [GET, POST, PUT]\n"
	        "    inject: { Authorization: \"Bearer {{secret:tok}}\" }\n"
	        "  - host: b.local:9\n    methods: [GET]\n    paths: [\"/x/\"]\n"
	        "  - host: \"*.w.local\"\n",
	        0644);
	snprintf(p, sizeof p, "%s/secrets/tok", dir);
	s_write(p, "fuzz-secret-value-0123456789", 0600);
	snprintf(p, sizeof p, "%s/hosts", dir);
	s_write(p, "127.0.0.1 a.local b.local c.w.local\n", 0644);
	snprintf(p, sizeof p, "%s/providers.conf", dir);
	s_write(p, "mock http://127.0.0.1:9 none\nkeyed http://127.0.0.1:9/v bearer tok\n", 0644);

	ahp_log_init("fuzz", AHP_LOG_ERROR + 1);
	s_base = event_base_new();
	FUZZ_CHECK(s_base != NULL);
	char hosts[512], prof[512], sec[512], prov[512];
	snprintf(hosts, sizeof hosts, "%s/hosts", dir);
	snprintf(prof, sizeof prof, "%s/profiles", dir);
	snprintf(sec, sizeof sec, "%s/secrets", dir);
	snprintf(prov, sizeof prov, "%s/providers.conf", dir);
	cp_proxy_cfg_t cfg = {
	    .relay_socket = "",
	    .api_socket = "",
	    .dev_listen = "",
	    .dev_profile = "fz",
	    .hosts_file = hosts,
	    .resolv_conf = "",
	    .max_header_bytes = 8192,
	    .max_headers = 32,
	    .header_timeout_s = 1,
	    .idle_timeout_s = 1,
	    .connect_timeout_s = 1,
	    .response_timeout_s = 1,
	    .max_conns = 16,
	};
	char err[256];
	s_proxy = cp_proxy_new(s_base, &cfg, err, sizeof err);
	FUZZ_CHECK(s_proxy != NULL);
	ahp_profiles_t *ps = ahp_profiles_load_dir(prof, dir, s_quiet, NULL);
	FUZZ_CHECK(ps != NULL && ahp_profiles_errors(ps) == 0);
	ahp_secrets_t *secrets = ahp_secrets_load(sec);
	FUZZ_CHECK(secrets != NULL);
	cp_policy_t *pol = cp_policy_new(ps, secrets, err, sizeof err);
	FUZZ_CHECK(pol != NULL);
	cp_providers_t *pv = cp_providers_load(prov, secrets, err, sizeof err);
	FUZZ_CHECK(pv != NULL);
	ahp_profiles_destroy(&ps);
	cp_proxy_set_gen(s_proxy, cp_gen_new(pol, pv, secrets));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (s_base == NULL)
		s_init();
	if (size < 1 || size > 16384)
		return 0;
	int sv[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	int bufsz = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
	cp_proxy_adopt(s_proxy, sv[1], data[0] % 3);
	FUZZ_CHECK(write(sv[0], data + 1, size - 1) == (ssize_t)(size - 1));
	shutdown(sv[0], SHUT_WR);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	char sink[65536];
	/* Each turn either makes progress or waits at most for a 1 s timer. */
	for (int turn = 0; turn < 400 && cp_proxy_conns(s_proxy) > 0; turn++) {
		event_base_loop(s_base, EVLOOP_ONCE);
		ssize_t n;
		while ((n = read(sv[0], sink, sizeof sink - 1)) > 0)
			if (getenv("FUZZ_VERBOSE") != NULL) { /* what the client got */
				sink[n] = '\0';
				fprintf(stderr, "< %.*s\n", (int)strcspn(sink, "\r\n"), sink);
			}
	}
	FUZZ_CHECK(cp_proxy_conns(s_proxy) == 0);
	close(sv[0]);
	return 0;
}
