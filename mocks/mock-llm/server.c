/* mock-llm: HTTP routing, request bodies, counters and /stats on libmicrohttpd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "mock_llm.h"

struct mock_server_t {
	mock_config_t cfg;
	struct MHD_Daemon *daemon;
	pthread_mutex_t mu; /* guards everything below */
	uint64_t requests;
	uint64_t chat_completions;
	uint64_t failures_injected;
	uint64_t errors;
	uint64_t valid_seq; /* valid completion requests, drives --fail-every */
	uint64_t fingerprints_dropped;
	json_t *by_fingerprint;
	json_t *by_scenario;
};

/* Per-request state kept by libmicrohttpd between handler calls. */
typedef struct {
	mock_buf_t body;
	int too_large;
	int64_t started_ms;
} s_request_t;

static int
s_ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void
s_bump(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (v != NULL)
		json_integer_set(v, json_integer_value(v) + 1);
	else
		json_object_set_new(obj, key, json_integer(1));
}

static enum MHD_Result
s_send(mock_server_t *self, struct MHD_Connection *conn, int status, json_t *body,
       const char *retry_after)
{
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	size_t len = strlen(text);
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (retry_after != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
	pthread_mutex_lock(&self->mu);
	self->requests++;
	if (status >= 400)
		self->errors++;
	pthread_mutex_unlock(&self->mu);
	enum MHD_Result rc = MHD_queue_response(conn, (unsigned int)status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result
s_send_error(mock_server_t *self, struct MHD_Connection *conn, int status, const char *type,
             const char *code, const char *msg)
{
	return s_send(self, conn, status, mock_error_json(msg, type, code), NULL);
}

/* Failure injection: every Nth valid completion fails. */
static int
s_should_fail(void *arg)
{
	mock_server_t *self = arg;
	int fail = 0;
	pthread_mutex_lock(&self->mu);
	self->valid_seq++;
	if (self->cfg.fail_every > 0 && self->valid_seq % (uint64_t)self->cfg.fail_every == 0)
		fail = 1;
	pthread_mutex_unlock(&self->mu);
	return fail;
}

static void
s_sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static enum MHD_Result
s_chat(mock_server_t *self, struct MHD_Connection *conn, s_request_t *req)
{
	mock_chat_result_t res;

	if (self->cfg.latency_ms > 0)
		s_sleep_ms(self->cfg.latency_ms);
	mock_chat(&self->cfg, req->body.data ? req->body.data : "", req->body.len, s_should_fail,
	          self, &res);
	pthread_mutex_lock(&self->mu);
	if (res.injected) {
		self->failures_injected++;
	} else if (res.status == 200) {
		self->chat_completions++;
		if (json_object_get(self->by_fingerprint, res.fingerprint) != NULL ||
		    json_object_size(self->by_fingerprint) < MOCK_FINGERPRINTS_MAX)
			s_bump(self->by_fingerprint, res.fingerprint);
		else
			self->fingerprints_dropped++;
		s_bump(self->by_scenario, res.scenario);
	}
	pthread_mutex_unlock(&self->mu);

	const char *why = "";
	json_t *e = json_object_get(json_object_get(res.body, "error"), "message");
	if (res.status != 200 && json_is_string(e))
		why = json_string_value(e);
	ahp_log(res.status == 200 ? AHP_LOG_INFO : AHP_LOG_WARN, NULL, NULL,
	        "chat status=%d scenario=%s step=%ld fingerprint=%.16s ms=%lld%s%s", res.status,
	        res.scenario[0] ? res.scenario : "-", res.step,
	        res.fingerprint[0] ? res.fingerprint : "-",
	        (long long)(ahp_mono_ms() - req->started_ms), why[0] ? " error=" : "", why);
	return s_send(self, conn, res.status, res.body, res.status == 429 ? "1" : NULL);
}

static json_t *
s_stats_json(mock_server_t *self)
{
	/* Deep copies: the reply must not share objects other threads change. */
	pthread_mutex_lock(&self->mu);
	json_t *j =
	    json_pack("{s:I, s:I, s:o, s:o, s:I, s:I, s:I}", "requests", (json_int_t)self->requests,
	              "chat_completions", (json_int_t)self->chat_completions, "by_fingerprint",
	              json_deep_copy(self->by_fingerprint), "by_scenario",
	              json_deep_copy(self->by_scenario), "failures_injected",
	              (json_int_t)self->failures_injected, "errors", (json_int_t)self->errors,
	              "fingerprints_dropped", (json_int_t)self->fingerprints_dropped);
	pthread_mutex_unlock(&self->mu);
	return j;
}

static void
s_stats_reset(mock_server_t *self)
{
	pthread_mutex_lock(&self->mu);
	self->requests = 0;
	self->chat_completions = 0;
	self->failures_injected = 0;
	self->errors = 0;
	self->valid_seq = 0;
	self->fingerprints_dropped = 0;
	json_object_clear(self->by_fingerprint);
	json_object_clear(self->by_scenario);
	pthread_mutex_unlock(&self->mu);
}

static json_t *
s_models_json(mock_server_t *self)
{
	json_t *names = mock_scenario_list(self->cfg.scenarios);
	json_t *data = json_array();
	size_t i;
	json_t *n;
	json_array_foreach(names, i, n)
	{
		json_array_append_new(data,
		                      json_pack("{s:O, s:s, s:i, s:s}", "id", n, "object", "model",
		                                "created", 0, "owned_by", "mock-llm"));
	}
	json_decref(names);
	return json_pack("{s:s, s:o}", "object", "list", "data", data);
}

static enum MHD_Result
s_route(mock_server_t *self, struct MHD_Connection *conn, const char *url, const char *method,
        s_request_t *req)
{
	int is_get = strcmp(method, "GET") == 0;
	int is_post = strcmp(method, "POST") == 0;

	if (s_ends_with(url, "/v1/chat/completions")) {
		if (!is_post)
			return s_send_error(self, conn, 405, "invalid_request_error",
			                    "method_not_allowed", "use POST");
		if (req->too_large)
			return s_send_error(self, conn, 413, "invalid_request_error", "too_large",
			                    "request body larger than 1 MiB");
		return s_chat(self, conn, req);
	}
	if (s_ends_with(url, "/v1/models") && is_get)
		return s_send(self, conn, 200, s_models_json(self), NULL);
	if (strcmp(url, "/healthz") == 0 && is_get)
		return s_send(self, conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
	if (strcmp(url, "/stats") == 0 && is_get)
		return s_send(self, conn, 200, s_stats_json(self), NULL);
	if (strcmp(url, "/stats/reset") == 0 && is_post) {
		s_stats_reset(self);
		return s_send(self, conn, 200, json_pack("{s:b}", "reset", 1), NULL);
	}
	return s_send_error(self, conn, 404, "invalid_request_error", "not_found",
	                    "no such endpoint");
}

static enum MHD_Result
s_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	mock_server_t *self = cls;
	s_request_t *req = *con_cls;
	(void)version;

	if (req == NULL) {
		/* First call: headers only. An announced oversize body is refused
		 * before it is read. */
		req = calloc(1, sizeof *req);
		if (req == NULL)
			return MHD_NO;
		mock_buf_init(&req->body, MOCK_BODY_MAX);
		req->started_ms = ahp_mono_ms();
		*con_cls = req;
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
		long n = 0;
		if (cl != NULL && (ahp_parse_long(cl, 0, MOCK_BODY_MAX, &n) < 0)) {
			req->too_large = 1;
			return s_send_error(self, conn, 413, "invalid_request_error", "too_large",
			                    "request body larger than 1 MiB");
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* A body without (or lying about) Content-Length is read and
		 * dropped past the cap; memory stays bounded. */
		if (!req->too_large && mock_buf_put(&req->body, upload_data, *upload_data_size) < 0)
			req->too_large = 1;
		*upload_data_size = 0;
		return MHD_YES;
	}
	return s_route(self, conn, url, method, req);
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
	mock_buf_free(&req->body);
	free(req);
	*con_cls = NULL;
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

mock_server_t *
mock_server_new(const mock_config_t *cfg, int fd)
{
	mock_server_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		close(fd);
		return NULL;
	}
	self->cfg = *cfg;
	pthread_mutex_init(&self->mu, NULL);
	self->by_fingerprint = json_object();
	self->by_scenario = json_object();
	/* A thread per connection: --latency-ms sleeps in the handler and 200+
	 * concurrent clients must not queue behind each other. */
	self->daemon =
	    MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD |
	                         MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
	                     0, NULL, NULL, s_handler, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log,
	                     NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
	                     (unsigned int)4096, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
	                     MHD_OPTION_NOTIFY_COMPLETED, s_completed, self, MHD_OPTION_END);
	if (self->daemon == NULL) {
		close(fd);
		mock_server_destroy(&self);
		return NULL;
	}
	return self;
}

void
mock_server_destroy(mock_server_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	mock_server_t *self = *self_p;
	if (self->daemon != NULL)
		MHD_stop_daemon(self->daemon);
	json_decref(self->by_fingerprint);
	json_decref(self->by_scenario);
	pthread_mutex_destroy(&self->mu);
	free(self);
	*self_p = NULL;
}
