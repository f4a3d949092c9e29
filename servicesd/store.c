/* servicesd: the idempotency store — an intent row before a side effect, its outcome after
 * (SQLite, WAL). A loop turn's rows are kept in memory and written in one transaction at
 * its end, fsync'd only when the batch holds an intent (svc.h, svc_store_commit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/db.h"
#include "ahp/log.h"
#include "ahp/util.h"
#include "svc.h"

/* Append-only: never edit a migration that has shipped. */
static const char *const s_migrations[] = {
    "CREATE TABLE calls ("
    "  key TEXT PRIMARY KEY," /* run:step */
    "  run TEXT NOT NULL,"
    "  profile TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  service TEXT NOT NULL,"
    "  digest TEXT NOT NULL," /* hex SHA-256 of service + canonical arguments */
    "  state TEXT NOT NULL CHECK (state IN ('intent', 'done')),"
    "  reply BLOB," /* packed ahp.svcd.CallReply once done */
    "  created_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER"
    ") WITHOUT ROWID;"
    "CREATE INDEX calls_finished ON calls(finished_ms) WHERE state = 'done';",
};

/* One row of the batch. */
typedef struct row {
	struct row *next;
	int state; /* SVC_STORE_INTENT or SVC_STORE_DONE */
	char key[SVC_KEY_MAX], run[72], profile[72], service[SVC_NAME_MAX + 1];
	char digest[SVC_DIGEST_LEN + 1];
	uint32_t step;
	int64_t at_ms;
	uint8_t *reply;
	size_t len;
} row_t;

struct svc_store {
	sqlite3 *db;
	sqlite3_stmt *get, *intent, *done, *prune, *sync_full, *sync_normal;
	row_t *head, **tail;
};

svc_store_t *
svc_store_open(const char *path, char *err, size_t errlen)
{
	svc_store_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	self->tail = &self->head;
	self->db = ahp_db_open(path, s_migrations, sizeof s_migrations / sizeof s_migrations[0],
	                       err, errlen);
	if (self->db == NULL) {
		free(self);
		return NULL;
	}
	self->get =
	    ahp_db_prepare(self->db, "SELECT state, digest, reply FROM calls WHERE key = ?");
	self->intent = ahp_db_prepare(
	    self->db, "INSERT OR IGNORE INTO calls (key, run, profile, step, service, digest, "
	              "state, created_ms) VALUES (?, ?, ?, ?, ?, ?, 'intent', ?)");
	/* An outcome replaces its intent, or is the call's only row. */
	self->done = ahp_db_prepare(
	    self->db, "INSERT INTO calls (key, run, profile, step, service, digest, state, "
	              "reply, created_ms, finished_ms) VALUES (?, ?, ?, ?, ?, ?, 'done', ?, ?, ?) "
	              "ON CONFLICT(key) DO UPDATE SET state = 'done', reply = excluded.reply, "
	              "finished_ms = excluded.finished_ms");
	self->prune =
	    ahp_db_prepare(self->db, "DELETE FROM calls WHERE state = 'done' AND finished_ms < ?");
	self->sync_full = ahp_db_prepare(self->db, "PRAGMA synchronous = FULL");
	self->sync_normal = ahp_db_prepare(self->db, "PRAGMA synchronous = NORMAL");
	if (self->get == NULL || self->intent == NULL || self->done == NULL ||
	    self->prune == NULL || self->sync_full == NULL || self->sync_normal == NULL) {
		snprintf(err, errlen, "%s: cannot prepare statements: %s", path,
		         sqlite3_errmsg(self->db));
		svc_store_close(&self);
		return NULL;
	}
	return self;
}

static void
s_rows_free(svc_store_t *self)
{
	row_t *r = self->head;
	while (r != NULL) {
		row_t *next = r->next;
		free(r->reply);
		free(r);
		r = next;
	}
	self->head = NULL;
	self->tail = &self->head;
}

void
svc_store_close(svc_store_t **self_p)
{
	svc_store_t *self = *self_p;
	if (self == NULL)
		return;
	s_rows_free(self);
	sqlite3_finalize(self->get);
	sqlite3_finalize(self->intent);
	sqlite3_finalize(self->done);
	sqlite3_finalize(self->prune);
	sqlite3_finalize(self->sync_full);
	sqlite3_finalize(self->sync_normal);
	ahp_db_close(&self->db);
	free(self);
	*self_p = NULL;
}

int
svc_store_get(svc_store_t *self, const char *key, char *digest, uint8_t **reply, size_t *len)
{
	*reply = NULL;
	*len = 0;
	digest[0] = '\0';
	/* The batch first: its latest row for key is the newest truth. */
	const row_t *found = NULL;
	for (const row_t *r = self->head; r != NULL; r = r->next)
		if (strcmp(r->key, key) == 0)
			found = r;
	if (found != NULL) {
		snprintf(digest, SVC_DIGEST_LEN + 1, "%s", found->digest);
		if (found->state == SVC_STORE_DONE) {
			*reply = malloc(found->len ? found->len : 1);
			if (*reply == NULL)
				return -1;
			if (found->len > 0)
				memcpy(*reply, found->reply, found->len);
			*len = found->len;
		}
		return found->state;
	}
	sqlite3_stmt *st = self->get;
	int state = SVC_STORE_NONE;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(st, 0);
		const char *d = (const char *)sqlite3_column_text(st, 1);
		snprintf(digest, SVC_DIGEST_LEN + 1, "%s", d != NULL ? d : "");
		state = s != NULL && strcmp(s, "done") == 0 ? SVC_STORE_DONE : SVC_STORE_INTENT;
		if (state == SVC_STORE_DONE) {
			const void *b = sqlite3_column_blob(st, 2);
			int n = sqlite3_column_bytes(st, 2);
			*reply = malloc(n > 0 ? (size_t)n : 1);
			if (*reply == NULL) {
				sqlite3_reset(st);
				return -1;
			}
			if (n > 0)
				memcpy(*reply, b, (size_t)n);
			*len = (size_t)n;
		}
	} else if (rc != SQLITE_DONE) {
		log_error("store: lookup of %s: %s", key, sqlite3_errmsg(self->db));
		state = -1;
	}
	sqlite3_reset(st);
	return state;
}

static row_t *
s_row(svc_store_t *self, int state, const svc_store_call_t *call)
{
	row_t *r = calloc(1, sizeof *r);
	if (r == NULL)
		return NULL;
	r->state = state;
	snprintf(r->key, sizeof r->key, "%s", call->key);
	snprintf(r->run, sizeof r->run, "%s", call->run);
	snprintf(r->profile, sizeof r->profile, "%s", call->profile);
	snprintf(r->service, sizeof r->service, "%s", call->service);
	snprintf(r->digest, sizeof r->digest, "%s", call->digest);
	r->step = call->step;
	r->at_ms = ahp_now_ms();
	*self->tail = r;
	self->tail = &r->next;
	return r;
}

int
svc_store_intent(svc_store_t *self, const svc_store_call_t *call)
{
	return s_row(self, SVC_STORE_INTENT, call) != NULL ? 0 : -1;
}

int
svc_store_done(svc_store_t *self, const svc_store_call_t *call, const uint8_t *reply, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);
	if (copy == NULL)
		return -1;
	if (len > 0)
		memcpy(copy, reply, len);
	row_t *r = s_row(self, SVC_STORE_DONE, call);
	if (r == NULL) {
		free(copy);
		return -1;
	}
	r->reply = copy;
	r->len = len;
	return 0;
}

static int
s_step(svc_store_t *self, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: %s: %s", what, sqlite3_errmsg(self->db));
		return -1;
	}
	return 0;
}

static int
s_write(svc_store_t *self, const row_t *r)
{
	sqlite3_stmt *st = r->state == SVC_STORE_INTENT ? self->intent : self->done;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->run, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->profile, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, r->step);
	sqlite3_bind_text(st, 5, r->service, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->digest, -1, SQLITE_STATIC);
	if (r->state == SVC_STORE_INTENT) {
		sqlite3_bind_int64(st, 7, r->at_ms);
		return s_step(self, st, "intent");
	}
	sqlite3_bind_blob(st, 7, r->len > 0 ? (const void *)r->reply : (const void *)"",
	                  (int)r->len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, r->at_ms);
	sqlite3_bind_int64(st, 9, r->at_ms);
	return s_step(self, st, "outcome");
}

int
svc_store_commit(svc_store_t *self)
{
	if (self->head == NULL)
		return 0;
	int intents = 0;
	for (const row_t *r = self->head; r != NULL; r = r->next)
		intents |= r->state == SVC_STORE_INTENT;
	/* The sync level is per connection and set outside a transaction. */
	if (s_step(self, intents ? self->sync_full : self->sync_normal, "synchronous") != 0 ||
	    ahp_db_begin(self->db) != 0) {
		s_rows_free(self);
		return -1;
	}
	for (const row_t *r = self->head; r != NULL; r = r->next)
		if (s_write(self, r) != 0) {
			ahp_db_rollback(self->db);
			s_rows_free(self);
			return -1;
		}
	int rc = ahp_db_commit(self->db);
	if (rc != 0)
		ahp_db_rollback(self->db);
	s_rows_free(self);
	return rc;
}

int
svc_store_prune(svc_store_t *self, int64_t cutoff_ms)
{
	sqlite3_stmt *st = self->prune;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, cutoff_ms);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: prune: %s", sqlite3_errmsg(self->db));
		return -1;
	}
	return sqlite3_changes(self->db);
}
