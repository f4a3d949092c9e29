/*
 * servicesd: typed service calls with host-side credentials and exactly-once side effects.
 *
 * Internal interfaces shared by the daemon's files. The model's arguments, the upstreams'
 * answers and every frame on the socket are untrusted: the pure parts (registry,
 * constraints, validate, errors, conf, the handlers' request/response functions) never
 * allocate from an untrusted length without a bound, and are unit-tested
 * (tests/unit/svc_test_*.c) and fuzzed (tests/fuzz/fuzz_svcargs.c).
 *
 * Files:
 *   main.c          CLI (serve, --check-config, --health, --help), config, privileges, signals
 *   engine.c        the one event loop: the RPC socket, libcurl multi, timers, in-flight
 *                   calls and the duplicates waiting on them
 *   store.c         the idempotency store (SQLite): intent before the side effect, outcome after
 *   registry.c      the registry (expanded from common/include/ahp/services.def)
 *   constraints.c   the one table of field constraints beside proto/services.proto
 *   validate.c      JSON arguments -> message; constraint checks on arguments and results;
 *                   JSON Schemas; the exec_service tool definition for a profile
 *   errors.c        typed errors: HTTP statuses and libcurl transport errors -> svc_error_t
 *   conf.c          services.conf: each service's upstream URL, secret and timeout
 *   services/<name>.c  one handler per service
 *
 * Adding a service: a message pair in proto/services.proto, its constraints in
 * constraints.c, a handler file services/<name>.c (svc_handler_<name>), and one line in
 * services.def. Nothing else changes: the tool description, the JSON Schemas and the
 * validation follow from the descriptors.
 */
#ifndef SVC_H
#define SVC_H

#include <stddef.h>
#include <stdint.h>

#include <regex.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "services.pb-c.h"

#define SVC_NAME_MAX 64             /* a service name */
#define SVC_ARGS_MAX (256 * 1024)   /* the model's arguments, JSON text */
#define SVC_BODY_MAX (1024 * 1024)  /* an upstream's answer body; more is bad_response */
#define SVC_RESULT_MAX (512 * 1024) /* a result's JSON text sent back to the orchestrator */
#define SVC_MESSAGE_MAX 512         /* svc_error_t.message */
#define SVC_FIELD_MAX 128           /* svc_error_t.field */
#define SVC_SUMMARY_MAX 160         /* a result's one-line summary */
#define SVC_TIMEOUT_MAX_MS 120000   /* ceiling of a per-service timeout */

/* What servicesd does with a call whose outcome is unknown after a crash (services.def). */
enum svc_retry {
	SVC_RETRY_SAFE,  /* no side effect: run it again */
	SVC_RETRY_KEYED, /* sends Idempotency-Key upstream: send again with the same key */
	SVC_RETRY_NEVER, /* report outcome_unknown */
};

/* A typed error for the model (proto ahp.svcd.ServiceError). code is one of the names in
 * proto/servicesd.proto; message is one line of valid UTF-8 (quoted untrusted text is cut
 * at character boundaries and has its control characters escaped). */
typedef struct {
	char code[32];
	char message[SVC_MESSAGE_MAX];
	char field[SVC_FIELD_MAX];
	int retryable;
	int http_status;
} svc_error_t;

/* Fills err (any earlier content is replaced). Returns -1, so that a failing function can
 * `return svc_error(err, ...)`. field may be NULL. */
int svc_error(svc_error_t *err, const char *code, int retryable, const char *field, const char *fmt,
              ...) __attribute__((format(printf, 5, 6)));

/* ---- the HTTP request a handler asks for (made by engine.c on libcurl multi) ---- */

#define SVC_HTTP_HEADERS_MAX 8

typedef struct {
	const char *method;                  /* static: "GET", "POST"... */
	char *url;                           /* owned; absolute http(s) URL */
	char *body;                          /* owned, may be NULL */
	size_t body_len;                     /* bytes */
	char *headers[SVC_HTTP_HEADERS_MAX]; /* owned "Name: value" lines; may hold a secret */
	int n_headers;
} svc_http_t;

/* Appends one "Name: value" header line (formatted). 0, or -1 when full, out of memory, or
 * the line holds CR, LF or NUL (a secret or value that would inject another header). */
int svc_http_header(svc_http_t *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees what h owns; header lines are wiped first (they may carry a credential). */
void svc_http_free(svc_http_t *h);
/* A value a handler puts in a URL path as one segment: refused when empty or made of dots
 * only ("." or ".."), which an upstream that decodes %2E and normalises dot segments
 * (RFC 3986 5.2.4) would turn into a request for another path, with the credential.
 * Returns 0, or -1 with err (code validation naming field). */
int svc_path_segment_check(const char *value, const char *field, svc_error_t *err);
/* Appends to base (no trailing '/' needed) the path segments given, each percent-encoded
 * as an RFC 3986 path segment ("a/b" -> "a%2Fb"; a segment of dots only, "." or "..", has
 * its dots encoded as %2E so that dot-segment removal cannot drop it). NULL-terminated list.
 * Caller owns the result; NULL on allocation failure. */
char *svc_url_join(const char *base, ...) __attribute__((sentinel));

/* ---- a service's handler (servicesd/services/<name>.c) ---- */

typedef struct {
	const char *secret; /* default secret name in servicesd's secrets dir */
	long timeout_ms;    /* default per-call timeout (services.conf may override) */
	/* Builds the upstream request from validated args. base_url: from services.conf;
	 * token: the secret's value (borrowed, NUL-terminated; NULL when the service has no
	 * secret); key: the idempotency key ("run:step"), sent upstream by SVC_RETRY_KEYED
	 * services. 0, or -1 with err. */
	int (*request)(const ProtobufCMessage *args, const char *base_url, const char *token,
	               const char *key, svc_http_t *req, svc_error_t *err);
	/* A 2xx answer -> the Result message (caller frees with
	 * protobuf_c_message_free_unpacked), or NULL with err (code bad_response). body is
	 * at most SVC_BODY_MAX bytes, not NUL-terminated, untrusted. */
	ProtobufCMessage *(*response)(const ProtobufCMessage *args, long status,
	                              const uint8_t *body, size_t len, svc_error_t *err);
	/* One line for the timeline, from a validated result: "2 snippets",
	 * "message_id=4f12a87bc394". Untrusted text in it must be escaped. */
	void (*summarize)(const ProtobufCMessage *result, char *buf, size_t len);
} svc_handler_t;

/* ---- registry.c ---- */

typedef struct {
	const char *name;
	const char *summary;
	const ProtobufCMessageDescriptor *args;
	const ProtobufCMessageDescriptor *result;
	int retry; /* enum svc_retry */
	const svc_handler_t *handler;
} svc_service_t;

/* The registry, in services.def order, NULL-terminated. */
extern const svc_service_t *const svc_registry[];
/* The service named name (len bytes, need not be NUL-terminated), or NULL. */
const svc_service_t *svc_find(const char *name, size_t len);
/* "safe" / "keyed" / "never". */
const char *svc_retry_str(int retry);

/* ---- constraints.c ---- */

/* One field's constraints beyond its protobuf type and label. Unused bounds are 0
 * (max_* = 0: no maximum). Lengths count Unicode code points, as JSON Schema's
 * minLength/maxLength do. pattern is a POSIX extended regular expression that is also a
 * valid ECMA-262 pattern (the JSON Schema dialect), anchored explicitly with ^ and $. */
typedef struct {
	const char *message;     /* full protobuf name: "ahp.svc.PublishSummaryArgs" */
	const char *field;       /* field name */
	const char *description; /* for the model: what the field is */
	const char *pattern;
	uint32_t min_length, max_length;
	int64_t minimum, maximum; /* integers; both 0 = no range */
	uint32_t max_items;       /* repeated fields */
} svc_constraint_t;

/* The table, ending with {NULL}. */
extern const svc_constraint_t svc_constraints[];
/* The constraints of desc's field, or NULL. */
const svc_constraint_t *svc_constraint_find(const ProtobufCMessageDescriptor *desc,
                                            const char *field);
/* Compiles and checks every entry (message and field exist, the pattern compiles, the
 * bounds fit the field's type). Called once at start; a bad table stops the daemon.
 * 0, or -1 with a message in err. */
int svc_constraints_init(char *err, size_t errlen);
/* The checks of svc_constraints_init on any table ending with {NULL} (the daemon's, or a
 * test's), its patterns compiled and freed. 0, or -1 with a message in err. */
int svc_constraints_check(const svc_constraint_t *table, char *err, size_t errlen);
/* The compiled pattern of c (an entry of svc_constraints), or NULL when it has none or the
 * table did not compile. Compiles the table on first use when svc_constraints_init was not
 * called (unit tests, fuzzing). Borrowed, valid for the life of the process. */
const regex_t *svc_constraint_regex(const svc_constraint_t *c);

/* ---- validate.c ---- */

/* The model's arguments (JSON text, len bytes, untrusted, at most SVC_ARGS_MAX) -> the
 * service's Args message, checked against the constraints. Errors (code validation,
 * field set to the path): not JSON, not an object, unknown field, wrong type, missing
 * required field, pattern/length/range/items violations — the message names the field
 * and the rule. Caller frees the result with protobuf_c_message_free_unpacked. */
ProtobufCMessage *svc_args_parse(const svc_service_t *s, const char *json, size_t len,
                                 svc_error_t *err);
/* Checks a message (arguments or a result) against the constraints table, recursively.
 * 0, or -1 with err (code validation for args; the caller renames it for results). */
int svc_message_check(const ProtobufCMessage *m, svc_error_t *err);
/* The JSON Schema of desc: ahp_proto_json_schema plus the table's pattern, lengths,
 * ranges, items and descriptions. New reference, NULL on allocation failure. */
json_t *svc_schema(const ProtobufCMessageDescriptor *desc);
/* The exec_service tool definition (one OpenAI "tools" entry) listing exactly the
 * services named (n names; unknown names are skipped), each with its summary and the
 * schemas of its arguments and result; with none, the description says "No services are
 * currently enabled for this agent." New reference. */
json_t *svc_tool_definition(char *const *names, unsigned n);
/* An upstream's 2xx answer (body, len bytes, untrusted, at most SVC_BODY_MAX) -> the Result
 * message of type desc, for the handlers' response(). Members the message does not have are
 * dropped at every level (upstreams add fields); not JSON, not an object, a wrong type, a
 * missing required field or a constraint violation is bad_response naming the field. Caller
 * frees the result with protobuf_c_message_free_unpacked. */
ProtobufCMessage *svc_result_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *body,
                                   size_t len, svc_error_t *err);
/* A result's JSON text (compact), at most SVC_RESULT_MAX bytes. Caller frees. NULL with
 * err (code too_large or internal). */
char *svc_result_json(const ProtobufCMessage *result, svc_error_t *err);

/* ---- errors.c ---- */

/* A non-2xx HTTP status from an upstream -> err: 401/403 unauthorized, 404 not_found,
 * 408/425/429/5xx http_error retryable, other http_error. The message quotes the start of
 * the body (escaped, at most 120 characters). Returns -1. */
int svc_http_status_error(long status, const uint8_t *body, size_t len, svc_error_t *err);
/* A libcurl transport failure -> err: connect refused/unreachable -> unavailable,
 * timeouts -> timeout, name resolution -> dns, TLS -> tls, anything else -> unavailable;
 * all retryable except tls; CURLE_FILESIZE_EXCEEDED (the engine's CURLOPT_MAXFILESIZE at
 * SVC_BODY_MAX) -> bad_response, not retryable. detail is curl's error buffer (may be
 * empty). Returns -1. */
int svc_curl_error(int curlcode, const char *detail, svc_error_t *err);

/* ---- conf.c: services.conf ---- */

/* One line per service: NAME url=URL [secret=NAME] [timeout_ms=N]. '#' comments and blank
 * lines are ignored; an unknown service, a duplicate, a URL that is not http(s), a bad
 * secret name or a timeout outside 1..SVC_TIMEOUT_MAX_MS is an error "path:line: why". A
 * service with no line is not configured: calls to it fail with `unavailable`. */
typedef struct {
	const svc_service_t *service;
	char *url;    /* owned; no trailing '/' */
	char *secret; /* owned; the handler's default when not given */
	long timeout_ms;
} svc_conf_entry_t;

typedef struct {
	svc_conf_entry_t *entries;
	size_t n;
} svc_conf_t;

/* Reads path (a missing file is an empty configuration; at most 64 KiB, lines at most 4096
 * bytes). 0, or -1 with err. *out is overwritten only on success, and its old content is
 * not freed: load into a fresh svc_conf_t and swap (SIGHUP). Free with svc_conf_free. */
int svc_conf_load(const char *path, svc_conf_t *out, char *err, size_t errlen);
void svc_conf_free(svc_conf_t *c);
/* The entry for s, or NULL when s is not configured. */
const svc_conf_entry_t *svc_conf_find(const svc_conf_t *c, const svc_service_t *s);

/* ---- store.c: the idempotency store (SQLite, one file) ---- */

/* A key's record: none, an intent (the side effect may have started), or an outcome. */
enum svc_store_state { SVC_STORE_NONE, SVC_STORE_INTENT, SVC_STORE_DONE };

#define SVC_KEY_MAX 96    /* "run:step": a 64-byte run id, ':', a uint32 */
#define SVC_DIGEST_LEN 64 /* hex SHA-256 of the service name and canonical arguments */

typedef struct svc_store svc_store_t;

/* What a row says about one call (all borrowed; copied by the store). */
typedef struct {
	const char *key, *run, *profile, *service, *digest;
	uint32_t step;
} svc_store_call_t;

/* Opens (creating; its directory must exist) the store at path: WAL (ahp_db_open). NULL
 * with err. */
svc_store_t *svc_store_open(const char *path, char *err, size_t errlen);
void svc_store_close(svc_store_t **self_p);
/* The record of key, including rows written in the current batch. Returns its state
 * (enum svc_store_state), or -1 on a database error. digest (SVC_DIGEST_LEN + 1 bytes)
 * gets the recorded digest for INTENT and DONE; for DONE *reply and *len get the recorded
 * packed ahp.svcd.CallReply (caller frees). */
int svc_store_get(svc_store_t *self, const char *key, char *digest, uint8_t **reply, size_t *len);
/* Adds a row to the current batch (kept in memory until svc_store_commit): an intent
 * before a side effect starts, or a call's outcome (which replaces its intent, or stands
 * alone for a service that records no intent). 0, or -1 when out of memory. */
int svc_store_intent(svc_store_t *self, const svc_store_call_t *call);
int svc_store_done(svc_store_t *self, const svc_store_call_t *call, const uint8_t *reply,
                   size_t len);
/* Writes the batch in one transaction. An intent is on the disk when this returns
 * (synchronous=FULL: fsync of the WAL); a batch of outcomes only is committed with
 * synchronous=NORMAL — durable against any crash of the process, but not fsync'd, since
 * an outcome lost to a power cut is recovered by the service's retry policy (the key is
 * asked again: a safe call runs again, a keyed one is deduplicated upstream, a never one
 * finds its fsync'd intent and reports outcome_unknown). 0, or -1 on failure: the daemon
 * must stop, since it cannot know what reached the disk. */
int svc_store_commit(svc_store_t *self);
/* Deletes outcomes finished before cutoff_ms (wall clock); intents are kept. Returns the
 * number deleted, -1 on error. */
int svc_store_prune(svc_store_t *self, int64_t cutoff_ms);

/* ---- engine.c: the event loop ---- */

#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/secrets.h"

typedef struct svc_engine svc_engine_t;

/* Binds endpoint (ipc:// as root, before the privilege drop), restricted to allow
 * (copied). max_inflight: upstream calls at once (more wait their turn). NULL with err. */
svc_engine_t *svc_engine_new(const char *endpoint, const ahp_rpc_allow_t *allow,
                             unsigned max_inflight, char *err, size_t errlen);
/* Opens the idempotency store (after the drop, as the daemon's user). 0 / -1 with err. */
int svc_engine_open_store(svc_engine_t *self, const char *db_path, char *err, size_t errlen);
/* Installs a generation: profiles, secrets and services.conf (all owned by the engine
 * from now on; the previous ones are freed). Calls already admitted keep what they
 * were built with. */
void svc_engine_set_gen(svc_engine_t *self, ahp_profiles_t *profiles, ahp_secrets_t *secrets,
                        svc_conf_t *conf);
/* Replaces the socket's allow-list. 0 / -1. */
int svc_engine_set_allow(svc_engine_t *self, const ahp_rpc_allow_t *allow);
/* How long finished outcomes are kept (days, 0 = forever): pruned hourly. */
void svc_engine_set_retention(svc_engine_t *self, long days);
/* Runs the loop until on_signal returns non-zero. sigfd is a signalfd (SIGHUP, SIGTERM,
 * SIGINT) read by the loop; on_signal(arg, signo) is called for each. Calls in flight
 * when it stops are left as intents in the store (the next start handles them by their
 * service's retry policy). */
void svc_engine_run(svc_engine_t *self, int sigfd, int (*on_signal)(void *arg, int signo),
                    void *arg);
void svc_engine_destroy(svc_engine_t **self_p);

#endif
