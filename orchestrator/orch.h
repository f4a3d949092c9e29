/* orchestrator: private types and prototypes, grouped by file. */
#ifndef ORCH_H
#define ORCH_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ahp/cfg.h"
#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/text.h"

#include "journal.h"
#include "orchestrator.pb-c.h"
#include "sandboxd.pb-c.h"

#define ORCH_TASK_MAX (64 * 1024)      /* bytes of a submitted task */
#define ORCH_RPC_MAX_MSG (1024 * 1024) /* ZMQ_MAXMSGSIZE of the orchctl socket */
#define ORCH_MODEL_REPLY_MAX (8 << 20) /* bytes of one model HTTP reply */
#define ORCH_EVENT_TEXT_MAX 2048       /* bytes of an event's friendly line */
#define ORCH_EVENTS_WAIT_MAX 30000     /* ms a long-poll may be held */
#define ORCH_EVENTS_MAX 2000           /* events in one reply */
#define ORCH_LIST_MAX 1000             /* runs in one list reply */
#define ORCH_WAITERS_MAX 4096          /* long-polls held at once */
#define ORCH_RUNS_MAX 100000           /* queued + running runs in memory */
#define ORCH_RUN_ID_MAX 32
#define ORCH_CONV_MAX (16 << 20)        /* bytes of one run's conversation */
#define ORCH_SBX_UNAVAIL_GRACE_MS 10000 /* retrying a sandboxd that says "unavailable" */

typedef struct orch orch_t;
typedef struct orch_run orch_run_t;
typedef struct orch_call orch_call_t;

/* A loaded set of profiles. Runs hold a reference so that a SIGHUP reload
 * never frees a profile a run is using. */
typedef struct {
	ahp_profiles_t *set;
	int refs;
} orch_profset_t;

enum orch_state {
	ORCH_QUEUED,
	ORCH_RUNNING,
	ORCH_WAITING,
	ORCH_SUCCEEDED,
	ORCH_FAILED,
	ORCH_CANCELLED,
};

/* Where a running run is in its loop. *_DUE phases wait for the end of the
 * loop turn: their intent must be committed before the request goes out. */
enum orch_phase {
	PH_IDLE,
	PH_MODEL_DUE,      /* send the model request after commit */
	PH_MODEL_BACKOFF,  /* wait until due_ms, then PH_MODEL_DUE */
	PH_MODEL_INFLIGHT, /* libcurl transfer running */
	PH_SBX_DUE,        /* send the sandboxd request after commit */
	PH_SBX_INFLIGHT,   /* waiting for sandboxd's reply */
	PH_SBX_BACKOFF,    /* not connected yet: send again at due_ms */
	PH_ENDED,          /* terminal; freed after the turn's commit */
};

enum orch_sbx_op { SBX_NONE, SBX_CREATE, SBX_EXEC, SBX_FETCH };

struct orch_run {
	orch_run_t *next, *prev; /* orch_t.runs, submission order */
	orch_run_t *post_next;   /* orch_t post-commit list */
	int on_post;
	orch_run_t *ended_next; /* orch_t ended list, freed after commit */
	orch_run_t *due_next;   /* a walk's collected runs (timers, sandboxd lost) */
	orch_t *o;
	char id[ORCH_RUN_ID_MAX];
	char *profile_name;
	orch_profset_t *pset; /* reference held while running */
	const ahp_profile_t *profile;
	int state;
	int phase;
	int64_t created_ms;

	/* The conversation, kept as the text of the request body up to the
	 * open messages array: {"model":"m","messages":[m1,m2,... — about 5x
	 * smaller than a jansson tree, and sent without a copy (the suffix is
	 * appended while a call is in flight and cut off when it returns). */
	char *conv;
	size_t conv_len, conv_cap;
	uint32_t n_messages;
	json_t *calls;      /* tool_calls of the last assistant message, or NULL */
	size_t next_call;   /* first tool call without a completed step */
	uint32_t seq;       /* highest step seq written */
	uint32_t cur_seq;   /* step in progress */
	uint64_t event_seq; /* highest event seq written */
	uint32_t turns, model_calls, tool_calls;
	uint64_t tokens;

	orch_call_t *call; /* in-flight model request */
	int attempt;       /* attempts of the current model step */
	int64_t due_ms;    /* monotonic: when a backed-off request is resent */

	int sbx_created; /* sandboxd confirmed Create in this process's life */
	int sbx_used;    /* a sandbox may exist: destroy it at the end */
	int sbx_op;      /* enum orch_sbx_op in flight or due */
	int sbx_retried; /* Exec re-sent once after the sandbox vanished */
	uint64_t sbx_req;
	int64_t sbx_deadline;
	int64_t sbx_started;
	int64_t sbx_unsent_since;  /* first failed send of the current request */
	int64_t sbx_unavail_since; /* first "unavailable" answer to it */
	char *sbx_command;         /* the exec in progress */
};

typedef struct orch_reply {
	struct orch_reply *next;
	ahp_rpc_req_t *req;
	uint8_t *buf;
	size_t len;
} orch_reply_t;

typedef struct orch_waiter {
	struct orch_waiter *next;
	ahp_rpc_req_t *req;
	orch_run_t *run; /* active run the waiter follows */
	uint64_t after;
	uint32_t max;
	int64_t deadline; /* monotonic ms */
} orch_waiter_t;

struct orch {
	ahp_cfg_t *cfg;       /* current (SIGHUP replaces it) */
	ahp_cfg_t *cfg_start; /* as started: what restart-only keys compare against */
	char **sets;          /* --set overrides, re-applied on reload */
	int nsets;
	uid_t run_uid; /* the user it runs as (after the drop when started as root) */
	gid_t run_gid;
	char run_user[64];
	int drop;              /* started as root: drop to run_uid after set-up */
	int db_default;        /* db is HOME/state/orchestrator/orchestrator.db */
	ahp_rpc_allow_t allow; /* who may use endpoint */
	char home[PATH_MAX];
	char endpoint[PATH_MAX + 16];
	char db_path[PATH_MAX];
	char profiles_dir[PATH_MAX];
	char etc_dir[PATH_MAX];
	char sbx_endpoint[PATH_MAX + 16];
	const char *gateway_url;
	long model_timeout_ms;
	long model_retries;
	long retry_base_ms;
	long retry_max_ms;
	long max_running;
	long sbx_timeout_ms;

	void *zctx;
	ahp_rpc_server_t *server;
	ahp_rpc_client_t *sbx;
	CURLM *multi;
	orch_journal_t *journal;
	orch_profset_t *profiles;

	orch_run_t *runs, *runs_tail; /* queued and running, oldest first */
	size_t n_runs;
	size_t n_running;
	orch_run_t *post_head; /* runs with work for after the commit */
	orch_run_t *ended;     /* runs that ended this turn */
	orch_reply_t *replies, **replies_tail;
	orch_waiter_t *waiters;
	size_t n_waiters;
	size_t n_calls_inflight;

	int sigfd;
	int stop;
	int reload;
};

/* main.c */
extern const ahp_cfg_def_t orch_cfg_defs[];

/* profiles.c */
/* Loads dir; bad files are logged and skipped. Caller owns the result (refs = 1). */
orch_profset_t *orch_profset_load(const char *dir, const char *etc_dir);
orch_profset_t *orch_profset_ref(orch_profset_t *ps);
void orch_profset_unref(orch_profset_t **ps_p);
/* Replaces o->profiles with a fresh load (SIGHUP). */
void orch_profiles_reload(orch_t *o);

/* loop.c */
/* main.c: re-reads the configuration and applies what may change while
 * running (logs keys that need a restart). 0 / -1 (old one kept). */
int orch_config_reload(orch_t *o);
/* main.c: started as root, gives the state dir and journal files to
 * run_user (no link followed). 0 / -1. */
int orch_own_state(orch_t *o);
/* Set-up in two halves around the privilege drop: _setup acquires what needs
 * root (dirs, the orchctl socket, profiles); _start opens the journal,
 * connects to sandboxd and resumes unfinished runs. 0 / -1. */
int orch_loop_setup(orch_t *o);
int orch_loop_start(orch_t *o);
void orch_loop_run(orch_t *o);
void orch_loop_teardown(orch_t *o);
/* Queues a reply to go out after this turn's commit. Takes ownership of
 * *req_p and of buf (malloc'd). */
void orch_reply_defer(orch_t *o, ahp_rpc_req_t **req_p, uint8_t *buf, size_t len);
/* Puts run on the post-commit list (idempotent). */
void orch_post(orch_t *o, orch_run_t *run);
/* Journal write failure: nothing can be trusted after it. */
void orch_journal_failed(orch_t *o, const char *what) __attribute__((noreturn));

/* run.c */
const char *orch_state_str(int state);
int orch_state_parse(const char *s);
/* Creates, journals and queues a new run. Returns it, or NULL with err. */
orch_run_t *orch_run_submit(orch_t *o, const char *profile, const char *task, int *status,
                            char *err, size_t errlen);
/* Loads an unfinished run (start-up) or a failed one (resume) from the
 * journal and sets it going. NULL with err on failure. */
orch_run_t *orch_run_restore(orch_t *o, const orch_run_row_t *row, int resume, int *status,
                             char *err, size_t errlen);
orch_run_t *orch_run_find(orch_t *o, const char *id);
void orch_run_cancel(orch_run_t *run);
/* Starts queued runs while there is room. */
void orch_runs_schedule(orch_t *o);
/* Fires backoff and sandboxd deadlines; returns ms until the next one (or max). */
long orch_runs_timers(orch_t *o, int64_t now, long max);
/* After commit: sends what the run's committed intent asked for. */
void orch_run_post_commit(orch_run_t *run);
/* After commit and waiters: destroys ended runs' sandboxes and frees them. */
void orch_runs_reap_ended(orch_t *o);
/* Frees a run without touching the journal (shutdown). */
void orch_run_free(orch_run_t **run_p);
/* A model call finished (result filled by model.c). */
typedef struct {
	int ok;           /* 1 = message parsed */
	int retryable;    /* failure that may succeed later */
	long http_status; /* 0 when no HTTP reply */
	char error[512];  /* one line when !ok */
	long retry_after_ms;
	json_t *message; /* normalized assistant message (owned) */
	json_t *usage;   /* owned, may be NULL */
	uint64_t tokens;
	int64_t latency_ms;
} orch_model_result_t;
void orch_run_model_done(orch_run_t *run, orch_model_result_t *res);
/* sandboxd answered (reply NULL and status set on transport failure/timeout). */
void orch_run_sbx_done(orch_run_t *run, int status, const char *message,
                       const Ahp__Sbx__Reply *reply);
/* Writes an event (text is printf-style; data stolen, may be NULL). */
void orch_run_event(orch_run_t *run, const char *kind, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* model.c */
int orch_model_init(orch_t *o);
void orch_model_teardown(orch_t *o);
/* Starts the chat completion for run. body is borrowed and must stay
 * unchanged until the call ends or is aborted. NULL on immediate failure. */
orch_call_t *orch_model_start(orch_t *o, orch_run_t *run, const char *body, size_t len);
void orch_model_abort(orch_t *o, orch_call_t **call_p);
/* Reads finished transfers and hands them to their runs. */
void orch_model_reap(orch_t *o);
/* Parses an HTTP 200 chat-completions body (untrusted, len bytes, need not be
 * NUL-terminated) into res: ok with the normalized message, or !ok with a
 * one-line error. seq names generated tool-call ids. Fields of res other than
 * the parse outcome (latency, http_status) are left as they are. */
void orch_model_parse(const char *body, size_t len, uint32_t seq, orch_model_result_t *res);

/* tools.c */
/* Tool definitions (OpenAI "tools" array) the profile gets. New reference. */
json_t *orch_tools_for(const ahp_profile_t *p);
int orch_tool_offered(const ahp_profile_t *p, const char *name);
/* Builds a {"error":{"status":..,"message":..}} result. New reference. */
json_t *orch_tool_error(const char *status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "1.2 KB" / "512 B". */
const char *orch_fmt_size(uint64_t n, char *buf, size_t len);

/* skill.c */
/* Runs the skill tool; returns the result object (new reference) and a
 * one-line summary for the timeline. Never NULL. */
json_t *orch_skill_run(const ahp_profile_t *p, const json_t *args, char *summary, size_t len);

/* sandbox.c */
int orch_sbx_setup(orch_t *o);
void orch_sbx_teardown(orch_t *o);
void *orch_sbx_socket(orch_t *o);
/* The connection monitor's socket (NULL when unavailable) and its reader. */
void *orch_sbx_monitor_socket(orch_t *o);
void orch_sbx_monitor_recv(orch_t *o);
/* Sends the run's due sandboxd request (create, exec or fetch). */
void orch_sbx_send(orch_run_t *run);
/* Fire-and-forget destroy of the run's sandbox. */
void orch_sbx_destroy(orch_t *o, const char *run_id);
/* Drains replies and hands them to their runs. */
void orch_sbx_recv(orch_t *o);
/* Converts an ExecResult into the tool result. New reference. */
json_t *orch_sbx_result_json(const Ahp__Sbx__ExecResult *r);

/* api.c */
/* Drains orchctl requests and dispatches them. */
void orch_api_recv(orch_t *o);
/* After commit: answers long-polls that have news or whose time is up. */
void orch_api_waiters(orch_t *o, int64_t now, int all);
/* ms until the earliest waiter deadline (or max). */
long orch_api_waiters_timeout(orch_t *o, int64_t now, long max);

#endif
