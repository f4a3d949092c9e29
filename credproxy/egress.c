/* credproxy: the durable egress log (SQLite, one commit per event-loop turn), its logfmt line,
 * and the ZeroMQ control socket that serves the records by run and seq (proto/credproxy.proto). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>
#include <zmq.h>

#include "ahp/db.h"
#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"

#include "cp.h"
#include "credproxy.pb-c.h"

/* Records waiting for the turn's commit. A turn that records more than this
 * drops the rest (counted and logged): memory stays bounded when the disk
 * stalls, and the logfmt line of every request is written regardless. */
#define EGRESS_QUEUE_MAX 8192
/* Longest path kept in a record (bytes); a longer one is cut. The
 * request line may be up to max_header_bytes; the log is for people. */
#define EGRESS_PATH_MAX 2048
/* Longest of the other strings of a record (reason, rule, injected). */
#define EGRESS_FIELD_MAX 512
/* The control socket: requests are a few bytes; replies stop before this. */
#define CTL_MAX_MSG (64 * 1024)
#define CTL_REPLY_MAX (1024 * 1024)
#define CTL_LIMIT_MAX 1000
#define CTL_LIMIT_DEFAULT 100
/* Requests served per wake-up before yielding to the proxy's connections. */
#define CTL_BATCH 32
/* Seconds between attempts to open a database that failed to open, and
 * between "records dropped" log lines. */
#define RETRY_S 5
#define RUN_ID_MAX 64

static const char *const s_migrations[] = {
    "CREATE TABLE egress ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ts_ms INTEGER NOT NULL,"
    " run TEXT NOT NULL,"
    " profile TEXT NOT NULL,"
    " method TEXT NOT NULL,"
    " host TEXT NOT NULL,"
    " port INTEGER NOT NULL,"
    " path TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " bytes_up INTEGER NOT NULL,"
    " bytes_down INTEGER NOT NULL,"
    " duration_ms INTEGER NOT NULL,"
    " allowed INTEGER NOT NULL,"
    " rule TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " injected TEXT NOT NULL,"
    " redactions INTEGER NOT NULL);"
    "CREATE INDEX egress_run ON egress(run, seq);"
    /* log_id: made once with the log, so that a client holding a cursor
     * notices a log that was deleted and started again (seqs restart). */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))));",
};

enum { ST_INSERT, ST_LIST, ST_LOG_ID, ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_INSERT_N, ST_COUNT };

/* Rows per multi-row INSERT (ST_INSERT_N): each statement updates
 * sqlite_sequence (AUTOINCREMENT), opens its cursors and halts once, which
 * cost more than the row itself; a full flush inserts S_ROWS rows a
 * statement, the rest one by one. 16 columns x 64 rows = 1,024 parameters,
 * under SQLite's limit (32766 since 3.32; Debian 12 has 3.40). */
#define S_ROWS 64
#define S_COLS 16

static const char *const s_sql[ST_COUNT] = {
    [ST_INSERT] = "INSERT INTO egress (ts_ms, run, profile, method, host, port, path, status,"
                  " bytes_up, bytes_down, duration_ms, allowed, rule, reason, injected,"
                  " redactions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
                  " ?14, ?15, ?16)",
    [ST_LIST] = "SELECT seq, ts_ms, run, profile, method, host, port, path, status, bytes_up,"
                " bytes_down, duration_ms, allowed, rule, reason, injected, redactions"
                " FROM egress WHERE run = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_LOG_ID] = "SELECT value FROM meta WHERE key = 'log_id'",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT_N] = NULL, /* made by s_insert_n_sql */
};

/* "INSERT INTO egress (...) VALUES (?, ...), ..." with S_ROWS rows; the
 * parameters are numbered in order (row r, column k is r*S_COLS+k+1). */
static char *
s_insert_n_sql(void)
{
	const char *head = "INSERT INTO egress (ts_ms, run, profile, method, host, port, path, "
	                   "status, bytes_up, bytes_down, duration_ms, allowed, rule, reason, "
	                   "injected, redactions) VALUES ";
	size_t row = 2 + S_COLS * 2, len = strlen(head) + S_ROWS * (row + 1) + 1;
	char *sql = malloc(len), *p = sql;
	if (sql == NULL)
		return NULL;
	memcpy(p, head, strlen(head));
	p += strlen(head);
	for (int r = 0; r < S_ROWS; r++) {
		*p++ = r ? ',' : ' ';
		*p++ = '(';
		for (int k = 0; k < S_COLS; k++) {
			*p++ = '?';
			*p++ = k + 1 < S_COLS ? ',' : ')';
		}
	}
	*p = '\0';
	return sql;
}

/* One queued record: numbers, and its strings packed in one allocation. */
enum { F_RUN, F_PROFILE, F_METHOD, F_HOST, F_PATH, F_RULE, F_REASON, F_INJECTED, F_N };

typedef struct {
	int64_t ts_ms;
	uint16_t port;
	int status;
	uint64_t bytes_up, bytes_down;
	uint32_t duration_ms;
	bool allowed;
	unsigned redactions;
	char *str[F_N]; /* str[0] owns the block */
	int len[F_N];   /* their lengths (bytes, no NUL; each under 4 KiB) */
} s_rec_t;

struct cp_egress {
	struct event_base *base;
	char *db_path;
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	char log_id[40];
	int64_t next_open_ms; /* monotonic: when a failed open is tried again */

	s_rec_t *queue;
	size_t n_queued;
	struct event *flush_ev; /* made active when the queue stops being empty */
	uint64_t dropped;       /* records lost (queue full, database errors) */
	uint64_t dropped_logged;
	int64_t drop_log_ms;

	ahp_rpc_server_t *ctl;
	struct event *ctl_ev;

	int64_t retain_ms;     /* records older than this are deleted; 0 = kept */
	int64_t next_prune_ms; /* monotonic */
};

/* --- strings --- */

/* Length of s kept in a record: at most max bytes, never ending inside a
 * UTF-8 sequence (s was made valid first). */
static size_t
s_cut(const char *s, size_t max)
{
	return ahp_utf8_prefix(s, max);
}

/* Copies the record's strings into one block: each valid UTF-8 (protobuf
 * strings, and what the orchestrator shows), each bounded. The usual ASCII
 * record costs one allocation; only invalid text is sanitized. 0 / -1. */
static int
s_rec_copy(s_rec_t *r, const cp_egress_rec_t *in)
{
	const char *src[F_N] = {in->run,  in->profile, in->method, in->host,
	                        in->path, in->rule,    in->reason, in->injected};
	static const size_t max[F_N] = {RUN_ID_MAX,       EGRESS_FIELD_MAX, 32,
	                                CP_HOST_MAX,      EGRESS_PATH_MAX,  EGRESS_FIELD_MAX,
	                                EGRESS_FIELD_MAX, EGRESS_FIELD_MAX};
	char *clean[F_N] = {0};
	const char *text[F_N];
	size_t len[F_N], total = 0;
	int rc = -1;
	for (int i = 0; i < F_N; i++) {
		const char *s = src[i] ? src[i] : "";
		/* One pass for the usual ASCII text: its length, and whether a
		 * byte above 0x7f asks for the UTF-8 check. */
		size_t cap = max[i] * 4, n = 0;
		unsigned char high = 0;
		while (n <= cap && s[n] != '\0')
			high |= (unsigned char)s[n++];
		if (n > cap)
			n = cap; /* bounds the sanitizer's work too */
		text[i] = s;
		if ((high & 0x80) && !ahp_utf8_valid(s, n, 0)) {
			clean[i] = ahp_utf8_sanitize(s, n, 0, NULL, NULL);
			if (clean[i] == NULL)
				goto out;
			text[i] = clean[i];
			n = strlen(clean[i]);
		}
		/* Cut at max bytes, never inside a UTF-8 sequence. */
		len[i] = n <= max[i] ? n : s_cut(text[i], max[i]);
		total += len[i] + 1;
	}
	char *block = malloc(total);
	if (block == NULL)
		goto out;
	char *p = block;
	for (int i = 0; i < F_N; i++) {
		memcpy(p, text[i], len[i]);
		p[len[i]] = '\0';
		r->str[i] = p;
		r->len[i] = (int)len[i];
		p += len[i] + 1;
	}
	rc = 0;
out:
	for (int i = 0; i < F_N; i++)
		free(clean[i]);
	return rc;
}

static void
s_rec_free(s_rec_t *r)
{
	free(r->str[0]);
	memset(r, 0, sizeof *r);
}

/* --- database --- */

static void
s_db_close(cp_egress_t *self)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(self->st[i]);
		self->st[i] = NULL;
	}
	ahp_db_close(&self->db);
}

/* Opens the log. WAL with synchronous=NORMAL: a commit is a write to the
 * WAL, never an fsync in the proxy's event loop (a record survives a
 * credproxy crash; only a power loss can take the last commits). 0 / -1
 * with err. */
static int
s_db_open(cp_egress_t *self, char *err, size_t errlen)
{
	self->db = ahp_db_open(self->db_path, s_migrations,
	                       (int)(sizeof s_migrations / sizeof s_migrations[0]), err, errlen);
	if (self->db == NULL)
		return -1;
	if (sqlite3_exec(self->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	for (int i = 0; i < ST_COUNT; i++) {
		char *made = i == ST_INSERT_N ? s_insert_n_sql() : NULL;
		const char *sql = i == ST_INSERT_N ? made : s_sql[i];
		int rc = sql == NULL
		             ? SQLITE_NOMEM
		             : sqlite3_prepare_v3(self->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
		                                  &self->st[i], NULL);
		free(made);
		if (rc != SQLITE_OK)
			goto fail;
	}
	sqlite3_stmt *st = self->st[ST_LOG_ID];
	if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_text(st, 0) == NULL) {
		sqlite3_reset(st);
		goto fail;
	}
	ahp_strlcpy(self->log_id, (const char *)sqlite3_column_text(st, 0), sizeof self->log_id);
	sqlite3_reset(st);
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", self->db_path, sqlite3_errmsg(self->db));
	s_db_close(self);
	return -1;
}

/* The database, opening it when it is not open yet (started as root, it is
 * opened in the loop, after the privilege drop, so that its files belong to
 * credproxy's user). NULL while it cannot be opened (retried every RETRY_S). */
static sqlite3 *
s_db(cp_egress_t *self)
{
	if (self->db != NULL)
		return self->db;
	int64_t now = ahp_mono_ms();
	if (now < self->next_open_ms)
		return NULL;
	char err[512];
	if (s_db_open(self, err, sizeof err) != 0) {
		self->next_open_ms = now + RETRY_S * 1000;
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "egress log: cannot open the database",
		           "error", err, NULL);
		return NULL;
	}
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "egress log: open", "db", self->db_path, "log_id",
	           self->log_id, NULL);
	return self->db;
}

static int
s_tx(cp_egress_t *self, int which)
{
	sqlite3_stmt *st = self->st[which];
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void
s_count_drop(cp_egress_t *self, uint64_t n, const char *why)
{
	self->dropped += n;
	int64_t now = ahp_mono_ms();
	/* One line per RETRY_S at most: a full disk must not flood the log. */
	if (now - self->drop_log_ms < RETRY_S * 1000 && self->dropped_logged != 0)
		return;
	char total[24], since[24];
	snprintf(total, sizeof total, "%" PRIu64, self->dropped);
	snprintf(since, sizeof since, "%" PRIu64, self->dropped - self->dropped_logged);
	ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "egress log: records dropped", "reason", why,
	           "dropped", since, "dropped_total", total, NULL);
	self->dropped_logged = self->dropped;
	self->drop_log_ms = now;
}

/* Binds r to parameters b+1 .. b+S_COLS of st. */
static void
s_bind_rec(sqlite3_stmt *st, int b, const s_rec_t *r)
{
	sqlite3_bind_int64(st, b + 1, r->ts_ms);
	sqlite3_bind_text(st, b + 2, r->str[F_RUN], r->len[F_RUN], SQLITE_STATIC);
	sqlite3_bind_text(st, b + 3, r->str[F_PROFILE], r->len[F_PROFILE], SQLITE_STATIC);
	sqlite3_bind_text(st, b + 4, r->str[F_METHOD], r->len[F_METHOD], SQLITE_STATIC);
	sqlite3_bind_text(st, b + 5, r->str[F_HOST], r->len[F_HOST], SQLITE_STATIC);
	sqlite3_bind_int(st, b + 6, r->port);
	sqlite3_bind_text(st, b + 7, r->str[F_PATH], r->len[F_PATH], SQLITE_STATIC);
	sqlite3_bind_int(st, b + 8, r->status);
	/* SQLite integers are signed 64-bit; no byte count gets near 2^63. */
	sqlite3_bind_int64(st, b + 9, (sqlite3_int64)r->bytes_up);
	sqlite3_bind_int64(st, b + 10, (sqlite3_int64)r->bytes_down);
	sqlite3_bind_int64(st, b + 11, r->duration_ms);
	sqlite3_bind_int(st, b + 12, r->allowed ? 1 : 0);
	sqlite3_bind_text(st, b + 13, r->str[F_RULE], r->len[F_RULE], SQLITE_STATIC);
	sqlite3_bind_text(st, b + 14, r->str[F_REASON], r->len[F_REASON], SQLITE_STATIC);
	sqlite3_bind_text(st, b + 15, r->str[F_INJECTED], r->len[F_INJECTED], SQLITE_STATIC);
	sqlite3_bind_int64(st, b + 16, r->redactions);
}

/* Commits every queued record in one transaction. A database that cannot
 * take them loses them (counted, logged): the proxy never waits for it. */
/* Deletes records older than the retention, at most once an hour (the
 * egress log must not grow without bound). */
static void
s_prune(cp_egress_t *self)
{
	int64_t now = ahp_mono_ms();
	if (self->retain_ms <= 0 || now < self->next_prune_ms || self->db == NULL)
		return;
	self->next_prune_ms = now + 3600 * 1000;
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(self->db, "DELETE FROM egress WHERE ts_ms < ?1", -1, &st, NULL) !=
	    SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, ahp_now_ms() - self->retain_ms);
	if (sqlite3_step(st) != SQLITE_DONE)
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "egress log: pruning failed", "error",
		           sqlite3_errmsg(self->db), NULL);
	else if (sqlite3_changes(self->db) > 0) {
		char n[24];
		snprintf(n, sizeof n, "%d", sqlite3_changes(self->db));
		ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "egress log: pruned old records", "deleted", n,
		           NULL);
	}
	sqlite3_finalize(st);
}

void
cp_egress_set_retention(cp_egress_t *self, long days)
{
	self->retain_ms = days > 0 ? (int64_t)days * 86400 * 1000 : 0;
	self->next_prune_ms = 0;
}

static void
s_flush(cp_egress_t *self)
{
	size_t n = self->n_queued;
	if (n == 0)
		return;
	const char *why = NULL;
	if (s_db(self) == NULL) {
		why = "database not open";
	} else if (s_tx(self, ST_BEGIN) != 0) {
		why = sqlite3_errmsg(self->db);
	} else {
		/* Rows go in queue order either way (seq follows it). */
		sqlite3_stmt *stn = self->st[ST_INSERT_N];
		size_t i = 0;
		for (; i + S_ROWS <= n && why == NULL; i += S_ROWS) {
			sqlite3_reset(stn);
			for (int r = 0; r < S_ROWS; r++)
				s_bind_rec(stn, r * S_COLS, &self->queue[i + (size_t)r]);
			if (sqlite3_step(stn) != SQLITE_DONE)
				why = sqlite3_errmsg(self->db);
		}
		sqlite3_reset(stn);
		sqlite3_clear_bindings(stn);
		sqlite3_stmt *st = self->st[ST_INSERT];
		for (; i < n && why == NULL; i++) {
			sqlite3_reset(st);
			s_bind_rec(st, 0, &self->queue[i]);
			if (sqlite3_step(st) != SQLITE_DONE)
				why = sqlite3_errmsg(self->db);
		}
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		if (why == NULL && s_tx(self, ST_COMMIT) != 0)
			why = sqlite3_errmsg(self->db);
		if (why != NULL && !sqlite3_get_autocommit(self->db))
			(void)s_tx(self, ST_ROLLBACK);
	}
	if (why != NULL) {
		char buf[256];
		snprintf(buf, sizeof buf, "%s", why); /* errmsg changes with the next call */
		s_count_drop(self, n, buf);
	}
	for (size_t i = 0; i < n; i++)
		s_rec_free(&self->queue[i]);
	self->n_queued = 0;
	s_prune(self);
}

static void
s_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	cp_egress_t *self = arg;
	/* The first turn opens a database deferred by cp_egress_new. */
	if (self->db == NULL)
		(void)s_db(self);
	s_flush(self);
}

/* --- the logfmt line --- */

/* Decimal text of v into b (24 bytes): a line per request, no printf. */
static void
s_utoa(char b[24], uint64_t v)
{
	char t[24];
	int i = 0;
	do
		t[i++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	for (int k = 0; k < i; k++)
		b[k] = t[i - 1 - k];
	b[i] = '\0';
}

static void
s_log_line(const cp_egress_rec_t *r)
{
	if (!ahp_log_enabled(AHP_LOG_INFO))
		return;
	char port[24], status[24], up[24], down[24], ms[24], red[24];
	s_utoa(port, r->port);
	s_utoa(status, r->status > 0 ? (uint64_t)r->status : 0);
	s_utoa(up, r->bytes_up);
	s_utoa(down, r->bytes_down);
	s_utoa(ms, r->duration_ms);
	s_utoa(red, r->redactions);
#define S(x) ((x) != NULL ? (x) : "")
	/* Names only: injected holds header names, never what they carried. */
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "egress", "run", S(r->run), "profile", S(r->profile),
	           "method", S(r->method), "host", S(r->host), "port", port, "path", S(r->path),
	           "status", status, "up", up, "down", down, "ms", ms, "decision",
	           r->allowed ? "allow" : "deny", "rule", S(r->rule), "injected", S(r->injected),
	           "redactions", red, "reason", S(r->reason), NULL);
#undef S
}

/* --- the control socket --- */

static bool
s_run_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n > RUN_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

static void
s_reply(cp_egress_t *self, ahp_rpc_req_t **req, const Ahp__Cp__Reply *rep)
{
	size_t len = ahp__cp__reply__get_packed_size(rep);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL) {
		(void)ahp_rpc_server_reply_error(self->ctl, req, AHP__STATUS__ERR_INTERNAL,
		                                 "out of memory");
		return;
	}
	ahp__cp__reply__pack(rep, buf);
	if (ahp_rpc_server_reply(self->ctl, req, buf, len) != 0)
		log_warn("egress ctl: reply not sent");
	free(buf);
}

static void
s_reply_error(cp_egress_t *self, ahp_rpc_req_t **req, int status, const char *msg)
{
	Ahp__Error e;
	Ahp__Cp__Reply rep = AHP__CP__REPLY__INIT;
	ahp_error_set(&e, status, msg);
	rep.error = &e;
	s_reply(self, req, &rep);
}

static char *
s_col_dup(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);
	return strdup(s != NULL ? s : "");
}

static void
s_record_free(Ahp__Cp__EgressRecord *r)
{
	free(r->run);
	free(r->profile);
	free(r->method);
	free(r->host);
	free(r->path);
	free(r->rule);
	free(r->reason);
	free(r->injected);
}

/* Bytes a record adds to a reply: its own size plus tag and length prefix. */
static size_t
s_record_wire(const Ahp__Cp__EgressRecord *r)
{
	return ahp__cp__egress_record__get_packed_size(r) + 1 + 5;
}

static void
s_on_list(cp_egress_t *self, ahp_rpc_req_t **req, const Ahp__Cp__EgressListRequest *lr)
{
	const char *run = lr->run_id != NULL ? lr->run_id : "";
	if (!s_run_id_ok(run)) {
		s_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		              "run_id must be empty or match [A-Za-z0-9-]{1,64}");
		return;
	}
	if (lr->limit > CTL_LIMIT_MAX) {
		s_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		              "limit must be at most 1000");
		return;
	}
	if (lr->after_seq > (uint64_t)INT64_MAX) {
		s_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "after_seq out of range");
		return;
	}
	uint32_t limit = lr->limit != 0 ? lr->limit : CTL_LIMIT_DEFAULT;
	/* What was recorded so far is committed before it is looked for. */
	s_flush(self);
	if (s_db(self) == NULL) {
		s_reply_error(self, req, AHP__STATUS__ERR_UNAVAILABLE,
		              "the egress log database is not open (see credproxy's log)");
		return;
	}
	Ahp__Cp__EgressRecord *recs = calloc(limit, sizeof *recs);
	Ahp__Cp__EgressRecord **ptrs = calloc(limit, sizeof *ptrs);
	size_t n = 0, bytes = 64;
	bool more = false, failed = false;
	sqlite3_stmt *st = self->st[ST_LIST];
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)lr->after_seq);
	/* One row past the page says whether more follow. */
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
	int rc = SQLITE_DONE;
	while (recs != NULL && ptrs != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			more = true;
			break;
		}
		Ahp__Cp__EgressRecord *r = &recs[n];
		ahp__cp__egress_record__init(r);
		r->seq = (uint64_t)sqlite3_column_int64(st, 0);
		r->ts_ms = sqlite3_column_int64(st, 1);
		r->run = s_col_dup(st, 2);
		r->profile = s_col_dup(st, 3);
		r->method = s_col_dup(st, 4);
		r->host = s_col_dup(st, 5);
		r->port = (uint32_t)sqlite3_column_int(st, 6);
		r->path = s_col_dup(st, 7);
		r->status = sqlite3_column_int(st, 8);
		r->bytes_up = (uint64_t)sqlite3_column_int64(st, 9);
		r->bytes_down = (uint64_t)sqlite3_column_int64(st, 10);
		r->duration_ms = (uint32_t)sqlite3_column_int64(st, 11);
		r->allowed = sqlite3_column_int(st, 12) != 0;
		r->rule = s_col_dup(st, 13);
		r->reason = s_col_dup(st, 14);
		r->injected = s_col_dup(st, 15);
		r->redactions = (uint32_t)sqlite3_column_int64(st, 16);
		if (!r->run || !r->profile || !r->method || !r->host || !r->path || !r->rule ||
		    !r->reason || !r->injected) {
			s_record_free(r);
			failed = true;
			break;
		}
		size_t w = s_record_wire(r);
		if (n > 0 && bytes + w > CTL_REPLY_MAX) {
			/* The page ends here; the client asks again from last_seq. */
			s_record_free(r);
			more = true;
			break;
		}
		bytes += w;
		ptrs[n++] = r;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("egress log query: %s", sqlite3_errmsg(self->db));
		failed = true;
	}
	sqlite3_reset(st);
	if (recs == NULL || ptrs == NULL || failed) {
		s_reply_error(self, req, AHP__STATUS__ERR_INTERNAL,
		              recs == NULL || ptrs == NULL ? "out of memory"
		                                           : "the egress log could not be read");
	} else {
		Ahp__Cp__EgressListReply lrep = AHP__CP__EGRESS_LIST_REPLY__INIT;
		lrep.records = ptrs;
		lrep.n_records = n;
		lrep.last_seq = n > 0 ? ptrs[n - 1]->seq : lr->after_seq;
		lrep.more = more;
		lrep.log_id = self->log_id;
		Ahp__Cp__Reply rep = AHP__CP__REPLY__INIT;
		rep.body_case = AHP__CP__REPLY__BODY_EGRESS_LIST;
		rep.egress_list = &lrep;
		s_reply(self, req, &rep);
	}
	for (size_t i = 0; i < n; i++)
		s_record_free(ptrs[i]);
	free(recs);
	free(ptrs);
}

/* Dispatch: one entry per request kind; anything else is an unknown method. */
static void
s_dispatch(cp_egress_t *self, ahp_rpc_req_t **req)
{
	ahp_rpc_req_t *r = *req;
	Ahp__Cp__Request *m = ahp__cp__request__unpack(NULL, r->body_len, r->body);
	if (m == NULL) {
		log_warn("egress ctl: undecodable request (%zu bytes)", r->body_len);
		s_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "malformed request");
		return;
	}
	switch (m->body_case) {
	case AHP__CP__REQUEST__BODY_EGRESS_LIST:
		s_on_list(self, req, m->egress_list);
		break;
	default:
		s_reply_error(self, req, AHP__STATUS__ERR_UNKNOWN_METHOD,
		              "absent or unknown request body");
	}
	ahp__cp__request__free_unpacked(m, NULL);
	if (*req != NULL) /* every path replies */
		s_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, "request not answered");
}

/* ZMQ_FD is edge-triggered: ask the socket before and after every read and
 * send, which may consume the edge. */
static bool
s_ctl_readable(cp_egress_t *self)
{
	return ahp_zmq_readable(ahp_rpc_server_socket(self->ctl)) != 0;
}

static void
s_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	cp_egress_t *self = arg;
	for (int i = 0; i < CTL_BATCH && s_ctl_readable(self); i++) {
		ahp_rpc_req_t *req = NULL;
		/* 0 also after a refused peer or a malformed frame (answered
		 * inside): ZMQ_EVENTS, not this, says whether more wait. */
		int rc = ahp_rpc_server_recv(self->ctl, &req);
		if (rc < 0)
			break;
		if (rc == 1)
			s_dispatch(self, &req);
	}
	/* More than a batch waiting: no new edge will come for it, so come
	 * back on the next turn, after the proxy's connections. */
	if (s_ctl_readable(self))
		event_active(self->ctl_ev, EV_READ, 0);
}

/* --- life cycle --- */

cp_egress_t *
cp_egress_new(struct event_base *base, const char *db_path, const char *ctl_endpoint,
              const void *allow, char *err, size_t errlen)
{
	cp_egress_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* The database is used from the event loop's thread only: no mutex
	 * around each call (two per bind, sixteen binds a record) and no
	 * allocation statistics. Only possible before SQLite's first use in
	 * the process; later (a test opened a database first) it is refused
	 * and nothing changes. */
	(void)sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	self->base = base;
	self->db_path = strdup(db_path);
	self->queue = calloc(EGRESS_QUEUE_MAX, sizeof *self->queue);
	self->flush_ev = event_new(base, -1, 0, s_flush_cb, self);
	if (self->db_path == NULL || self->queue == NULL || self->flush_ev == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* As root the database waits for the loop (after the privilege drop,
	 * s_db); as anyone else a database that cannot be opened stops the
	 * start, with its reason. */
	if (geteuid() != 0 && s_db_open(self, err, errlen) != 0)
		goto fail;
	if (self->db == NULL)
		event_active(self->flush_ev, EV_TIMEOUT, 0);

	/* the allow-list at bind: peers it does not name are closed at accept */
	self->ctl = ahp_rpc_server_new(NULL, ctl_endpoint, CTL_MAX_MSG, allow);
	if (self->ctl == NULL) {
		snprintf(err, errlen, "cannot serve the control socket on %s (see the log)",
		         ctl_endpoint);
		goto fail;
	}
	int fd = -1;
	size_t sz = sizeof fd;
	if (zmq_getsockopt(ahp_rpc_server_socket(self->ctl), ZMQ_FD, &fd, &sz) != 0) {
		snprintf(err, errlen, "%s: ZMQ_FD: %s", ctl_endpoint, zmq_strerror(zmq_errno()));
		goto fail;
	}
	self->ctl_ev = event_new(base, fd, EV_READ | EV_PERSIST, s_ctl_cb, self);
	if (self->ctl_ev == NULL || event_add(self->ctl_ev, NULL) != 0) {
		snprintf(err, errlen, "cannot watch the control socket");
		goto fail;
	}
	/* Requests that came before the first edge was watched. */
	event_active(self->ctl_ev, EV_READ, 0);
	return self;
fail:
	cp_egress_destroy(&self);
	return NULL;
}

void
cp_egress_destroy(cp_egress_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	cp_egress_t *self = *self_p;
	if (self->queue != NULL)
		s_flush(self);
	if (self->ctl_ev != NULL)
		event_free(self->ctl_ev);
	ahp_rpc_server_destroy(&self->ctl);
	if (self->flush_ev != NULL)
		event_free(self->flush_ev);
	s_db_close(self);
	free(self->queue);
	free(self->db_path);
	free(self);
	*self_p = NULL;
}

void
cp_egress_record(cp_egress_t *self, const cp_egress_rec_t *rec)
{
	s_log_line(rec);
	if (self == NULL)
		return;
	if (self->n_queued == EGRESS_QUEUE_MAX) {
		s_count_drop(self, 1, "queue full");
		return;
	}
	s_rec_t *r = &self->queue[self->n_queued];
	memset(r, 0, sizeof *r);
	if (s_rec_copy(r, rec) != 0) {
		s_count_drop(self, 1, "out of memory");
		return;
	}
	r->ts_ms = ahp_now_ms();
	r->port = rec->port;
	r->status = rec->status;
	r->bytes_up = rec->bytes_up;
	r->bytes_down = rec->bytes_down;
	r->duration_ms = rec->duration_ms;
	r->allowed = rec->allowed;
	r->redactions = rec->redactions;
	/* The first record schedules a commit 20 ms later: one transaction
	 * takes every record of that span (a loop turn carries only a few at
	 * high rates, and a commit costs far more than an insert). A clean stop
	 * commits what is queued; a crash loses at most those 20 ms. A query on
	 * the control socket commits first, so it always sees every record. */
	if (self->n_queued++ == 0) {
		struct timeval tv = {.tv_sec = 0, .tv_usec = 20000};
		evtimer_add(self->flush_ev, &tv);
	} else if (self->n_queued == EGRESS_QUEUE_MAX / 2) {
		event_active(self->flush_ev, EV_TIMEOUT, 0); /* half full: now */
	}
}
