/* orchestrator: a run's conversation, kept as the text of the chat-completions request body. */
#include <stdlib.h>
#include <string.h>

#include "orch.h"

/* Appends n bytes. 0 / -1 (over ORCH_CONV_MAX or out of memory). */
static int
s_put(orch_conv_t *c, const char *s, size_t n)
{
	if (c->len + n + 1 > ORCH_CONV_MAX)
		return -1;
	if (c->len + n + 1 > c->cap) {
		/* Room for the next message or the request suffix, not doubling:
		 * per-run memory matters more than a few reallocs. */
		size_t cap = c->len + n + 1;
		cap += cap / 4 + 512;
		char *b = realloc(c->buf, cap);
		if (b == NULL)
			return -1;
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, s, n);
	c->len += n;
	c->buf[c->len] = '\0';
	return 0;
}

void
orch_conv_free(orch_conv_t *c)
{
	free(c->buf);
	memset(c, 0, sizeof *c);
}

int
orch_conv_append(orch_conv_t *c, const json_t *msg)
{
	char *t = json_dumps(msg, JSON_COMPACT);
	if (t == NULL)
		return -1;
	size_t mark = c->len;
	int rc = 0;
	if (c->n_messages > 0)
		rc = s_put(c, ",", 1);
	if (rc == 0)
		rc = s_put(c, t, strlen(t));
	free(t);
	if (rc == 0)
		c->n_messages++;
	else if (c->buf != NULL)
		c->buf[c->len = mark] = '\0';
	return rc;
}

int
orch_conv_append_new(orch_conv_t *c, json_t *msg)
{
	int rc = msg != NULL ? orch_conv_append(c, msg) : -1;
	json_decref(msg);
	return rc;
}

int
orch_conv_init(orch_conv_t *c, const char *model, const char *system, const char *task)
{
	c->len = 0;
	c->n_messages = 0;
	json_t *m = orch_json_text(model ? model : "");
	char *ms = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
	json_decref(m);
	int rc = ms ? 0 : -1;
	if (rc == 0)
		rc = s_put(c, "{\"model\":", 9);
	if (rc == 0)
		rc = s_put(c, ms, strlen(ms));
	free(ms);
	if (rc == 0)
		rc = s_put(c, ",\"messages\":[", 13);
	if (rc == 0 && system != NULL && *system != '\0')
		rc = orch_conv_append_new(c, json_pack("{s:s, s:o}", "role", "system", "content",
		                                       orch_json_text(system)));
	if (rc == 0)
		rc = orch_conv_append_new(c, json_pack("{s:s, s:o}", "role", "user", "content",
		                                       orch_json_text(task ? task : "")));
	return rc;
}

const char *
orch_conv_request(orch_conv_t *c, const char *tools, size_t *len)
{
	size_t base = c->len;
	int rc = s_put(c, "]", 1);
	if (rc == 0 && tools != NULL)
		rc = s_put(c, ",\"tools\":", 9);
	if (rc == 0 && tools != NULL)
		rc = s_put(c, tools, strlen(tools));
	if (rc == 0)
		rc = s_put(c, "}", 1);
	*len = c->len;
	/* The suffix stays in the buffer past len until the next append. */
	c->len = base;
	return rc == 0 ? c->buf : NULL;
}
