/* orchestrator: one state machine per run — the agent loop, its journal writes, replay on resume.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define EXEC_COMMAND_MAX (64 * 1024) /* bytes of one exec command */
#define ANSWER_TEXT_MAX 1500         /* bytes of the answer shown in its event line */

static const char *const s_state_names[] = {
    [ORCH_QUEUED] = "queued",       [ORCH_RUNNING] = "running", [ORCH_WAITING] = "waiting_approval",
    [ORCH_SUCCEEDED] = "succeeded", [ORCH_FAILED] = "failed",   [ORCH_CANCELLED] = "cancelled",
};

const char *
orch_state_str(int state)
{
	if (state < 0 || state > ORCH_CANCELLED)
		return "unknown";
	return s_state_names[state];
}

int
orch_state_parse(const char *s)
{
	for (int i = 0; i <= ORCH_CANCELLED; i++)
		if (strcmp(s, s_state_names[i]) == 0)
			return i;
	return -1;
}

static void s_advance(orch_run_t *run);
static void s_finish(orch_run_t *run, int state, const char *text);

static orch_run_t *
s_new(orch_t *o, const char *id, const char *profile)
{
	orch_run_t *run = calloc(1, sizeof *run);
	if (run == NULL)
		return NULL;
	run->o = o;
	ahp_strlcpy(run->id, id, sizeof run->id);
	run->profile_name = strdup(profile);
	if (run->profile_name == NULL) {
		free(run);
		return NULL;
	}
	return run;
}

void
orch_run_free(orch_run_t **run_p)
{
	if (run_p == NULL || *run_p == NULL)
		return;
	orch_run_t *run = *run_p;
	if (run->call != NULL)
		orch_model_abort(run->o, &run->call);
	free(run->conv);
	json_decref(run->calls);
	free(run->sbx_command);
	free(run->profile_name);
	orch_profset_unref(&run->pset);
	free(run);
	*run_p = NULL;
}

static void
s_link(orch_run_t *run)
{
	orch_t *o = run->o;
	run->prev = o->runs_tail;
	run->next = NULL;
	if (o->runs_tail != NULL)
		o->runs_tail->next = run;
	else
		o->runs = run;
	o->runs_tail = run;
	o->n_runs++;
}

static void
s_unlink(orch_run_t *run)
{
	orch_t *o = run->o;
	if (run->prev != NULL)
		run->prev->next = run->next;
	else
		o->runs = run->next;
	if (run->next != NULL)
		run->next->prev = run->prev;
	else
		o->runs_tail = run->prev;
	run->next = run->prev = NULL;
	o->n_runs--;
}

orch_run_t *
orch_run_find(orch_t *o, const char *id)
{
	for (orch_run_t *r = o->runs; r != NULL; r = r->next)
		if (strcmp(r->id, id) == 0)
			return r;
	return NULL;
}

/* A run that ended this turn and is not freed yet (the ended list is short:
 * it is emptied after every turn). */
static orch_run_t *
s_find_ended(orch_t *o, const char *id)
{
	for (orch_run_t *r = o->ended; r != NULL; r = r->ended_next)
		if (strcmp(r->id, id) == 0)
			return r;
	return NULL;
}

static const char *
s_step_str(const orch_run_t *run, char *buf, size_t len)
{
	if (run->cur_seq == 0)
		return NULL;
	snprintf(buf, len, "%u", run->cur_seq);
	return buf;
}

/* Writes the run row; error/result only for terminal states. */
static void
s_save(orch_run_t *run, const char *error, const char *result)
{
	orch_run_row_t row = {
	    .id = run->id,
	    .state = orch_state_str(run->state),
	    .error = error,
	    .result = result,
	    .updated_ms = ahp_now_ms(),
	    .turns = run->turns,
	    .model_calls = run->model_calls,
	    .tool_calls = run->tool_calls,
	    .tokens = run->tokens,
	};
	if (orch_journal_run_update(run->o->journal, &row) != 0)
		orch_journal_failed(run->o, "run update");
}

void
orch_run_event(orch_run_t *run, const char *kind, json_t *data, const char *fmt, ...)
{
	char text[ORCH_EVENT_TEXT_MAX], step[16];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	/* vsnprintf may have cut a UTF-8 sequence; events are protobuf strings. */
	char *clean = ahp_utf8_sanitize((const uint8_t *)text, strlen(text), 0, NULL, NULL);
	char *d = data != NULL ? json_dumps(data, JSON_COMPACT) : NULL;
	json_decref(data);
	run->event_seq++;
	if (orch_journal_event_add(run->o->journal, run->id, run->event_seq, ahp_now_ms(), kind,
	                           clean ? clean : "", d) != 0)
		orch_journal_failed(run->o, "event");
	ahp_log(AHP_LOG_INFO, run->id, s_step_str(run, step, sizeof step), "%s",
	        clean ? clean : "");
	free(clean);
	free(d);
}

static void
s_step_intent(orch_run_t *run, const char *kind, json_t *intent)
{
	char *s = json_dumps(intent, JSON_COMPACT);
	json_decref(intent);
	if (s == NULL ||
	    orch_journal_step_intent(run->o->journal, run->id, run->cur_seq, kind, s) != 0)
		orch_journal_failed(run->o, "step intent");
	free(s);
}

static void
s_step_complete(orch_run_t *run, int status, const char *result)
{
	if (orch_journal_step_complete(run->o->journal, run->id, run->cur_seq, status, result) != 0)
		orch_journal_failed(run->o, "step complete");
}

/* --- the conversation text --- */

static int
s_conv_put(orch_run_t *run, const char *s, size_t n)
{
	if (run->conv_len + n + 1 > ORCH_CONV_MAX)
		return -1;
	if (run->conv_len + n + 1 > run->conv_cap) {
		/* Room for the next message or the request suffix, not doubling:
		 * per-run memory matters more than a few reallocs. */
		size_t cap = run->conv_len + n + 1;
		cap += cap / 4 + 512;
		char *b = realloc(run->conv, cap);
		if (b == NULL)
			return -1;
		run->conv = b;
		run->conv_cap = cap;
	}
	memcpy(run->conv + run->conv_len, s, n);
	run->conv_len += n;
	run->conv[run->conv_len] = '\0';
	return 0;
}

/* Appends one message exactly as json_dumps(messages, JSON_COMPACT) would
 * write it inside the array. 0 / -1 (over ORCH_CONV_MAX). */
static int
s_conv_append(orch_run_t *run, const json_t *msg)
{
	char *t = json_dumps(msg, JSON_COMPACT);
	if (t == NULL)
		return -1;
	int rc = 0;
	if (run->n_messages > 0)
		rc = s_conv_put(run, ",", 1);
	if (rc == 0)
		rc = s_conv_put(run, t, strlen(t));
	free(t);
	if (rc == 0)
		run->n_messages++;
	return rc;
}

static int
s_conv_append_new(orch_run_t *run, json_t *msg)
{
	int rc = s_conv_append(run, msg);
	json_decref(msg);
	return rc;
}

/* The first two messages: the system prompt (when any) and the task. */
static int
s_conversation_init(orch_run_t *run, const char *system, const char *task)
{
	run->conv_len = 0;
	run->n_messages = 0;
	json_t *m = json_string(run->profile->model_name ? run->profile->model_name : "");
	char *model = json_dumps(m, JSON_ENCODE_ANY);
	json_decref(m);
	int rc = model ? 0 : -1;
	if (rc == 0)
		rc = s_conv_put(run, "{\"model\":", 9);
	if (rc == 0)
		rc = s_conv_put(run, model, strlen(model));
	free(model);
	if (rc == 0)
		rc = s_conv_put(run, ",\"messages\":[", 13);
	if (rc == 0 && system != NULL && *system != '\0')
		rc = s_conv_append_new(
		    run, json_pack("{s:s, s:s}", "role", "system", "content", system));
	if (rc == 0)
		rc = s_conv_append_new(
		    run, json_pack("{s:s, s:s}", "role", "user", "content", task ? task : ""));
	return rc;
}

static const char s_conv_too_big[] = "the conversation grew over its 16 MiB ceiling";

/* --- ending --- */

static void
s_finish(orch_run_t *run, int state, const char *text)
{
	orch_t *o = run->o;
	int was = run->state;
	if (run->call != NULL)
		orch_model_abort(o, &run->call);
	run->state = state;
	run->phase = PH_ENDED;
	if (was == ORCH_RUNNING || was == ORCH_WAITING)
		o->n_running--;
	if (state == ORCH_SUCCEEDED) {
		s_save(run, NULL, text);
		size_t n = strlen(text);
		orch_run_event(run, "answer", json_pack("{s:s}", "content", text),
		               "[answer] %.*s%s", (int)(n > ANSWER_TEXT_MAX ? ANSWER_TEXT_MAX : n),
		               text, n > ANSWER_TEXT_MAX ? " …" : "");
		orch_run_event(run, "state",
		               json_pack("{s:s, s:s, s:i, s:i, s:i, s:I}", "from",
		                         orch_state_str(was), "to", "succeeded", "model_calls",
		                         run->model_calls, "tool_calls", run->tool_calls, "turns",
		                         run->turns, "tokens", (json_int_t)run->tokens),
		               "[run] succeeded");
	} else {
		s_save(run, text, NULL);
		orch_run_event(run, "state",
		               json_pack("{s:s, s:s, s:s}", "from", orch_state_str(was), "to",
		                         orch_state_str(state), "reason", text),
		               state == ORCH_CANCELLED ? "[run] cancelled" : "[run] failed: %s",
		               text);
	}
	s_unlink(run);
	run->ended_next = o->ended;
	o->ended = run;
	orch_runs_schedule(o);
}

void
orch_runs_reap_ended(orch_t *o)
{
	orch_run_t **pp = &o->ended;
	while (*pp != NULL) {
		orch_run_t *run = *pp;
		if (run->on_post) {
			/* Still referenced by the post-commit list; next turn. */
			pp = &run->ended_next;
			continue;
		}
		*pp = run->ended_next;
		if (run->sbx_used)
			orch_sbx_destroy(o, run->id);
		orch_run_free(&run);
	}
}

void
orch_run_cancel(orch_run_t *run)
{
	/* A sandboxd reply for an abandoned request matches no run and is dropped. */
	s_finish(run, ORCH_CANCELLED, "cancelled by request");
}

/* --- model steps --- */

static void
s_model_begin(orch_run_t *run)
{
	const ahp_profile_t *p = run->profile;
	if (run->model_calls >= p->limits.max_model_calls) {
		char why[96];
		snprintf(why, sizeof why, "max_model_calls (%u) reached",
		         p->limits.max_model_calls);
		s_finish(run, ORCH_FAILED, why);
		return;
	}
	run->cur_seq = ++run->seq;
	run->model_calls++;
	json_t *intent = json_pack("{s:i, s:s, s:i}", "call", run->model_calls, "model", p->model,
	                           "messages", (int)run->n_messages);
	/* The first call records the system prompt, so a resume after a
	 * profile reload rebuilds exactly the conversation that was started. */
	if (run->model_calls == 1)
		json_object_set_new(intent, "system",
		                    p->system_prompt && *p->system_prompt
		                        ? json_string(p->system_prompt)
		                        : json_null());
	s_step_intent(run, "model", intent);
	run->attempt = 0;
	run->phase = PH_MODEL_DUE;
	s_save(run, NULL, NULL);
	orch_post(run->o, run);
}

static void
s_model_send(orch_run_t *run)
{
	/* Close the array and add the tools behind the conversation text; the
	 * suffix is dropped again as soon as it is sent (conv_len restored). */
	size_t base = run->conv_len;
	json_t *tools = orch_tools_for(run->profile);
	char *tt = json_array_size(tools) > 0 ? json_dumps(tools, JSON_COMPACT) : NULL;
	json_decref(tools);
	int rc = s_conv_put(run, "]", 1);
	if (rc == 0 && tt != NULL)
		rc = s_conv_put(run, ",\"tools\":", 9);
	if (rc == 0 && tt != NULL)
		rc = s_conv_put(run, tt, strlen(tt));
	if (rc == 0)
		rc = s_conv_put(run, "}", 1);
	free(tt);
	size_t len = run->conv_len;
	run->conv_len = base;
	run->attempt++;
	run->phase = PH_MODEL_INFLIGHT;
	run->call = rc == 0 ? orch_model_start(run->o, run, run->conv, len) : NULL;
	if (run->call == NULL) {
		orch_model_result_t res = {0};
		snprintf(res.error, sizeof res.error,
		         "cannot start the HTTP request to the gateway");
		orch_run_model_done(run, &res);
	}
}

static long
s_backoff_ms(orch_t *o, int attempt, long retry_after_ms)
{
	long wait = o->retry_base_ms;
	for (int i = 1; i < attempt && wait < o->retry_max_ms; i++)
		wait *= 2;
	if (wait > o->retry_max_ms)
		wait = o->retry_max_ms;
	/* Full jitter over the upper half: spread synchronized retries. */
	uint32_t r = 0;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
		r = (uint32_t)ahp_mono_us();
	wait = wait / 2 + (long)(r % (uint32_t)(wait / 2 + 1));
	if (retry_after_ms > wait)
		wait = retry_after_ms > 600000 ? 600000 : retry_after_ms;
	return wait;
}

void
orch_run_model_done(orch_run_t *run, orch_model_result_t *res)
{
	orch_t *o = run->o;
	if (run->phase != PH_MODEL_INFLIGHT)
		return;
	run->phase = PH_IDLE;
	if (!res->ok) {
		if (res->retryable && run->attempt <= o->model_retries) {
			long wait = s_backoff_ms(o, run->attempt, res->retry_after_ms);
			orch_run_event(run, "model",
			               json_pack("{s:i, s:i, s:i, s:s, s:I, s:I}", "call",
			                         run->model_calls, "attempt", run->attempt,
			                         "http_status", (int)res->http_status, "error",
			                         res->error, "wait_ms", (json_int_t)wait,
			                         "latency_ms", (json_int_t)res->latency_ms),
			               "[model] retry %d/%ld after %s (wait %ld ms)", run->attempt,
			               o->model_retries, res->error, wait);
			run->phase = PH_MODEL_BACKOFF;
			run->due_ms = ahp_mono_ms() + wait;
			return;
		}
		char why[768];
		if (res->retryable)
			snprintf(why, sizeof why, "model call %u failed after %d attempts: %s%s",
			         run->model_calls, run->attempt, res->http_status ? "HTTP " : "",
			         res->error);
		else
			snprintf(why, sizeof why, "model call %u failed: %s", run->model_calls,
			         res->error);
		json_t *r = json_pack("{s:s, s:i, s:i, s:I}", "error", why, "http_status",
		                      (int)res->http_status, "attempts", run->attempt, "latency_ms",
		                      (json_int_t)res->latency_ms);
		char *rs = json_dumps(r, JSON_COMPACT);
		json_decref(r);
		s_step_complete(run, AHP__STATUS__ERR_UNAVAILABLE, rs);
		free(rs);
		s_finish(run, ORCH_FAILED, why);
		return;
	}

	json_t *msg = res->message;
	json_t *r = json_pack("{s:O, s:O?, s:I, s:I, s:i}", "message", msg, "usage", res->usage,
	                      "tokens", (json_int_t)res->tokens, "latency_ms",
	                      (json_int_t)res->latency_ms, "attempts", run->attempt);
	char *rs = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	if (rs == NULL)
		orch_journal_failed(o, "model result encoding");
	s_step_complete(run, 0, rs);
	free(rs);
	run->tokens += res->tokens;
	if (s_conv_append(run, msg) != 0) {
		s_finish(run, ORCH_FAILED, s_conv_too_big);
		return;
	}

	json_t *calls = json_object_get(msg, "tool_calls");
	size_t n = json_array_size(calls);
	json_t *data = json_pack("{s:i, s:O, s:O?, s:I, s:I}", "call", run->model_calls, "message",
	                         msg, "usage", res->usage, "tokens", (json_int_t)res->tokens,
	                         "latency_ms", (json_int_t)res->latency_ms);
	if (n == 0) {
		orch_run_event(
		    run, "model", data, "[model] call %u → final answer (%llu tokens, %lld ms)",
		    run->model_calls, (unsigned long long)res->tokens, (long long)res->latency_ms);
		const char *content = json_string_value(json_object_get(msg, "content"));
		s_finish(run, ORCH_SUCCEEDED, content ? content : "");
		return;
	}
	orch_run_event(run, "model", data,
	               "[model] call %u → %zu tool call%s (%llu tokens, %lld ms)", run->model_calls,
	               n, n == 1 ? "" : "s", (unsigned long long)res->tokens,
	               (long long)res->latency_ms);
	json_decref(run->calls);
	run->calls = json_incref(calls);
	run->next_call = 0;
	run->turns++;
	s_save(run, NULL, NULL);
	s_advance(run);
}

/* --- tool steps --- */

static const char *
s_call_str(const json_t *tc, const char *field)
{
	if (strcmp(field, "id") == 0)
		return json_string_value(json_object_get(tc, "id"));
	return json_string_value(json_object_get(json_object_get(tc, "function"), field));
}

/* Completes the current tool step with result (stolen) and appends the tool
 * message; the content is the very text journaled, so replay rebuilds it. */
static void
s_tool_complete(orch_run_t *run, json_t *result, int status)
{
	char *text = json_dumps(result, JSON_COMPACT);
	json_decref(result);
	if (text == NULL)
		orch_journal_failed(run->o, "tool result encoding");
	s_step_complete(run, status, text);
	json_t *tc = json_array_get(run->calls, run->next_call);
	int rc = s_conv_append_new(run, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id",
	                                          s_call_str(tc, "id"), "content", text));
	free(text);
	run->next_call++;
	run->phase = PH_IDLE;
	free(run->sbx_command);
	run->sbx_command = NULL;
	if (rc != 0) {
		s_finish(run, ORCH_FAILED, s_conv_too_big);
		return;
	}
	s_save(run, NULL, NULL);
}

/* Starts tool call run->calls[next_call]. With have_intent the step's intent
 * is already journaled (resume): a skill read runs again, an exec is fetched,
 * never re-run. */
static void
s_tool_begin(orch_run_t *run, int have_intent)
{
	json_t *tc = json_array_get(run->calls, run->next_call);
	const char *name = s_call_str(tc, "name");
	const char *argstr = s_call_str(tc, "arguments");
	json_error_t jerr;
	json_t *args = argstr ? json_loads(argstr, 0, &jerr) : NULL;
	if (!have_intent) {
		run->cur_seq = ++run->seq;
		run->tool_calls++;
		/* Arguments that are not JSON are journaled as the raw string. */
		json_t *a = args ? json_incref(args) : json_string(argstr ? argstr : "");
		json_t *intent =
		    json_pack("{s:s, s:s, s:i, s:o}", "tool_call_id", s_call_str(tc, "id"), "name",
		              name ? name : "", "index", (int)run->next_call, "arguments", a);
		s_step_intent(run, "tool", intent);
	}
	if (name == NULL || !orch_tool_offered(run->profile, name)) {
		orch_run_event(run, "tool", json_pack("{s:s?}", "name", name),
		               "[tool] %.100s → not available to this agent",
		               name ? name : "(none)");
		s_tool_complete(run,
		                orch_tool_error("not_found",
		                                "tool '%.100s' is not available to this agent",
		                                name ? name : ""),
		                AHP__STATUS__ERR_NOT_FOUND);
		json_decref(args);
		return;
	}
	if (!json_is_object(args)) {
		orch_run_event(run, "tool",
		               json_pack("{s:s, s:s?}", "name", name, "arguments", argstr),
		               "[%s] bad arguments", name);
		s_tool_complete(run,
		                orch_tool_error("bad_request",
		                                "arguments must be a JSON object%s%s",
		                                args ? "" : ": ", args ? "" : jerr.text),
		                AHP__STATUS__ERR_BAD_REQUEST);
		json_decref(args);
		return;
	}
	if (strcmp(name, "skill") == 0) {
		char summary[512];
		json_t *res = orch_skill_run(run->profile, args, summary, sizeof summary);
		orch_run_event(run, "skill",
		               json_pack("{s:O, s:O}", "arguments", args, "result", res),
		               "[skill] %s", summary);
		s_tool_complete(run, res,
		                json_object_get(res, "error") ? AHP__STATUS__ERR_BAD_REQUEST : 0);
		json_decref(args);
		return;
	}
	/* exec */
	const char *cmd = json_string_value(json_object_get(args, "command"));
	if (cmd == NULL || *cmd == '\0' || strlen(cmd) > EXEC_COMMAND_MAX) {
		orch_run_event(run, "sandbox", json_pack("{s:O}", "arguments", args),
		               "[sandbox] bad command");
		s_tool_complete(
		    run,
		    orch_tool_error(
		        cmd && *cmd ? "too_large" : "bad_request",
		        "argument 'command' must be a non-empty string of at most %d bytes",
		        EXEC_COMMAND_MAX),
		    AHP__STATUS__ERR_BAD_REQUEST);
		json_decref(args);
		return;
	}
	free(run->sbx_command);
	run->sbx_command = strdup(cmd);
	json_decref(args);
	if (run->sbx_command == NULL) {
		s_tool_complete(run, orch_tool_error("internal", "out of memory"),
		                AHP__STATUS__ERR_INTERNAL);
		return;
	}
	run->sbx_retried = 0;
	run->sbx_unavail_since = 0;
	if (have_intent) {
		run->sbx_op = SBX_FETCH;
	} else {
		orch_run_event(run, "sandbox", json_pack("{s:s}", "command", run->sbx_command),
		               "[sandbox] $ %s", run->sbx_command);
		run->sbx_op = run->sbx_created ? SBX_EXEC : SBX_CREATE;
	}
	run->phase = PH_SBX_DUE;
	orch_post(run->o, run);
}

static void
s_exec_event(orch_run_t *run, json_t *res, int recovered)
{
	const char *cwd = json_string_value(json_object_get(res, "cwd"));
	const char *killed = json_string_value(json_object_get(res, "killed_by"));
	const char *out = json_string_value(json_object_get(res, "stdout"));
	char extra[64] = "";
	if (killed != NULL)
		snprintf(extra, sizeof extra, ", killed by %s", killed);
	orch_run_event(run, "sandbox",
	               json_pack("{s:s?, s:O, s:b}", "command", run->sbx_command, "result", res,
	                         "recovered", recovered),
	               "[sandbox]   → exit=%d, stdout=%zu chars, cwd=%s%s%s",
	               (int)json_integer_value(json_object_get(res, "exit_code")),
	               out ? strlen(out) : 0, cwd ? cwd : "?", extra,
	               recovered ? " (result recovered after a restart)" : "");
}

void
orch_run_sbx_done(orch_run_t *run, int status, const char *message, const Ahp__Sbx__Reply *reply)
{
	if (run->phase != PH_SBX_INFLIGHT && run->phase != PH_SBX_DUE &&
	    run->phase != PH_SBX_BACKOFF)
		return;
	int op = run->sbx_op;
	char lost[320];
	run->sbx_op = SBX_NONE;
	run->sbx_req = 0;
	run->phase = PH_IDLE;
	if (reply != NULL && reply->error != NULL && reply->error->status != 0) {
		status = reply->error->status;
		message = reply->error->message;
	}
	const Ahp__Sbx__ExecResult *er =
	    reply && status == 0 && reply->body_case == AHP__SBX__REPLY__BODY_EXEC ? reply->exec
	                                                                           : NULL;
	/* sandboxd itself said "not now" (stopping, sandbox restarting): ask
	 * again for a while. Safe for Exec too: sandboxd keys commands by exec
	 * id and answers a repeated id from its records (the result, or
	 * interrupted when it had started), never running it twice. */
	if (reply != NULL && status == AHP__STATUS__ERR_UNAVAILABLE) {
		int64_t now = ahp_mono_ms();
		if (run->sbx_unavail_since == 0)
			run->sbx_unavail_since = now;
		if (now - run->sbx_unavail_since < ORCH_SBX_UNAVAIL_GRACE_MS) {
			run->sbx_op = op;
			if (op == SBX_EXEC && !run->sbx_created)
				run->sbx_op = SBX_CREATE;
			run->phase = PH_SBX_BACKOFF;
			run->due_ms = now + 200;
			return;
		}
	}
	run->sbx_unavail_since = 0;

	if (op == SBX_CREATE) {
		if (status == 0) {
			run->sbx_created = 1;
			run->sbx_op = SBX_EXEC;
			run->phase = PH_SBX_DUE;
			orch_post(run->o, run);
			return;
		}
		orch_run_event(run, "sandbox",
		               json_pack("{s:s, s:s}", "status", ahp_status_str(status), "message",
		                         message ? message : ""),
		               "[sandbox]   → no sandbox: %s",
		               message ? message : ahp_status_str(status));
		s_tool_complete(run,
		                orch_tool_error("unavailable",
		                                "the sandbox could not be created: %s",
		                                message ? message : ahp_status_str(status)),
		                status);
		s_advance(run);
		return;
	}
	if (op == SBX_EXEC) {
		if (er != NULL) {
			json_t *res = orch_sbx_result_json(er);
			s_exec_event(run, res, 0);
			s_tool_complete(run, res, 0);
			s_advance(run);
			return;
		}
		if (status == AHP__STATUS__ERR_NOT_FOUND && !run->sbx_retried) {
			/* The sandbox vanished (sandboxd restarted): the command did
			 * not run, so recreate around the same workspace and send it
			 * once more under the same exec id. */
			run->sbx_retried = 1;
			run->sbx_created = 0;
			run->sbx_op = SBX_CREATE;
			run->phase = PH_SBX_DUE;
			orch_post(run->o, run);
			return;
		}
		json_t *res;
		if (status == AHP__STATUS__ERR_UNAVAILABLE && message != NULL) {
			/* sandboxd gave up on a command it may have started (it is
			 * stopping): the outcome is unknown and it is not re-run. */
			snprintf(lost, sizeof lost,
			         "%.200s; the command's outcome is unknown and it was not re-run",
			         message);
			status = AHP__STATUS__ERR_INTERRUPTED;
			message = lost;
		}
		if (status == AHP__STATUS__ERR_TIMEOUT)
			res = orch_tool_error(
			    "timeout",
			    "sandboxd did not answer in time; the command may or may not have run");
		else
			res = orch_tool_error(ahp_status_str(status), "%s",
			                      message ? message : "exec failed");
		orch_run_event(run, "sandbox",
		               json_pack("{s:s?, s:O}", "command", run->sbx_command, "result", res),
		               "[sandbox]   → %s: %s",
		               status == AHP__STATUS__ERR_INTERRUPTED ? "interrupted" : "error",
		               message ? message : ahp_status_str(status));
		s_tool_complete(run, res, status ? status : AHP__STATUS__ERR_INTERNAL);
		s_advance(run);
		return;
	}
	if (op == SBX_FETCH) {
		if (er != NULL) {
			json_t *res = orch_sbx_result_json(er);
			s_exec_event(run, res, 1);
			s_tool_complete(run, res, 0);
		} else {
			json_t *res = orch_tool_error("interrupted",
			                              "the command's outcome was lost (sandboxd or "
			                              "orchestrator restarted); it "
			                              "was not re-run");
			orch_run_event(run, "sandbox",
			               json_pack("{s:s?, s:O, s:s, s:s?}", "command",
			                         run->sbx_command, "result", res, "fetch_status",
			                         ahp_status_str(status), "fetch_message", message),
			               "[sandbox]   → interrupted: outcome lost, not re-run");
			s_tool_complete(run, res, AHP__STATUS__ERR_INTERRUPTED);
		}
		s_advance(run);
	}
}

/* --- driving --- */

/* Moves a running run forward until it waits for something outside. */
static void
s_advance(orch_run_t *run)
{
	while (run->state == ORCH_RUNNING && run->phase == PH_IDLE) {
		size_t n = json_array_size(run->calls);
		if (run->calls != NULL && run->next_call < n) {
			if (run->next_call == 0 && run->turns > run->profile->limits.max_turns) {
				char why[96];
				snprintf(why, sizeof why, "max_turns (%u) reached",
				         run->profile->limits.max_turns);
				s_finish(run, ORCH_FAILED, why);
				return;
			}
			s_tool_begin(run, 0);
			continue;
		}
		json_decref(run->calls);
		run->calls = NULL;
		run->next_call = 0;
		s_model_begin(run);
	}
}

/* Binds the run to the current profile set. 0 / -1 when the profile is gone. */
static int
s_bind_profile(orch_run_t *run)
{
	orch_t *o = run->o;
	const ahp_profile_t *p = ahp_profiles_get(o->profiles->set, run->profile_name);
	if (p == NULL)
		return -1;
	orch_profset_unref(&run->pset);
	run->pset = orch_profset_ref(o->profiles);
	run->profile = p;
	return 0;
}

static void
s_start(orch_run_t *run, const char *task)
{
	orch_t *o = run->o;
	run->state = ORCH_RUNNING;
	o->n_running++;
	if (s_bind_profile(run) != 0) {
		char why[160];
		snprintf(why, sizeof why, "profile %.64s is no longer loaded", run->profile_name);
		s_finish(run, ORCH_FAILED, why);
		return;
	}
	if (s_conversation_init(run, run->profile->system_prompt, task) != 0) {
		s_finish(run, ORCH_FAILED, s_conv_too_big);
		return;
	}
	s_save(run, NULL, NULL);
	orch_run_event(run, "state",
	               json_pack("{s:s, s:s, s:s}", "from", "queued", "to", "running", "model",
	                         run->profile->model),
	               "[run] queued → running");
	s_advance(run);
}

/* Fetches the task of a queued run from the journal. */
static int
s_task_cb(void *arg, const orch_run_row_t *row)
{
	char **task = arg;
	*task = strdup(row->task ? row->task : "");
	return 1;
}

void
orch_runs_schedule(orch_t *o)
{
	/* A run that fails at start calls back in here; the outer pass goes on. */
	static int busy;
	if (busy)
		return;
	busy = 1;
	for (orch_run_t *r = o->runs; r != NULL && (long)o->n_running < o->max_running;) {
		orch_run_t *next = r->next;
		if (r->state == ORCH_QUEUED) {
			char *task = NULL;
			if (orch_journal_run_get(o->journal, r->id, s_task_cb, &task) != 1 ||
			    task == NULL) {
				free(task);
				orch_journal_failed(o, "reading a queued run");
			}
			s_start(r, task);
			free(task);
		}
		r = next;
	}
	busy = 0;
}

orch_run_t *
orch_run_submit(orch_t *o, const char *profile, const char *task, int *status, char *err,
                size_t errlen)
{
	if (ahp_profiles_get(o->profiles->set, profile) == NULL) {
		*status = AHP__STATUS__ERR_NOT_FOUND;
		snprintf(err, errlen, "profile '%.64s' is not loaded", profile);
		return NULL;
	}
	size_t tl = strlen(task);
	if (tl == 0) {
		*status = AHP__STATUS__ERR_BAD_REQUEST;
		snprintf(err, errlen, "task is empty");
		return NULL;
	}
	if (tl > ORCH_TASK_MAX) {
		*status = AHP__STATUS__ERR_TOO_LARGE;
		snprintf(err, errlen, "task is %zu bytes (max %d)", tl, ORCH_TASK_MAX);
		return NULL;
	}
	if (!ahp_utf8_valid(task, tl, 0)) {
		*status = AHP__STATUS__ERR_BAD_REQUEST;
		snprintf(err, errlen, "task is not valid UTF-8");
		return NULL;
	}
	if (orch_task_blank(task)) {
		*status = AHP__STATUS__ERR_BAD_REQUEST;
		snprintf(err, errlen, "task is only white space");
		return NULL;
	}
	if (o->n_runs >= ORCH_RUNS_MAX) {
		*status = AHP__STATUS__ERR_LIMIT;
		snprintf(err, errlen, "%d runs are already queued or running; try later",
		         ORCH_RUNS_MAX);
		return NULL;
	}
	char id[ORCH_RUN_ID_MAX];
	ahp_random_id("r-", id, sizeof id);
	orch_run_t *run = s_new(o, id, profile);
	if (run == NULL) {
		*status = AHP__STATUS__ERR_INTERNAL;
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	run->created_ms = ahp_now_ms();
	run->state = ORCH_QUEUED;
	if (orch_journal_run_create(o->journal, id, profile, task, run->created_ms) != 0)
		orch_journal_failed(o, "run create");
	orch_run_event(run, "state", json_pack("{s:s, s:s}", "profile", profile, "task", task),
	               "[run] queued (profile %s)", profile);
	s_link(run);
	orch_runs_schedule(o);
	return run;
}

/* --- replay --- */

typedef struct {
	orch_run_t *run;
	const char *task;
	int pending;      /* 0 none, 1 model step, 2 tool step */
	int failed_model; /* the pending model step completed with an error */
	int final;        /* the last model reply had no tool calls */
	int bad;
	char err[200];
	uint32_t steps;
	char *answer; /* content of the final reply, when the last step is one */
} s_replay_t;

static int
s_replay_bad(s_replay_t *rp, uint32_t seq, const char *why)
{
	rp->bad = 1;
	snprintf(rp->err, sizeof rp->err, "journal step %u: %s", seq, why);
	return 1;
}

static int
s_replay_step(void *arg, const orch_step_row_t *row)
{
	s_replay_t *rp = arg;
	orch_run_t *run = rp->run;
	if (rp->pending)
		return s_replay_bad(rp, row->seq, "follows an unfinished step");
	rp->steps++;
	run->seq = row->seq;
	json_error_t jerr;
	if (strcmp(row->kind, "model") == 0) {
		if (run->n_messages == 0) {
			json_t *intent = json_loads(row->intent, 0, &jerr);
			json_t *sys = json_object_get(intent, "system");
			int rc = s_conversation_init(
			    run, sys ? json_string_value(sys) : run->profile->system_prompt,
			    rp->task);
			json_decref(intent);
			if (rc != 0)
				return s_replay_bad(rp, row->seq, s_conv_too_big);
		}
		run->model_calls++;
		rp->final = 0;
		if (!row->completed || row->status != 0) {
			rp->pending = 1;
			rp->failed_model = row->completed;
			run->cur_seq = row->seq;
			return 0;
		}
		json_t *res = json_loads(row->result, 0, &jerr);
		json_t *msg = json_object_get(res, "message");
		if (!json_is_object(msg)) {
			json_decref(res);
			return s_replay_bad(rp, row->seq, "model result has no message");
		}
		if (s_conv_append(run, msg) != 0) {
			json_decref(res);
			return s_replay_bad(rp, row->seq, s_conv_too_big);
		}
		run->tokens += (uint64_t)json_integer_value(json_object_get(res, "tokens"));
		json_t *calls = json_object_get(msg, "tool_calls");
		json_decref(run->calls);
		run->calls = json_array_size(calls) ? json_incref(calls) : NULL;
		run->next_call = 0;
		if (run->calls != NULL) {
			run->turns++;
		} else {
			const char *content = json_string_value(json_object_get(msg, "content"));
			rp->final = 1;
			free(rp->answer);
			rp->answer = strdup(content ? content : "");
		}
		json_decref(res);
		return 0;
	}
	/* tool step */
	run->tool_calls++;
	if (run->calls == NULL || run->next_call >= json_array_size(run->calls))
		return s_replay_bad(rp, row->seq, "tool step without a matching tool call");
	json_t *intent = json_loads(row->intent, 0, &jerr);
	const char *id = json_string_value(json_object_get(intent, "tool_call_id"));
	const char *name = json_string_value(json_object_get(intent, "name"));
	json_t *tc = json_array_get(run->calls, run->next_call);
	if (id == NULL || s_call_str(tc, "id") == NULL || strcmp(id, s_call_str(tc, "id")) != 0) {
		json_decref(intent);
		return s_replay_bad(rp, row->seq, "tool step does not match the model's tool call");
	}
	if (name != NULL && strcmp(name, "exec") == 0)
		run->sbx_used = 1;
	json_decref(intent);
	if (!row->completed) {
		rp->pending = 2;
		run->cur_seq = row->seq;
		return 0;
	}
	if (s_conv_append_new(run, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id",
	                                     s_call_str(tc, "id"), "content",
	                                     row->result ? row->result : "{}")) != 0)
		return s_replay_bad(rp, row->seq, s_conv_too_big);
	run->next_call++;
	return 0;
}

orch_run_t *
orch_run_restore(orch_t *o, const orch_run_row_t *row, int resume, int *status, char *err,
                 size_t errlen)
{
	if (orch_run_find(o, row->id) != NULL) {
		*status = AHP__STATUS__ERR_INVALID_STATE;
		snprintf(err, errlen, "run %s is already active", row->id);
		return NULL;
	}
	int state = orch_state_parse(row->state);
	if (resume && state != ORCH_FAILED) {
		*status = AHP__STATUS__ERR_INVALID_STATE;
		snprintf(err, errlen, "run %s is %s; only a failed run can be resumed", row->id,
		         row->state);
		return NULL;
	}
	/* The run may have failed earlier in this very turn: its object waits
	 * on the ended list to be freed, and would then destroy the sandbox the
	 * new object is about to use. Finish its cleanup now, before the new
	 * object sends anything: commit the failure (the destroy must follow a
	 * durable end, as in orch_runs_reap_ended) and send the destroy, which
	 * sandboxd handles before the new object's requests on this socket. */
	orch_run_t *old = s_find_ended(o, row->id);
	if (old != NULL && old->sbx_used) {
		if (orch_journal_commit(o->journal) != 0)
			orch_journal_failed(o, "commit");
		orch_sbx_destroy(o, old->id);
		old->sbx_used = 0;
	}
	orch_run_t *run = s_new(o, row->id, row->profile);
	if (run == NULL) {
		*status = AHP__STATUS__ERR_INTERNAL;
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	run->created_ms = row->created_ms;
	if (orch_journal_event_last_seq(o->journal, row->id, &run->event_seq) != 0)
		orch_journal_failed(o, "reading events");
	if (state == ORCH_QUEUED) {
		run->state = ORCH_QUEUED;
		s_link(run);
		orch_runs_schedule(o);
		return run;
	}
	if (s_bind_profile(run) != 0) {
		if (resume) {
			*status = AHP__STATUS__ERR_NOT_FOUND;
			snprintf(err, errlen, "profile '%.64s' is not loaded", row->profile);
			orch_run_free(&run);
			return NULL;
		}
	}
	int was = state;
	run->state = ORCH_RUNNING;
	o->n_running++;
	s_link(run);
	if (run->profile == NULL) {
		char why[160];
		snprintf(why, sizeof why, "profile %.64s is no longer loaded", row->profile);
		s_finish(run, ORCH_FAILED, why);
		return run;
	}

	s_replay_t rp = {.run = run, .task = row->task};
	if (orch_journal_steps_foreach(o->journal, row->id, s_replay_step, &rp) != 0)
		orch_journal_failed(o, "reading steps");
	if (!rp.bad && run->n_messages == 0 &&
	    s_conversation_init(run, run->profile->system_prompt, row->task) != 0) {
		rp.bad = 1;
		snprintf(rp.err, sizeof rp.err, "%s", s_conv_too_big);
	}
	orch_run_event(run, "state",
	               json_pack("{s:s, s:s, s:i, s:b}", "from", orch_state_str(was), "to",
	                         "running", "steps_replayed", (int)rp.steps, "resume", resume),
	               resume ? "[run] failed → running (resumed; %u journaled steps reused)"
	                      : "[run] restarted → running (%u journaled steps replayed)",
	               rp.steps);
	if (rp.bad) {
		free(rp.answer);
		s_finish(run, ORCH_FAILED, rp.err);
		return run;
	}
	s_save(run, NULL, NULL);
	if (!rp.final) {
		free(rp.answer);
		rp.answer = NULL;
	}
	if (rp.pending == 1) {
		/* A model call whose reply never reached the journal is sent again;
		 * a failed one is retried (resume). */
		if (rp.failed_model &&
		    orch_journal_step_reopen(o->journal, run->id, run->cur_seq) != 0)
			orch_journal_failed(o, "step reopen");
		run->attempt = 0;
		run->phase = PH_MODEL_DUE;
		orch_post(o, run);
		return run;
	}
	if (rp.pending == 2) {
		s_tool_begin(run, 1);
		s_advance(run);
		return run;
	}
	if (rp.final) {
		s_finish(run, ORCH_SUCCEEDED, rp.answer ? rp.answer : "");
		free(rp.answer);
		return run;
	}
	s_advance(run);
	return run;
}

long
orch_runs_timers(orch_t *o, int64_t now, long max)
{
	long next = max;
	/* A timeout can end its run and start a queued one that fails at once,
	 * unlinking runs mid-walk: collect the timed-out runs first, then
	 * handle them (ended runs stay allocated until the end of the turn). */
	orch_run_t *due = NULL, **due_tail = &due;
	for (orch_run_t *r = o->runs; r != NULL; r = r->next) {
		if (r->phase == PH_MODEL_BACKOFF || r->phase == PH_SBX_BACKOFF) {
			if (r->due_ms <= now) {
				r->phase = r->phase == PH_MODEL_BACKOFF ? PH_MODEL_DUE : PH_SBX_DUE;
				orch_post(o, r);
			} else if (r->due_ms - now < next) {
				next = (long)(r->due_ms - now);
			}
		} else if (r->phase == PH_SBX_INFLIGHT) {
			if (r->sbx_deadline <= now) {
				r->due_next = NULL;
				*due_tail = r;
				due_tail = &r->due_next;
			} else if (r->sbx_deadline - now < next) {
				next = (long)(r->sbx_deadline - now);
			}
		}
	}
	for (orch_run_t *r = due, *nx; r != NULL; r = nx) {
		nx = r->due_next;
		r->due_next = NULL;
		if (r->phase == PH_SBX_INFLIGHT)
			orch_run_sbx_done(r, AHP__STATUS__ERR_TIMEOUT,
			                  "sandboxd did not answer in time", NULL);
	}
	return next;
}

void
orch_run_post_commit(orch_run_t *run)
{
	if (run->state != ORCH_RUNNING)
		return;
	if (run->phase == PH_MODEL_DUE)
		s_model_send(run);
	else if (run->phase == PH_SBX_DUE)
		orch_sbx_send(run);
}
