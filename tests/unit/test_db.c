/* Unit tests for the SQLite helpers: pragmas, migrations, version refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/db.h"
#include "ahp/log.h"

static char s_dir[64];
static char s_path[128];

static const char *const s_migrations[] = {
    /* one migration of two statements (parenthesised: one element) */
    ("CREATE TABLE runs (id TEXT PRIMARY KEY, state TEXT NOT NULL);"
     "INSERT INTO runs VALUES ('seed', 'queued');"),
    "CREATE TABLE steps (run TEXT NOT NULL REFERENCES runs(id), n INTEGER NOT NULL);",
    "ALTER TABLE runs ADD COLUMN note TEXT;",
};

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-db-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(s_path, sizeof s_path, "%s/t.db", s_dir);
	ahp_log_init("test_db", AHP_LOG_WARN);
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

static int
s_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = ahp_db_prepare(db, sql);
	assert_non_null(st);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static const char *
s_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *st = ahp_db_prepare(db, sql);
	assert_non_null(st);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return buf;
}

static void
test_open_migrates_once(void **state)
{
	(void)state;
	char err[256], buf[32];
	sqlite3 *db = ahp_db_open(s_path, s_migrations, 2, err, sizeof err);
	assert_non_null(db);
	assert_int_equal(s_int(db, "PRAGMA user_version"), 2);
	assert_string_equal(s_text(db, "PRAGMA journal_mode", buf, sizeof buf), "wal");
	assert_int_equal(s_int(db, "PRAGMA synchronous"), 2); /* FULL */
	assert_int_equal(s_int(db, "PRAGMA foreign_keys"), 1);
	assert_int_equal(s_int(db, "PRAGMA busy_timeout"), 5000);
	/* foreign keys are enforced */
	assert_int_equal(ahp_db_exec(db, "INSERT INTO steps VALUES ('nope', 1)"), -1);
	assert_int_equal(ahp_db_exec(db, "INSERT INTO steps VALUES ('seed', 1)"), 0);
	ahp_db_close(&db);
	assert_null(db);

	/* The file is private. */
	struct stat st;
	assert_int_equal(stat(s_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* Reopen: migration 1 is not re-run (its INSERT would fail on the
	 * primary key), version is kept, and a new migration is applied. */
	db = ahp_db_open(s_path, s_migrations, 2, err, sizeof err);
	assert_non_null(db);
	assert_int_equal(s_int(db, "SELECT count(*) FROM runs"), 1);
	ahp_db_close(&db);
	db = ahp_db_open(s_path, s_migrations, 3, err, sizeof err);
	assert_non_null(db);
	assert_int_equal(s_int(db, "PRAGMA user_version"), 3);
	assert_int_equal(ahp_db_exec(db, "UPDATE runs SET note = 'x'"), 0);
	assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), 1);
	ahp_db_close(&db);
}

static void
test_newer_refused(void **state)
{
	(void)state;
	char err[256];
	/* The database is at version 3 now; a build that knows only 2 refuses it. */
	sqlite3 *db = ahp_db_open(s_path, s_migrations, 2, err, sizeof err);
	assert_null(db);
	assert_non_null(strstr(err, "newer"));
	assert_non_null(strstr(err, s_path));
}

static void
test_failed_migration_rolls_back(void **state)
{
	(void)state;
	char err[256], path[160];
	static const char *const bad[] = {
	    "CREATE TABLE a (x INTEGER);",
	    "CREATE TABLE b (y INTEGER); THIS IS NOT SQL;",
	};
	snprintf(path, sizeof path, "%s/bad.db", s_dir);
	sqlite3 *db = ahp_db_open(path, bad, 2, err, sizeof err);
	assert_null(db);
	assert_non_null(strstr(err, "migration 2"));
	/* Migration 1 stuck, migration 2 left nothing behind. */
	db = ahp_db_open(path, bad, 1, err, sizeof err);
	assert_non_null(db);
	assert_int_equal(s_int(db, "PRAGMA user_version"), 1);
	assert_int_equal(s_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'b'"), 0);
	ahp_db_close(&db);
}

static void
test_transactions(void **state)
{
	(void)state;
	char err[256];
	sqlite3 *db = ahp_db_open(s_path, s_migrations, 3, err, sizeof err);
	assert_non_null(db);
	assert_int_equal(ahp_db_begin(db), 0);
	assert_int_equal(ahp_db_exec(db, "INSERT INTO runs (id, state) VALUES ('r2', 'running')"),
	                 0);
	assert_int_equal(ahp_db_rollback(db), 0);
	assert_int_equal(s_int(db, "SELECT count(*) FROM runs WHERE id = 'r2'"), 0);
	assert_int_equal(ahp_db_begin(db), 0);
	assert_int_equal(ahp_db_exec(db, "INSERT INTO runs (id, state) VALUES ('r2', 'running')"),
	                 0);
	assert_int_equal(ahp_db_commit(db), 0);
	assert_int_equal(ahp_db_rollback(db), 0); /* nothing open: harmless */
	assert_null(ahp_db_prepare(db, "SELECT nope FROM"));
	ahp_db_close(&db);

	/* A second connection sees the committed row (WAL, durable). */
	db = ahp_db_open(s_path, s_migrations, 3, err, sizeof err);
	assert_int_equal(s_int(db, "SELECT count(*) FROM runs WHERE id = 'r2'"), 1);
	ahp_db_close(&db);
}

static void
test_bad_path(void **state)
{
	(void)state;
	char err[256];
	assert_null(ahp_db_open("/nonexistent-dir/x.db", s_migrations, 1, err, sizeof err));
	assert_non_null(strstr(err, "/nonexistent-dir/x.db"));
	/* A symlink is not followed. */
	char link[160];
	snprintf(link, sizeof link, "%s/link.db", s_dir);
	assert_int_equal(symlink(s_path, link), 0);
	assert_null(ahp_db_open(link, s_migrations, 3, err, sizeof err));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_migrates_once),
	    cmocka_unit_test(test_newer_refused),
	    cmocka_unit_test(test_failed_migration_rolls_back),
	    cmocka_unit_test(test_transactions),
	    cmocka_unit_test(test_bad_path),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
