/* mock-services private header: the wiki and webhook test double servicesd calls, by file. */
#ifndef MOCK_SERVICES_H
#define MOCK_SERVICES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MS_BODY_MAX (64 * 1024)    /* a webhook body above this gets 413 */
#define MS_URL_MAX 2048            /* a (decoded) path above this gets 414 */
#define MS_TOPIC_MAX 256           /* topic bytes; longer is 400 bad_topic */
#define MS_WEBHOOK_ID_MAX 64       /* ^[A-Za-z0-9._-]{1,64}$ */
#define MS_IDEM_KEY_MAX 255        /* Idempotency-Key bytes, visible ASCII */
#define MS_HEADERS_MAX (32 * 1024) /* request line + headers (libmicrohttpd's pool) */
#define MS_TOKEN_MAX 4096          /* a token file */
#define MS_NAMES_MAX 10000         /* distinct topics / webhook ids kept in /stats */
#define MS_IDEM_KEYS_MAX 100000    /* Idempotency-Keys remembered */
#define MS_CONNECTIONS_MAX 1024    /* one thread each */

/* fixtures.c: the canned wiki. */

/* The snippets of topic (exact, case-sensitive match): a new JSON array of
 * {"url", "excerpt"} objects, empty for a topic without fixtures. NULL on
 * ENOMEM. Caller owns it. */
json_t *ms_fixture_snippets(const char *topic);

/* server.c: the HTTP side (libmicrohttpd, a thread per connection). */
typedef struct ms_server_t ms_server_t;

typedef struct {
	const char *wiki_token;    /* expected after "Bearer " on /snippets */
	const char *webhook_token; /* expected after "Bot " on /webhooks */
	long latency_ms;           /* slept before answering each snippets/webhooks request */
	long hang_ms;              /* slept too (timeouts); neither delays /healthz or /stats */
	long fail_every;           /* every Nth snippets/webhooks request fails; 0 = never */
	int fail_status;           /* 400..599 */
} ms_config_t;

/* Serves on the listening socket fd (takes ownership, closed on failure).
 * cfg's strings are borrowed and must outlive the server. NULL on failure. */
ms_server_t *ms_server_new(const ms_config_t *cfg, int fd);
/* Wakes requests sleeping for --latency-ms/--hang-ms, stops the daemon, frees.
 * NULL-safe; nulls *self_p. */
void ms_server_destroy(ms_server_t **self_p);

/* True when s is a webhook id: ^[A-Za-z0-9._-]{1,64}$. */
int ms_webhook_id_ok(const char *s);

#endif
