/* servicesd: the idempotency store — an intent row before a side effect, its outcome after
 * (SQLite, WAL, synchronous=FULL). */
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

struct svc_store {
	sqlite3 *db;
	sqlite3_stmt *get, *intent, *done, *prune;
	int in_batch;
};

svc_store_t *
svc_store_open(const char *path, char *err, size_t errlen)
{
	svc_store_t *self = calloc(1, sizeof *self);
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
	self->get =
	    ahp_db_prepare(self->db, "SELECT state, digest, reply FROM calls WHERE key = ?");
	self->intent = ahp_db_prepare(
	    self->db, "INSERT OR IGNORE INTO calls (key, run, profile, step, service, digest, "
	              "state, created_ms) VALUES (?, ?, ?, ?, ?, ?, 'intent', ?)");
	self->done = ahp_db_prepare(
	    self->db, "UPDATE calls SET state = 'done', reply = ?, finished_ms = ? WHERE key = ?");
	self->prune =
	    ahp_db_prepare(self->db, "DELETE FROM calls WHERE state = 'done' AND finished_ms < ?");
	if (self->get == NULL || self->intent == NULL || self->done == NULL ||
	    self->prune == NULL) {
		snprintf(err, errlen, "%s: cannot prepare statements: %s", path,
		         sqlite3_errmsg(self->db));
		svc_store_close(&self);
		return NULL;
	}
	return self;
}

void
svc_store_close(svc_store_t **self_p)
{
	svc_store_t *self = *self_p;
	if (self == NULL)
		return;
	if (self->in_batch)
		ahp_db_rollback(self->db);
	sqlite3_finalize(self->get);
	sqlite3_finalize(self->intent);
	sqlite3_finalize(self->done);
	sqlite3_finalize(self->prune);
	ahp_db_close(&self->db);
	free(self);
	*self_p = NULL;
}

int
svc_store_get(svc_store_t *self, const char *key, char *digest, uint8_t **reply, size_t *len)
{
	sqlite3_stmt *st = self->get;
	int state = SVC_STORE_NONE;
	*reply = NULL;
	*len = 0;
	digest[0] = '\0';
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

int
svc_store_begin(svc_store_t *self)
{
	if (self->in_batch)
		return 0;
	if (ahp_db_begin(self->db) != 0)
		return -1;
	self->in_batch = 1;
	return 0;
}

int
svc_store_intent(svc_store_t *self, const char *key, const char *run, const char *profile,
                 uint32_t step, const char *service, const char *digest)
{
	if (svc_store_begin(self) != 0)
		return -1;
	sqlite3_stmt *st = self->intent;
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, run, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, profile, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, step);
	sqlite3_bind_text(st, 5, service, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, digest, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, ahp_now_ms());
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: intent %s: %s", key, sqlite3_errmsg(self->db));
		return -1;
	}
	return 0;
}

int
svc_store_done(svc_store_t *self, const char *key, const uint8_t *reply, size_t len)
{
	if (svc_store_begin(self) != 0)
		return -1;
	sqlite3_stmt *st = self->done;
	sqlite3_reset(st);
	sqlite3_bind_blob(st, 1, len > 0 ? reply : (const void *)"", (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, ahp_now_ms());
	sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_error("store: outcome %s: %s", key, sqlite3_errmsg(self->db));
		return -1;
	}
	return 0;
}

int
svc_store_commit(svc_store_t *self)
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
