/* The orchestrator's durable journal: runs, steps and events in SQLite, with group commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/db.h"
#include "ahp/log.h"
#include "ahp/util.h"

#include "journal.h"

/*
 * No foreign keys on purpose: every insert would pay for a parent lookup,
 * and steps/events are only ever written by code that created the run in
 * the same process (the benchmark writes steps without runs).
 */
static const char *const s_migrations[] = {
    "CREATE TABLE runs ("
    " id TEXT PRIMARY KEY,"
    " profile TEXT NOT NULL,"
    " task TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " error TEXT,"
    " result TEXT,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " turns INTEGER NOT NULL DEFAULT 0,"
    " model_calls INTEGER NOT NULL DEFAULT 0,"
    " tool_calls INTEGER NOT NULL DEFAULT 0,"
    " tokens INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX runs_state ON runs(state, created_ms);"
    "CREATE INDEX runs_created ON runs(created_ms);"
    "CREATE TABLE steps ("
    " run_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " kind TEXT NOT NULL CHECK (kind IN ('model', 'tool')),"
    " intent TEXT NOT NULL,"
    " status INTEGER,"
    " result TEXT,"
    " created_ms INTEGER NOT NULL,"
    " completed_ms INTEGER,"
    " UNIQUE (run_id, seq));"
    "CREATE TABLE events ("
    " run_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " ts_ms INTEGER NOT NULL,"
    " kind TEXT NOT NULL,"
    " text TEXT NOT NULL,"
    " data TEXT,"
    " UNIQUE (run_id, seq));",
    /* 2: where each run's egress records (credproxy) have been read up to. */
    "CREATE TABLE egress_cursors ("
    " run_id TEXT PRIMARY KEY,"
    " last_seq INTEGER NOT NULL DEFAULT 0,"
    " log_id TEXT NOT NULL DEFAULT '',"
    " events INTEGER NOT NULL DEFAULT 0,"
    " done INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX egress_cursors_open ON egress_cursors(done);",
    /* 3: human decisions on gated calls and questions (approvald), as applied to
     * the step they are for, and how far approvald's decision log has been read. */
    "CREATE TABLE approvals ("
    " run_id TEXT NOT NULL,"
    " step INTEGER NOT NULL,"
    " id INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " by TEXT NOT NULL,"
    " at_ms INTEGER NOT NULL,"
    " comment TEXT NOT NULL,"
    " digest TEXT NOT NULL,"
    " PRIMARY KEY (run_id, step));"
    "CREATE TABLE approval_cursor ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " log_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL);",
};

enum {
	ST_RUN_CREATE,
	ST_RUN_UPDATE,
	ST_RUN_GET,
	ST_RUN_LIST,
	ST_RUN_UNFINISHED,
	ST_STEP_INTENT,
	ST_STEP_COMPLETE,
	ST_STEP_REOPEN,
	ST_STEPS,
	ST_EVENT_ADD,
	ST_EVENTS,
	ST_EVENT_LAST,
	ST_EGRESS_TRACK,
	ST_EGRESS_SET,
	ST_EGRESS_DONE,
	ST_EGRESS_OPEN,
	ST_APPR_PUT,
	ST_APPR_GET,
	ST_APPR_CURSOR_SET,
	ST_APPR_CURSOR_GET,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_COUNT
};

#define RUN_COLS                                                                                   \
	"id, profile, task, state, error, result, created_ms, updated_ms, turns, model_calls, "    \
	"tool_calls, tokens"

static const char *const s_sql[ST_COUNT] = {
    [ST_RUN_CREATE] = "INSERT INTO runs (id, profile, task, state, created_ms, updated_ms)"
                      " VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
    [ST_RUN_UPDATE] = "UPDATE runs SET state = ?2, error = ?3, result = ?4, updated_ms = ?5,"
                      " turns = ?6, model_calls = ?7, tool_calls = ?8, tokens = ?9 WHERE id = ?1",
    [ST_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
    [ST_RUN_LIST] = "SELECT " RUN_COLS " FROM runs WHERE (?1 = '' OR state = ?1)"
                    " AND (?2 = '' OR profile = ?2) ORDER BY created_ms DESC, id LIMIT ?3",
    [ST_RUN_UNFINISHED] = "SELECT " RUN_COLS " FROM runs WHERE state IN ('queued', 'running')"
                          " OR state LIKE 'waiting%' ORDER BY created_ms, id",
    [ST_STEP_INTENT] = "INSERT INTO steps (run_id, seq, kind, intent, created_ms)"
                       " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_STEP_COMPLETE] = "UPDATE steps SET status = ?3, result = ?4, completed_ms = ?5"
                         " WHERE run_id = ?1 AND seq = ?2",
    [ST_STEP_REOPEN] = "UPDATE steps SET status = NULL, result = NULL, completed_ms = NULL"
                       " WHERE run_id = ?1 AND seq = ?2 AND status IS NOT NULL AND status != 0",
    [ST_STEPS] = "SELECT seq, kind, intent, status, result, created_ms, completed_ms"
                 " FROM steps WHERE run_id = ?1 ORDER BY seq",
    [ST_EVENT_ADD] = "INSERT INTO events (run_id, seq, ts_ms, kind, text, data)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_EVENTS] = "SELECT seq, ts_ms, kind, text, data FROM events"
                  " WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_EVENT_LAST] = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1",
    [ST_EGRESS_TRACK] = "INSERT INTO egress_cursors (run_id) VALUES (?1)"
                        " ON CONFLICT (run_id) DO UPDATE SET done = 0",
    [ST_EGRESS_SET] = "UPDATE egress_cursors SET last_seq = ?2, log_id = ?3, events = ?4"
                      " WHERE run_id = ?1",
    [ST_EGRESS_DONE] = "UPDATE egress_cursors SET done = 1 WHERE run_id = ?1",
    [ST_EGRESS_OPEN] = "SELECT c.run_id, c.last_seq, c.log_id, r.state, r.updated_ms, c.events"
                       " FROM egress_cursors c LEFT JOIN runs r ON r.id = c.run_id"
                       " WHERE c.done = 0 ORDER BY c.rowid",
    [ST_APPR_PUT] = "INSERT OR REPLACE INTO approvals (run_id, step, id, state, by, at_ms,"
                    " comment, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_APPR_GET] = "SELECT id, state, by, at_ms, comment, digest FROM approvals"
                    " WHERE run_id = ?1 AND step = ?2",
    [ST_APPR_CURSOR_SET] = "INSERT OR REPLACE INTO approval_cursor (id, log_id, seq)"
                           " VALUES (1, ?1, ?2)",
    [ST_APPR_CURSOR_GET] = "SELECT log_id, seq FROM approval_cursor WHERE id = 1",
    /* Prepared once: a commit per loop turn should not parse SQL. */
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct orch_journal {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	int in_tx;
};

/* WAL frames kept allocated beyond one autocheckpoint's worth, so a big
 * group-commit turn does not immediately grow the file either. */
#define WAL_SLACK_FRAMES 256
#define WAL_FRAME_HDR 24
#define WAL_FILE_HDR 32
#define WAL_FILL_CHUNK (64 * 1024)

static int s_tx(orch_journal_t *self, int which, const char *what);

static int
s_pragma_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/*
 * Zero-fills the WAL file up to the size it reaches between checkpoints and
 * syncs that once. Why: a commit that appends to the WAL makes ext4 allocate
 * blocks and grow i_size, so its fdatasync must also commit the filesystem
 * journal (about half of a single-step commit's latency on a fast disk). SQLite
 * reuses the WAL from the start after a checkpoint, so commits then overwrite
 * allocated blocks and the sync only flushes data: every commit gets that
 * steady state, including those right after open. Durability is unchanged
 * (synchronous=FULL still syncs every commit); WAL recovery stops at the first
 * frame whose salt/checksum does not match, so zeros past the end are inert.
 * Runs under the WAL write lock (BEGIN IMMEDIATE) and only writes past the
 * current end, so no other connection's frames can be touched. Best effort:
 * failure only costs speed.
 */
static void
s_wal_preallocate(orch_journal_t *self)
{
	int page = s_pragma_int(self->db, "PRAGMA page_size");
	int ckpt = s_pragma_int(self->db, "PRAGMA wal_autocheckpoint");
	const char *file = sqlite3_db_filename(self->db, "main");
	/* An in-memory database has no WAL file to fill. */
	if (page <= 0 || ckpt < 0 || file == NULL || file[0] == '\0')
		return;
	if (s_tx(self, ST_BEGIN, "begin") != 0)
		return;
	sqlite3_file *f = NULL;
	sqlite3_int64 size = 0;
	if (sqlite3_file_control(self->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK ||
	    f == NULL || f->pMethods == NULL || f->pMethods->xFileSize(f, &size) != SQLITE_OK)
		goto done;
	sqlite3_int64 want =
	    WAL_FILE_HDR + (sqlite3_int64)(ckpt + WAL_SLACK_FRAMES) * (page + WAL_FRAME_HDR);
	if (size >= want)
		goto done;
	static const char zeros[WAL_FILL_CHUNK];
	while (size < want) {
		int n = want - size < WAL_FILL_CHUNK ? (int)(want - size) : WAL_FILL_CHUNK;
		if (f->pMethods->xWrite(f, zeros, n, size) != SQLITE_OK) {
			log_warn("journal: cannot preallocate the WAL; commits will grow it");
			goto done;
		}
		size += n;
	}
	if (f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) != SQLITE_OK)
		log_warn("journal: cannot sync the preallocated WAL");
done:
	s_tx(self, ST_COMMIT, "commit");
}

orch_journal_t *
orch_journal_open(const char *path, char *err, size_t errlen)
{
	orch_journal_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	self->db = ahp_db_open(path, s_migrations,
	                       (int)(sizeof s_migrations / sizeof s_migrations[0]), err, errlen);
	if (self->db == NULL) {
		free(self);
		return NULL;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(self->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                       &self->st[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "%s: preparing statement %d: %s", path, i,
			         sqlite3_errmsg(self->db));
			orch_journal_destroy(&self);
			return NULL;
		}
	}
	s_wal_preallocate(self);
	return self;
}

void
orch_journal_destroy(orch_journal_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	orch_journal_t *self = *self_p;
	if (self->in_tx)
		orch_journal_rollback(self);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(self->st[i]);
	ahp_db_close(&self->db);
	free(self);
	*self_p = NULL;
}

/* Runs one of the prepared transaction statements. 0 / -1. */
static int
s_tx(orch_journal_t *self, int which, const char *what)
{
	sqlite3_stmt *st = self->st[which];
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("journal %s: %s", what, sqlite3_errmsg(self->db));
		return -1;
	}
	return 0;
}

int
orch_journal_begin(orch_journal_t *self)
{
	if (self->in_tx)
		return 0;
	if (s_tx(self, ST_BEGIN, "begin") != 0)
		return -1;
	self->in_tx = 1;
	return 0;
}

int
orch_journal_commit(orch_journal_t *self)
{
	if (!self->in_tx)
		return 0;
	if (s_tx(self, ST_COMMIT, "commit") != 0) {
		orch_journal_rollback(self);
		return -1;
	}
	self->in_tx = 0;
	return 0;
}

int
orch_journal_rollback(orch_journal_t *self)
{
	if (!self->in_tx)
		return 0;
	self->in_tx = 0;
	/* A failed COMMIT may already have ended the transaction. */
	if (sqlite3_get_autocommit(self->db))
		return 0;
	return s_tx(self, ST_ROLLBACK, "rollback");
}

int
orch_journal_in_tx(const orch_journal_t *self)
{
	return self->in_tx;
}

/* Resets a cached statement before binding it again. */
static sqlite3_stmt *
s_stmt(orch_journal_t *self, int which)
{
	sqlite3_stmt *st = self->st[which];
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

static void
s_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* Runs a write statement inside the lazily begun transaction. Returns the
 * number of changed rows, or -1. */
static int
s_write(orch_journal_t *self, sqlite3_stmt *st, const char *what)
{
	if (orch_journal_begin(self) != 0) {
		sqlite3_reset(st);
		return -1;
	}
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		log_error("journal %s: %s", what, sqlite3_errmsg(self->db));
		sqlite3_reset(st);
		return -1;
	}
	int changed = sqlite3_changes(self->db);
	sqlite3_reset(st);
	return changed;
}

static const char *
s_col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

static void
s_run_row(sqlite3_stmt *st, orch_run_row_t *row)
{
	row->id = s_col_text(st, 0);
	row->profile = s_col_text(st, 1);
	row->task = s_col_text(st, 2);
	row->state = s_col_text(st, 3);
	row->error = s_col_text(st, 4);
	row->result = s_col_text(st, 5);
	row->created_ms = sqlite3_column_int64(st, 6);
	row->updated_ms = sqlite3_column_int64(st, 7);
	row->turns = (uint32_t)sqlite3_column_int64(st, 8);
	row->model_calls = (uint32_t)sqlite3_column_int64(st, 9);
	row->tool_calls = (uint32_t)sqlite3_column_int64(st, 10);
	int64_t tokens = sqlite3_column_int64(st, 11); /* a file: never negative here */
	row->tokens = tokens > 0 ? (uint64_t)tokens : 0;
}

/* Steps a query and feeds every row to fn. Returns rows seen, or -1. */
static int
s_query_runs(orch_journal_t *self, sqlite3_stmt *st, orch_run_fn fn, void *arg)
{
	int n = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		orch_run_row_t row;
		s_run_row(st, &row);
		n++;
		if (fn != NULL && fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		log_error("journal run query: %s", sqlite3_errmsg(self->db));
		n = -1;
	}
	sqlite3_reset(st);
	return n;
}

int
orch_journal_run_create(orch_journal_t *self, const char *id, const char *profile, const char *task,
                        int64_t created_ms)
{
	sqlite3_stmt *st = s_stmt(self, ST_RUN_CREATE);
	s_bind_text(st, 1, id);
	s_bind_text(st, 2, profile);
	s_bind_text(st, 3, task);
	sqlite3_bind_int64(st, 4, created_ms);
	return s_write(self, st, "run create") == 1 ? 0 : -1;
}

int
orch_journal_run_update(orch_journal_t *self, const orch_run_row_t *row)
{
	sqlite3_stmt *st = s_stmt(self, ST_RUN_UPDATE);
	s_bind_text(st, 1, row->id);
	s_bind_text(st, 2, row->state);
	s_bind_text(st, 3, row->error);
	s_bind_text(st, 4, row->result);
	sqlite3_bind_int64(st, 5, row->updated_ms);
	sqlite3_bind_int64(st, 6, row->turns);
	sqlite3_bind_int64(st, 7, row->model_calls);
	sqlite3_bind_int64(st, 8, row->tool_calls);
	sqlite3_bind_int64(st, 9, (sqlite3_int64)row->tokens);
	return s_write(self, st, "run update") == 1 ? 0 : -1;
}

int
orch_journal_run_get(orch_journal_t *self, const char *id, orch_run_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_RUN_GET);
	s_bind_text(st, 1, id);
	int n = s_query_runs(self, st, fn, arg);
	return n < 0 ? -1 : (n > 0);
}

int
orch_journal_run_list(orch_journal_t *self, const char *state, const char *profile, uint32_t limit,
                      orch_run_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_RUN_LIST);
	s_bind_text(st, 1, state ? state : "");
	s_bind_text(st, 2, profile ? profile : "");
	sqlite3_bind_int64(st, 3, limit ? limit : 100);
	return s_query_runs(self, st, fn, arg) < 0 ? -1 : 0;
}

int
orch_journal_runs_unfinished(orch_journal_t *self, orch_run_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_RUN_UNFINISHED);
	return s_query_runs(self, st, fn, arg) < 0 ? -1 : 0;
}

int
orch_journal_step_intent(orch_journal_t *self, const char *run_id, uint32_t seq, const char *kind,
                         const char *intent_json)
{
	sqlite3_stmt *st = s_stmt(self, ST_STEP_INTENT);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, seq);
	s_bind_text(st, 3, kind);
	s_bind_text(st, 4, intent_json ? intent_json : "{}");
	sqlite3_bind_int64(st, 5, ahp_now_ms());
	return s_write(self, st, "step intent") == 1 ? 0 : -1;
}

int
orch_journal_step_complete(orch_journal_t *self, const char *run_id, uint32_t seq, int status,
                           const char *result_json)
{
	sqlite3_stmt *st = s_stmt(self, ST_STEP_COMPLETE);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, seq);
	sqlite3_bind_int(st, 3, status);
	s_bind_text(st, 4, result_json ? result_json : "{}");
	sqlite3_bind_int64(st, 5, ahp_now_ms());
	return s_write(self, st, "step complete") == 1 ? 0 : -1;
}

int
orch_journal_step_reopen(orch_journal_t *self, const char *run_id, uint32_t seq)
{
	sqlite3_stmt *st = s_stmt(self, ST_STEP_REOPEN);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, seq);
	return s_write(self, st, "step reopen") == 1 ? 0 : -1;
}

int
orch_journal_steps_foreach(orch_journal_t *self, const char *run_id, orch_step_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_STEPS);
	s_bind_text(st, 1, run_id);
	int rc, ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		orch_step_row_t row;
		row.seq = (uint32_t)sqlite3_column_int64(st, 0);
		row.kind = s_col_text(st, 1);
		row.intent = s_col_text(st, 2);
		row.completed = sqlite3_column_type(st, 3) != SQLITE_NULL;
		row.status = row.completed ? sqlite3_column_int(st, 3) : 0;
		row.result = row.completed ? s_col_text(st, 4) : NULL;
		row.created_ms = sqlite3_column_int64(st, 5);
		row.completed_ms = sqlite3_column_int64(st, 6);
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		log_error("journal steps query: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
orch_journal_event_add(orch_journal_t *self, const char *run_id, uint64_t seq, int64_t ts_ms,
                       const char *kind, const char *text, const char *data_json)
{
	sqlite3_stmt *st = s_stmt(self, ST_EVENT_ADD);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	sqlite3_bind_int64(st, 3, ts_ms);
	s_bind_text(st, 4, kind);
	s_bind_text(st, 5, text);
	s_bind_text(st, 6, data_json);
	return s_write(self, st, "event add") == 1 ? 0 : -1;
}

int
orch_journal_events_foreach(orch_journal_t *self, const char *run_id, uint64_t after_seq,
                            uint32_t max, orch_event_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_EVENTS);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)after_seq);
	sqlite3_bind_int64(st, 3, max ? max : 500);
	int rc, ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		orch_event_row_t row;
		row.seq = (uint64_t)sqlite3_column_int64(st, 0);
		row.ts_ms = sqlite3_column_int64(st, 1);
		row.kind = s_col_text(st, 2);
		row.text = s_col_text(st, 3);
		row.data = s_col_text(st, 4);
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		log_error("journal events query: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
orch_journal_event_last_seq(orch_journal_t *self, const char *run_id, uint64_t *seq)
{
	sqlite3_stmt *st = s_stmt(self, ST_EVENT_LAST);
	s_bind_text(st, 1, run_id);
	int rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW) {
		*seq = (uint64_t)sqlite3_column_int64(st, 0);
	} else {
		log_error("journal last event: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
orch_journal_egress_track(orch_journal_t *self, const char *run_id)
{
	sqlite3_stmt *st = s_stmt(self, ST_EGRESS_TRACK);
	s_bind_text(st, 1, run_id);
	return s_write(self, st, "egress track") == 1 ? 0 : -1;
}

int
orch_journal_egress_cursor(orch_journal_t *self, const char *run_id, uint64_t last_seq,
                           const char *log_id, uint64_t events)
{
	sqlite3_stmt *st = s_stmt(self, ST_EGRESS_SET);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)last_seq);
	s_bind_text(st, 3, log_id ? log_id : "");
	sqlite3_bind_int64(st, 4, (sqlite3_int64)events);
	return s_write(self, st, "egress cursor") == 1 ? 0 : -1;
}

int
orch_journal_egress_done(orch_journal_t *self, const char *run_id)
{
	sqlite3_stmt *st = s_stmt(self, ST_EGRESS_DONE);
	s_bind_text(st, 1, run_id);
	return s_write(self, st, "egress done") < 0 ? -1 : 0;
}

int
orch_journal_egress_open(orch_journal_t *self, orch_egress_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_EGRESS_OPEN);
	int rc, ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		orch_egress_row_t row;
		row.run_id = s_col_text(st, 0);
		row.last_seq = (uint64_t)sqlite3_column_int64(st, 1);
		row.log_id = s_col_text(st, 2);
		row.state = s_col_text(st, 3);
		row.updated_ms = sqlite3_column_int64(st, 4);
		row.events = (uint64_t)sqlite3_column_int64(st, 5);
		if (row.run_id == NULL)
			continue;
		if (fn(arg, &row) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE) {
		log_error("journal egress cursors: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
orch_journal_approval_put(orch_journal_t *self, const char *run_id, const orch_approval_row_t *row)
{
	sqlite3_stmt *st = s_stmt(self, ST_APPR_PUT);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, row->step);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)row->id);
	s_bind_text(st, 4, row->state);
	s_bind_text(st, 5, row->by ? row->by : "");
	sqlite3_bind_int64(st, 6, row->at_ms);
	s_bind_text(st, 7, row->comment ? row->comment : "");
	s_bind_text(st, 8, row->digest ? row->digest : "");
	return s_write(self, st, "approval") == 1 ? 0 : -1;
}

int
orch_journal_approval_get(orch_journal_t *self, const char *run_id, uint32_t step,
                          orch_approval_fn fn, void *arg)
{
	sqlite3_stmt *st = s_stmt(self, ST_APPR_GET);
	s_bind_text(st, 1, run_id);
	sqlite3_bind_int64(st, 2, step);
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		orch_approval_row_t row = {
		    .step = step,
		    .id = (uint64_t)sqlite3_column_int64(st, 0),
		    .state = s_col_text(st, 1),
		    .by = s_col_text(st, 2),
		    .at_ms = sqlite3_column_int64(st, 3),
		    .comment = s_col_text(st, 4),
		    .digest = s_col_text(st, 5),
		};
		fn(arg, &row);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		log_error("journal approval: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
orch_journal_approval_cursor_set(orch_journal_t *self, const char *log_id, uint64_t seq)
{
	sqlite3_stmt *st = s_stmt(self, ST_APPR_CURSOR_SET);
	s_bind_text(st, 1, log_id ? log_id : "");
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	return s_write(self, st, "approval cursor") == 1 ? 0 : -1;
}

int
orch_journal_approval_cursor_get(orch_journal_t *self, char *log_id, size_t len, uint64_t *seq)
{
	sqlite3_stmt *st = s_stmt(self, ST_APPR_CURSOR_GET);
	int rc = sqlite3_step(st), ret = 0;
	*seq = 0;
	if (len > 0)
		log_id[0] = '\0';
	if (rc == SQLITE_ROW) {
		const char *l = s_col_text(st, 0);
		snprintf(log_id, len, "%s", l ? l : "");
		*seq = (uint64_t)sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_DONE) {
		log_error("journal approval cursor: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}
