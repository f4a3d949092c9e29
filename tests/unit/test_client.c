/* Unit tests for ahp_client: replies reach their owner once; deadlines, forgotten requests,
 * an absent server and a server that goes away, over a real ROUTER on ipc://. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "ahp/client.h"
#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/util.h"

static char s_dir[64];
static char s_ep[128];
static void *s_ctx;

/* What the done callback saw. */
typedef struct {
	int calls;
	uint64_t id;
	int status;
	char message[128];
	char body[64];
} seen_t;

static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	seen_t *s = owner;
	s->calls++;
	s->id = id;
	s->status = status;
	snprintf(s->message, sizeof s->message, "%s", message ? message : "");
	snprintf(s->body, sizeof s->body, "%.*s", (int)len, body ? (const char *)body : "");
}

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-client-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(s_ep, sizeof s_ep, "ipc://%s/d.sock", s_dir);
	s_ctx = zmq_ctx_new();
	ahp_log_init("test_client", AHP_LOG_ERROR);
	return s_ctx ? 0 : -1;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Sends until the DEALER has connected (ZMQ_IMMEDIATE refuses before). */
static uint64_t
s_send_when_connected(ahp_client_t *c, void *owner, const char *body, long timeout_ms)
{
	for (int i = 0; i < 200; i++) {
		uint64_t id = ahp_client_send(c, owner, body, strlen(body), timeout_ms);
		if (id != 0)
			return id;
		usleep(10000);
	}
	return 0;
}

static ahp_rpc_req_t *
s_server_recv(ahp_rpc_server_t *srv)
{
	for (int i = 0; i < 200; i++) {
		ahp_rpc_req_t *req = NULL;
		if (ahp_rpc_server_recv(srv, &req) == 1)
			return req;
		usleep(10000);
	}
	return NULL;
}

static void
s_recv_until(ahp_client_t *c, const seen_t *s)
{
	for (int i = 0; i < 200 && s->calls == 0; i++) {
		ahp_client_recv(c);
		ahp_client_monitor_recv(c);
		if (s->calls == 0)
			usleep(10000);
	}
}

static void
test_reply_reaches_owner_once(void **state)
{
	(void)state;
	ahp_rpc_server_t *srv = ahp_rpc_server_new(s_ctx, s_ep, 0, NULL);
	assert_non_null(srv);
	ahp_client_t *c = ahp_client_new(s_ctx, "testd", s_ep, s_done);
	assert_non_null(c);
	assert_int_equal(ahp_client_present(c), 1);
	seen_t a = {0};
	uint64_t id = s_send_when_connected(c, &a, "ping", 5000);
	assert_true(id != 0);
	assert_int_equal(ahp_client_pending(c), 1);
	ahp_rpc_req_t *req = s_server_recv(srv);
	assert_non_null(req);
	assert_memory_equal(req->body, "ping", 4);
	assert_int_equal(ahp_rpc_server_reply(srv, &req, "pong", 4), 0);
	s_recv_until(c, &a);
	assert_int_equal(a.calls, 1);
	assert_true(a.id == id);
	assert_int_equal(a.status, 0);
	assert_string_equal(a.body, "pong");
	assert_int_equal(ahp_client_pending(c), 0);
	/* Nothing more arrives for it. */
	ahp_client_timers(c, ahp_mono_ms() + 10000, 1000);
	assert_int_equal(a.calls, 1);
	ahp_client_destroy(&c);
	assert_null(c);
	ahp_rpc_server_destroy(&srv);
}

static void
test_deadline_and_forget(void **state)
{
	(void)state;
	ahp_rpc_server_t *srv = ahp_rpc_server_new(s_ctx, s_ep, 0, NULL);
	assert_non_null(srv);
	ahp_client_t *c = ahp_client_new(s_ctx, "testd", s_ep, s_done);
	seen_t late = {0}, gone = {0};
	uint64_t id1 = s_send_when_connected(c, &late, "slow", 100);
	uint64_t id2 = s_send_when_connected(c, &gone, "dropped", 100);
	assert_true(id1 != 0 && id2 != 0 && id1 != id2);
	ahp_client_forget(c, id2);
	ahp_client_forget(c, 987654321); /* unknown ids are ignored */
	int64_t now = ahp_mono_ms();
	/* Not due yet: the next deadline is reported. */
	long next = ahp_client_timers(c, now, 5000);
	assert_true(next > 0 && next <= 100);
	assert_int_equal(late.calls, 0);
	ahp_client_timers(c, now + 200, 5000);
	assert_int_equal(late.calls, 1);
	assert_int_equal(late.status, AHP__STATUS__ERR_TIMEOUT);
	assert_string_equal(late.message, "testd did not answer in time");
	assert_int_equal(gone.calls, 0);
	/* The server answers both after all: both replies are dropped. */
	for (int i = 0; i < 2; i++) {
		ahp_rpc_req_t *req = s_server_recv(srv);
		assert_non_null(req);
		ahp_rpc_server_reply(srv, &req, "late", 4);
	}
	usleep(50000);
	ahp_client_recv(c);
	assert_int_equal(late.calls, 1);
	assert_int_equal(gone.calls, 0);
	ahp_client_destroy(&c);
	ahp_rpc_server_destroy(&srv);
}

static void
test_absent_server(void **state)
{
	(void)state;
	char ep[160];
	snprintf(ep, sizeof ep, "ipc://%s/nobody.sock", s_dir);
	ahp_client_t *c = ahp_client_new(s_ctx, "testd", ep, s_done);
	assert_non_null(c);
	assert_int_equal(ahp_client_present(c), 0);
	seen_t a = {0};
	errno = 0;
	assert_true(ahp_client_send(c, &a, "x", 1, 1000) == 0);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(ahp_client_post(c, "x", 1), -1);
	assert_int_equal(ahp_client_pending(c), 0);
	ahp_client_destroy(&c);
}

static void
test_server_goes_away(void **state)
{
	(void)state;
	ahp_rpc_server_t *srv = ahp_rpc_server_new(s_ctx, s_ep, 0, NULL);
	assert_non_null(srv);
	ahp_client_t *c = ahp_client_new(s_ctx, "testd", s_ep, s_done);
	assert_non_null(ahp_client_monitor_socket(c));
	seen_t a = {0};
	assert_true(s_send_when_connected(c, &a, "work", 60000) != 0);
	ahp_rpc_req_t *req = s_server_recv(srv);
	assert_non_null(req);
	ahp_rpc_req_free(&req);
	ahp_rpc_server_destroy(&srv);
	/* Long before its 60 s deadline, the loss finishes the request. */
	s_recv_until(c, &a);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, AHP__STATUS__ERR_INTERRUPTED);
	assert_string_equal(a.message, "testd went away");
	assert_int_equal(ahp_client_pending(c), 0);
	ahp_client_destroy(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_reaches_owner_once),
	    cmocka_unit_test(test_deadline_and_forget),
	    cmocka_unit_test(test_absent_server),
	    cmocka_unit_test(test_server_goes_away),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
