/* orchestrator: private types and prototypes, grouped by file. */
#ifndef ORCH_H
#define ORCH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ahp/cfg.h"
#include "ahp/client.h"
#include "ahp/limit_table.h"
#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/text.h"

#include "journal.h"
#include "orchestrator.pb-c.h"
#include "sandboxd.pb-c.h"
#include "servicesd.pb-c.h"

#define ORCH_TASK_MAX AHP_LIM_TASK_MAX            /* bytes of a submitted task (limits table) */
#define EXEC_COMMAND_MAX AHP_LIM_EXEC_COMMAND_MAX /* bytes of one exec command (limits table) */
#define ORCH_RPC_MAX_MSG (1024 * 1024)            /* ZMQ_MAXMSGSIZE of the orchctl socket */
#define ORCH_MODEL_REPLY_MAX (8 << 20)            /* bytes of one model HTTP reply */
#define ORCH_EVENT_TEXT_MAX 2048                  /* bytes of an event's friendly line */
#define ORCH_EVENTS_WAIT_MAX 30000                /* ms a long-poll may be held */
#define ORCH_EVENTS_MAX 2000                      /* events in one reply */
#define ORCH_LIST_MAX 1000                        /* runs in one list reply */
#define ORCH_WAITERS_MAX 4096                     /* long-polls held at once */
#define ORCH_RUNS_MAX 100000                      /* queued + running runs in memory */
#define ORCH_RUN_ID_MAX 32
/* Every run id is this + 16 hex (run.c): sandboxd's Create ids of the run id
 * space. The sweep (sandbox.c) destroys no sandbox outside it: sandboxd's
 * one-shots are "cli-" + hex (sandboxd/sbx.h, SBX_ONESHOT_PREFIX). */
#define ORCH_RUN_ID_PREFIX "r-"
/* Run failure reasons that a resume as it is would meet again; written by
 * run.c and replay.c, recognised by orch_failure_resumable (api.c). */
#define ORCH_WHY_MAX_TURNS "max_turns ("             /* "max_turns (N) reached" */
#define ORCH_WHY_MAX_MODEL_CALLS "max_model_calls (" /* "max_model_calls (N) reached" */
#define ORCH_WHY_CONV_TOO_BIG "the conversation grew over its 16 MiB ceiling"
#define ORCH_WHY_JOURNAL "journal step " /* "journal step N: why" */

/* The name a tool call whose name is not a valid function name is kept
 * under (model.c); no tool has it, so the model is told not_found. */
#define ORCH_INVALID_TOOL_NAME "invalid_tool_name"
#define ORCH_CONV_MAX (16 << 20)        /* bytes of one run's conversation */
#define ORCH_SBX_UNAVAIL_GRACE_MS 10000 /* retrying a sandboxd that says "unavailable" */

/* 1 when a run that failed with this reason can usefully be resumed, 0 when
 * resuming as it is would only fail the same way (the ORCH_WHY_* reasons: a
 * profile limit, the conversation ceiling, a journal that cannot be
 * replayed). NULL or empty counts as resumable. Sets RunInfo.resumable. */
int orch_failure_resumable(const char *reason);

typedef struct orch orch_t;
typedef struct orch_run orch_run_t;
typedef struct orch_sbx_destroy orch_sbx_destroy_t;
typedef struct orch_sbx_sweep orch_sbx_sweep_t;
typedef struct orch_call orch_call_t;
typedef struct orch_egress orch_egress_t;
typedef struct orch_gate orch_gate_t; /* approvals.c: a step waiting on a human */
typedef struct orch_appr orch_appr_t; /* approvals.c: the approvald client */

/* A loaded set of profiles. Runs hold a reference so that a SIGHUP reload
 * never frees a profile a run is using. */
typedef struct {
	ahp_profiles_t *set;
	int refs;
	uint64_t generation; /* 1, 2, ... per load in this process: a reload is a new one */
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
	PH_TOOL_DUE,       /* the tool sends its request after commit */
	PH_TOOL_INFLIGHT,  /* waiting for the tool's daemon */
	PH_TOOL_BACKOFF,   /* tool waits until due_ms, then PH_TOOL_DUE */
	PH_GATE,           /* the step waits on approvald or a human (run->gate, approvals.c);
	                      due_ms != 0: send the Create again then */
	PH_ENDED,          /* terminal; freed after the turn's commit */
};

/* The conversation, kept as the text of the request body up to the open
 * messages array: {"model":"m","messages":[m1,m2,... — about 5x smaller
 * than a jansson tree, and sent without a copy. conv.c. */
typedef struct {
	char *buf;
	size_t len, cap;
	uint32_t n_messages;
} orch_conv_t;

/* The tools, one entry each (tools.c holds the table). A tool's state lives
 * in run->tool_state[slot], owned by the tool's own file. run.c only
 * sequences steps: it journals the intent, applies the approval gate, calls
 * start, and completes the step when the tool calls orch_tool_done. */
enum orch_tool_slot {
	ORCH_TOOL_SKILL,
	ORCH_TOOL_EXEC,
	ORCH_TOOL_SERVICE,
	ORCH_TOOL_ASK,
	ORCH_TOOLS_N
};

/* How a tool step is started. */
enum orch_tool_mode {
	ORCH_TOOL_NEW,     /* the model asked; intent just journaled */
	ORCH_TOOL_RESUMED, /* intent journaled before a restart, no result: outcome unknown */
	ORCH_TOOL_RETRY,   /* resume of a step the platform failed before it started */
};

typedef struct orch_tool {
	const char *name;
	int slot; /* enum orch_tool_slot */
	/* 0 when p lists the tool but cannot use it (skill without a skills
	 * directory): it is then neither offered nor run. May be NULL (usable). */
	int (*usable)(const ahp_profile_t *p);
	/* The OpenAI "tools" entry for p (new reference; NULL when it is not
	 * known: the tool is then left out). o: for what the daemon told. */
	json_t *(*definition)(orch_t *o, const ahp_profile_t *p);
	/* What an approval rule's `match` is tested on: a string inside args
	 * (borrowed), or NULL for the arguments' JSON text. May be NULL. */
	const char *(*subject)(const json_t *args);
	/* A tool that calls services (exec_service): the service a call names
	 * (borrowed, NULL when it names none), which `service:` approval rules
	 * gate, and the service's own arguments inside args (borrowed, NULL when
	 * absent), which their `match` is tested on. May be NULL. */
	const char *(*service)(const json_t *args);
	const json_t *(*service_args)(const json_t *args);
	/* Starts the call: completes it at once with orch_tool_done, or sets
	 * the run's phase (orch_tool_due / orch_tool_backoff / orch_tool_inflight)
	 * and completes it later. args is borrowed. */
	void (*start)(orch_run_t *run, const json_t *args, int mode);
	/* PH_TOOL_DUE after the commit: send what start prepared. May be NULL. */
	void (*send)(orch_run_t *run);
	/* A completed step of this tool was replayed from the journal. May be NULL. */
	void (*replayed)(orch_run_t *run, const json_t *intent);
	/* The run's end is committed: release what outlives a step (a sandbox).
	 * Called once. May be NULL. */
	void (*ended)(orch_run_t *run);
	/* Frees run->tool_state[slot] (also on shutdown, without ended). May be NULL. */
	void (*free_state)(orch_run_t *run);
} orch_tool_t;

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

	orch_conv_t conv;
	char *tools_text; /* the profile's "tools" array as JSON text, made once per run */
	int tools_made;
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

	const orch_tool_t *tool;        /* tool of the step in progress */
	int tool_sync;                  /* inside tool->start: do not advance */
	int tools_released;             /* tools' ended hooks have run */
	void *tool_state[ORCH_TOOLS_N]; /* owned by each tool's file */
	orch_gate_t *gate;              /* the step waits on a human (approvals.c), or NULL */
	int regate; /* restarted while waiting_approval: its pending step stays gated even when
	             * the profile no longer has the rule (the human's request is still open) */
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
	char cp_endpoint[PATH_MAX + 16];   /* credproxy's control socket (egress records) */
	char svc_endpoint[PATH_MAX + 16];  /* servicesd (exec_service) */
	char appr_endpoint[PATH_MAX + 16]; /* approvald's orchestrator socket */
	const char *gateway_url;
	const char *gateway_socket; /* "" = gateway_url over TCP */
	long model_timeout_ms;
	long model_retries;
	long retry_base_ms;
	long retry_max_ms;
	long max_running;
	long sbx_timeout_ms;

	void *zctx;
	ahp_rpc_server_t *server;
	ahp_client_t *sbx;
	orch_sbx_destroy_t *sbx_destroys; /* sandbox.c: Destroys not answered yet */
	orch_sbx_sweep_t *sbx_sweep;      /* sandbox.c: the List that finds ended runs' sandboxes */
	size_t n_sbx_destroys;
	orch_egress_t *egress;           /* egress.c: the credproxy client and the followed runs */
	ahp_client_t *svc;               /* services.c: the servicesd client */
	orch_appr_t *appr;               /* approvals.c: the approvald client and its Watch */
	struct orch_svc_desc *svc_descs; /* services.c: exec_service definitions per profile */
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

/* config.c */
extern const ahp_cfg_def_t orch_cfg_defs[];
/* Reads HOME's orchestrator.conf (home_flag: --home, or NULL) into o. 0 / -1 (logged). */
int orch_configure(orch_t *o, const char *home_flag);

/* profiles.c */
/* Loads dir; bad files are logged and skipped. Caller owns the result (refs = 1). */
orch_profset_t *orch_profset_load(const char *dir, const char *etc_dir);
orch_profset_t *orch_profset_ref(orch_profset_t *ps);
void orch_profset_unref(orch_profset_t **ps_p);
/* Replaces o->profiles with a fresh load (SIGHUP); a file that no longer
 * loads keeps its last good version serving. */
void orch_profiles_reload(orch_t *o);
/* Why a profile of that name is not loaded: the file:line:column error of the
 * file that asked for it (by `name:`, else by file name) in the last load;
 * NULL when no file did. Borrowed until the next reload. */
const char *orch_profiles_why(const orch_t *o, const char *name);

/* loop.c */
/* config.c: re-reads the configuration and applies what may change while
 * running (logs keys that need a restart). 0 / -1 (old one kept). */
int orch_config_reload(orch_t *o);
/* config.c: started as root, gives the state dir and journal files to
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
/* Fires backoff and tool deadlines; returns ms until the next one (or max). */
long orch_runs_timers(orch_t *o, int64_t now, long max);
/* After commit: sends what the run's committed intent asked for. */
void orch_run_post_commit(orch_run_t *run);
/* After commit and waiters: releases ended runs' tools (sandboxes) and frees them. */
void orch_runs_reap_ended(orch_t *o);
/* Frees a run without touching the journal (shutdown). */
void orch_run_free(orch_run_t **run_p);
/* A model call finished (result filled by model.c). */
typedef struct {
	int ok;           /* 1 = message parsed */
	int retryable;    /* failure that may succeed later */
	long http_status; /* 0 when no HTTP reply */
	char error[512];  /* one line when !ok, valid UTF-8 */
	long retry_after_ms;
	json_t *message; /* normalized assistant message (owned) */
	json_t *usage;   /* owned, may be NULL */
	json_t *journal; /* extra fields for the step's journal record (owned, may be NULL):
	                    non-text content parts, finish_reason, sanitizing notes */
	int sanitized;   /* text in the reply was replaced to be stored and shown */
	uint64_t tokens;
	int64_t latency_ms;
} orch_model_result_t;
void orch_run_model_done(orch_run_t *run, orch_model_result_t *res);

/* Token counts come from the provider's `usage` (untrusted) and from journal rows:
 * one call's count is taken in [0, ORCH_TOKENS_MAX] (larger is capped, negative
 * is 0), and a run's total saturates at INT64_MAX (it is stored as an SQLite
 * INTEGER), so no sum of them can overflow. */
#define ORCH_TOKENS_MAX ((int64_t)1 << 40)

static inline uint64_t
orch_tokens_clamp(int64_t v)
{
	return v <= 0 ? 0 : v > ORCH_TOKENS_MAX ? (uint64_t)ORCH_TOKENS_MAX : (uint64_t)v;
}

static inline uint64_t
orch_tokens_add(uint64_t total, uint64_t n)
{
	if (total > (uint64_t)INT64_MAX)
		total = (uint64_t)INT64_MAX;
	return n > (uint64_t)INT64_MAX - total ? (uint64_t)INT64_MAX : total + n;
}
/* Writes an event (text is printf-style; data stolen, may be NULL). */
void orch_run_event(orch_run_t *run, const char *kind, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same for a run that may no longer be in memory (ended and freed): its
 * next event seq is then read from the journal. */
void orch_run_event_id(orch_t *o, const char *run_id, const char *kind, json_t *data,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The tool interface for the tools' files (run.c). */
/* Completes the tool step in progress with result (stolen; NULL = internal
 * error) and status (0 or an ahp.Status), appends the tool message and moves
 * the run on. */
void orch_tool_done(orch_run_t *run, json_t *result, int status);
/* The step could not start for a reason of the platform, not the model's (a
 * sandbox that cannot be created, a daemon that is not running): the step is
 * journaled as failed before it started and the run fails with a resumable
 * reason; `orchctl resume` starts the same step again (ORCH_TOOL_RETRY). */
void orch_tool_platform_failed(orch_run_t *run, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Phase changes for a tool that waits: send after this turn's commit; send
 * again at due_ms (monotonic); a request is in flight. */
void orch_tool_due(orch_run_t *run);
void orch_tool_backoff(orch_run_t *run, int64_t due_ms);
void orch_tool_inflight(orch_run_t *run);
/* True when the run waits on its tool (a reply for it is still wanted). */
int orch_tool_waiting(const orch_run_t *run);
/* The gated step in progress was approved (or, mode RESUMED, had been before a
 * restart): starts run->tool with the step's journaled arguments, and moves
 * the run on when it completes at once. */
void orch_tool_start_gated(orch_run_t *run, int mode);
/* A run starts / stops waiting for a human: state waiting_approval (journaled),
 * it no longer counts against max_running, and its sandbox is stopped (the
 * workspace kept). Idempotent. */
void orch_run_wait(orch_run_t *run);
void orch_run_unwait(orch_run_t *run);

/* conv.c */
/* Starts the text: {"model":model,"messages":[system?,user task. 0 / -1. */
int orch_conv_init(orch_conv_t *c, const char *model, const char *system, const char *task);
/* Appends one message exactly as json_dumps(messages, JSON_COMPACT) writes
 * it inside the array. 0 / -1 (over ORCH_CONV_MAX, or msg not encodable). */
int orch_conv_append(orch_conv_t *c, const json_t *msg);
/* Same, stealing msg (NULL counts as a failure). */
int orch_conv_append_new(orch_conv_t *c, json_t *msg);
/* The whole request body: the conversation, "]", the tools (the JSON text
 * of the "tools" array, or NULL for none), "}". The text lives in c's buffer
 * and stays valid until the next append; *len is its length. NULL when it
 * would grow over ORCH_CONV_MAX. */
const char *orch_conv_request(orch_conv_t *c, const char *tools, size_t *len);
void orch_conv_free(orch_conv_t *c);

/* replay.c */
typedef struct {
	int pending;      /* 0 none, 1 model step, 2 tool step without result */
	int failed_model; /* the pending model step completed with an error */
	int retry_tool;   /* the pending tool step failed for a platform reason */
	int final;        /* the last model reply had no tool calls */
	int bad;
	char err[200];
	uint32_t steps;
	char *answer; /* content of the final reply, when the last step is one (owned) */
} orch_replay_t;
/* Rebuilds run's conversation and counters from its journaled steps. */
void orch_replay(orch_run_t *run, const char *task, orch_replay_t *rp);

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
/* The tool table, NULL-terminated, and a lookup by name (NULL when unknown). */
extern const orch_tool_t *const orch_tools[];
const orch_tool_t *orch_tool_find(const char *name);
/* The tool named name when p may use it, else NULL. */
const orch_tool_t *orch_tool_offered(const ahp_profile_t *p, const char *name);
/* Tool definitions (OpenAI "tools" array) the profile gets. New reference. */
json_t *orch_tools_for(orch_t *o, const ahp_profile_t *p);
/* The approval rule that gates this call, or NULL. subject as for
 * orch_tool_t.subject; for a tool that calls services, `service:` rules gate
 * the service it names (orch_tool_t.service / service_args). */
const ahp_approval_t *orch_tool_gate(const ahp_profile_t *p, const orch_tool_t *t,
                                     const json_t *args);
/* A tool call's "id" or its function's "name" / "arguments". Borrowed. */
const char *orch_call_str(const json_t *tc, const char *field);

/* toolutil.c (also linked by the skill unit test) */
/* Builds a {"error":{"status":..,"message":..}} result. New reference. */
json_t *orch_tool_error(const char *status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A JSON string of untrusted text: invalid UTF-8 and NUL become U+FFFD, so
 * it always encodes. New reference; NULL only when out of memory. */
json_t *orch_json_text(const char *s);
json_t *orch_json_textn(const char *s, size_t len);
/* "1.2 KB" / "512 B". */
const char *orch_fmt_size(uint64_t n, char *buf, size_t len);

/* skill.c */
/* Runs the skill tool; returns the result object (new reference) and a
 * one-line summary for the timeline. Never NULL. */
json_t *orch_skill_run(const ahp_profile_t *p, const json_t *args, char *summary, size_t len);

/* exec.c: the exec tool */
extern const orch_tool_t orch_tool_exec;
/* sandboxd's answer to the run's request (sandbox.c dispatches it). status 0:
 * reply is the decoded reply; otherwise status/message as ahp_client says. */
void orch_exec_reply(orch_run_t *run, int status, const char *message,
                     const Ahp__Sbx__Reply *reply);
/* Converts an ExecResult into the tool result. New reference. */
json_t *orch_sbx_result_json(const Ahp__Sbx__ExecResult *r);

/* Stops the run's sandbox while it waits on a human: destroyed with its
 * workspace kept; the next exec creates it again around that workspace, and
 * the run's end destroys the workspace as for a live sandbox. */
void orch_exec_park(orch_run_t *run);

/* sandbox.c: the sandboxd client (an ahp_client) */
int orch_sbx_setup(orch_t *o);
void orch_sbx_teardown(orch_t *o);
void *orch_sbx_socket(orch_t *o);
/* The connection monitor's socket (NULL when unavailable) and its reader. */
void *orch_sbx_monitor_socket(orch_t *o);
void orch_sbx_monitor_recv(orch_t *o);
/* Sends req for run with a deadline; returns the request id, or 0 when it
 * cannot be sent now (sandboxd absent or not connected). */
uint64_t orch_sbx_request(orch_t *o, orch_run_t *run, const Ahp__Sbx__Request *req,
                          long timeout_ms);
int orch_sbx_present(orch_t *o);
/* Forgets a request whose run no longer waits for it. */
void orch_sbx_forget(orch_t *o, uint64_t id);
/* Destroys the run's sandbox. keep_workspace: sandboxd keeps its workspace
 * (retained, within its retain_failed_* limits) for a resume. Nobody waits for
 * the answer, but the Destroy is sent again every second until sandboxd answers
 * it (a sandboxd that is down or restarting would otherwise keep the sandbox and
 * its workspace for good), unless the run sends its sandbox another request
 * first. At most 65536 wait at once (more: logged, dropped). One the
 * orchestrator could not deliver before it stopped is sent by the sweep: at
 * start, and every 5 minutes, sandboxd's List is compared with the journal,
 * and a sandbox whose run has ended (succeeded or cancelled: destroyed;
 * failed: destroyed with its workspace kept) is destroyed again. Sandboxes
 * of runs this journal does not know (one-shots, another orchestrator's),
 * or whose id is outside the run id space (orch_sbx_run_id), are never
 * touched. */
void orch_sbx_destroy(orch_t *o, const char *run_id, int keep_workspace);
/* Whether id (not NULL) is in the run id space: ORCH_RUN_ID_PREFIX and 16
 * lowercase hex digits, as run.c makes them. The sweep destroys nothing else. */
bool orch_sbx_run_id(const char *id);
/* Drains replies and hands them to their runs. */
void orch_sbx_recv(orch_t *o);
/* Fires request deadlines; ms until the next (or max). */
long orch_sbx_timers(orch_t *o, int64_t now, long max);

/* services.c: the servicesd client (an ahp_client) and the exec_service
 * definitions it fetches. A request's owner is either a run's exec_service
 * state (service_tool.c) or a cached definition; both begin with an
 * orch_svc_owner_t so the reply reaches the right one. */
#define ORCH_SVC_CALL_TIMEOUT_MS 130000   /* above servicesd's per-service ceiling (120 s) */
#define ORCH_SVC_DESCRIBE_TIMEOUT_MS 5000 /* one Describe */
#define ORCH_SVC_GRACE_MS 10000           /* servicesd unreachable this long fails the run */
enum orch_svc_owner_kind { ORCH_SVC_OWNER_CALL = 1, ORCH_SVC_OWNER_DESC };
typedef struct {
	int kind; /* enum orch_svc_owner_kind */
} orch_svc_owner_t;
int orch_svc_setup(orch_t *o);
/* Forgets the requests in flight and frees the cached definitions. */
void orch_svc_teardown(orch_t *o);
void *orch_svc_socket(orch_t *o);
void *orch_svc_monitor_socket(orch_t *o);
void orch_svc_recv(orch_t *o);
void orch_svc_monitor_recv(orch_t *o);
long orch_svc_timers(orch_t *o, int64_t now, long max);
int orch_svc_present(orch_t *o);
/* Sends req (borrowed) for owner with a deadline; the request id, or 0 when
 * it cannot be sent now (servicesd absent or not connected yet). */
uint64_t orch_svc_request(orch_t *o, orch_svc_owner_t *owner, const Ahp__Svcd__Request *req,
                          long timeout_ms);
void orch_svc_forget(orch_t *o, uint64_t id);
/* Whether the exec_service definition for profile p (of the current profile
 * set) is known: 1 ready; 0 not yet (a Describe is started when none is in
 * flight: ask again shortly); -1 the last Describe failed, with why (one
 * line) — the caller decides how long it keeps asking. */
int orch_svc_describe_ready(orch_t *o, const ahp_profile_t *p, char *why, size_t len);
/* The cached exec_service definition for p (new reference), NULL when none. */
json_t *orch_svc_definition(orch_t *o, const ahp_profile_t *p);

/* service_tool.c: the exec_service tool */
extern const orch_tool_t orch_tool_service;
/* servicesd's answer to a run's Call (services.c dispatches it). status 0:
 * reply is the decoded reply; otherwise status/message as ahp_client says. */
void orch_service_reply(orch_svc_owner_t *owner, int status, const char *message,
                        const Ahp__Svcd__Reply *reply);
/* Before a run's first model call: 1 when its tools can be made now, 0 when
 * it should wait (the run is put in PH_MODEL_BACKOFF), -1 when it cannot
 * (why filled: servicesd unreachable for ORCH_SVC_GRACE_MS). */
int orch_service_tools_ready(orch_run_t *run, char *why, size_t len);

/* egress.c: the runs' egress, read from credproxy's log and journaled as
 * "egress" events. A run is followed from its first exec in a sandbox that
 * reaches the network through credproxy (network: proxy) until its log has
 * settled after it ended; reads happen after each exec step, when the run
 * ends and every EGRESS_POLL_MS meanwhile. credproxy not running only delays
 * them (never fails a run). */
#define ORCH_EGRESS_EVENTS_MAX 10000 /* egress events journaled per run; then one summary */
/* Connects the client and loads the cursors still followed (after the
 * journal is open). 0 / -1. */
int orch_egress_setup(orch_t *o);
void orch_egress_teardown(orch_t *o);
void *orch_egress_socket(orch_t *o);
void *orch_egress_monitor_socket(orch_t *o);
/* Drains replies (journaling their records) and the connection monitor. */
void orch_egress_recv(orch_t *o);
/* Sends the reads that are due and fires request deadlines; ms until the
 * next (or max). */
long orch_egress_timers(orch_t *o, int64_t now, long max);
/* The run's sandbox may make requests through credproxy: follow it (journaled
 * in this turn's transaction). Idempotent. */
void orch_egress_track(orch_run_t *run);
/* Read the run's new records now (an exec step ended). */
void orch_egress_pull(orch_t *o, const char *run_id);
/* The run's end is committed: read until its log has settled, then stop. */
void orch_egress_ended(orch_t *o, const char *run_id);

/* approvals.c: waiting for humans (approvald, proto/approvald.proto). */
#define ORCH_APPR_GRACE_MS 10000 /* approvald unreachable this long fails the step (resumable) */
/* Connects the client and loads the Watch cursor (after the journal is open). 0 / -1. */
int orch_appr_setup(orch_t *o);
void orch_appr_teardown(orch_t *o);
void *orch_appr_socket(orch_t *o);
void *orch_appr_monitor_socket(orch_t *o);
/* Drains replies and the connection monitor. */
void orch_appr_recv(orch_t *o);
/* Keeps the Watch outstanding and fires request deadlines; ms until the next. */
long orch_appr_timers(orch_t *o, int64_t now, long max);
/* A call `rule` gates (run->tool, args borrowed): the step waits for a human.
 * rule NULL: a step that waited before a restart whose profile lost the rule; it still
 * needs the decision of the request already open (its expiry as approvald has it).
 * mode NEW: a Create goes to approvald after the commit; RESUMED / RETRY: a
 * decision the journal holds for (run, step) is applied first. */
void orch_gate_begin(orch_run_t *run, const orch_tool_t *t, const json_t *args,
                     const ahp_approval_t *rule, int mode);
/* ask_human: question (valid UTF-8, 1..4000 bytes) waits for an answer. */
void orch_gate_question(orch_run_t *run, const char *question, int mode);
/* 1 when the journal says run's current step was put to a human (a request asked for, or
 * decided): a restart keeps it gated whatever the profile says now. */
int orch_gate_asked(orch_run_t *run);
/* PH_GATE after the commit: send the Create. */
void orch_gate_send(orch_run_t *run);
/* The run's end is committed: cancel its pending request, free the gate. */
void orch_gate_ended(orch_run_t *run);
/* Frees run->gate without a word to approvald (shutdown). */
void orch_gate_free(orch_run_t *run);
/* "name(k="v", k2=3)" for the timeline: strings quoted, escaped and cut at 40
 * bytes with "…", the whole cut near 200 bytes. Returns out. */
const char *orch_appr_label(const char *name, const json_t *args, char *out, size_t outlen);
/* tools.c: the ask_human tool. */
extern const orch_tool_t orch_tool_ask;

/* api.c */
/* Drains orchctl requests and dispatches them. */
void orch_api_recv(orch_t *o);
/* After commit: answers long-polls that have news or whose time is up. */
void orch_api_waiters(orch_t *o, int64_t now, int all);
/* ms until the earliest waiter deadline (or max). */
long orch_api_waiters_timeout(orch_t *o, int64_t now, long max);

#endif
