/* mock-llm private header: prototypes of the scripted model server, grouped by file. */
#ifndef MOCK_LLM_H
#define MOCK_LLM_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include <jansson.h>

#define MOCK_BODY_MAX (1024 * 1024)       /* request bodies above this get 413 */
#define MOCK_SCENARIO_MAX (1024 * 1024)   /* a scenario file above this is refused */
#define MOCK_RENDER_MAX (4 * 1024 * 1024) /* one rendered template string */
#define MOCK_CANON_MAX (8 * 1024 * 1024)  /* canonical JSON of one messages[] */
#define MOCK_NAME_MAX 64                  /* scenario name length */
#define MOCK_FINGERPRINTS_MAX 100000      /* distinct fingerprints kept in /stats */

/* buf.c: a growable byte buffer with a ceiling, always NUL-terminated. */
typedef struct {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
} mock_buf_t;

void mock_buf_init(mock_buf_t *self, size_t max);
/* Appends n bytes; -1 (buffer unchanged) when that would pass the ceiling or
 * on allocation failure. */
int mock_buf_put(mock_buf_t *self, const void *p, size_t n);
int mock_buf_puts(mock_buf_t *self, const char *s);
/* Hands the data to the caller (never NULL on success, "" when empty);
 * the buffer is reset. */
char *mock_buf_steal(mock_buf_t *self);
void mock_buf_free(mock_buf_t *self);

/* canon.c: canonical JSON (byte-identical to Python's json.dumps(v,
 * sort_keys=True, separators=(',',':'), ensure_ascii=False)) and the
 * request fingerprint. */
int mock_canon_dump(const json_t *v, mock_buf_t *out);
/* Python repr() of a double into buf (>= 32 bytes). */
void mock_format_real(double d, char *buf, size_t len);
/* The fingerprint of a request: SHA-256 hex (into hex[65]) of the canonical
 * JSON of [HEAD, N], HEAD the messages up to and including the first user
 * message (all of them when there is none) and N the number of messages.
 * System prompt and task identify a conversation and N the place in it; a
 * request costs the same whatever the conversation's length (hashing all
 * of it cost the mock more CPU than the orchestrator it measures). 0 / -1. */
int mock_fingerprint(const json_t *messages, char hex[65]);

/* arena.c: a request's JSON tree lives in a per-thread arena. */
/* Makes jansson allocate through the arena (once, before any thread starts). */
void mock_arena_install(void);
/* jansson allocations of this thread come from its arena until end(). */
void mock_arena_begin(void);
void mock_arena_end(void);
/* Drops everything allocated in this thread's arena: no json_t made between
 * begin() and end() may be used (or referenced by another value) after it. */
void mock_arena_reset(void);

/* scenario.c: YAML scenarios, one file per scenario name. */
typedef struct {
	char *name;
	json_t *arguments; /* object; string values may hold templates */
} mock_call_t;

typedef struct {
	char *content; /* NULL when the step has no content */
	size_t ncalls;
	mock_call_t *calls;
} mock_step_t;

typedef struct {
	size_t nsteps;
	mock_step_t *steps;
	unsigned refs; /* mock_scenario_get's references (under the cache lock) */
} mock_scenario_t;

/* True when name is a safe scenario name: [A-Za-z0-9._-]{1,64}, not
 * starting with '.', no "..". */
int mock_scenario_name_ok(const char *name);
/* Loads and validates a scenario file. NULL with "file:line:col: why" in err
 * on failure (errno ENOENT when the file does not exist). Caller owns it. */
mock_scenario_t *mock_scenario_load(const char *path, char *err, size_t errlen);
void mock_scenario_destroy(mock_scenario_t **self_p);
/* The scenario at path, loaded once and shared until the file changes (its
 * device, inode, size, mtime or ctime): parsing the YAML on every request
 * cost the mock more CPU than the orchestrator it measures. Read-only for
 * the caller, who releases it with mock_scenario_put. NULL as
 * mock_scenario_load (a bad file is not cached: its error repeats). */
mock_scenario_t *mock_scenario_get(const char *path, char *err, size_t errlen);
void mock_scenario_put(mock_scenario_t **self_p);
/* Sorted array of the valid scenario names in dir. Caller owns it. */
json_t *mock_scenario_list(const char *dir);

/* template.c: {{result.N.path}}, {{last_result[.path]}}, {{task}} over a
 * conversation. */
typedef struct mock_tctx_t mock_tctx_t;

/* Copies the tool results and the task out of messages. NULL on ENOMEM. */
mock_tctx_t *mock_tctx_new(const json_t *messages);
void mock_tctx_destroy(mock_tctx_t **self_p);
/* Renders templates in s. Caller owns the result; NULL when it would pass
 * MOCK_RENDER_MAX. */
char *mock_tctx_render(mock_tctx_t *self, const char *s);
/* Deep copy of v with every string value rendered. NULL on overflow. */
json_t *mock_tctx_render_json(mock_tctx_t *self, const json_t *v);
/* Text of a message's content (a string, or the text parts of an array).
 * Caller owns the result; NULL when absent. */
char *mock_content_text(const json_t *msg);

/* server.c: the HTTP side (libmicrohttpd). */
typedef struct mock_server_t mock_server_t;

typedef struct {
	const char *scenarios; /* directory */
	long latency_ms;
	long fail_every;
	int fail_status; /* 429 or 500 */
} mock_config_t;

/* Serves on the listening socket fd (takes ownership). NULL on failure. */
mock_server_t *mock_server_new(const mock_config_t *cfg, int fd);
void mock_server_destroy(mock_server_t **self_p);

/* chat.c: one chat completion. */
typedef struct {
	int status;   /* HTTP status */
	json_t *body; /* reply JSON, owned */
	int injected; /* an injected failure */
	char scenario[MOCK_NAME_MAX + 1];
	char fingerprint[65];
	long step; /* -1 when not reached */
} mock_chat_result_t;

/* Called once per valid request, just before the reply is built: nonzero
 * means this request gets an injected failure instead. */
typedef int (*mock_fail_fn)(void *arg);

void mock_chat(const mock_config_t *cfg, const char *body, size_t len, mock_fail_fn fail,
               void *fail_arg, mock_chat_result_t *out);
/* An OpenAI-style error body. Caller owns it. */
json_t *mock_error_json(const char *message, const char *type, const char *code);

#endif
