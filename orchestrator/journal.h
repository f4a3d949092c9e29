/* The orchestrator's durable journal (SQLite): runs, steps (intent before the action, result after)
 * and the event timeline. */
#ifndef ORCH_JOURNAL_H
#define ORCH_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct orch_journal orch_journal_t;

/* A run row. Strings are borrowed: valid only during the callback that
 * receives the row (or, for updates, owned by the caller). */
typedef struct {
	const char *id;
	const char *profile;
	const char *task;
	const char *state;  /* queued running waiting_approval succeeded failed cancelled */
	const char *error;  /* NULL or "" when none */
	const char *result; /* NULL or "" when none */
	int64_t created_ms;
	int64_t updated_ms;
	uint32_t turns;
	uint32_t model_calls;
	uint32_t tool_calls;
	uint64_t tokens;
} orch_run_row_t;

/* A step row; strings borrowed for the duration of the callback. */
typedef struct {
	uint32_t seq;
	const char *kind;   /* "model" or "tool" */
	const char *intent; /* JSON written before the action */
	int completed;      /* 0 = intent only (the action's outcome is unknown) */
	int status;         /* when completed: 0 ok, else an ahp.Status */
	const char *result; /* JSON when completed, else NULL */
	int64_t created_ms;
	int64_t completed_ms;
} orch_step_row_t;

/* An event row; strings borrowed for the duration of the callback. */
typedef struct {
	uint64_t seq;
	int64_t ts_ms;
	const char *kind;
	const char *text;
	const char *data; /* JSON or NULL */
} orch_event_row_t;

/* A run's egress cursor: how far its records in credproxy's egress log have
 * been journaled as events. Strings borrowed for the callback. */
typedef struct {
	const char *run_id;
	uint64_t last_seq;  /* highest record seq journaled */
	const char *log_id; /* the egress log that seq belongs to ("" = none yet) */
	const char *state;  /* the run's state, NULL when the run row is missing */
	int64_t updated_ms; /* the run row's updated_ms (when it ended, for an ended run) */
	uint64_t events;    /* records seen (the run's egress events are bounded) */
} orch_egress_row_t;

/* A human decision applied to a gated step or a question (approvald's, checked
 * against the step). Strings borrowed for the callback. */
typedef struct {
	uint32_t step;
	uint64_t id;         /* approvald's request number */
	const char *state;   /* "approved" "rejected" "answered" "cancelled" "mismatch" */
	const char *by;      /* user name, "expiry", "orchestrator" */
	int64_t at_ms;       /* when it was decided (wall clock ms) */
	const char *comment; /* -m text, or a question's answer */
	const char *digest;  /* the request's digest (hex SHA-256) */
} orch_approval_row_t;
typedef void (*orch_approval_fn)(void *arg, const orch_approval_row_t *row);

/* Callbacks return 0 to continue, non-zero to stop the iteration. */
typedef int (*orch_run_fn)(void *arg, const orch_run_row_t *row);
typedef int (*orch_step_fn)(void *arg, const orch_step_row_t *row);
typedef int (*orch_event_fn)(void *arg, const orch_event_row_t *row);
typedef int (*orch_egress_fn)(void *arg, const orch_egress_row_t *row);

/* Opens (creating and migrating) the journal at path. NULL on failure with a
 * message in err. Caller owns the result. */
orch_journal_t *orch_journal_open(const char *path, char *err, size_t errlen);
/* Rolls back an open transaction, closes, sets *self_p NULL. NULL-safe. */
void orch_journal_destroy(orch_journal_t **self_p);

/* Group commit. Every write function begins a transaction lazily when none is
 * open; orch_journal_commit() makes everything written since durable in one
 * fsync. begin is idempotent; commit is a no-op when nothing is open.
 * 0 / -1 (logged). After a failed commit the transaction is rolled back. */
int orch_journal_begin(orch_journal_t *self);
int orch_journal_commit(orch_journal_t *self);
int orch_journal_rollback(orch_journal_t *self);
/* Non-zero while a transaction is open. */
int orch_journal_in_tx(const orch_journal_t *self);

/* --- runs --- */
/* Inserts a run in state "queued". -1 on error (e.g. duplicate id). */
int orch_journal_run_create(orch_journal_t *self, const char *id, const char *profile,
                            const char *task, int64_t created_ms);
/* Updates state, error, result, updated_ms and the counters of row->id. */
int orch_journal_run_update(orch_journal_t *self, const orch_run_row_t *row);
/* Calls fn once with the run. 1 found, 0 not found, -1 error. */
int orch_journal_run_get(orch_journal_t *self, const char *id, orch_run_fn fn, void *arg);
/* Newest first; state/profile NULL or "" = any; limit 0 = 100. 0 / -1. */
int orch_journal_run_list(orch_journal_t *self, const char *state, const char *profile,
                          uint32_t limit, orch_run_fn fn, void *arg);
/* Every run in queued, running or waiting_* state, oldest first. 0 / -1. */
int orch_journal_runs_unfinished(orch_journal_t *self, orch_run_fn fn, void *arg);

/* --- steps --- */
/* Writes the intent of step seq (before the action). -1 if it exists. */
int orch_journal_step_intent(orch_journal_t *self, const char *run_id, uint32_t seq,
                             const char *kind, const char *intent_json);
/* Completes step seq with status (0 ok, else an ahp.Status) and result. */
int orch_journal_step_complete(orch_journal_t *self, const char *run_id, uint32_t seq, int status,
                               const char *result_json);
/* Turns a completed-with-error step back into a bare intent, so that resuming a
 * failed run retries it. Refuses (-1) a step that completed with status 0. */
int orch_journal_step_reopen(orch_journal_t *self, const char *run_id, uint32_t seq);
/* Every step of run_id in seq order. 0 / -1. */
int orch_journal_steps_foreach(orch_journal_t *self, const char *run_id, orch_step_fn fn,
                               void *arg);

/* --- events --- */
int orch_journal_event_add(orch_journal_t *self, const char *run_id, uint64_t seq, int64_t ts_ms,
                           const char *kind, const char *text, const char *data_json);
/* Events with seq > after_seq in order, at most max (0 = 500). 0 / -1. */
int orch_journal_events_foreach(orch_journal_t *self, const char *run_id, uint64_t after_seq,
                                uint32_t max, orch_event_fn fn, void *arg);
/* Highest event seq of run_id (0 when none). 0 / -1. */
int orch_journal_event_last_seq(orch_journal_t *self, const char *run_id, uint64_t *seq);

/* --- egress cursors (orchestrator/egress.c) --- */
/* Starts following run_id's egress (cursor 0), or follows it again (a resumed
 * run) from where its cursor is. 0 / -1. */
int orch_journal_egress_track(orch_journal_t *self, const char *run_id);
/* Moves run_id's cursor (written in the transaction of the events it covers). */
int orch_journal_egress_cursor(orch_journal_t *self, const char *run_id, uint64_t last_seq,
                               const char *log_id, uint64_t events);
/* Every record of the run has been read: stop following it. 0 / -1. */
int orch_journal_egress_done(orch_journal_t *self, const char *run_id);
/* Every cursor still followed, oldest first, with its run's state. 0 / -1. */
int orch_journal_egress_open(orch_journal_t *self, orch_egress_fn fn, void *arg);

/* Approvals (migration 3). put records the decision of (run_id, row->step)
 * (replacing one; state "pending", id 0: the step was put to a human, no decision yet); get calls
 * fn with it: 1 found, 0 none, -1 error. */
int orch_journal_approval_put(orch_journal_t *self, const char *run_id,
                              const orch_approval_row_t *row);
int orch_journal_approval_get(orch_journal_t *self, const char *run_id, uint32_t step,
                              orch_approval_fn fn, void *arg);
/* approvald's decision log read up to seq of log log_id (one row). get: "" and
 * 0 when none yet. 0 / -1. */
int orch_journal_approval_cursor_set(orch_journal_t *self, const char *log_id, uint64_t seq);
int orch_journal_approval_cursor_get(orch_journal_t *self, char *log_id, size_t len, uint64_t *seq);

#endif
