/* Unit tests for credproxy's egress log (credproxy/egress.c): records committed per loop turn and
 * served by run and seq over a real ipc:// control socket, pages, bad requests, the allow-list,
 * the bounded queue, untrusted strings, the logfmt line, and records surviving a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>
#include <zmq.h>

#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/util.h"

#include "cp.h"
#include "credproxy.pb-c.h"

static char s_dir[64];
static char s_ep[128];
static char s_db[128];

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-egress-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(s_ep, sizeof s_ep, "ipc://%s/ctl.sock", s_dir);
	snprintf(s_db, sizeof s_db, "%s/egress.db", s_dir);
	ahp_log_init("test_cp_egress", AHP_LOG_ERROR);
	return 0;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Each test starts from an empty log. */
static int
s_fresh(void **state)
{
	(void)state;
	char p[160];
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", s_db, sfx[i]);
		unlink(p);
	}
	return 0;
}

typedef struct {
	struct event_base *base;
	cp_egress_t *eg;
	ahp_rpc_client_t *cl;
} fixture_t;

static void
s_open(fixture_t *f, const ahp_rpc_allow_t *allow)
{
	char err[256] = "";
	if (f->base == NULL)
		f->base = event_base_new();
	assert_non_null(f->base);
	f->eg = cp_egress_new(f->base, s_db, s_ep, allow, err, sizeof err);
	if (f->eg == NULL)
		fail_msg("cp_egress_new: %s", err);
	if (f->cl == NULL)
		f->cl = ahp_rpc_client_new(NULL, s_ep);
	assert_non_null(f->cl);
}

/* The client goes with the server: a request sent just as a server closes
 * may be queued on the dying connection and lost, so each server gets a
 * client of its own. */
static void
s_close(fixture_t *f)
{
	cp_egress_destroy(&f->eg);
	assert_null(f->eg);
	ahp_rpc_client_destroy(&f->cl);
}

static void
s_done(fixture_t *f)
{
	s_close(f);
	event_base_free(f->base);
	f->base = NULL;
}

/* One turn of the daemon's loop. */
static void
s_turn(fixture_t *f)
{
	event_base_loop(f->base, EVLOOP_NONBLOCK);
}

/* Sends body (retrying until the DEALER is connected) and returns its id. */
static uint64_t
s_send(fixture_t *f, const void *body, size_t len)
{
	for (int i = 0; i < 500; i++) {
		uint64_t id = ahp_rpc_client_send(f->cl, body, len);
		if (id != 0)
			return id;
		s_turn(f);
		usleep(2000);
	}
	fail_msg("the client never connected");
	return 0;
}

/* Turns the loop until the reply to id arrives. Returns its body (caller
 * frees) and sets *terr (transport error status, 0 for a reply). */
static uint8_t *
s_wait(fixture_t *f, uint64_t id, size_t *len, int *terr)
{
	int64_t deadline = ahp_mono_ms() + 5000;
	while (ahp_mono_ms() < deadline) {
		s_turn(f);
		uint64_t rid;
		uint8_t *body = NULL;
		int rc = ahp_rpc_client_recv(f->cl, &rid, &body, len, terr);
		assert_true(rc >= 0);
		if (rc == 1 && rid == id)
			return body;
		free(body);
		if (rc == 0)
			usleep(1000);
	}
	fail_msg("no reply within 5 s");
	return NULL;
}

static size_t
s_pack_list(uint8_t *buf, size_t cap, const char *run, uint64_t after, uint32_t limit)
{
	Ahp__Cp__Request req = AHP__CP__REQUEST__INIT;
	Ahp__Cp__EgressListRequest lr = AHP__CP__EGRESS_LIST_REQUEST__INIT;
	lr.run_id = (char *)run;
	lr.after_seq = after;
	lr.limit = limit;
	req.body_case = AHP__CP__REQUEST__BODY_EGRESS_LIST;
	req.egress_list = &lr;
	size_t n = ahp__cp__request__get_packed_size(&req);
	assert_true(n <= cap);
	return ahp__cp__request__pack(&req, buf);
}

/* A list call; the reply is decoded (caller frees). */
static Ahp__Cp__Reply *
s_list(fixture_t *f, const char *run, uint64_t after, uint32_t limit)
{
	uint8_t buf[256];
	size_t n = s_pack_list(buf, sizeof buf, run, after, limit);
	uint64_t id = s_send(f, buf, n);
	size_t len;
	int terr;
	uint8_t *body = s_wait(f, id, &len, &terr);
	assert_int_equal(terr, 0);
	Ahp__Cp__Reply *rep = ahp__cp__reply__unpack(NULL, len, body);
	free(body);
	assert_non_null(rep);
	return rep;
}

static void
s_record(fixture_t *f, const char *run, const char *method, const char *host, const char *path,
         int status, bool allowed, const char *reason)
{
	cp_egress_rec_t r = {
	    .run = run,
	    .profile = run[0] ? "release-notes" : "",
	    .method = method,
	    .host = host,
	    .port = 80,
	    .path = path,
	    .status = status,
	    .bytes_up = 7,
	    .bytes_down = 123,
	    .duration_ms = 4,
	    .allowed = allowed,
	    .rule = allowed ? "release-notes#0" : "",
	    .reason = reason,
	    .injected = allowed ? "Authorization" : "",
	    .redactions = 0,
	};
	cp_egress_record(f->eg, &r);
}

/* Records of two runs and a provider route, then pages by run and seq. */
static void
test_record_and_query(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	char path[64];
	for (int i = 0; i < 10; i++) {
		snprintf(path, sizeof path, "/a/%d", i);
		s_record(&f, "run-a", "GET", "wiki.local", path, 200, true, "");
		snprintf(path, sizeof path, "/b/%d", i);
		s_record(&f, "run-b", "POST", "evil.example", path, 403, false,
		         "no rule for evil.example in profile release-notes");
	}
	s_record(&f, "", "POST", "mock", "/v1/chat/completions", 200, true, "");
	s_turn(&f);

	Ahp__Cp__Reply *rep = s_list(&f, "run-a", 0, 0);
	assert_null(rep->error);
	assert_int_equal(rep->body_case, AHP__CP__REPLY__BODY_EGRESS_LIST);
	Ahp__Cp__EgressListReply *l = rep->egress_list;
	assert_int_equal(l->n_records, 10);
	assert_false(l->more);
	assert_int_equal(strlen(l->log_id), 32);
	uint64_t prev = 0;
	for (size_t i = 0; i < l->n_records; i++) {
		Ahp__Cp__EgressRecord *r = l->records[i];
		snprintf(path, sizeof path, "/a/%zu", i);
		assert_true(r->seq > prev);
		prev = r->seq;
		assert_string_equal(r->run, "run-a");
		assert_string_equal(r->profile, "release-notes");
		assert_string_equal(r->method, "GET");
		assert_string_equal(r->host, "wiki.local");
		assert_int_equal(r->port, 80);
		assert_string_equal(r->path, path);
		assert_int_equal(r->status, 200);
		assert_int_equal(r->bytes_up, 7);
		assert_int_equal(r->bytes_down, 123);
		assert_int_equal(r->duration_ms, 4);
		assert_true(r->allowed);
		assert_string_equal(r->rule, "release-notes#0");
		assert_string_equal(r->reason, "");
		assert_string_equal(r->injected, "Authorization");
		assert_int_equal(r->redactions, 0);
		assert_true(r->ts_ms > 1700000000000LL);
	}
	assert_int_equal(l->last_seq, prev);
	uint64_t third = l->records[2]->seq;
	ahp__cp__reply__free_unpacked(rep, NULL);

	/* After a seq: only what follows it. */
	rep = s_list(&f, "run-a", third, 0);
	assert_int_equal(rep->egress_list->n_records, 7);
	assert_string_equal(rep->egress_list->records[0]->path, "/a/3");
	ahp__cp__reply__free_unpacked(rep, NULL);

	/* Pages of 4: more until the last. */
	uint64_t after = 0;
	size_t seen = 0, pages = 0;
	for (;;) {
		rep = s_list(&f, "run-b", after, 4);
		l = rep->egress_list;
		for (size_t i = 0; i < l->n_records; i++) {
			snprintf(path, sizeof path, "/b/%zu", seen + i);
			assert_string_equal(l->records[i]->path, path);
			assert_false(l->records[i]->allowed);
			assert_int_equal(l->records[i]->status, 403);
			assert_string_equal(l->records[i]->reason,
			                    "no rule for evil.example in profile release-notes");
			assert_string_equal(l->records[i]->rule, "");
		}
		seen += l->n_records;
		pages++;
		after = l->last_seq;
		bool more = l->more;
		assert_int_equal(l->n_records, more ? 4 : 2);
		ahp__cp__reply__free_unpacked(rep, NULL);
		if (!more)
			break;
	}
	assert_int_equal(seen, 10);
	assert_int_equal(pages, 3);

	/* Past the end: nothing, and last_seq stays the cursor. */
	rep = s_list(&f, "run-b", after, 0);
	assert_int_equal(rep->egress_list->n_records, 0);
	assert_int_equal(rep->egress_list->last_seq, after);
	assert_false(rep->egress_list->more);
	ahp__cp__reply__free_unpacked(rep, NULL);

	/* Provider routes are the records without a run. */
	rep = s_list(&f, "", 0, 0);
	assert_int_equal(rep->egress_list->n_records, 1);
	assert_string_equal(rep->egress_list->records[0]->host, "mock");
	assert_string_equal(rep->egress_list->records[0]->profile, "");
	ahp__cp__reply__free_unpacked(rep, NULL);

	/* An unknown run has no records (not an error). */
	rep = s_list(&f, "nobody", 0, 0);
	assert_null(rep->error);
	assert_int_equal(rep->egress_list->n_records, 0);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* A query sees what was recorded in the same turn (it commits first). */
static void
test_query_sees_uncommitted(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	uint8_t buf[256];
	size_t n = s_pack_list(buf, sizeof buf, "run-c", 0, 0);
	uint64_t id = s_send(&f, buf, n);
	/* Recorded after the request was sent, before the loop runs again. */
	s_record(&f, "run-c", "GET", "wiki.local", "/x", 200, true, "");
	size_t len;
	int terr;
	uint8_t *body = s_wait(&f, id, &len, &terr);
	Ahp__Cp__Reply *rep = ahp__cp__reply__unpack(NULL, len, body);
	free(body);
	assert_non_null(rep);
	assert_int_equal(rep->egress_list->n_records, 1);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* Closing and opening the log again keeps every record, its seq and the log
 * id; new records continue the seqs. */
static void
test_survives_reopen(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	for (int i = 0; i < 5; i++)
		s_record(&f, "run-d", "GET", "wiki.local", "/before", 200, true, "");
	s_turn(&f);
	Ahp__Cp__Reply *rep = s_list(&f, "run-d", 0, 0);
	assert_int_equal(rep->egress_list->n_records, 5);
	uint64_t last = rep->egress_list->last_seq;
	char log_id[64];
	snprintf(log_id, sizeof log_id, "%s", rep->egress_list->log_id);
	ahp__cp__reply__free_unpacked(rep, NULL);
	/* Recorded and never given a turn: destroy commits it. */
	s_record(&f, "run-d", "GET", "wiki.local", "/at-exit", 200, true, "");
	s_close(&f);

	s_open(&f, NULL);
	rep = s_list(&f, "run-d", 0, 0);
	Ahp__Cp__EgressListReply *l = rep->egress_list;
	assert_int_equal(l->n_records, 6);
	assert_string_equal(l->log_id, log_id);
	assert_int_equal(l->records[4]->seq, last);
	assert_string_equal(l->records[5]->path, "/at-exit");
	assert_true(l->records[5]->seq > last);
	last = l->last_seq;
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_record(&f, "run-d", "GET", "wiki.local", "/after", 200, true, "");
	s_turn(&f);
	rep = s_list(&f, "run-d", last, 0);
	assert_int_equal(rep->egress_list->n_records, 1);
	assert_true(rep->egress_list->records[0]->seq > last);
	assert_string_equal(rep->egress_list->records[0]->path, "/after");
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);

	/* A new log (the file deleted) has a new id. */
	s_fresh(NULL);
	s_open(&f, NULL);
	rep = s_list(&f, "run-d", 0, 0);
	assert_int_equal(rep->egress_list->n_records, 0);
	assert_string_not_equal(rep->egress_list->log_id, log_id);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* With a retention, records older than it are deleted when records are next
 * written; newer ones stay. */
static void
test_retention(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	for (int i = 0; i < 4; i++)
		s_record(&f, "run-r", "GET", "wiki.local", "/old", 200, true, "");
	s_turn(&f);
	s_close(&f);
	/* Age three of them by 40 days behind the daemon's back. */
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(s_db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "UPDATE egress SET ts_ms = ts_ms - 40*86400*1000"
	                              " WHERE seq IN (SELECT seq FROM egress LIMIT 3)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	s_open(&f, NULL);
	cp_egress_set_retention(f.eg, 30);
	s_record(&f, "run-r", "GET", "wiki.local", "/new", 200, true, "");
	s_turn(&f);
	Ahp__Cp__Reply *rep = s_list(&f, "run-r", 0, 0);
	assert_int_equal(rep->egress_list->n_records, 2);
	assert_string_equal(rep->egress_list->records[0]->path, "/old");
	assert_string_equal(rep->egress_list->records[1]->path, "/new");
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* Each bad request gets its typed error; the socket keeps serving. */
static void
test_bad_requests(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	static const struct {
		const char *run;
		uint32_t limit;
		const char *want;
	} cases[] = {
	    {"run-x", 1001, "limit must be at most 1000"},
	    {"a/b", 0, "run_id must be empty or match [A-Za-z0-9-]{1,64}"},
	    {"x\x1b[2J", 0, "run_id must be empty or match [A-Za-z0-9-]{1,64}"},
	    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0,
	     "run_id must be empty or match [A-Za-z0-9-]{1,64}"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		Ahp__Cp__Reply *rep = s_list(&f, cases[i].run, 0, cases[i].limit);
		assert_non_null(rep->error);
		assert_int_equal(rep->error->status, AHP__STATUS__ERR_BAD_REQUEST);
		assert_string_equal(rep->error->message, cases[i].want);
		assert_int_equal(rep->body_case, AHP__CP__REPLY__BODY__NOT_SET);
		ahp__cp__reply__free_unpacked(rep, NULL);
	}
	/* A limit of exactly 1000 is fine. */
	Ahp__Cp__Reply *rep = s_list(&f, "run-x", 0, 1000);
	assert_null(rep->error);
	ahp__cp__reply__free_unpacked(rep, NULL);

	/* No body: unknown method. Not protobuf: malformed. */
	static const struct {
		const char *bytes;
		size_t len;
		int status;
		const char *want;
	} raw[] = {
	    {"", 0, AHP__STATUS__ERR_UNKNOWN_METHOD, "absent or unknown request body"},
	    {"\xff\xff\xff", 3, AHP__STATUS__ERR_BAD_REQUEST, "malformed request"},
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		uint64_t id = s_send(&f, raw[i].bytes, raw[i].len);
		size_t len;
		int terr;
		uint8_t *body = s_wait(&f, id, &len, &terr);
		assert_int_equal(terr, 0);
		rep = ahp__cp__reply__unpack(NULL, len, body);
		free(body);
		assert_non_null(rep);
		assert_non_null(rep->error);
		assert_int_equal(rep->error->status, raw[i].status);
		assert_string_equal(rep->error->message, raw[i].want);
		ahp__cp__reply__free_unpacked(rep, NULL);
	}
	/* Over the control socket's 64 KiB: the transport refuses it. */
	size_t big = 70 * 1024;
	uint8_t *huge = calloc(1, big);
	assert_non_null(huge);
	uint64_t id = s_send(&f, huge, big);
	free(huge);
	size_t len;
	int terr;
	uint8_t *body = s_wait(&f, id, &len, &terr);
	assert_int_equal(terr, AHP__STATUS__ERR_TOO_LARGE);
	free(body);

	rep = s_list(&f, "run-x", 0, 0);
	assert_null(rep->error);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* More requests than one wake-up serves, sent at once: every one is
 * answered (ZMQ_FD is edge-triggered; nothing may be left unread). */
static void
test_many_pipelined(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	s_record(&f, "run-e", "GET", "wiki.local", "/p", 200, true, "");
	/* The first one connects. */
	Ahp__Cp__Reply *rep = s_list(&f, "run-e", 0, 0);
	ahp__cp__reply__free_unpacked(rep, NULL);
	enum { N = 200 };
	uint8_t buf[256];
	size_t n = s_pack_list(buf, sizeof buf, "run-e", 0, 0);
	for (int i = 0; i < N; i++)
		assert_true(s_send(&f, buf, n) != 0);
	int got = 0;
	int64_t deadline = ahp_mono_ms() + 10000;
	while (got < N && ahp_mono_ms() < deadline) {
		s_turn(&f);
		uint64_t rid;
		uint8_t *body;
		size_t len;
		int terr;
		int rc = ahp_rpc_client_recv(f.cl, &rid, &body, &len, &terr);
		assert_true(rc >= 0);
		if (rc == 0) {
			usleep(500);
			continue;
		}
		assert_int_equal(terr, 0);
		rep = ahp__cp__reply__unpack(NULL, len, body);
		free(body);
		assert_non_null(rep);
		assert_int_equal(rep->egress_list->n_records, 1);
		ahp__cp__reply__free_unpacked(rep, NULL);
		got++;
	}
	assert_int_equal(got, N);
	s_done(&f);
}

/* A batch bigger than two multi-row INSERTs (64 rows each) and a rest:
 * every record is there once, in the order recorded, with rising seqs. */
static void
test_batch_order(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	enum { N = 2 * 64 + 22 };
	for (int i = 0; i < N; i++) {
		char path[32];
		snprintf(path, sizeof path, "/b/%d", i);
		s_record(&f, "run-o", "GET", "wiki.local", path, 200, true, "");
	}
	s_turn(&f);
	Ahp__Cp__Reply *rep = s_list(&f, "run-o", 0, 1000);
	Ahp__Cp__EgressListReply *l = rep->egress_list;
	assert_int_equal(l->n_records, N);
	for (int i = 0; i < N; i++) {
		char path[32];
		snprintf(path, sizeof path, "/b/%d", i);
		assert_string_equal(l->records[i]->path, path);
		if (i > 0)
			assert_int_equal(l->records[i]->seq, l->records[i - 1]->seq + 1);
	}
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* A peer not on the allow-list is closed as it is accepted (it holds no
 * descriptor of the daemon); its client reports permission_denied. */
static void
test_allow_list(void **state)
{
	(void)state;
	fixture_t f = {0};
	ahp_rpc_allow_t allow;
	memset(&allow, 0, sizeof allow);
	uid_t other = getuid() == 54321 ? 54322 : 54321;
	assert_int_equal(ahp_rpc_allow_add_uid(&allow, other), 0);
	s_open(&f, &allow);
	uint8_t buf[256];
	size_t n = s_pack_list(buf, sizeof buf, "run-f", 0, 0);
	uint8_t *body = NULL;
	size_t len = 0;
	int status = 0;
	char err[256];
	assert_int_equal(
	    ahp_rpc_call(f.cl, buf, n, 2000, 0, 0, &body, &len, &status, err, sizeof err), -1);
	assert_int_equal(status, AHP__STATUS__ERR_PERMISSION_DENIED);
	assert_non_null(strstr(err, "the daemon closes its connections at accept"));
	assert_null(body);
	s_close(&f);

	/* Our own uid on the list: served. */
	assert_int_equal(ahp_rpc_allow_add_uid(&allow, getuid()), 0);
	s_open(&f, &allow);
	Ahp__Cp__Reply *rep = s_list(&f, "run-f", 0, 0);
	assert_null(rep->error);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* The queue holds at most 8192 records per turn; the rest are dropped and
 * the proxy goes on. Pages of 1000 read them back. */
static void
test_queue_bounded(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	for (int i = 0; i < 8192 + 50; i++)
		s_record(&f, "run-g", "GET", "wiki.local", "/q", 200, true, "");
	s_turn(&f);
	s_record(&f, "run-g", "GET", "wiki.local", "/next-turn", 200, true, "");
	s_turn(&f);
	uint64_t after = 0;
	size_t total = 0;
	char last_path[32] = "";
	for (;;) {
		Ahp__Cp__Reply *rep = s_list(&f, "run-g", after, 1000);
		Ahp__Cp__EgressListReply *l = rep->egress_list;
		total += l->n_records;
		after = l->last_seq;
		if (l->n_records > 0)
			snprintf(last_path, sizeof last_path, "%s",
			         l->records[l->n_records - 1]->path);
		bool more = l->more;
		ahp__cp__reply__free_unpacked(rep, NULL);
		if (!more)
			break;
	}
	assert_int_equal(total, 8192 + 1);
	assert_string_equal(last_path, "/next-turn");
	s_done(&f);
}

/* Untrusted strings are stored as valid UTF-8 and bounded; a long path is
 * cut at 2048 bytes. Replies stay under 1 MiB: 1000 records with long paths
 * come in more than one page. */
static void
test_untrusted_strings(void **state)
{
	(void)state;
	fixture_t f = {0};
	s_open(&f, NULL);
	s_record(&f, "run-h", "GET", "wiki.local", "/caf\xc3\xa9/\xff\xfe", 200, true, "");
	static char longpath[5000];
	memset(longpath, 'p', sizeof longpath - 1);
	longpath[0] = '/';
	for (int i = 0; i < 1000; i++)
		s_record(&f, "run-h", "GET", "wiki.local", longpath, 200, true, "");
	s_turn(&f);
	Ahp__Cp__Reply *rep = s_list(&f, "run-h", 0, 1000);
	Ahp__Cp__EgressListReply *l = rep->egress_list;
	assert_string_equal(l->records[0]->path, "/caf\xc3\xa9/\xef\xbf\xbd\xef\xbf\xbd");
	assert_int_equal(strlen(l->records[1]->path), 2048);
	/* 1001 records of ~2.1 KB: the first page stops before 1 MiB. */
	assert_true(l->more);
	assert_true(l->n_records < 1000 && l->n_records > 400);
	assert_true(ahp__cp__reply__get_packed_size(rep) <= 1024 * 1024);
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* A database that cannot be opened: refused at once when not root; as root
 * (opened in the loop, after the privilege drop) queries say it is not open
 * and records are dropped, the control socket keeps serving. */
static void
test_db_unavailable(void **state)
{
	(void)state;
	char bad[160], err[256] = "";
	snprintf(bad, sizeof bad, "%s/missing-dir/egress.db", s_dir);
	struct event_base *base = event_base_new();
	assert_non_null(base);
	cp_egress_t *eg = cp_egress_new(base, bad, s_ep, NULL, err, sizeof err);
	if (geteuid() != 0) {
		assert_null(eg);
		assert_non_null(strstr(err, "missing-dir/egress.db"));
		event_base_free(base);
		return;
	}
	assert_non_null(eg);
	fixture_t f = {.base = base, .eg = eg};
	f.cl = ahp_rpc_client_new(NULL, s_ep);
	assert_non_null(f.cl);
	s_record(&f, "run-u", "GET", "wiki.local", "/x", 200, true, "");
	s_turn(&f);
	uint8_t buf[256];
	size_t n = s_pack_list(buf, sizeof buf, "run-u", 0, 0);
	uint64_t id = s_send(&f, buf, n);
	size_t len;
	int terr;
	uint8_t *body = s_wait(&f, id, &len, &terr);
	assert_int_equal(terr, 0);
	Ahp__Cp__Reply *rep = ahp__cp__reply__unpack(NULL, len, body);
	free(body);
	assert_non_null(rep);
	assert_non_null(rep->error);
	assert_int_equal(rep->error->status, AHP__STATUS__ERR_UNAVAILABLE);
	assert_string_equal(rep->error->message,
	                    "the egress log database is not open (see credproxy's log)");
	ahp__cp__reply__free_unpacked(rep, NULL);
	s_done(&f);
}

/* The logfmt line has exactly the contract's fields, in order. */
static void
test_log_line(void **state)
{
	(void)state;
	char path[160];
	snprintf(path, sizeof path, "%s/stderr.txt", s_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	ahp_log_init("credproxy", AHP_LOG_INFO);
	cp_egress_rec_t r = {
	    .run = "R",
	    .profile = "P",
	    .method = "GET",
	    .host = "wiki.local",
	    .port = 80,
	    .path = "/x",
	    .status = 200,
	    .bytes_up = 0,
	    .bytes_down = 123,
	    .duration_ms = 4,
	    .allowed = true,
	    .rule = "release-notes#0",
	    .reason = "",
	    .injected = "Authorization",
	    .redactions = 0,
	};
	cp_egress_record(NULL, &r); /* the line alone */
	r.run = "";
	r.profile = "";
	r.allowed = false;
	r.status = 403;
	r.rule = "";
	r.injected = "";
	r.method = "POST";
	r.host = "evil.example";
	r.path = "/a b\n";
	r.reason = "no rule for evil.example in profile P";
	cp_egress_record(NULL, &r);
	ahp_log_init("test_cp_egress", AHP_LOG_ERROR);
	dup2(saved, STDERR_FILENO);
	close(saved);
	char buf[2048] = "";
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	close(fd);
	assert_true(n > 0);
	char *l1 = strstr(buf, " msg=egress ");
	assert_non_null(l1);
	char *nl = strchr(l1, '\n');
	assert_non_null(nl);
	*nl = '\0';
	assert_string_equal(l1, " msg=egress run=R profile=P method=GET host=wiki.local port=80 "
	                        "path=/x status=200 up=0 down=123 ms=4 decision=allow "
	                        "rule=release-notes#0 injected=Authorization redactions=0 "
	                        "reason=\"\"");
	char *l2 = strstr(nl + 1, " msg=egress ");
	assert_non_null(l2);
	nl = strchr(l2, '\n');
	assert_non_null(nl);
	*nl = '\0';
	assert_string_equal(l2, " msg=egress run=\"\" profile=\"\" method=POST host=evil.example "
	                        "port=80 path=\"/a b\\n\" status=403 up=0 down=123 ms=4 "
	                        "decision=deny rule=\"\" injected=\"\" redactions=0 "
	                        "reason=\"no rule for evil.example in profile P\"");
	assert_non_null(strstr(buf, "level=info daemon=credproxy msg=egress run=R "));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_record_and_query, s_fresh),
	    cmocka_unit_test_setup(test_query_sees_uncommitted, s_fresh),
	    cmocka_unit_test_setup(test_survives_reopen, s_fresh),
	    cmocka_unit_test_setup(test_retention, s_fresh),
	    cmocka_unit_test_setup(test_bad_requests, s_fresh),
	    cmocka_unit_test_setup(test_many_pipelined, s_fresh),
	    cmocka_unit_test_setup(test_batch_order, s_fresh),
	    cmocka_unit_test_setup(test_allow_list, s_fresh),
	    cmocka_unit_test_setup(test_queue_bounded, s_fresh),
	    cmocka_unit_test_setup(test_untrusted_strings, s_fresh),
	    cmocka_unit_test_setup(test_db_unavailable, s_fresh),
	    cmocka_unit_test(test_log_line),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
