/* Unit tests for approvald's store: requests, the decision log (seq order, one decision per
 * request), lists, expiry and the log id across a reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approvald.h"

static char s_dir[64];
static char s_path[128];

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/appr-test-store-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(s_path, sizeof s_path, "%s/approvald.db", s_dir);
	return 0;
}

static int
s_teardown(void **state)
{
	(void)state;
	char p[160];
	unlink(s_path);
	snprintf(p, sizeof p, "%s-wal", s_path);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", s_path);
	unlink(p);
	return rmdir(s_dir);
}

static uint64_t
s_insert(appr_store_t *st, const char *run, uint32_t step, int64_t expires_ms)
{
	Ahp__Appr__ApprovalRequest r = AHP__APPR__APPROVAL_REQUEST__INIT;
	r.run_id = (char *)run;
	r.step = step;
	r.profile = "p";
	r.action = "publish_summary";
	r.arguments_json = "{}";
	r.digest = "d";
	r.created_ms = 1000;
	r.expires_ms = expires_ms;
	assert_int_equal(appr_store_insert(st, &r), 0);
	return r.id;
}

static void
s_decide(appr_store_t *st, uint64_t id, int state, const char *by, int rc)
{
	Ahp__Appr__Decision d = AHP__APPR__DECISION__INIT;
	d.state = state;
	d.by = (char *)by;
	d.by_uid = 7;
	d.at_ms = 5000;
	d.comment = "why";
	assert_int_equal(appr_store_decide(st, id, &d), rc);
}

static void
test_store(void **state)
{
	(void)state;
	char err[256];
	appr_store_t *st = appr_store_open(s_path, err, sizeof err);
	assert_non_null(st);
	char log_id[40];
	snprintf(log_id, sizeof log_id, "%s", appr_store_log_id(st));
	assert_int_equal(strlen(log_id), 32);
	assert_int_equal(s_insert(st, "r-1", 1, 2000), 1);
	assert_int_equal(s_insert(st, "r-1", 2, 9000), 2);
	assert_int_equal(s_insert(st, "r-2", 1, 3000), 3);
	assert_int_equal(appr_store_commit(st), 0);

	Ahp__Appr__ApprovalRequest *r = NULL;
	assert_int_equal(appr_store_find(st, "r-1", 2, &r), 1);
	assert_int_equal(r->id, 2);
	assert_null(r->decision);
	assert_string_equal(r->action, "publish_summary");
	protobuf_c_message_free_unpacked(&r->base, NULL);
	assert_int_equal(appr_store_find(st, "r-1", 3, &r), 0);
	assert_int_equal(appr_store_get(st, 9, &r), 0);

	int64_t next = 0;
	assert_int_equal(appr_store_next_expiry(st, &next), 1);
	assert_int_equal(next, 2000);
	uint64_t ids[8];
	assert_int_equal(appr_store_expired(st, 3000, ids, 8), 2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 3);

	s_decide(st, 3, AHP__APPR__STATE__STATE_REJECTED, "expiry", 0);
	s_decide(st, 1, AHP__APPR__STATE__STATE_APPROVED, "alice", 0);
	s_decide(st, 1, AHP__APPR__STATE__STATE_REJECTED, "bob", -1); /* not pending */
	assert_int_equal(appr_store_commit(st), 0);
	assert_int_equal(appr_store_last_seq(st), 2);
	assert_int_equal(appr_store_get(st, 1, &r), 1);
	assert_int_equal(r->state, AHP__APPR__STATE__STATE_APPROVED);
	assert_string_equal(r->decision->by, "alice");
	assert_int_equal(r->decision->seq, 2);
	assert_int_equal(r->decision->by_uid, 7);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	Ahp__Appr__ApprovalRequest **v = NULL;
	size_t n = 0;
	int more = 0;
	assert_int_equal(appr_store_decided_after(st, 0, 1, &v, &n, &more), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0]->id, 3);
	assert_true(more);
	appr_requests_free(v, n);
	assert_int_equal(appr_store_decided_after(st, 1, 10, &v, &n, &more), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0]->id, 1);
	assert_false(more);
	appr_requests_free(v, n);

	assert_int_equal(appr_store_list(st, 0, "", 10, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0]->id, 2);
	appr_requests_free(v, n);
	assert_int_equal(appr_store_list(st, 1, "r-1", 10, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0]->id, 2);
	assert_int_equal(v[1]->id, 1);
	appr_requests_free(v, n);
	appr_store_close(&st);

	/* Reopened: the same log, the same decisions. */
	st = appr_store_open(s_path, err, sizeof err);
	assert_non_null(st);
	assert_string_equal(appr_store_log_id(st), log_id);
	assert_int_equal(appr_store_last_seq(st), 2);
	assert_int_equal(appr_store_next_expiry(st, &next), 1);
	assert_int_equal(next, 9000);
	/* An uncommitted batch is lost at close. */
	assert_int_equal(s_insert(st, "r-3", 1, 9000), 4);
	appr_store_close(&st);
	st = appr_store_open(s_path, err, sizeof err);
	assert_int_equal(appr_store_find(st, "r-3", 1, &r), 0);
	appr_store_close(&st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_store, s_setup, s_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
