/* orchestrator: model calls (OpenAI chat completions) as libcurl multi transfers, and reply
 * parsing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define MODEL_TOOL_CALLS_MAX 64 /* tool calls accepted in one reply */

struct orch_call {
	CURL *easy;
	orch_run_t *run;
	char *buf;
	size_t len, cap;
	int overflow;
	int64_t started;
};

static struct curl_slist *s_headers;

int
orch_model_init(orch_t *o)
{
	o->multi = curl_multi_init();
	if (o->multi == NULL)
		return -1;
	/* "Expect:" off: a large conversation must not wait for 100-continue. */
	s_headers = curl_slist_append(NULL, "Content-Type: application/json");
	s_headers = curl_slist_append(s_headers, "Accept: application/json");
	s_headers = curl_slist_append(s_headers, "Expect:");
	return s_headers == NULL ? -1 : 0;
}

static size_t
s_write(char *data, size_t size, size_t nmemb, void *arg)
{
	orch_call_t *c = arg;
	size_t n = size * nmemb;
	if (c->len + n > ORCH_MODEL_REPLY_MAX) {
		c->overflow = 1;
		return 0;
	}
	if (c->len + n + 1 > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		while (cap < c->len + n + 1)
			cap *= 2;
		char *b = realloc(c->buf, cap);
		if (b == NULL)
			return 0;
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, n);
	c->len += n;
	c->buf[c->len] = '\0';
	return n;
}

static void
s_call_free(orch_call_t *c)
{
	if (c == NULL)
		return;
	if (c->easy != NULL)
		curl_easy_cleanup(c->easy);
	free(c->buf);
	free(c);
}

/* Provider names come from validated profiles; still refuse anything that
 * would change the URL's shape. */
static int
s_provider_ok(const char *p)
{
	if (p == NULL || *p == '\0')
		return 0;
	for (; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return 0;
	return 1;
}

orch_call_t *
orch_model_start(orch_t *o, orch_run_t *run, const char *body, size_t len)
{
	orch_call_t *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->run = run;
	if (!s_provider_ok(run->profile->provider)) {
		s_call_free(c);
		return NULL;
	}
	char url[2048];
	size_t gl = strlen(o->gateway_url);
	while (gl > 0 && o->gateway_url[gl - 1] == '/')
		gl--;
	int n = snprintf(url, sizeof url, "%.*s/providers/%s/v1/chat/completions", (int)gl,
	                 o->gateway_url, run->profile->provider);
	if (n < 0 || (size_t)n >= sizeof url) {
		s_call_free(c);
		return NULL;
	}
	c->easy = curl_easy_init();
	if (c->easy == NULL) {
		s_call_free(c);
		return NULL;
	}
	CURL *e = c->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, s_headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "ahp-orchestrator/" AHP_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(e, CURLOPT_PRIVATE, c);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->model_timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 o->model_timeout_ms < 10000 ? o->model_timeout_ms : 10000L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	/* A small receive buffer keeps 200 concurrent transfers cheap (a reply
	 * is a few KB; larger ones just take more reads). */
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
	c->started = ahp_mono_ms();
	if (curl_multi_add_handle(o->multi, e) != CURLM_OK) {
		s_call_free(c);
		return NULL;
	}
	o->n_calls_inflight++;
	return c;
}

void
orch_model_abort(orch_t *o, orch_call_t **call_p)
{
	if (call_p == NULL || *call_p == NULL)
		return;
	orch_call_t *c = *call_p;
	curl_multi_remove_handle(o->multi, c->easy);
	o->n_calls_inflight--;
	s_call_free(c);
	*call_p = NULL;
}

/* Builds the normalized assistant message from choices[0].message. */
static json_t *
s_normalize(const json_t *reply, uint32_t seq, char *err, size_t errlen)
{
	json_t *choices = json_object_get(reply, "choices");
	json_t *msg = json_object_get(json_array_get(choices, 0), "message");
	if (!json_is_object(msg)) {
		snprintf(err, errlen, "reply has no choices[0].message");
		return NULL;
	}
	json_t *content = json_object_get(msg, "content");
	if (content != NULL && !json_is_string(content) && !json_is_null(content)) {
		snprintf(err, errlen, "message.content is neither a string nor null");
		return NULL;
	}
	json_t *calls = json_object_get(msg, "tool_calls");
	if (calls != NULL && !json_is_array(calls) && !json_is_null(calls)) {
		snprintf(err, errlen, "message.tool_calls is not an array");
		return NULL;
	}
	if (json_array_size(calls) > MODEL_TOOL_CALLS_MAX) {
		snprintf(err, errlen, "%zu tool calls in one reply (max %d)",
		         json_array_size(calls), MODEL_TOOL_CALLS_MAX);
		return NULL;
	}
	json_t *out = json_pack("{s:s, s:O}", "role", "assistant", "content",
	                        json_is_string(content) ? content : json_null());
	if (json_array_size(calls) == 0)
		return out;
	json_t *norm = json_array();
	for (size_t i = 0; i < json_array_size(calls); i++) {
		json_t *tc = json_array_get(calls, i);
		json_t *fn = json_object_get(tc, "function");
		/* A call without a usable name is kept under the name "": the run
		 * answers it with a typed not_found result the model can act on. */
		const char *name = json_string_value(json_object_get(fn, "name"));
		if (name == NULL)
			name = "";
		const char *id = json_string_value(json_object_get(tc, "id"));
		char idbuf[48];
		if (id == NULL || *id == '\0' || strlen(id) > 256) {
			snprintf(idbuf, sizeof idbuf, "call_%u_%zu", seq, i);
			id = idbuf;
		}
		json_t *args = json_object_get(fn, "arguments");
		json_t *astr;
		if (json_is_string(args)) {
			astr = json_incref(args);
		} else if (args == NULL || json_is_null(args)) {
			astr = json_string("{}");
		} else {
			/* Any JSON value (5, true): the tool then says it is not an object. */
			char *s = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
			astr = json_string(s ? s : "{}");
			free(s);
		}
		json_array_append_new(norm, json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", id, "type",
		                                      "function", "function", "name", name,
		                                      "arguments", astr));
	}
	json_object_set_new(out, "tool_calls", norm);
	return out;
}

static int
s_retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

/* A short, printable excerpt of an error body for the failure reason. */
static void
s_snippet(const orch_call_t *c, char *out, size_t len)
{
	size_t n = c->len < 160 ? c->len : 160;
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < len; i++) {
		unsigned char ch = (unsigned char)c->buf[i];
		out[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : ' ';
	}
	out[o] = '\0';
}

void
orch_model_parse(const char *body, size_t len, uint32_t seq, orch_model_result_t *res)
{
	json_error_t jerr;
	json_t *reply = json_loadb(body, len, 0, &jerr);
	if (reply == NULL) {
		snprintf(res->error, sizeof res->error, "model reply is not JSON: %s", jerr.text);
		return;
	}
	char err[256];
	res->message = s_normalize(reply, seq, err, sizeof err);
	if (res->message == NULL) {
		snprintf(res->error, sizeof res->error, "malformed model reply: %s", err);
		json_decref(reply);
		return;
	}
	json_t *usage = json_object_get(reply, "usage");
	if (json_is_object(usage)) {
		res->usage = json_incref(usage);
		json_int_t t = json_integer_value(json_object_get(usage, "total_tokens"));
		if (t <= 0)
			t = json_integer_value(json_object_get(usage, "prompt_tokens")) +
			    json_integer_value(json_object_get(usage, "completion_tokens"));
		res->tokens = t > 0 ? (uint64_t)t : 0;
	}
	res->ok = 1;
	json_decref(reply);
}

static void
s_classify(orch_call_t *c, CURLcode rc, orch_model_result_t *res)
{
	memset(res, 0, sizeof *res);
	res->latency_ms = ahp_mono_ms() - c->started;
	if (rc != CURLE_OK) {
		if (c->overflow) {
			snprintf(res->error, sizeof res->error, "model reply larger than %d bytes",
			         ORCH_MODEL_REPLY_MAX);
			return;
		}
		res->retryable = s_retryable_curl(rc);
		snprintf(res->error, sizeof res->error, "%s",
		         rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : curl_easy_strerror(rc));
		return;
	}
	long code = 0;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	res->http_status = code;
	if (code == 429 || code == 408 || (code >= 500 && code <= 599)) {
		curl_off_t ra = -1;
		if (curl_easy_getinfo(c->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
			res->retry_after_ms = ra > 3600 ? 3600000L : (long)ra * 1000L;
		res->retryable = 1;
		snprintf(res->error, sizeof res->error, "%ld", code);
		return;
	}
	if (code != 200) {
		char snip[200];
		s_snippet(c, snip, sizeof snip);
		snprintf(res->error, sizeof res->error, "HTTP %ld from the model gateway: %s", code,
		         snip);
		return;
	}
	orch_model_parse(c->buf ? c->buf : "", c->len, c->run->cur_seq, res);
}

void
orch_model_reap(orch_t *o)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(o->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		orch_call_t *c = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
		CURLcode rc = m->data.result;
		/* m is invalid once the handle is removed. */
		curl_multi_remove_handle(o->multi, c->easy);
		o->n_calls_inflight--;
		orch_model_result_t res;
		s_classify(c, rc, &res);
		orch_run_t *run = c->run;
		run->call = NULL;
		s_call_free(c);
		orch_run_model_done(run, &res);
		json_decref(res.message);
		json_decref(res.usage);
	}
}

void
orch_model_teardown(orch_t *o)
{
	if (o->multi != NULL)
		curl_multi_cleanup(o->multi);
	o->multi = NULL;
	curl_slist_free_all(s_headers);
	s_headers = NULL;
}
