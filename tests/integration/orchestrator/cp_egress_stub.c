/* A stand-in for credproxy's control socket in the orchestrator's egress tests: credproxy's own
 * egress log (credproxy/egress.c) served from DB on CTL, without the proxy. The test writes
 * records into DB with sqlite3; SIGTERM stops it.
 *
 *   cp_egress_stub DB CTL_ENDPOINT [ALLOWED_USERS] */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "ahp/log.h"
#include "ahp/rpc.h"

#include "cp.h"

static void
s_stop(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

int
main(int argc, char **argv)
{
	char err[512];
	ahp_rpc_allow_t allow;
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: cp_egress_stub DB CTL_ENDPOINT [ALLOWED_USERS]\n");
		return 2;
	}
	ahp_log_init("credproxy", AHP_LOG_INFO);
	memset(&allow, 0, sizeof allow);
	if (argc == 4 && ahp_rpc_allow_parse(&allow, argv[3], NULL, 0, err, sizeof err) != 0) {
		fprintf(stderr, "cp_egress_stub: %s\n", err);
		return 2;
	}
	struct event_base *base = event_base_new();
	if (base == NULL)
		return 1;
	cp_egress_t *eg =
	    cp_egress_new(base, argv[1], argv[2], argc == 4 ? &allow : NULL, err, sizeof err);
	if (eg == NULL) {
		fprintf(stderr, "cp_egress_stub: %s\n", err);
		return 1;
	}
	struct event *term = evsignal_new(base, SIGTERM, s_stop, base);
	struct event *intr = evsignal_new(base, SIGINT, s_stop, base);
	event_add(term, NULL);
	event_add(intr, NULL);
	log_info("serving egress records of %s on %s", argv[1], argv[2]);
	event_base_dispatch(base);
	event_free(term);
	event_free(intr);
	cp_egress_destroy(&eg);
	event_base_free(base);
	return 0;
}
