/* orchestrator: model calls (OpenAI chat completions) as libcurl multi transfers, and reply
 * parsing. */
#include <stdbool.h>
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
	char *sock; /* the unix socket it goes through, or NULL */
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
	free(c->sock);
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
	/* Through credproxy's provider route: it holds the provider's key, so
	 * the orchestrator never does. The URL's host is then only the Host
	 * header. */
	if (o->gateway_socket != NULL && o->gateway_socket[0] != '\0') {
		c->sock = strdup(o->gateway_socket);
		if (c->sock == NULL) {
			s_call_free(c);
			return NULL;
		}
		curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->sock);
	}
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

/* What an error reply says, for the failure reason: its error.message when
 * the body is a JSON error object, else a printable excerpt. */
static void
s_error_text(const orch_call_t *c, char *out, size_t len)
{
	out[0] = '\0';
	json_t *j = c->len > 0 && c->len < 65536 ? json_loadb(c->buf, c->len, 0, NULL) : NULL;
	json_t *e = json_object_get(j, "error");
	const char *m = json_string_value(json_object_get(e, "message"));
	if (m == NULL)
		m = json_string_value(e);
	if (m == NULL)
		m = json_string_value(json_object_get(j, "message"));
	if (m != NULL) {
		size_t n = ahp_utf8_prefix(m, 200);
		snprintf(out, len, "%.*s%s", (int)n, m, m[n] != '\0' ? " …" : "");
		json_decref(j);
		return;
	}
	json_decref(j);
	size_t n = c->len < 160 ? c->len : 160;
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < len; i++) {
		unsigned char ch = (unsigned char)c->buf[i];
		out[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : ' ';
	}
	out[o] = '\0';
}

/* --- reply parsing (untrusted: whatever the gateway or provider sends) --- */

static int
s_hex4(const char *p, uint32_t *cp)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		char ch = p[i];
		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (uint32_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (uint32_t)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			v |= (uint32_t)(ch - 'A' + 10);
		else
			return -1;
	}
	*cp = v;
	return 0;
}

/* jansson refuses a whole document for one \u0000 (without JSON_ALLOW_NUL,
 * which would put NULs into C strings) or one unpaired surrogate escape.
 * Servers do send both; rewrite each, in place and at the same length, as
 * \uFFFD, so the reply is accepted and what cannot be stored as sent is
 * replaced visibly. Walks strings only; returns the number of rewrites. */
static size_t
s_fix_escapes(char *b, size_t len)
{
	size_t fixed = 0;
	int in_str = 0;
	for (size_t i = 0; i < len; i++) {
		if (!in_str) {
			if (b[i] == '"')
				in_str = 1;
			continue;
		}
		if (b[i] == '"') {
			in_str = 0;
			continue;
		}
		if (b[i] != '\\' || i + 1 >= len)
			continue;
		if (b[i + 1] != 'u' || i + 6 > len) {
			i++; /* a two-character escape */
			continue;
		}
		uint32_t cp;
		if (s_hex4(b + i + 2, &cp) != 0) {
			i++;
			continue;
		}
		int bad = cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff);
		if (cp >= 0xd800 && cp <= 0xdbff) {
			uint32_t lo;
			if (i + 12 <= len && b[i + 6] == '\\' && b[i + 7] == 'u' &&
			    s_hex4(b + i + 8, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
				i += 11; /* a valid pair */
				continue;
			}
			bad = 1;
		}
		if (bad) {
			memcpy(b + i + 2, "FFFD", 4);
			fixed++;
		}
		i += 5;
	}
	return fixed;
}

/* Appends s to the string field key of obj (creating it). */
static void
s_concat(json_t *obj, const char *key, const json_t *s)
{
	if (!json_is_string(s))
		return;
	json_t *old = json_object_get(obj, key);
	size_t a = json_string_length(old), b = json_string_length(s);
	if (a + b > ORCH_MODEL_REPLY_MAX)
		return;
	char *t = malloc(a + b + 1);
	if (t == NULL)
		return;
	memcpy(t, json_string_value(old) ? json_string_value(old) : "", a);
	memcpy(t + a, json_string_value(s), b);
	t[a + b] = '\0';
	json_object_set_new(obj, key, json_stringn(t, a + b));
	free(t);
}

/* Sets obj[key] to s (the name of a streamed tool call: servers send it
 * whole, some in every delta, so it is set, never concatenated). */
static void
s_set_name(json_t *obj, const json_t *s)
{
	if (json_is_string(s) && json_string_length(s) > 0)
		json_object_set(obj, "name", (json_t *)s);
}

/* Applies one chunk of a stream to the reply being put together. 0, or -1
 * with err (an error chunk, a tool call index out of range). */
static int
s_sse_chunk(const json_t *ch, json_t *msg, json_t *calls, json_t **finish, json_t **usage,
            char *err, size_t errlen)
{
	json_t *e = json_object_get(ch, "error");
	if (e != NULL && !json_is_null(e)) {
		const char *m = json_string_value(json_object_get(e, "message"));
		size_t n = m != NULL ? ahp_utf8_prefix(m, 300) : 0;
		snprintf(err, errlen, "the stream carried an error: %.*s", (int)n,
		         m != NULL ? m : "(no message)");
		return -1;
	}
	json_t *c0 = json_array_get(json_object_get(ch, "choices"), 0);
	json_t *delta = json_object_get(c0, "delta");
	s_concat(msg, "content", json_object_get(delta, "content"));
	s_concat(msg, "reasoning_content", json_object_get(delta, "reasoning_content"));
	json_t *tcs = json_object_get(delta, "tool_calls");
	for (size_t k = 0; k < json_array_size(tcs); k++) {
		json_t *tc = json_array_get(tcs, k);
		json_t *ji = json_object_get(tc, "index");
		json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)k;
		if (idx < 0 || idx >= MODEL_TOOL_CALLS_MAX) {
			snprintf(err, errlen,
			         "streamed tool call index %lld is out of range (0..%d)",
			         (long long)idx, MODEL_TOOL_CALLS_MAX - 1);
			return -1;
		}
		while (json_array_size(calls) <= (size_t)idx)
			json_array_append_new(
			    calls, json_pack("{s:s, s:{}}", "type", "function", "function"));
		json_t *acc = json_array_get(calls, (size_t)idx);
		json_t *id = json_object_get(tc, "id");
		if (json_is_string(id) && json_string_length(id) > 0)
			json_object_set(acc, "id", id);
		json_t *fn = json_object_get(tc, "function");
		json_t *afn = json_object_get(acc, "function");
		s_set_name(afn, json_object_get(fn, "name"));
		s_concat(afn, "arguments", json_object_get(fn, "arguments"));
	}
	json_t *fr = json_object_get(c0, "finish_reason");
	if (json_is_string(fr)) {
		json_decref(*finish);
		*finish = json_incref(fr);
	}
	if (json_is_object(json_object_get(ch, "usage"))) {
		json_decref(*usage);
		*usage = json_incref(json_object_get(ch, "usage"));
	}
	return 0;
}

/* An SSE stream ("data: {chunk}" events, the stream=true shape) sent to a
 * request that did not ask for one: the chunks' deltas are put together
 * into the one reply a non-streaming server would have sent. An event's
 * data lines are joined with "\n" (the SSE rule); comments are skipped.
 * The stream must be whole: a chunk that does not parse, an error chunk, or
 * a stream that ends with neither [DONE] nor a finish_reason fails (a half
 * answer must never pass for a whole one). NULL with err. */
static json_t *
s_sse_assemble(const char *b, size_t len, char *err, size_t errlen)
{
	json_t *msg = json_object(), *calls = json_array(), *usage = NULL;
	json_t *finish = NULL;
	char *data = malloc(len + 1); /* the current event's data lines */
	size_t dlen = 0;
	int chunks = 0, done = 0, failed = 0, have_data = 0;
	size_t i = 0;
	if (msg == NULL || calls == NULL || data == NULL) {
		snprintf(err, errlen, "out of memory");
		failed = 1;
	}
	while (!failed && i <= len) {
		size_t e = i;
		while (e < len && b[e] != '\n')
			e++;
		size_t n = e - i;
		if (n > 0 && b[i + n - 1] == '\r')
			n--;
		/* A data line adds to the event; comments (":..."), event:, id: and
		 * retry: lines carry no data. */
		if (n >= 5 && strncmp(b + i, "data:", 5) == 0) {
			size_t k = 5 + (n > 5 && b[i + 5] == ' ');
			if (have_data)
				data[dlen++] = '\n';
			memcpy(data + dlen, b + i + k, n - k);
			dlen += n - k;
			have_data = 1;
		}
		/* A blank line (or the end) dispatches the event. */
		if ((n == 0 || e >= len) && have_data) {
			if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
				done = 1;
			} else {
				json_error_t jerr;
				json_t *ch = json_loadb(data, dlen, 0, &jerr);
				if (ch == NULL) {
					snprintf(err, errlen, "stream chunk %d is not JSON: %s",
					         chunks + 1, jerr.text);
					failed = 1;
				} else {
					chunks++;
					if (s_sse_chunk(ch, msg, calls, &finish, &usage, err,
					                errlen) != 0)
						failed = 1;
					json_decref(ch);
				}
			}
			dlen = 0;
			have_data = 0;
		}
		if (done)
			break;
		i = e + 1;
	}
	free(data);
	if (!failed && chunks == 0) {
		snprintf(err, errlen, "an event stream with no chunk");
		failed = 1;
	}
	if (!failed && !done && finish == NULL) {
		snprintf(err, errlen,
		         "the event stream ended before [DONE] or a finish_reason "
		         "(cut short)");
		failed = 1;
	}
	if (failed) {
		json_decref(msg);
		json_decref(calls);
		json_decref(usage);
		json_decref(finish);
		return NULL;
	}
	json_object_set_new(msg, "role", json_string("assistant"));
	if (json_array_size(calls) > 0)
		json_object_set(msg, "tool_calls", calls);
	json_decref(calls);
	return json_pack("{s:[{s:o, s:o}], s:o?}", "choices", "message", msg, "finish_reason",
	                 finish ? finish : json_null(), "usage", usage);
}

/* Joins the text of a content given as typed parts
 * ([{"type":"text","text":..}, {"type":"thinking",...}]). New string. */
static json_t *
s_join_parts(const json_t *parts)
{
	size_t total = 0;
	for (size_t i = 0; i < json_array_size(parts); i++) {
		const json_t *p = json_array_get(parts, i);
		const char *type = json_string_value(json_object_get(p, "type"));
		const json_t *t = json_object_get(p, "text");
		if (json_is_string(t) &&
		    (type == NULL || strcmp(type, "text") == 0 || strcmp(type, "output_text") == 0))
			total += json_string_length(t);
	}
	char *buf = malloc(total + 1);
	if (buf == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < json_array_size(parts); i++) {
		const json_t *p = json_array_get(parts, i);
		const char *type = json_string_value(json_object_get(p, "type"));
		const json_t *t = json_object_get(p, "text");
		if (json_is_string(t) && (type == NULL || strcmp(type, "text") == 0 ||
		                          strcmp(type, "output_text") == 0)) {
			memcpy(buf + o, json_string_value(t), json_string_length(t));
			o += json_string_length(t);
		}
	}
	buf[o] = '\0';
	json_t *s = json_stringn(buf, o);
	free(buf);
	return s;
}

static int
s_blank(const char *s)
{
	for (; s != NULL && *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			return 0;
	return 1;
}

/* A function name a provider accepts back: [A-Za-z0-9_-]{1,64}. */
static int
s_tool_name_ok(const char *n)
{
	size_t len = n != NULL ? strlen(n) : 0;
	if (len == 0 || len > 64)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
		      (n[i] >= '0' && n[i] <= '9') || n[i] == '_' || n[i] == '-'))
			return 0;
	return 1;
}

/* Builds the normalized assistant message from choices[0].message. */
static json_t *
s_normalize(const json_t *reply, uint32_t seq, orch_model_result_t *res, char *err, size_t errlen)
{
	json_t *choices = json_object_get(reply, "choices");
	json_t *msg = json_object_get(json_array_get(choices, 0), "message");
	if (!json_is_object(msg)) {
		snprintf(err, errlen, "reply has no choices[0].message");
		return NULL;
	}
	json_t *content = json_object_get(msg, "content");
	json_t *text;
	if (json_is_array(content)) {
		/* Typed parts: the text parts are the content; every part is kept
		 * in the journal. */
		text = s_join_parts(content);
		if (res->journal == NULL)
			res->journal = json_object();
		json_object_set(res->journal, "content_parts", content);
	} else if (content == NULL || json_is_string(content) || json_is_null(content)) {
		text = json_is_string(content) ? json_incref(content) : json_null();
	} else {
		snprintf(err, errlen,
		         "message.content is neither a string, a list of parts nor null");
		return NULL;
	}
	json_t *reasoning = json_object_get(msg, "reasoning_content");
	if (json_is_string(reasoning)) {
		if (res->journal == NULL)
			res->journal = json_object();
		json_object_set(res->journal, "reasoning_content", reasoning);
	}
	json_t *calls = json_object_get(msg, "tool_calls");
	if (calls != NULL && !json_is_array(calls) && !json_is_null(calls)) {
		json_decref(text);
		snprintf(err, errlen, "message.tool_calls is not an array");
		return NULL;
	}
	if (json_array_size(calls) > MODEL_TOOL_CALLS_MAX) {
		json_decref(text);
		snprintf(err, errlen, "%zu tool calls in one reply (max %d)",
		         json_array_size(calls), MODEL_TOOL_CALLS_MAX);
		return NULL;
	}
	json_t *out = json_pack("{s:s, s:o}", "role", "assistant", "content", text);
	if (out == NULL)
		return NULL;
	if (json_array_size(calls) == 0)
		return out;
	json_t *norm = json_array();
	for (size_t i = 0; i < json_array_size(calls); i++) {
		json_t *tc = json_array_get(calls, i);
		json_t *fn = json_object_get(tc, "function");
		/* The name goes back to the provider in the next request, where one
		 * that is not a valid function name ([A-Za-z0-9_-]{1,64}, OpenAI's
		 * rule) would get the whole request refused (HTTP 400) and the run
		 * would end before the model could correct itself. Such a call is kept
		 * under ORCH_INVALID_TOOL_NAME: the run answers it with a typed
		 * not_found result, and the name as sent stays in the journal. */
		const char *name = json_string_value(json_object_get(fn, "name"));
		if (!s_tool_name_ok(name)) {
			if (res->journal == NULL)
				res->journal = json_object();
			json_t *bad = json_object_get(res->journal, "invalid_tool_names");
			if (bad == NULL) {
				bad = json_array();
				json_object_set_new(res->journal, "invalid_tool_names", bad);
			}
			json_array_append(bad, json_object_get(fn, "name")
			                           ? json_object_get(fn, "name")
			                           : json_null());
			name = ORCH_INVALID_TOOL_NAME;
		}
		const char *id = json_string_value(json_object_get(tc, "id"));
		/* Missing, oversized or repeated ids get one of ours: each tool
		 * message must answer exactly one call. */
		int dup = 0;
		for (size_t k = 0; id != NULL && k < json_array_size(norm); k++)
			if (strcmp(id, json_string_value(
			                   json_object_get(json_array_get(norm, k), "id"))) == 0)
				dup = 1;
		char idbuf[48];
		if (id == NULL || *id == '\0' || strlen(id) > 256 || dup) {
			snprintf(idbuf, sizeof idbuf, "call_%u_%zu", seq, i);
			id = idbuf;
		}
		json_t *args = json_object_get(fn, "arguments");
		json_t *astr;
		if (json_is_string(args) && !s_blank(json_string_value(args))) {
			astr = json_incref(args);
		} else if (args == NULL || json_is_null(args) || json_is_string(args)) {
			/* Absent, null or "" (vLLM, Ollama for tools whose parameters
			 * are all optional): no arguments. */
			astr = json_string("{}");
		} else {
			/* Any JSON value (5, true, an object): its text; the tool then
			 * says when it is not an object. */
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

/* An error object where a reply should be ({"error":{"message":..,"code":..}}:
 * gateways send it with HTTP 200 for an upstream failure). Fills res. */
static void
s_error_object(const json_t *e, orch_model_result_t *res)
{
	const char *msg = json_string_value(json_object_get(e, "message"));
	if (msg == NULL)
		msg = json_string_value(e);
	const json_t *code = json_object_get(e, "code");
	const char *type = json_string_value(json_object_get(e, "type"));
	long ncode = 0;
	char cbuf[64] = "";
	if (json_is_integer(code)) {
		ncode = (long)json_integer_value(code);
		snprintf(cbuf, sizeof cbuf, "%ld", ncode);
	} else if (json_is_string(code)) {
		snprintf(cbuf, sizeof cbuf, "%.*s", AHP_UTF8_CUT(json_string_value(code), 60));
		char *end;
		long v = strtol(cbuf, &end, 10);
		if (*cbuf != '\0' && *end == '\0')
			ncode = v;
	}
	const char *hint = type != NULL ? type : cbuf;
	res->retryable = ncode == 429 || ncode == 408 || (ncode >= 500 && ncode <= 599) ||
	                 strstr(hint, "overload") != NULL || strstr(hint, "rate_limit") != NULL ||
	                 strstr(hint, "server_error") != NULL ||
	                 strstr(hint, "unavailable") != NULL || strstr(hint, "timeout") != NULL;
	size_t mlen = msg != NULL ? ahp_utf8_prefix(msg, 300) : 0;
	snprintf(res->error, sizeof res->error, "provider error%s%s%s: %.*s%s",
	         *cbuf ? " (code " : "", cbuf, *cbuf ? ")" : "", (int)mlen,
	         msg != NULL ? msg : "(no message)", msg != NULL && msg[mlen] != '\0' ? " …" : "");
	if (res->journal == NULL)
		res->journal = json_object();
	json_object_set(res->journal, "provider_error", (json_t *)e);
}

/* res->error is one line of valid UTF-8 whatever the reply held: parser
 * messages quote raw input (jansson's "near '...'"), which may be cut inside
 * a UTF-8 sequence or carry control bytes. */
static void
s_error_clean(orch_model_result_t *res)
{
	size_t n = 0;
	char *c =
	    ahp_utf8_sanitize(res->error, strnlen(res->error, sizeof res->error), 0, &n, NULL);
	if (c == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f)
			c[i] = ' ';
	snprintf(res->error, sizeof res->error, "%.*s",
	         (int)ahp_utf8_prefix(c, sizeof res->error - 1), c);
	free(c);
}

static void
s_parse(const char *body, size_t len, uint32_t seq, orch_model_result_t *res)
{
	/* A private copy: raw bytes that are not UTF-8 are replaced (jansson
	 * would refuse the whole reply), then bad escapes are rewritten. */
	size_t n = len;
	bool changed = false;
	char *b = ahp_utf8_valid(body, len, AHP_UTF8_ALLOW_NUL)
	              ? NULL
	              : ahp_utf8_sanitize(body, len, AHP_UTF8_ALLOW_NUL, &n, &changed);
	if (b == NULL) {
		b = malloc(len + 1);
		if (b == NULL) {
			snprintf(res->error, sizeof res->error,
			         "out of memory reading the model reply");
			return;
		}
		memcpy(b, body, len);
		b[len] = '\0';
		n = len;
	}
	size_t fixed = s_fix_escapes(b, n);
	res->sanitized = changed || fixed > 0;

	/* A byte order mark before the body (some Windows-hosted gateways) is
	 * not JSON: skip it with the leading white space. */
	size_t lead = n >= 3 && memcmp(b, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
	while (lead < n &&
	       (b[lead] == ' ' || b[lead] == '\n' || b[lead] == '\r' || b[lead] == '\t'))
		lead++;
	json_t *reply;
	json_error_t jerr;
	if (n - lead >= 5 && (strncmp(b + lead, "data:", 5) == 0 || b[lead] == ':')) {
		char serr[400];
		reply = s_sse_assemble(b + lead, n - lead, serr, sizeof serr);
		if (reply == NULL) {
			free(b);
			snprintf(res->error, sizeof res->error, "unusable event stream: %s", serr);
			return;
		}
	} else {
		reply = json_loadb(b + lead, n - lead, 0, &jerr);
	}
	free(b);
	if (reply == NULL) {
		snprintf(res->error, sizeof res->error, "model reply is not JSON: %s", jerr.text);
		return;
	}
	if (res->sanitized) {
		res->journal = json_object();
		json_object_set_new(
		    res->journal, "sanitized",
		    json_pack("{s:b, s:I}", "invalid_utf8", changed, "escapes", (json_int_t)fixed));
	}
	json_t *e = json_object_get(reply, "error");
	if (e != NULL && !json_is_null(e) && json_object_get(reply, "choices") == NULL) {
		s_error_object(e, res);
		json_decref(reply);
		return;
	}
	char err[256];
	res->message = s_normalize(reply, seq, res, err, sizeof err);
	if (res->message == NULL) {
		snprintf(res->error, sizeof res->error, "malformed model reply: %s", err);
		json_decref(reply);
		return;
	}
	json_t *usage = json_object_get(reply, "usage");
	if (json_is_object(usage)) {
		res->usage = json_incref(usage);
		/* each count bounded before any sum (a reply may say 2^63 - 1) */
		uint64_t t =
		    orch_tokens_clamp(json_integer_value(json_object_get(usage, "total_tokens")));
		if (t == 0)
			t = orch_tokens_clamp(
			        json_integer_value(json_object_get(usage, "prompt_tokens"))) +
			    orch_tokens_clamp(
			        json_integer_value(json_object_get(usage, "completion_tokens")));
		res->tokens = t;
	}
	char finish_buf[32];
	const char *finish = json_string_value(
	    json_object_get(json_array_get(json_object_get(reply, "choices"), 0), "finish_reason"));
	if (finish != NULL) {
		snprintf(finish_buf, sizeof finish_buf, "%s", finish);
		finish = finish_buf;
	}
	json_decref(reply);
	if (finish != NULL) {
		if (res->journal == NULL)
			res->journal = json_object();
		json_object_set_new(res->journal, "finish_reason", json_string(finish));
	}
	/* A reply cut at the token cap is never a silent success: the step
	 * fails (its text kept in the journal) and resume asks again. */
	if (finish != NULL && strcmp(finish, "length") == 0) {
		snprintf(res->error, sizeof res->error,
		         "model output truncated (finish_reason=length)");
		return;
	}
	if (finish != NULL && strcmp(finish, "content_filter") == 0) {
		snprintf(res->error, sizeof res->error,
		         "model reply withheld by the provider's content filter "
		         "(finish_reason=content_filter)");
		return;
	}
	if (json_array_size(json_object_get(res->message, "tool_calls")) == 0 &&
	    s_blank(json_string_value(json_object_get(res->message, "content")))) {
		snprintf(res->error, sizeof res->error,
		         "model returned an empty reply (no text and no tool calls)");
		return;
	}
	res->ok = 1;
}

void
orch_model_parse(const char *body, size_t len, uint32_t seq, orch_model_result_t *res)
{
	s_parse(body, len, seq, res);
	if (!res->ok)
		s_error_clean(res);
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
		if (rc == CURLE_COULDNT_CONNECT && c->sock != NULL)
			snprintf(res->error, sizeof res->error,
			         "cannot connect to the model gateway (credproxy) at %s", c->sock);
		else
			snprintf(res->error, sizeof res->error, "%s",
			         rc == CURLE_OPERATION_TIMEDOUT ? "timeout"
			                                        : curl_easy_strerror(rc));
		return;
	}
	long code = 0;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	res->http_status = code;
	if (code == 429 || code == 408 || (code >= 500 && code <= 599)) {
		curl_off_t ra = -1;
		/* Kept as asked (up to a day): run.c refuses waits over retry_max_ms. */
		if (curl_easy_getinfo(c->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
			res->retry_after_ms = ra > 86400 ? 86400000L : (long)ra * 1000L;
		res->retryable = 1;
		char snip[240];
		s_error_text(c, snip, sizeof snip);
		snprintf(res->error, sizeof res->error, "%ld%s%s", code, *snip ? ": " : "", snip);
		return;
	}
	if (code != 200) {
		char snip[240];
		s_error_text(c, snip, sizeof snip);
		snprintf(res->error, sizeof res->error, "HTTP %ld from the model gateway: %s", code,
		         snip);
		return;
	}
	s_parse(c->buf ? c->buf : "", c->len, c->run->cur_seq, res);
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
		/* Every failure text, from HTTP or from parsing, is made one line of
		 * valid UTF-8 here, once. */
		if (!res.ok)
			s_error_clean(&res);
		orch_run_t *run = c->run;
		run->call = NULL;
		s_call_free(c);
		orch_run_model_done(run, &res);
		json_decref(res.message);
		json_decref(res.usage);
		json_decref(res.journal);
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
