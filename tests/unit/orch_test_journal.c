/* Unit tests for the orchestrator journal: intents, completion, group commit, reopen, resume
 * listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "journal.h"

typedef struct {
	char dir[64];
	char path[128];
} fixture_t;

static int
s_setup(void **state)
{
	fixture_t *f = calloc(1, sizeof *f);
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/orch-journal-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/j.db", f->dir);
	*state = f;
	return 0;
}

static int
s_teardown(void **state)
{
	fixture_t *f = *state;
	char p[192];
	const char *suffix[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

typedef struct {
	int n;
	uint32_t seq[16];
	int completed[16];
	int status[16];
	char result[16][64];
	char kind[16][8];
} steps_t;

static int
s_collect_step(void *arg, const orch_step_row_t *row)
{
	steps_t *s = arg;
	if (s->n >= 16)
		return 1;
	s->seq[s->n] = row->seq;
	s->completed[s->n] = row->completed;
	s->status[s->n] = row->status;
	snprintf(s->result[s->n], sizeof s->result[0], "%s", row->result ? row->result : "");
	snprintf(s->kind[s->n], sizeof s->kind[0], "%s", row->kind);
	s->n++;
	return 0;
}

typedef struct {
	int n;
	char ids[8][32];
	char states[8][24];
	uint32_t model_calls[8];
} runs_t;

static int
s_collect_run(void *arg, const orch_run_row_t *row)
{
	runs_t *r = arg;
	if (r->n >= 8)
		return 1;
	snprintf(r->ids[r->n], sizeof r->ids[0], "%s", row->id);
	snprintf(r->states[r->n], sizeof r->states[0], "%s", row->state);
	r->model_calls[r->n] = row->model_calls;
	r->n++;
	return 0;
}

static void
test_intent_then_complete(void **state)
{
	fixture_t *f = *state;
	char err[256];
	orch_journal_t *j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);

	assert_int_equal(orch_journal_run_create(j, "r-1", "p", "task", 1000), 0);
	assert_int_equal(orch_journal_step_intent(j, "r-1", 1, "model", "{\"call\":1}"), 0);
	assert_int_equal(orch_journal_step_intent(j, "r-1", 2, "tool", "{\"name\":\"skill\"}"), 0);
	/* UNIQUE(run_id, seq): an intent is written once. */
	assert_int_equal(orch_journal_step_intent(j, "r-1", 2, "tool", "{}"), -1);
	/* Only the two known kinds. */
	assert_int_equal(orch_journal_step_intent(j, "r-1", 3, "bogus", "{}"), -1);
	assert_int_equal(orch_journal_step_complete(j, "r-1", 1, 0, "{\"ok\":true}"), 0);
	/* Completing a step that has no intent is an error. */
	assert_int_equal(orch_journal_step_complete(j, "r-1", 9, 0, "{}"), -1);
	assert_int_equal(orch_journal_commit(j), 0);

	steps_t s = {0};
	assert_int_equal(orch_journal_steps_foreach(j, "r-1", s_collect_step, &s), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.seq[0], 1);
	assert_true(s.completed[0]);
	assert_string_equal(s.result[0], "{\"ok\":true}");
	assert_string_equal(s.kind[0], "model");
	assert_int_equal(s.seq[1], 2);
	assert_false(s.completed[1]);

	/* Reopen refuses a successful step but turns a failed one back into an intent. */
	assert_int_equal(orch_journal_step_reopen(j, "r-1", 1), -1);
	assert_int_equal(orch_journal_step_complete(j, "r-1", 2, 6, "{\"error\":1}"), 0);
	assert_int_equal(orch_journal_step_reopen(j, "r-1", 2), 0);
	assert_int_equal(orch_journal_commit(j), 0);
	memset(&s, 0, sizeof s);
	assert_int_equal(orch_journal_steps_foreach(j, "r-1", s_collect_step, &s), 0);
	assert_false(s.completed[1]);
	orch_journal_destroy(&j);
	assert_null(j);
}

static void
test_group_commit_and_rollback(void **state)
{
	fixture_t *f = *state;
	char err[256];
	orch_journal_t *j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);
	assert_false(orch_journal_in_tx(j));

	/* Many runs' writes in one transaction, begun lazily by the first write. */
	char id[16];
	for (int r = 0; r < 4; r++) {
		snprintf(id, sizeof id, "r-%d", r);
		assert_int_equal(orch_journal_run_create(j, id, "p", "t", 100 + r), 0);
		assert_true(orch_journal_in_tx(j));
		for (uint32_t seq = 1; seq <= 3; seq++)
			assert_int_equal(orch_journal_step_intent(j, id, seq, "tool", "{}"), 0);
	}
	assert_int_equal(orch_journal_commit(j), 0);
	assert_false(orch_journal_in_tx(j));
	assert_int_equal(orch_journal_commit(j), 0); /* nothing open: no-op */

	/* A second batch that is rolled back leaves no trace. */
	assert_int_equal(orch_journal_begin(j), 0);
	assert_int_equal(orch_journal_begin(j), 0); /* idempotent */
	assert_int_equal(orch_journal_step_intent(j, "r-0", 4, "model", "{}"), 0);
	assert_int_equal(orch_journal_rollback(j), 0);
	steps_t s = {0};
	assert_int_equal(orch_journal_steps_foreach(j, "r-0", s_collect_step, &s), 0);
	assert_int_equal(s.n, 3);

	/* A transaction still open at close is not committed. */
	assert_int_equal(orch_journal_step_intent(j, "r-1", 4, "model", "{}"), 0);
	orch_journal_destroy(&j);
	j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);
	memset(&s, 0, sizeof s);
	assert_int_equal(orch_journal_steps_foreach(j, "r-1", s_collect_step, &s), 0);
	assert_int_equal(s.n, 3);
	orch_journal_destroy(&j);
}

static void
test_reopen_keeps_rows(void **state)
{
	fixture_t *f = *state;
	char err[256];
	orch_journal_t *j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);
	assert_int_equal(orch_journal_run_create(j, "r-a", "p", "t", 5), 0);
	assert_int_equal(orch_journal_step_intent(j, "r-a", 1, "model", "{}"), 0);
	assert_int_equal(orch_journal_step_complete(j, "r-a", 1, 0, "{\"n\":1}"), 0);
	assert_int_equal(orch_journal_event_add(j, "r-a", 1, 7, "state", "[run] queued", NULL), 0);
	assert_int_equal(orch_journal_event_add(j, "r-a", 2, 8, "model", "[model] x", "{}"), 0);
	assert_int_equal(orch_journal_commit(j), 0);
	orch_journal_destroy(&j);

	j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);
	steps_t s = {0};
	assert_int_equal(orch_journal_steps_foreach(j, "r-a", s_collect_step, &s), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.result[0], "{\"n\":1}");
	uint64_t last = 99;
	assert_int_equal(orch_journal_event_last_seq(j, "r-a", &last), 0);
	assert_int_equal(last, 2);
	assert_int_equal(orch_journal_event_last_seq(j, "nope", &last), 0);
	assert_int_equal(last, 0);
	runs_t r = {0};
	assert_int_equal(orch_journal_run_get(j, "r-a", s_collect_run, &r), 1);
	assert_string_equal(r.states[0], "queued");
	assert_int_equal(orch_journal_run_get(j, "r-none", s_collect_run, &r), 0);
	orch_journal_destroy(&j);
}

static void
test_unfinished_listing(void **state)
{
	fixture_t *f = *state;
	char err[256];
	orch_journal_t *j = orch_journal_open(f->path, err, sizeof err);
	assert_non_null(j);
	const char *states[] = {"queued", "running",          "succeeded",
	                        "failed", "waiting_approval", "cancelled"};
	char id[16];
	for (int i = 0; i < 6; i++) {
		snprintf(id, sizeof id, "r-%d", i);
		assert_int_equal(
		    orch_journal_run_create(j, id, i % 2 ? "odd" : "even", "t", 10 + i), 0);
		orch_run_row_t row = {
		    .id = id, .state = states[i], .updated_ms = 20, .model_calls = (uint32_t)i};
		assert_int_equal(orch_journal_run_update(j, &row), 0);
	}
	assert_int_equal(orch_journal_commit(j), 0);

	runs_t r = {0};
	assert_int_equal(orch_journal_runs_unfinished(j, s_collect_run, &r), 0);
	assert_int_equal(r.n, 3);
	assert_string_equal(r.ids[0], "r-0"); /* oldest first */
	assert_string_equal(r.ids[1], "r-1");
	assert_string_equal(r.ids[2], "r-4");
	assert_int_equal(r.model_calls[2], 4);

	memset(&r, 0, sizeof r);
	assert_int_equal(orch_journal_run_list(j, "failed", NULL, 0, s_collect_run, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.ids[0], "r-3");
	memset(&r, 0, sizeof r);
	assert_int_equal(orch_journal_run_list(j, NULL, "odd", 2, s_collect_run, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.ids[0], "r-5"); /* newest first */
	orch_journal_destroy(&j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_intent_then_complete, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_and_rollback, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_rows, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_unfinished_listing, s_setup, s_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
