/* approvald: durable human approvals and questions (proto/approvald.proto).
 *
 * Pieces: pure.c (validation, the canonical-arguments digest, rendering for the CLI, the
 * approvers file: no I/O but a file read, unit-tested), store.c (SQLite), server.c (the one
 * loop: both ROUTER sockets, group commit, expiry, held watches), cli.c (the human CLI),
 * main.c (arguments, configuration, privilege drop). */
#ifndef APPROVALD_H
#define APPROVALD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ahp/rpc.h"
#include "approvald.pb-c.h"

#define APPR_ARGS_MAX (256 * 1024) /* arguments_json, bytes */
#define APPR_TEXT_MAX 4096         /* question, comment, answer, bytes */
#define APPR_ACTION_MAX 64
#define APPR_ID_MAX 64                      /* run_id, profile */
#define APPR_EXPIRES_MAX_S 2592000          /* 30 days */
#define APPR_DIGEST_LEN 64                  /* hex SHA-256 */
#define APPR_WATCH_HELD_MAX 1024            /* held Watch long polls */
#define APPR_WATCH_WAIT_MAX_MS 60000        /* WatchRequest.wait_ms ceiling */
#define APPR_LIST_MAX 1000                  /* ListRequest / WatchRequest limit ceiling */
#define APPR_REPLY_BUDGET (8 * 1024 * 1024) /* bytes of requests in one List/Watch reply */

/* --- pure.c --- */

/* [A-Za-z0-9-]{1,64} (run ids). s may be NULL (false). */
int appr_run_id_ok(const char *s);
/* [a-z0-9-]{1,64} (profile names). s may be NULL (false). */
int appr_profile_ok(const char *s);

/* The canonical form of an arguments JSON object (len bytes, untrusted, <= APPR_ARGS_MAX):
 * parsed by jansson and dumped JSON_COMPACT | JSON_SORT_KEYS, so that the same arguments
 * spelled differently (spaces, key order) have one form. Returns a new string (caller frees)
 * or NULL with err ("not JSON: ...", "not a JSON object", "over 262144 bytes"). */
char *appr_canonical(const char *json, size_t len, char *err, size_t errlen);

/* out = hex SHA-256 (libcrypto) of action + "\n" + appr_canonical(arguments): the digest a
 * CreateRequest carries. out holds APPR_DIGEST_LEN + 1 bytes. 0, or -1 with err as
 * appr_canonical's. */
int appr_digest(const char *action, const char *json, size_t len, char out[APPR_DIGEST_LEN + 1],
                char *err, size_t errlen);

/* Checks every field of a CreateRequest (contract: run_id, step >= 1, profile, action 1..64
 * bytes, arguments a JSON object <= 256 KiB, question <= 4 KiB, UTF-8 everywhere, expires_s
 * 1..30 days) and that its digest is the one appr_digest computes, which goes to digest.
 * 0, or -1 with a one-line message in err (for ERR_BAD_REQUEST). */
int appr_validate_create(const Ahp__Appr__CreateRequest *in, char digest[APPR_DIGEST_LEN + 1],
                         char *err, size_t errlen);

/* "pending", "approved", "rejected", "answered", "cancelled"; "unknown" otherwise. */
const char *appr_state_str(int state);

/* A span for a human: "45s", "59m30s", "23h59m", "24h", "3d4h" (two units at most, cut, not
 * rounded; < 1 s is "0s"; negative as 0). Writes into buf (>= 16 bytes). Returns buf. */
char *appr_fmt_span(int64_t ms, char *buf, size_t len);

/* Wall-clock ms as "2026-11-30 09:12:03 UTC" into buf (>= 32 bytes). Returns buf. */
char *appr_fmt_time(int64_t ms, char *buf, size_t len);

/* The one-line summary of a request's call for `list`, not yet terminal-escaped:
 * `action(name="value", n=3)` in the arguments' own key order, strings quoted (\" and \\
 * escaped) and cut at 40 bytes with "…", other values compact JSON cut the same way, the
 * whole cut near max bytes with "…)"; for a question `ask_human: "the question…"` (cut at
 * 60). Arguments that are not a JSON object are shown as `action(…)`. Caller frees; NULL
 * when out of memory. */
char *appr_render_call(const Ahp__Appr__ApprovalRequest *r, size_t max);

/* Per-profile approvers (approvers_file): lines `PROFILE users=a,b groups=g,h` (either part
 * may be absent; '#' comments and blank lines skipped). Names resolve when parsed. */
typedef struct {
	char profile[APPR_ID_MAX + 1];
	ahp_rpc_allow_t allow;
} appr_rule_t;

typedef struct {
	appr_rule_t *rules;
	size_t n;
} appr_approvers_t;

/* Parses text (NUL-terminated) into *out (zeroed by the caller). 0, or -1 with err
 * "LINE: message" (bad profile name, unknown key, a user or group that does not exist, a
 * profile given twice, over 32 names). On error *out is freed. */
int appr_approvers_parse(const char *text, appr_approvers_t *out, char *err, size_t errlen);
/* Reads path (at most 1 MiB; a missing file is an empty list) and parses it. 0 / -1. */
int appr_approvers_load(const char *path, appr_approvers_t *out, char *err, size_t errlen);
/* The rule for profile, or NULL. */
const appr_rule_t *appr_approvers_find(const appr_approvers_t *a, const char *profile);
void appr_approvers_free(appr_approvers_t *a);

/* Whether uid (primary gid gid) is in allow: its uid, its gid, or a supplementary group
 * (group database, getgrouplist) of the user the uid names. */
int appr_allow_has(const ahp_rpc_allow_t *allow, uid_t uid, gid_t gid);

/* The decider's name: getpwuid's, else "uid:N". Into buf (>= 40 bytes). Returns buf. */
char *appr_user_name(uid_t uid, char *buf, size_t len);

/* --- store.c --- */

typedef struct appr_store appr_store_t;

/* Opens (creating, migrating) the database. NULL with err on failure. */
appr_store_t *appr_store_open(const char *path, char *err, size_t errlen);
void appr_store_close(appr_store_t **self_p);
/* The log's id (made when the database was created; 32 hex chars). */
const char *appr_store_log_id(const appr_store_t *self);

/* Writes join the current batch (BEGIN IMMEDIATE on the first); commit ends it. 0 / -1. */
int appr_store_commit(appr_store_t *self);

/* Lookups: 1 and *out (a malloc'ed message; free with
 * protobuf_c_message_free_unpacked(&(*out)->base, NULL)), 0 when there is none, -1 on a
 * database error. The decision is filled when there is one. */
int appr_store_get(appr_store_t *self, uint64_t id, Ahp__Appr__ApprovalRequest **out);
int appr_store_find(appr_store_t *self, const char *run_id, uint32_t step,
                    Ahp__Appr__ApprovalRequest **out);

/* Inserts a pending request (r's id, state and decision are ignored); sets r->id. 0 / -1. */
int appr_store_insert(appr_store_t *self, Ahp__Appr__ApprovalRequest *r);

/* Records the decision of a pending request and sets its state; d->seq is set. -1 when the
 * request is not pending (nothing written) or on a database error. */
int appr_store_decide(appr_store_t *self, uint64_t id, Ahp__Appr__Decision *d);

/* Requests newest first: pending only unless all, of run_id unless "" (or NULL), at most
 * limit, and at most APPR_REPLY_BUDGET bytes of them (at least one). *out is a malloc'ed
 * array of *n messages (free each, then the array). 0 / -1. */
int appr_store_list(appr_store_t *self, int all, const char *run_id, uint32_t limit,
                    Ahp__Appr__ApprovalRequest ***out, size_t *n);

/* Decided requests whose decision seq > after, oldest first, as appr_store_list (limit and
 * budget); *more when there were others after them. 0 / -1. */
int appr_store_decided_after(appr_store_t *self, uint64_t after, uint32_t limit,
                             Ahp__Appr__ApprovalRequest ***out, size_t *n, int *more);

/* The highest decision seq (0 when none). */
uint64_t appr_store_last_seq(appr_store_t *self);

/* The earliest expires_ms of a pending request: 1 and *ms, 0 when none pending, -1. */
int appr_store_next_expiry(appr_store_t *self, int64_t *ms);

/* Ids of pending requests with expires_ms <= now (at most max). Returns the count written
 * to ids, or -1. */
int appr_store_expired(appr_store_t *self, int64_t now, uint64_t *ids, int max);

/* Frees an array from appr_store_list / appr_store_decided_after. */
void appr_requests_free(Ahp__Appr__ApprovalRequest **v, size_t n);

/* --- server.c --- */

typedef struct appr_server appr_server_t;

typedef struct {
	const char *endpoint, *human_endpoint;
	const ahp_rpc_allow_t *orch_allow;  /* who may use endpoint */
	const ahp_rpc_allow_t *human_allow; /* who may use human_endpoint (deciders included) */
} appr_server_conf_t;

/* Binds both sockets (as root: before the privilege drop). NULL with err. */
appr_server_t *appr_server_new(const appr_server_conf_t *conf, char *err, size_t errlen);
/* Opens the database (after the drop). 0 / -1 with err. */
int appr_server_open_store(appr_server_t *self, const char *db_path, char *err, size_t errlen);
/* Who may decide: decide (decide_users / decide_groups) unless approvers has a rule for the
 * request's profile. Takes *approvers (left zeroed); replaces the previous ones. */
void appr_server_set_deciders(appr_server_t *self, const ahp_rpc_allow_t *decide,
                              appr_approvers_t *approvers);
/* Replaces both sockets' allow-lists (SIGHUP). 0 / -1. */
int appr_server_set_allow(appr_server_t *self, const ahp_rpc_allow_t *orch,
                          const ahp_rpc_allow_t *human);
/* The loop, until on_signal returns non-zero for a signal read from sigfd. */
void appr_server_run(appr_server_t *self, int sigfd, int (*on_signal)(void *arg, int signo),
                     void *arg);
void appr_server_destroy(appr_server_t **self_p);

/* --- cli.c --- */

/* The human CLI: argv[0] is the command (list, show, approve, reject, answer). Exit code:
 * 0 ok, 1 refused by approvald, 2 usage, 3 not reachable. */
int appr_cli(const char *human_endpoint, int json, int argc, char **argv);

#endif
