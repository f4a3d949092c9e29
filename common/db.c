/* SQLite helpers: WAL, synchronous=FULL, busy handling, schema migrations via user_version. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ahp/db.h"
#include "ahp/log.h"

#define BUSY_TIMEOUT_MS 5000

static void s_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Reads a single integer from a one-row query (PRAGMA user_version ...). */
static int
s_query_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Applies migrations one at a time. The version is read inside the
 * write transaction so two processes opening the same new database cannot
 * both apply migration k. */
static int
s_migrate(sqlite3 *db, const char *path, const char *const *migrations, int n, char *err,
          size_t errlen)
{
	for (;;) {
		int v = 0;
		char *msg = NULL;
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
			s_err(err, errlen, "%s: begin migration: %s", path, msg ? msg : "?");
			sqlite3_free(msg);
			return -1;
		}
		if (s_query_int(db, "PRAGMA user_version", &v) < 0) {
			s_err(err, errlen, "%s: read user_version: %s", path, sqlite3_errmsg(db));
			goto fail;
		}
		if (v > n) {
			s_err(err, errlen,
			      "%s: database schema version %d is newer than this build supports "
			      "(%d); "
			      "refusing to open it",
			      path, v, n);
			goto fail;
		}
		if (v == n)
			return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
		if (sqlite3_exec(db, migrations[v], NULL, NULL, &msg) != SQLITE_OK) {
			s_err(err, errlen, "%s: migration %d failed: %s", path, v + 1,
			      msg ? msg : "?");
			sqlite3_free(msg);
			goto fail;
		}
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
		if (sqlite3_exec(db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			s_err(err, errlen, "%s: commit migration %d: %s", path, v + 1,
			      sqlite3_errmsg(db));
			goto fail;
		}
		log_info("db: %s migrated to schema version %d", path, v + 1);
	}
fail:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

sqlite3 *
ahp_db_open(const char *path, const char *const *migrations, int n, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	char *msg = NULL;

	if (err && errlen)
		err[0] = '\0';
	/* SQLite gives the -wal and -shm files the mode of the main file, so
	 * creating it 0600 first keeps the whole journal private. */
	if (strcmp(path, ":memory:") != 0) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0) {
			s_err(err, errlen, "%s: %s", path, strerror(errno));
			return NULL;
		}
		close(fd);
	}
	int rc = sqlite3_open_v2(
	    path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK) {
		s_err(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		s_err(err, errlen, "%s: journal_mode: %s", path, sqlite3_errmsg(db));
		sqlite3_finalize(st);
		goto fail;
	}
	const unsigned char *jm = sqlite3_column_text(st, 0);
	int wal =
	    jm && (strcmp((const char *)jm, "wal") == 0 || strcmp((const char *)jm, "memory") == 0);
	sqlite3_finalize(st);
	if (!wal) {
		s_err(err, errlen, "%s: cannot switch to WAL journal mode", path);
		goto fail;
	}
	if (sqlite3_exec(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", NULL, NULL, &msg) !=
	    SQLITE_OK) {
		s_err(err, errlen, "%s: pragmas: %s", path, msg ? msg : "?");
		sqlite3_free(msg);
		goto fail;
	}
	if (s_migrate(db, path, migrations, n, err, errlen) < 0)
		goto fail;
	return db;
fail:
	sqlite3_close(db);
	return NULL;
}

void
ahp_db_close(sqlite3 **db_p)
{
	if (db_p == NULL || *db_p == NULL)
		return;
	if (sqlite3_close(*db_p) != SQLITE_OK) {
		/* Unfinalized statements: a leak in the caller; close anyway. */
		log_warn("db: close with unfinalized statements: %s", sqlite3_errmsg(*db_p));
		sqlite3_close_v2(*db_p);
	}
	*db_p = NULL;
}

int
ahp_db_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "db: exec failed", "error", msg ? msg : "?",
		           "sql", sql, NULL);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

int
ahp_db_begin(sqlite3 *db)
{
	return ahp_db_exec(db, "BEGIN IMMEDIATE");
}

int
ahp_db_commit(sqlite3 *db)
{
	return ahp_db_exec(db, "COMMIT");
}

int
ahp_db_rollback(sqlite3 *db)
{
	/* Rolling back with no open transaction is not worth a log line. */
	if (sqlite3_get_autocommit(db))
		return 0;
	return ahp_db_exec(db, "ROLLBACK");
}

sqlite3_stmt *
ahp_db_prepare(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "db: prepare failed", "error",
		           sqlite3_errmsg(db), "sql", sql, NULL);
		return NULL;
	}
	return st;
}
