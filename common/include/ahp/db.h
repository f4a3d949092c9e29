/* SQLite helpers: WAL, synchronous=FULL, busy handling, schema versions. */
#ifndef AHP_DB_H
#define AHP_DB_H

#include <sqlite3.h>
#include <stddef.h>

/* Opens (creating) path with WAL, synchronous=FULL, foreign_keys=ON and a
 * busy timeout, then applies migrations[user_version..n-1], each in its own
 * transaction, bumping PRAGMA user_version. A database newer than n is
 * refused. NULL on failure with a message in err. */
sqlite3 *ahp_db_open(const char *path, const char *const *migrations, int n, char *err,
                     size_t errlen);
void ahp_db_close(sqlite3 **db_p);

/* Executes SQL with no results; logs and returns -1 on error. */
int ahp_db_exec(sqlite3 *db, const char *sql);
int ahp_db_begin(sqlite3 *db); /* BEGIN IMMEDIATE */
int ahp_db_commit(sqlite3 *db);
int ahp_db_rollback(sqlite3 *db);

/* Prepares or logs; NULL on error. */
sqlite3_stmt *ahp_db_prepare(sqlite3 *db, const char *sql);

#endif
