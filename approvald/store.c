/* approvald: the store — requests, their decisions (the decision log, seq strictly
 * increasing) and the log's id (SQLite, WAL, synchronous=FULL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/db.h"
#include "ahp/log.h"
#include "ahp/util.h"
#include "approvald.h"

/* Append-only: never edit a migration that has shipped. */
static const char *const s_migrations[] = {
    "CREATE TABLE requests ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  run_id TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  profile TEXT NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  action TEXT NOT NULL,"
    "  arguments_json TEXT NOT NULL,"
    "  digest TEXT NOT NULL," /* hex SHA-256 of action + "\n" + canonical arguments */
    "  question TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  state INTEGER NOT NULL," /* ahp.appr.State */
    "  UNIQUE (run_id, step)"
    ");"
    "CREATE INDEX requests_pending ON requests(expires_ms) WHERE state = 0;"
    "CREATE TABLE decisions ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id INTEGER NOT NULL UNIQUE REFERENCES requests(id),"
    "  state INTEGER NOT NULL,"
    "  by TEXT NOT NULL,"
    "  by_uid INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  comment TEXT NOT NULL"
    ");"
    "CREATE TABLE meta (log_id TEXT NOT NULL);",
};

#define S_COLS                                                                                     \
	"r.id, r.run_id, r.step, r.profile, r.kind, r.action, r.arguments_json, r.digest, "        \
	"r.question, r.created_ms, r.expires_ms, r.state, d.seq, d.state, d.by, d.by_uid, "        \
	"d.at_ms, d.comment, length(r.arguments_json) + length(r.question) "
#define S_FROM " FROM requests r LEFT JOIN decisions d ON d.request_id = r.id "

struct appr_store {
	sqlite3 *db;
	sqlite3_stmt *get, *find, *insert, *decide, *set_state, *list, *after, *last_seq,
	    *next_expiry, *expired;
	char log_id[40];
	int in_batch;
};

static int
s_begin(appr_store_t *self)
{
	if (self->in_batch)
		return 0;
	if (ahp_db_begin(self->db) != 0)
		return -1;
	self->in_batch = 1;
	return 0;
}

static int
s_log_id(appr_store_t *self, char *err, size_t errlen)
{
	sqlite3_stmt *st = ahp_db_prepare(self->db, "SELECT log_id FROM meta LIMIT 1");
	if (st == NULL)
		goto fail;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(self->log_id, sizeof self->log_id, "%s",
		         (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
		return 0;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		goto fail;
	/* A new database: a new log, whose seqs start again. */
	unsigned char r[16];
	ahp_random_bytes(r, sizeof r);
	for (int i = 0; i < 16; i++)
		snprintf(self->log_id + 2 * i, 3, "%02x", r[i]);
	st = ahp_db_prepare(self->db, "INSERT INTO meta (log_id) VALUES (?)");
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, self->log_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "the log id cannot be read or made: %s", sqlite3_errmsg(self->db));
	return -1;
}

appr_store_t *
appr_store_open(const char *path, char *err, size_t errlen)
{
	appr_store_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	self->db = ahp_db_open(path, s_migrations, sizeof s_migrations / sizeof s_migrations[0],
	                       err, errlen);
	if (self->db == NULL) {
		free(self);
		return NULL;
	}
	self->get = ahp_db_prepare(self->db, "SELECT " S_COLS S_FROM "WHERE r.id = ?");
	self->find =
	    ahp_db_prepare(self->db, "SELECT " S_COLS S_FROM "WHERE r.run_id = ? AND r.step = ?");
	self->insert = ahp_db_prepare(
	    self->db, "INSERT INTO requests (run_id, step, profile, kind, action, arguments_json, "
	              "digest, question, created_ms, expires_ms, state) "
	              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)");
	self->decide =
	    ahp_db_prepare(self->db, "INSERT INTO decisions (request_id, state, by, by_uid, "
	                             "at_ms, comment) VALUES (?, ?, ?, ?, ?, ?)");
	self->set_state =
	    ahp_db_prepare(self->db, "UPDATE requests SET state = ? WHERE id = ? AND state = 0");
	self->list = ahp_db_prepare(self->db, "SELECT " S_COLS S_FROM
	                                      "WHERE (?1 OR r.state = 0) AND (?2 = '' OR "
	                                      "r.run_id = ?2) ORDER BY r.id DESC LIMIT ?3");
	self->after =
	    ahp_db_prepare(self->db, "SELECT " S_COLS " FROM decisions d JOIN requests r ON r.id = "
	                             "d.request_id WHERE d.seq > ? ORDER BY d.seq LIMIT ?");
	self->last_seq = ahp_db_prepare(self->db, "SELECT COALESCE(MAX(seq), 0) FROM decisions");
	self->next_expiry =
	    ahp_db_prepare(self->db, "SELECT MIN(expires_ms) FROM requests WHERE state = 0");
	self->expired = ahp_db_prepare(self->db, "SELECT id FROM requests WHERE state = 0 AND "
	                                         "expires_ms <= ? ORDER BY expires_ms LIMIT ?");
	if (self->get == NULL || self->find == NULL || self->insert == NULL ||
	    self->decide == NULL || self->set_state == NULL || self->list == NULL ||
	    self->after == NULL || self->last_seq == NULL || self->next_expiry == NULL ||
	    self->expired == NULL) {
		snprintf(err, errlen, "%s: cannot prepare statements: %s", path,
		         sqlite3_errmsg(self->db));
		appr_store_close(&self);
		return NULL;
	}
	if (s_log_id(self, err, errlen) != 0) {
		appr_store_close(&self);
		return NULL;
	}
	return self;
}

void
appr_store_close(appr_store_t **self_p)
{
	appr_store_t *self = *self_p;
	if (self == NULL)
		return;
	if (self->in_batch)
		ahp_db_rollback(self->db);
	sqlite3_stmt *all[] = {self->get,         self->find,   self->insert, self->decide,
	                       self->set_state,   self->list,   self->after,  self->last_seq,
	                       self->next_expiry, self->expired};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sqlite3_finalize(all[i]);
	ahp_db_close(&self->db);
	free(self);
	*self_p = NULL;
}

const char *
appr_store_log_id(const appr_store_t *self)
{
	return self->log_id;
}

int
appr_store_commit(appr_store_t *self)
{
	if (!self->in_batch)
		return 0;
	self->in_batch = 0;
	if (ahp_db_commit(self->db) != 0) {
		ahp_db_rollback(self->db);
		return -1;
	}
	return 0;
}

static char *
s_col_dup(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);
	return strdup(s != NULL ? s : "");
}

/* The row at st as a malloc'ed message (the layout protobuf_c_message_free_unpacked frees
 * with the default allocator). NULL when out of memory. */
static Ahp__Appr__ApprovalRequest *
s_row(sqlite3_stmt *st)
{
	Ahp__Appr__ApprovalRequest *r = malloc(sizeof *r);
	if (r == NULL)
		return NULL;
	ahp__appr__approval_request__init(r);
	r->id = (uint64_t)sqlite3_column_int64(st, 0);
	r->run_id = s_col_dup(st, 1);
	r->step = (uint32_t)sqlite3_column_int64(st, 2);
	r->profile = s_col_dup(st, 3);
	r->kind = (Ahp__Appr__Kind)sqlite3_column_int(st, 4);
	r->action = s_col_dup(st, 5);
	r->arguments_json = s_col_dup(st, 6);
	r->digest = s_col_dup(st, 7);
	r->question = s_col_dup(st, 8);
	r->created_ms = sqlite3_column_int64(st, 9);
	r->expires_ms = sqlite3_column_int64(st, 10);
	r->state = (Ahp__Appr__State)sqlite3_column_int(st, 11);
	int oom = r->run_id == NULL || r->profile == NULL || r->action == NULL ||
	          r->arguments_json == NULL || r->digest == NULL || r->question == NULL;
	if (!oom && sqlite3_column_type(st, 12) != SQLITE_NULL) {
		Ahp__Appr__Decision *d = malloc(sizeof *d);
		if (d != NULL) {
			ahp__appr__decision__init(d);
			d->seq = (uint64_t)sqlite3_column_int64(st, 12);
			d->state = (Ahp__Appr__State)sqlite3_column_int(st, 13);
			d->by = s_col_dup(st, 14);
			d->by_uid = sqlite3_column_int64(st, 15);
			d->at_ms = sqlite3_column_int64(st, 16);
			d->comment = s_col_dup(st, 17);
			r->decision = d;
			oom = d->by == NULL || d->comment == NULL;
		} else {
			oom = 1;
		}
	}
	if (oom) {
		/* Unset strings are NULL, which free_unpacked skips. */
		protobuf_c_message_free_unpacked(&r->base, NULL);
		return NULL;
	}
	return r;
}

static int
s_one(appr_store_t *self, sqlite3_stmt *st, Ahp__Appr__ApprovalRequest **out)
{
	*out = NULL;
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		*out = s_row(st);
		ret = *out != NULL ? 1 : -1;
	} else if (rc != SQLITE_DONE) {
		log_error("store: lookup: %s", sqlite3_errmsg(self->db));
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int
appr_store_get(appr_store_t *self, uint64_t id, Ahp__Appr__ApprovalRequest **out)
{
	sqlite3_reset(self->get);
	sqlite3_bind_int64(self->get, 1, (sqlite3_int64)id);
	return s_one(self, self->get, out);
}

int
appr_store_find(appr_store_t *self, const char *run_id, uint32_t step,
                Ahp__Appr__ApprovalRequest **out)
{
	sqlite3_reset(self->find);
	sqlite3_bind_text(self->find, 1, run_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(self->find, 2, step);
	return s_one(self, self->find, out);
}

int
appr_store_insert(appr_store_t *self, Ahp__Appr__ApprovalRequest *r)
{
	if (s_begin(self) != 0)
		return -1;
	sqlite3_stmt *st = self->insert;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, r->run_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, r->step);
	sqlite3_bind_text(st, 3, r->profile, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, (int)r->kind);
	sqlite3_bind_text(st, 5, r->action, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->arguments_json, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, r->digest, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, r->question != NULL ? r->question : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, r->created_ms);
	sqlite3_bind_int64(st, 10, r->expires_ms);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: insert: %s", sqlite3_errmsg(self->db));
		return -1;
	}
	r->id = (uint64_t)sqlite3_last_insert_rowid(self->db);
	r->state = AHP__APPR__STATE__STATE_PENDING;
	return 0;
}

int
appr_store_decide(appr_store_t *self, uint64_t id, Ahp__Appr__Decision *d)
{
	if (s_begin(self) != 0)
		return -1;
	sqlite3_stmt *st = self->set_state;
	sqlite3_reset(st);
	sqlite3_bind_int(st, 1, (int)d->state);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: decide #%llu: %s", (unsigned long long)id,
		          sqlite3_errmsg(self->db));
		return -1;
	}
	if (sqlite3_changes(self->db) != 1)
		return -1; /* not pending */
	st = self->decide;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	sqlite3_bind_int(st, 2, (int)d->state);
	sqlite3_bind_text(st, 3, d->by, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, d->by_uid);
	sqlite3_bind_int64(st, 5, d->at_ms);
	sqlite3_bind_text(st, 6, d->comment != NULL ? d->comment : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		/* The state changed in this batch without its decision: the batch cannot
		 * be committed half-done. The caller stops (fatal), and the rollback on
		 * close undoes both. */
		log_error("store: decision #%llu: %s", (unsigned long long)id,
		          sqlite3_errmsg(self->db));
		return -1;
	}
	d->seq = (uint64_t)sqlite3_last_insert_rowid(self->db);
	return 0;
}

void
appr_requests_free(Ahp__Appr__ApprovalRequest **v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		protobuf_c_message_free_unpacked(&v[i]->base, NULL);
	free(v);
}

/* Collects st's rows (limit already bound) within the byte budget. 0 / -1. */
static int
s_many(appr_store_t *self, sqlite3_stmt *st, uint32_t limit, Ahp__Appr__ApprovalRequest ***out,
       size_t *n, int *more)
{
	*out = NULL;
	*n = 0;
	if (more != NULL)
		*more = 0;
	Ahp__Appr__ApprovalRequest **v = calloc(limit + 1, sizeof *v);
	if (v == NULL)
		return -1;
	size_t bytes = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		size_t sz = (size_t)sqlite3_column_int64(st, 18) + 512;
		if (*n >= limit || (*n > 0 && bytes + sz > APPR_REPLY_BUDGET)) {
			if (more != NULL)
				*more = 1;
			break;
		}
		v[*n] = s_row(st);
		if (v[*n] == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		bytes += sz;
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("store: listing: %s", sqlite3_errmsg(self->db));
		appr_requests_free(v, *n);
		*n = 0;
		return -1;
	}
	*out = v;
	return 0;
}

int
appr_store_list(appr_store_t *self, int all, const char *run_id, uint32_t limit,
                Ahp__Appr__ApprovalRequest ***out, size_t *n)
{
	sqlite3_stmt *st = self->list;
	sqlite3_reset(st);
	sqlite3_bind_int(st, 1, all ? 1 : 0);
	sqlite3_bind_text(st, 2, run_id != NULL ? run_id : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	return s_many(self, st, limit, out, n, NULL);
}

int
appr_store_decided_after(appr_store_t *self, uint64_t after, uint32_t limit,
                         Ahp__Appr__ApprovalRequest ***out, size_t *n, int *more)
{
	sqlite3_stmt *st = self->after;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)limit + 1);
	return s_many(self, st, limit, out, n, more);
}

uint64_t
appr_store_last_seq(appr_store_t *self)
{
	sqlite3_stmt *st = self->last_seq;
	sqlite3_reset(st);
	uint64_t seq = 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		seq = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return seq;
}

int
appr_store_next_expiry(appr_store_t *self, int64_t *ms)
{
	sqlite3_stmt *st = self->next_expiry;
	sqlite3_reset(st);
	int rc = sqlite3_step(st), ret = -1;
	if (rc == SQLITE_ROW) {
		ret = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : 1;
		*ms = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	return ret;
}

int
appr_store_expired(appr_store_t *self, int64_t now, uint64_t *ids, int max)
{
	sqlite3_stmt *st = self->expired;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int(st, 2, max);
	int n = 0;
	while (n < max && sqlite3_step(st) == SQLITE_ROW)
		ids[n++] = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return n;
}
