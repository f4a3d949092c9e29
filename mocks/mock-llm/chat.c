/* mock-llm: answers one chat completion from the scenario step the conversation has reached. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock_llm.h"

json_t *
mock_error_json(const char *message, const char *type, const char *code)
{
	return json_pack("{s:{s:s, s:s, s:s, s:n}}", "error", "message", message, "type", type,
	                 "code", code, "param");
}

static void
s_error(mock_chat_result_t *out, int status, const char *type, const char *code, const char *msg)
{
	out->status = status;
	out->body = mock_error_json(msg, type, code);
}

/* The scenario is the model name with any "provider:" prefix dropped. */
static const char *
s_scenario_name(const char *model)
{
	const char *colon = strrchr(model, ':');
	return colon ? colon + 1 : model;
}

/* Checks the shape we rely on: messages is a non-empty array of objects
 * with a string role. */
static const char *
s_check_messages(const json_t *messages)
{
	if (!json_is_array(messages))
		return "'messages' must be an array";
	if (json_array_size(messages) == 0)
		return "'messages' must not be empty";
	for (size_t i = 0; i < json_array_size(messages); i++) {
		const json_t *m = json_array_get(messages, i);
		if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
			return "every message must be an object with a string 'role'";
	}
	return NULL;
}

static size_t
s_count_role(const json_t *messages, const char *role)
{
	size_t n = 0;
	for (size_t i = 0; i < json_array_size(messages); i++) {
		const char *r =
		    json_string_value(json_object_get(json_array_get(messages, i), "role"));
		if (r != NULL && strcmp(r, role) == 0)
			n++;
	}
	return n;
}

/* Builds the assistant message of step st. NULL on template overflow. */
static json_t *
s_build_message(const mock_step_t *st, const json_t *messages, const char *fingerprint)
{
	mock_tctx_t *t = mock_tctx_new(messages);
	json_t *msg = json_pack("{s:s}", "role", "assistant");

	if (t == NULL || msg == NULL)
		goto fail;
	if (st->content != NULL) {
		char *c = mock_tctx_render(t, st->content);
		if (c == NULL || json_object_set_new(msg, "content", json_string(c)) < 0) {
			free(c);
			goto fail;
		}
		free(c);
	} else {
		json_object_set_new(msg, "content", json_null());
	}
	if (st->ncalls > 0) {
		json_t *calls = json_array();
		json_object_set_new(msg, "tool_calls", calls);
		for (size_t i = 0; i < st->ncalls; i++) {
			/* Ids derive from the conversation so a replayed request gets
			 * the same ids. */
			char id[64];
			snprintf(id, sizeof id, "call_%.12s_%zu", fingerprint, i);
			json_t *args = mock_tctx_render_json(t, st->calls[i].arguments);
			char *argstr = args ? json_dumps(args, JSON_COMPACT) : NULL;
			json_decref(args);
			if (argstr == NULL)
				goto fail;
			json_t *call =
			    json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function",
			              "function", "name", st->calls[i].name, "arguments", argstr);
			free(argstr);
			if (call == NULL || json_array_append_new(calls, call) < 0)
				goto fail;
		}
	}
	mock_tctx_destroy(&t);
	return msg;
fail:
	mock_tctx_destroy(&t);
	json_decref(msg);
	return NULL;
}

void
mock_chat(const mock_config_t *cfg, const char *body, size_t len, mock_fail_fn fail, void *fail_arg,
          mock_chat_result_t *out)
{
	json_error_t jerr;
	char msg[1024];
	char path[4096];
	char err[512];
	json_t *req = NULL;
	mock_scenario_t *sc = NULL;

	memset(out, 0, sizeof *out);
	out->step = -1;

	/* The tree is only read here and dropped whole at the end. */
	mock_arena_begin();
	req = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
	mock_arena_end();
	if (req == NULL) {
		snprintf(msg, sizeof msg, "malformed JSON at line %d column %d: %s", jerr.line,
		         jerr.column, jerr.text);
		s_error(out, 400, "invalid_request_error", "invalid_json", msg);
		goto done;
	}
	if (!json_is_object(req)) {
		s_error(out, 400, "invalid_request_error", "invalid_request",
		        "request body must be a JSON object");
		goto done;
	}
	const json_t *model = json_object_get(req, "model");
	const json_t *messages = json_object_get(req, "messages");
	if (!json_is_string(model)) {
		s_error(out, 400, "invalid_request_error", "invalid_request",
		        "'model' must be a string");
		goto done;
	}
	const char *bad = s_check_messages(messages);
	if (bad != NULL) {
		s_error(out, 400, "invalid_request_error", "invalid_request", bad);
		goto done;
	}
	if (json_is_true(json_object_get(req, "stream"))) {
		s_error(out, 400, "invalid_request_error", "unsupported",
		        "mock-llm does not support stream=true");
		goto done;
	}
	const char *name = s_scenario_name(json_string_value(model));
	if (!mock_scenario_name_ok(name)) {
		snprintf(msg, sizeof msg,
		         "invalid model name (scenario names are [A-Za-z0-9._-]{1,%d})",
		         MOCK_NAME_MAX);
		s_error(out, 404, "invalid_request_error", "model_not_found", msg);
		goto done;
	}
	snprintf(out->scenario, sizeof out->scenario, "%s", name);
	if (mock_fingerprint(messages, out->fingerprint) < 0) {
		s_error(out, 413, "invalid_request_error", "too_large", "messages too large");
		goto done;
	}

	snprintf(path, sizeof path, "%s/%s.yaml", cfg->scenarios, name);
	/* Checked per request (reloaded when the file changed): scenarios can
	 * be edited while the mock runs. Nothing about a conversation is kept. */
	sc = mock_scenario_get(path, err, sizeof err);
	if (sc == NULL && errno == ENOENT) {
		snprintf(msg, sizeof msg, "The model '%s' does not exist (no scenario %s.yaml)",
		         json_string_value(model), name);
		s_error(out, 404, "invalid_request_error", "model_not_found", msg);
		goto done;
	}
	if (sc == NULL) {
		snprintf(msg, sizeof msg, "bad scenario: %s", err);
		s_error(out, 500, "server_error", "bad_scenario", msg);
		goto done;
	}

	size_t place = s_count_role(messages, "assistant");
	/* Past the script's end the last step repeats: a final answer stays
	 * final, a looping tool call keeps looping (for max_turns tests). */
	size_t idx = place < sc->nsteps ? place : sc->nsteps - 1;
	out->step = (long)place;

	if (fail != NULL && fail(fail_arg)) {
		out->injected = 1;
		out->status = cfg->fail_status;
		out->body = mock_error_json(
		    "injected failure (mock-llm --fail-every)",
		    cfg->fail_status == 429 ? "rate_limit_error" : "server_error", "injected");
		goto done;
	}

	json_t *reply = s_build_message(&sc->steps[idx], messages, out->fingerprint);
	if (reply == NULL) {
		s_error(out, 500, "server_error", "render_failed", "rendered reply too large");
		goto done;
	}
	char *reply_text = json_dumps(reply, JSON_COMPACT);
	size_t completion_tokens = reply_text ? (strlen(reply_text) + 3) / 4 : 0;
	free(reply_text);
	size_t prompt_tokens = (len + 3) / 4; /* an estimate: the request's size */
	char id[64];
	snprintf(id, sizeof id, "chatcmpl-%.24s", out->fingerprint);
	out->status = 200;
	out->body = json_pack(
	    "{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:s, s:n}], s:{s:I, s:I, s:I}}", "id", id,
	    "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
	    json_string_value(model), "system_fingerprint", "mock-llm", "choices", "index", 0,
	    "message", reply, "finish_reason", sc->steps[idx].ncalls > 0 ? "tool_calls" : "stop",
	    "logprobs", "usage", "prompt_tokens", (json_int_t)prompt_tokens, "completion_tokens",
	    (json_int_t)completion_tokens, "total_tokens",
	    (json_int_t)(prompt_tokens + completion_tokens));
	if (out->body == NULL)
		s_error(out, 500, "server_error", "internal", "cannot build reply");
done:
	mock_scenario_put(&sc);
	/* req is in the arena (nothing made since refers to it): dropped at once */
	(void)req;
	mock_arena_reset();
}
