/* mock-services: routing, Bearer/Bot auth, idempotent posts, counters and /stats on libmicrohttpd.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ahp/log.h"
#include "ahp/secrets.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "mock_services.h"

/* What a request is, decided from its method and path once its headers are in. */
enum {
	S_OTHER,    /* 404, 405, 414: counted in requests */
	S_MONITOR,  /* /healthz, /stats, /stats/reset: never counted, never delayed */
	S_SNIPPETS, /* GET /snippets/{topic} */
	S_WEBHOOKS, /* POST /webhooks/{id} */
};

#define S_SNIPPETS_PREFIX "/snippets/"
#define S_WEBHOOKS_PREFIX "/webhooks/"
#define S_LOG_URL_MAX 512 /* escaped path bytes in a log line */

struct ms_server_t {
	ms_config_t cfg;
	size_t wiki_len, webhook_len;
	struct MHD_Daemon *daemon;
	pthread_mutex_t mu; /* guards everything down to idem */
	uint64_t requests, snippets, webhooks, posts, replays, injected, dropped;
	uint64_t seq;       /* snippets/webhooks requests, drives --fail-every */
	json_t *by_webhook; /* id -> distinct posts */
	json_t *by_topic;   /* topic -> 200 answers */
	json_t *by_status;  /* "401" -> answers (every counted request) */
	json_t *idem;       /* Idempotency-Key -> the answer it got; kept by /stats/reset */
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv; /* on CLOCK_MONOTONIC; broadcast when stopping */
	int stopping;
};

/* Per-request state kept by libmicrohttpd between handler calls. */
typedef struct {
	int kind;
	char *body; /* MS_BODY_MAX + 1 bytes once a byte arrives; NUL-terminated */
	size_t len;
	int too_large; /* more than MS_BODY_MAX arrived: the rest is read and dropped */
	int answered;  /* a response was queued before the body was read */
} s_request_t;

/* The rest of url after prefix when it is one non-empty path segment, else NULL. */
static const char *
s_segment(const char *url, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(url, prefix, n) != 0 || url[n] == '\0' || strchr(url + n, '/') != NULL)
		return NULL;
	return url + n;
}

static int
s_classify(const char *url, const char *method)
{
	if (strcmp(url, "/healthz") == 0 || strcmp(url, "/stats") == 0 ||
	    strcmp(url, "/stats/reset") == 0)
		return S_MONITOR;
	if (strlen(url) > MS_URL_MAX)
		return S_OTHER;
	if (s_segment(url, S_SNIPPETS_PREFIX) != NULL && strcmp(method, "GET") == 0)
		return S_SNIPPETS;
	if (s_segment(url, S_WEBHOOKS_PREFIX) != NULL && strcmp(method, "POST") == 0)
		return S_WEBHOOKS;
	return S_OTHER;
}

/* The method a known path takes (for 405 and Allow), NULL for an unknown path. */
static const char *
s_allowed(const char *url)
{
	if (strcmp(url, "/healthz") == 0 || strcmp(url, "/stats") == 0 ||
	    s_segment(url, S_SNIPPETS_PREFIX) != NULL)
		return "GET";
	if (strcmp(url, "/stats/reset") == 0 || s_segment(url, S_WEBHOOKS_PREFIX) != NULL)
		return "POST";
	return NULL;
}

int
ms_webhook_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > MS_WEBHOOK_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* A topic is any UTF-8 without control characters, 1..MS_TOPIC_MAX bytes (its
 * caller already knows it is not empty and has no '/'). */
static int
s_topic_ok(const char *s)
{
	size_t n = strlen(s);
	if (n > MS_TOPIC_MAX || !ahp_utf8_valid(s, n, 0))
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* An Idempotency-Key is 1..MS_IDEM_KEY_MAX visible ASCII characters. */
static int
s_idem_key_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > MS_IDEM_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

/* Adds one to obj[key]; a new key past MS_NAMES_MAX is not kept (self->dropped
 * counts it). Caller holds self->mu. */
static void
s_bump(ms_server_t *self, json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (v != NULL)
		json_integer_set(v, json_integer_value(v) + 1);
	else if (json_object_size(obj) < MS_NAMES_MAX)
		json_object_set_new(obj, key, json_integer(1));
	else
		self->dropped++;
}

/* "(auth=Bearer w…)": the scheme and the first character of the credential when
 * it is a letter or digit, never more of a secret. */
static void
s_auth_summary(const char *v, char *out, size_t len)
{
	if (v == NULL) {
		snprintf(out, len, "-");
		return;
	}
	while (*v == ' ' || *v == '\t')
		v++;
	size_t n = strcspn(v, " \t");
	char *scheme = ahp_term_escape(v, n > 16 ? 16 : n, AHP_TERM_ONE_LINE);
	v += n;
	while (*v == ' ' || *v == '\t')
		v++;
	char c = *v;
	int show = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
	snprintf(out, len, "%s%s%.*s%s", scheme ? scheme : "?", *v ? " " : "", show ? 1 : 0, v,
	         *v ? "…" : "");
	free(scheme);
}

/* One line per request on stderr, written at once:
 * `[mock-services] GET /snippets/durability (auth=Bearer w…) → 200`. The
 * method, path and scheme come from the client and are escaped. */
static void
s_log_request(struct MHD_Connection *conn, const char *method, const char *url, int status)
{
	char auth[96];
	s_auth_summary(
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), auth,
	    sizeof auth);
	size_t mlen = strlen(method);
	char *m = ahp_term_escape(method, mlen > 16 ? 16 : mlen, AHP_TERM_ONE_LINE);
	char *u = ahp_term_escape(url, strlen(url), AHP_TERM_ONE_LINE);
	char line[S_LOG_URL_MAX + 256];
	int n = snprintf(line, sizeof line, "[mock-services] %s %.*s%s (auth=%s) → %d\n",
	                 m ? m : "?", AHP_UTF8_CUT(u ? u : "?", S_LOG_URL_MAX),
	                 u && strlen(u) > S_LOG_URL_MAX ? "…" : "", auth, status);
	if (n > 0)
		ahp_write_all(STDERR_FILENO, line,
		              (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
	free(m);
	free(u);
}

/* Queues status with body (taken; NULL answers nothing and drops the
 * connection), one optional extra header; counts and logs the request. */
static enum MHD_Result
s_send(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req, const char *method,
       const char *url, int status, json_t *body, const char *hname, const char *hvalue)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (hname != NULL)
		MHD_add_response_header(r, hname, hvalue);
	if (req->kind != S_MONITOR) {
		char code[16];
		snprintf(code, sizeof code, "%d", status);
		pthread_mutex_lock(&self->mu);
		self->requests++;
		if (req->kind == S_SNIPPETS)
			self->snippets++;
		else if (req->kind == S_WEBHOOKS)
			self->webhooks++;
		s_bump(self, self->by_status, code);
		pthread_mutex_unlock(&self->mu);
	}
	/* a successful GET /healthz is a liveness probe (compose checks every
	 * 5 s): not logged, or it would drown the requests that matter */
	if (!(req->kind == S_MONITOR && status == 200 && strcmp(url, "/healthz") == 0))
		s_log_request(conn, method, url, status);
	enum MHD_Result rc = MHD_queue_response(conn, (unsigned int)status, r);
	MHD_destroy_response(r);
	return rc;
}

static json_t *
s_err(const char *code)
{
	return json_pack("{s:s}", "error", code);
}

/* Sleeps ms milliseconds, or less when the server stops. */
static void
s_delay(ms_server_t *self, long ms)
{
	if (ms <= 0)
		return;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&self->stop_mu);
	while (!self->stopping)
		if (pthread_cond_timedwait(&self->stop_cv, &self->stop_mu, &until) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&self->stop_mu);
}

/* The delays and the failure injection every snippets/webhooks request goes
 * through first. Nonzero when this one is the Nth and must fail. */
static int
s_prelude(ms_server_t *self)
{
	s_delay(self, self->cfg.latency_ms + self->cfg.hang_ms);
	int fail = 0;
	pthread_mutex_lock(&self->mu);
	self->seq++;
	if (self->cfg.fail_every > 0 && self->seq % (uint64_t)self->cfg.fail_every == 0) {
		fail = 1;
		self->injected++;
	}
	pthread_mutex_unlock(&self->mu);
	return fail;
}

static enum MHD_Result
s_send_injected(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req,
                const char *method, const char *url)
{
	int st = self->cfg.fail_status;
	return s_send(self, conn, req, method, url, st, s_err("injected"),
	              st == 429 || st == 503 ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, "1");
}

/* NULL when the Authorization header is `<scheme> <token>` (scheme compared
 * case-insensitively, RFC 9110 section 11.1; the token in constant time), else
 * the 401 body's error code. */
static const char *
s_auth(struct MHD_Connection *conn, const char *scheme, const char *token, size_t token_len)
{
	const char *v =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (v == NULL)
		return "unauthorized";
	while (*v == ' ' || *v == '\t')
		v++;
	if (*v == '\0')
		return "unauthorized";
	size_t n = strcspn(v, " \t");
	if (n != strlen(scheme) || strncasecmp(v, scheme, n) != 0)
		return "bad_scheme";
	v += n;
	while (*v == ' ' || *v == '\t')
		v++;
	size_t len = strlen(v);
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (!ahp_ct_equal(v, len, token, token_len))
		return "bad_token";
	return NULL;
}

static enum MHD_Result
s_unauthorized(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req, const char *method,
               const char *url, const char *why, const char *challenge)
{
	return s_send(self, conn, req, method, url, 401, s_err(why),
	              MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge);
}

static enum MHD_Result
s_snippets(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req, const char *method,
           const char *url)
{
	const char *topic = url + strlen(S_SNIPPETS_PREFIX);
	if (s_prelude(self))
		return s_send_injected(self, conn, req, method, url);
	const char *why = s_auth(conn, "Bearer", self->cfg.wiki_token, self->wiki_len);
	if (why != NULL)
		return s_unauthorized(self, conn, req, method, url, why,
		                      "Bearer realm=\"mock-services\"");
	if (!s_topic_ok(topic))
		return s_send(self, conn, req, method, url, 400, s_err("bad_topic"), NULL, NULL);
	json_t *body =
	    json_pack("{s:s, s:o}", "topic", topic, "snippets", ms_fixture_snippets(topic));
	if (body != NULL) {
		pthread_mutex_lock(&self->mu);
		s_bump(self, self->by_topic, topic);
		pthread_mutex_unlock(&self->mu);
	}
	return s_send(self, conn, req, method, url, 200, body, NULL, NULL);
}

/* A new post's answer: 12 lower-case hex digits from getrandom() and now. */
static json_t *
s_new_post(void)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[6];
	char id[13];
	ahp_random_bytes(b, sizeof b);
	for (size_t i = 0; i < sizeof b; i++) {
		id[2 * i] = hex[b[i] >> 4];
		id[2 * i + 1] = hex[b[i] & 0xf];
	}
	id[12] = '\0';
	return json_pack("{s:s, s:I}", "message_id", id, "posted_at",
	                 (json_int_t)(ahp_now_ms() / 1000));
}

static enum MHD_Result
s_webhook(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req, const char *method,
          const char *url)
{
	const char *id = url + strlen(S_WEBHOOKS_PREFIX);
	if (s_prelude(self))
		return s_send_injected(self, conn, req, method, url);
	const char *why = s_auth(conn, "Bot", self->cfg.webhook_token, self->webhook_len);
	if (why != NULL)
		return s_unauthorized(self, conn, req, method, url, why,
		                      "Bot realm=\"mock-services\"");
	if (!ms_webhook_id_ok(id))
		return s_send(self, conn, req, method, url, 400, s_err("bad_webhook_id"), NULL,
		              NULL);
	if (req->too_large)
		return s_send(self, conn, req, method, url, 413, s_err("too_large"), NULL, NULL);
	const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
	if (key != NULL && !s_idem_key_ok(key))
		return s_send(self, conn, req, method, url, 400, s_err("bad_idempotency_key"), NULL,
		              NULL);
	/* jansson refuses invalid UTF-8 and NUL in strings; the body is at most
	 * MS_BODY_MAX bytes, so its tree is bounded too. */
	json_t *doc = json_loadb(req->body != NULL ? req->body : "", req->len, 0, NULL);
	int is_object = json_is_object(doc);
	json_decref(doc);
	if (!is_object)
		return s_send(self, conn, req, method, url, 400, s_err("bad_body"), NULL, NULL);

	json_t *answer = NULL;
	pthread_mutex_lock(&self->mu);
	json_t *seen = key != NULL ? json_object_get(self->idem, key) : NULL;
	if (seen != NULL) {
		self->replays++;
		answer = json_deep_copy(seen);
	} else {
		answer = s_new_post();
		if (answer != NULL) {
			self->posts++;
			s_bump(self, self->by_webhook, id);
			if (key != NULL && json_object_size(self->idem) < MS_IDEM_KEYS_MAX)
				json_object_set_new(self->idem, key, json_deep_copy(answer));
			else if (key != NULL)
				self->dropped++;
		}
	}
	pthread_mutex_unlock(&self->mu);
	return s_send(self, conn, req, method, url, 200, answer, NULL, NULL);
}

static json_t *
s_stats_json(ms_server_t *self)
{
	/* Deep copies: the reply must not share objects other threads change. */
	pthread_mutex_lock(&self->mu);
	json_t *j = json_pack(
	    "{s:I, s:I, s:I, s:I, s:o, s:o, s:I, s:I, s:o, s:I, s:I}", "requests",
	    (json_int_t)self->requests, "snippets", (json_int_t)self->snippets, "webhooks",
	    (json_int_t)self->webhooks, "posts", (json_int_t)self->posts, "by_webhook",
	    json_deep_copy(self->by_webhook), "by_topic", json_deep_copy(self->by_topic),
	    "idempotent_replays", (json_int_t)self->replays, "failures_injected",
	    (json_int_t)self->injected, "by_status", json_deep_copy(self->by_status),
	    "idempotency_keys", (json_int_t)json_object_size(self->idem), "dropped",
	    (json_int_t)self->dropped);
	pthread_mutex_unlock(&self->mu);
	return j;
}

/* Zeroes the counters and the --fail-every sequence. The Idempotency-Keys are
 * kept: a reset must not let a retried post be made twice. */
static void
s_stats_reset(ms_server_t *self)
{
	pthread_mutex_lock(&self->mu);
	self->requests = self->snippets = self->webhooks = self->posts = 0;
	self->replays = self->injected = self->dropped = self->seq = 0;
	json_object_clear(self->by_webhook);
	json_object_clear(self->by_topic);
	json_object_clear(self->by_status);
	pthread_mutex_unlock(&self->mu);
}

static enum MHD_Result
s_route(ms_server_t *self, struct MHD_Connection *conn, s_request_t *req, const char *method,
        const char *url)
{
	if (req->kind == S_SNIPPETS)
		return s_snippets(self, conn, req, method, url);
	if (req->kind == S_WEBHOOKS)
		return s_webhook(self, conn, req, method, url);
	if (strlen(url) > MS_URL_MAX)
		return s_send(self, conn, req, method, url, 414, s_err("uri_too_long"), NULL, NULL);
	const char *allow = s_allowed(url);
	if (allow == NULL)
		return s_send(self, conn, req, method, url, 404, s_err("not_found"), NULL, NULL);
	if (strcmp(method, allow) != 0)
		return s_send(self, conn, req, method, url, 405, s_err("method_not_allowed"),
		              MHD_HTTP_HEADER_ALLOW, allow);
	if (strcmp(url, "/healthz") == 0)
		return s_send(self, conn, req, method, url, 200, json_pack("{s:b}", "ok", 1), NULL,
		              NULL);
	if (strcmp(url, "/stats") == 0)
		return s_send(self, conn, req, method, url, 200, s_stats_json(self), NULL, NULL);
	/* S_MONITOR and a known path with its method: /stats/reset is what is left. */
	s_stats_reset(self);
	return s_send(self, conn, req, method, url, 200, json_pack("{s:b}", "reset", 1), NULL,
	              NULL);
}

/* True when the client announced a body over MS_BODY_MAX and waits for
 * "100 Continue" before sending it (curl does for bodies over 1 KiB): it can
 * be refused at once, without a reset. Any other client's body is read and
 * dropped before the 413, so that closing never discards unread bytes. */
static int
s_refuse_early(struct MHD_Connection *conn)
{
	const char *cl =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *expect =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
	long n = 0;
	return cl != NULL && expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
	       ahp_parse_long(cl, 0, MS_BODY_MAX, &n) < 0;
}

static enum MHD_Result
s_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	ms_server_t *self = cls;
	s_request_t *req = *con_cls;
	(void)version;

	if (req == NULL) {
		/* First call: headers only. */
		req = calloc(1, sizeof *req);
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		req->kind = s_classify(url, method);
		if (req->kind == S_WEBHOOKS && s_refuse_early(conn)) {
			req->answered = 1;
			return s_send(self, conn, req, method, url, 413, s_err("too_large"), NULL,
			              NULL);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* Past the cap the body is read and dropped: memory stays bounded
		 * whatever Content-Length said (or chunked encoding sends). */
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (req->answered || req->too_large)
			return MHD_YES;
		if (n > MS_BODY_MAX - req->len) {
			req->too_large = 1;
			free(req->body);
			req->body = NULL;
			req->len = 0;
			return MHD_YES;
		}
		if (req->body == NULL) {
			req->body = malloc(MS_BODY_MAX + 1);
			if (req->body == NULL)
				return MHD_NO;
		}
		memcpy(req->body + req->len, upload_data, n);
		req->len += n;
		req->body[req->len] = '\0';
		return MHD_YES;
	}
	if (req->answered)
		return MHD_YES;
	return s_route(self, conn, req, method, url);
}

static void
s_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
            enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	s_request_t *req = *con_cls;
	if (req == NULL)
		return;
	free(req->body);
	free(req);
	*con_cls = NULL;
}

static int
s_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding of the path (in place, as libmicrohttpd's own), except that
 * %00 becomes the byte 0xC0, which never occurs in UTF-8: a NUL would cut the
 * C string, and "/webhooks/a%00b" would post to webhook "a". This way such a
 * path is a bad topic or a bad webhook id. Returns the new length. */
static size_t
s_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	char *w = s;
	const char *r = s;
	while (*r != '\0') {
		int hi = r[0] == '%' ? s_hex(r[1]) : -1;
		int lo = hi >= 0 ? s_hex(r[2]) : -1;
		if (lo >= 0) {
			int v = hi * 16 + lo;
			*w++ = v == 0 ? (char)0xC0 : (char)v;
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

static void
s_mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char line[512];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	ahp_log(AHP_LOG_WARN, NULL, NULL, "microhttpd: %s", line);
}

ms_server_t *
ms_server_new(const ms_config_t *cfg, int fd)
{
	ms_server_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		close(fd);
		return NULL;
	}
	self->cfg = *cfg;
	self->wiki_len = strlen(cfg->wiki_token);
	self->webhook_len = strlen(cfg->webhook_token);
	pthread_mutex_init(&self->mu, NULL);
	pthread_mutex_init(&self->stop_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&self->stop_cv, &ca);
	pthread_condattr_destroy(&ca);
	self->by_webhook = json_object();
	self->by_topic = json_object();
	self->by_status = json_object();
	self->idem = json_object();
	if (self->by_webhook == NULL || self->by_topic == NULL || self->by_status == NULL ||
	    self->idem == NULL) {
		close(fd);
		ms_server_destroy(&self);
		return NULL;
	}
	/* A thread per connection: --latency-ms and --hang-ms sleep in the
	 * handler, and /healthz and /stats must answer meanwhile. The memory
	 * limit bounds the request line and headers (libmicrohttpd answers 414
	 * or 431 past it, without calling us). */
	self->daemon =
	    MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD |
	                         MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
	                     0, NULL, NULL, s_handler, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log,
	                     NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
	                     (unsigned int)MS_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	                     (size_t)MS_HEADERS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
	                     (unsigned int)120, MHD_OPTION_NOTIFY_COMPLETED, s_completed, self,
	                     MHD_OPTION_UNESCAPE_CALLBACK, s_unescape, NULL, MHD_OPTION_END);
	if (self->daemon == NULL) {
		close(fd);
		ms_server_destroy(&self);
		return NULL;
	}
	return self;
}

void
ms_server_destroy(ms_server_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ms_server_t *self = *self_p;
	/* Sleeping handlers answer now, so stopping does not wait out a --hang-ms. */
	pthread_mutex_lock(&self->stop_mu);
	self->stopping = 1;
	pthread_cond_broadcast(&self->stop_cv);
	pthread_mutex_unlock(&self->stop_mu);
	if (self->daemon != NULL)
		MHD_stop_daemon(self->daemon);
	json_decref(self->by_webhook);
	json_decref(self->by_topic);
	json_decref(self->by_status);
	json_decref(self->idem);
	pthread_cond_destroy(&self->stop_cv);
	pthread_mutex_destroy(&self->stop_mu);
	pthread_mutex_destroy(&self->mu);
	free(self);
	*self_p = NULL;
}
