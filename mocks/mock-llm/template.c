/* mock-llm: renders {{...}} templates in scripted replies from the conversation so far. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mock_llm.h"

/* Templates the scenario may use:
 *   {{task}}                 content of the first user message
 *   {{result.N}}             raw content of the Nth role=tool message (0-based)
 *   {{result.N.a.0.b}}       that content parsed as JSON, walked by keys and
 *                            array indexes (negative indexes count from the end)
 *   {{last_result}}          raw content of the last role=tool message
 *   {{last_result.a.b}}      the same, walked
 * A missing result or path renders as "". Strings render raw; other JSON
 * values as compact JSON. Anything else between braces is left as written so
 * a typo in a scenario is visible in the reply. */

#define S_EXPR_MAX 512
#define S_PARSE_UNTRIED 0
#define S_PARSE_OK 1
#define S_PARSE_FAILED 2

struct mock_tctx_t {
	size_t nresults;
	char **results; /* owned copies of tool message contents */
	json_t **parsed;
	int *parse_state;
	char *task;
};

char *
mock_content_text(const json_t *msg)
{
	const json_t *c = json_object_get(msg, "content");
	if (json_is_string(c))
		return strndup(json_string_value(c), json_string_length(c));
	if (!json_is_array(c))
		return NULL;
	/* OpenAI content parts: [{"type":"text","text":"..."}, ...] */
	mock_buf_t b;
	mock_buf_init(&b, MOCK_BODY_MAX);
	for (size_t i = 0; i < json_array_size(c); i++) {
		const json_t *t = json_object_get(json_array_get(c, i), "text");
		if (json_is_string(t) &&
		    mock_buf_put(&b, json_string_value(t), json_string_length(t)) < 0)
			break;
	}
	return mock_buf_steal(&b);
}

mock_tctx_t *
mock_tctx_new(const json_t *messages)
{
	mock_tctx_t *self = calloc(1, sizeof *self);
	size_t n = json_array_size(messages);

	if (self == NULL)
		return NULL;
	self->results = calloc(n ? n : 1, sizeof *self->results);
	self->parsed = calloc(n ? n : 1, sizeof *self->parsed);
	self->parse_state = calloc(n ? n : 1, sizeof *self->parse_state);
	if (self->results == NULL || self->parsed == NULL || self->parse_state == NULL) {
		mock_tctx_destroy(&self);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *m = json_array_get(messages, i);
		const char *role = json_string_value(json_object_get(m, "role"));
		if (role == NULL)
			continue;
		if (strcmp(role, "tool") == 0) {
			char *t = mock_content_text(m);
			self->results[self->nresults++] = t != NULL ? t : strdup("");
		} else if (strcmp(role, "user") == 0 && self->task == NULL) {
			self->task = mock_content_text(m);
		}
	}
	return self;
}

void
mock_tctx_destroy(mock_tctx_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	mock_tctx_t *self = *self_p;
	for (size_t i = 0; i < self->nresults; i++) {
		free(self->results[i]);
		json_decref(self->parsed[i]);
	}
	free(self->results);
	free(self->parsed);
	free(self->parse_state);
	free(self->task);
	free(self);
	*self_p = NULL;
}

static json_t *
s_parsed(mock_tctx_t *self, size_t i)
{
	if (self->parse_state[i] == S_PARSE_UNTRIED) {
		self->parsed[i] =
		    json_loads(self->results[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		self->parse_state[i] = self->parsed[i] ? S_PARSE_OK : S_PARSE_FAILED;
	}
	return self->parsed[i];
}

/* Walks "a.0.b" from v. NULL when any step is missing. */
static const json_t *
s_walk(const json_t *v, const char *path)
{
	char seg[S_EXPR_MAX];

	while (v != NULL && *path != '\0') {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		if (n >= sizeof seg)
			return NULL;
		memcpy(seg, path, n);
		seg[n] = '\0';
		path += n + (dot ? 1 : 0);
		if (json_is_object(v)) {
			v = json_object_get(v, seg);
		} else if (json_is_array(v)) {
			char *end = NULL;
			errno = 0;
			long idx = strtol(seg, &end, 10);
			if (n == 0 || errno != 0 || *end != '\0')
				return NULL;
			if (idx < 0)
				idx += (long)json_array_size(v);
			if (idx < 0)
				return NULL;
			v = json_array_get(v, (size_t)idx);
		} else {
			return NULL;
		}
	}
	return v;
}

static int
s_put_value(mock_buf_t *out, const json_t *v)
{
	if (v == NULL)
		return 0;
	if (json_is_string(v))
		return mock_buf_put(out, json_string_value(v), json_string_length(v));
	return mock_canon_dump(v, out);
}

/* Renders one result reference: idx into results, path may be "". */
static int
s_put_result(mock_tctx_t *self, mock_buf_t *out, size_t idx, const char *path)
{
	if (idx >= self->nresults)
		return 0;
	if (*path == '\0')
		return mock_buf_puts(out, self->results[idx]);
	return s_put_value(out, s_walk(s_parsed(self, idx), path));
}

/* Evaluates expr into out. 1 when recognised, 0 when not, -1 on overflow. */
static int
s_eval(mock_tctx_t *self, const char *expr, mock_buf_t *out)
{
	if (strcmp(expr, "task") == 0)
		return self->task ? (mock_buf_puts(out, self->task) < 0 ? -1 : 1) : 1;
	if (strncmp(expr, "last_result", 11) == 0 && (expr[11] == '\0' || expr[11] == '.')) {
		if (self->nresults == 0)
			return 1;
		const char *path = expr[11] == '.' ? expr + 12 : "";
		return s_put_result(self, out, self->nresults - 1, path) < 0 ? -1 : 1;
	}
	if (strncmp(expr, "result.", 7) == 0 && isdigit((unsigned char)expr[7])) {
		char *end = NULL;
		errno = 0;
		unsigned long idx = strtoul(expr + 7, &end, 10);
		if (errno != 0 || (*end != '\0' && *end != '.'))
			return 0;
		const char *path = *end == '.' ? end + 1 : "";
		return s_put_result(self, out, idx, path) < 0 ? -1 : 1;
	}
	return 0;
}

char *
mock_tctx_render(mock_tctx_t *self, const char *s)
{
	mock_buf_t out;
	char expr[S_EXPR_MAX];

	mock_buf_init(&out, MOCK_RENDER_MAX);
	for (;;) {
		const char *open = strstr(s, "{{");
		const char *close = open ? strstr(open + 2, "}}") : NULL;
		if (close == NULL) {
			if (mock_buf_puts(&out, s) < 0)
				goto overflow;
			break;
		}
		if (mock_buf_put(&out, s, (size_t)(open - s)) < 0)
			goto overflow;
		const char *b = open + 2, *e = close;
		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		int rc = 0;
		if ((size_t)(e - b) < sizeof expr) {
			memcpy(expr, b, (size_t)(e - b));
			expr[e - b] = '\0';
			rc = s_eval(self, expr, &out);
		}
		if (rc < 0)
			goto overflow;
		if (rc == 0 && mock_buf_put(&out, open, (size_t)(close + 2 - open)) < 0)
			goto overflow;
		s = close + 2;
	}
	return mock_buf_steal(&out);
overflow:
	mock_buf_free(&out);
	return NULL;
}

json_t *
mock_tctx_render_json(mock_tctx_t *self, const json_t *v)
{
	if (json_is_string(v)) {
		char *r = mock_tctx_render(self, json_string_value(v));
		if (r == NULL)
			return NULL;
		json_t *j = json_string(r);
		free(r);
		return j;
	}
	if (json_is_array(v)) {
		json_t *a = json_array();
		for (size_t i = 0; i < json_array_size(v); i++) {
			json_t *x = mock_tctx_render_json(self, json_array_get(v, i));
			if (x == NULL || json_array_append_new(a, x) < 0) {
				json_decref(a);
				return NULL;
			}
		}
		return a;
	}
	if (json_is_object(v)) {
		json_t *o = json_object();
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)v, k, x)
		{
			json_t *r = mock_tctx_render_json(self, x);
			if (r == NULL || json_object_set_new(o, k, r) < 0) {
				json_decref(o);
				return NULL;
			}
		}
		return o;
	}
	return json_deep_copy(v);
}
