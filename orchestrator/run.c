/* orchestrator: one state machine per run — it sequences model steps and tool steps, journals
 * each before acting, and applies the approval gate; tools live in their own files. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define ANSWER_TEXT_MAX 1500 /* bytes of the answer shown in its event line */
#define TOOLS_WAIT_MS 50     /* a run waiting for a tool's definition asks again after this */

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
	for (int i = 0; orch_tools[i] != NULL; i++)
		if (orch_tools[i]->free_state != NULL)
			orch_tools[i]->free_state(run);
	orch_gate_free(run);
	orch_conv_free(&run->conv);
	free(run->tools_text);
	json_decref(run->calls);
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

/* Writes one event of run_id: run is its object when it is in memory (its
 * event_seq is the last seq), NULL when it is not (the journal says). */
static void
s_vevent(orch_t *o, orch_run_t *run, const char *run_id, const char *kind, json_t *data,
         const char *fmt, va_list ap)
{
	char text[ORCH_EVENT_TEXT_MAX], step[16];
	vsnprintf(text, sizeof text, fmt, ap);
	/* vsnprintf may have cut a UTF-8 sequence; events are protobuf strings. */
	char *clean = ahp_utf8_sanitize((const uint8_t *)text, strlen(text), 0, NULL, NULL);
	char *d = data != NULL ? json_dumps(data, JSON_COMPACT) : NULL;
	json_decref(data);
	uint64_t seq;
	if (run != NULL) {
		seq = ++run->event_seq;
	} else {
		if (orch_journal_event_last_seq(o->journal, run_id, &seq) != 0)
			orch_journal_failed(o, "reading events");
		seq++;
	}
	if (orch_journal_event_add(o->journal, run_id, seq, ahp_now_ms(), kind, clean ? clean : "",
	                           d) != 0)
		orch_journal_failed(o, "event");
	ahp_log(AHP_LOG_INFO, run_id, run != NULL ? s_step_str(run, step, sizeof step) : NULL, "%s",
	        clean ? clean : "");
	free(clean);
	free(d);
}

void
orch_run_event(orch_run_t *run, const char *kind, json_t *data, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_vevent(run->o, run, run->id, kind, data, fmt, ap);
	va_end(ap);
}

void
orch_run_event_id(orch_t *o, const char *run_id, const char *kind, json_t *data, const char *fmt,
                  ...)
{
	/* The active object first: a run resumed this turn may also still
	 * wait on the ended list. */
	orch_run_t *run = orch_run_find(o, run_id);
	if (run == NULL)
		run = s_find_ended(o, run_id);
	va_list ap;
	va_start(ap, fmt);
	s_vevent(o, run, run_id, kind, data, fmt, ap);
	va_end(ap);
}

/* Journals a step's intent (stolen). -1 when it cannot be encoded (intent
 * NULL: a json_pack of something untrusted failed): the caller fails the
 * step or the run, never the daemon. A journal write failure is fatal. */
static int
s_step_intent(orch_run_t *run, const char *kind, json_t *intent)
{
	char *s = intent != NULL ? json_dumps(intent, JSON_COMPACT) : NULL;
	json_decref(intent);
	if (s == NULL)
		return -1;
	if (orch_journal_step_intent(run->o->journal, run->id, run->cur_seq, kind, s) != 0)
		orch_journal_failed(run->o, "step intent");
	free(s);
	return 0;
}

static void
s_step_complete(orch_run_t *run, int status, const char *result)
{
	if (orch_journal_step_complete(run->o->journal, run->id, run->cur_seq, status, result) != 0)
		orch_journal_failed(run->o, "step complete");
}

/* --- ending --- */

static void
s_finish(orch_run_t *run, int state, const char *raw)
{
	orch_t *o = run->o;
	int was = run->state;
	/* The answer or reason may quote untrusted text: store valid UTF-8. */
	char *clean = ahp_utf8_sanitize(raw, strlen(raw), 0, NULL, NULL);
	const char *text = clean != NULL ? clean : "(out of memory)";
	if (run->call != NULL)
		orch_model_abort(o, &run->call);
	run->state = state;
	run->phase = PH_ENDED;
	if (was == ORCH_RUNNING) /* a waiting run does not count (orch_run_wait) */
		o->n_running--;
	if (state == ORCH_SUCCEEDED) {
		s_save(run, NULL, text);
		size_t n = strlen(text);
		size_t cut = ahp_utf8_prefix(text, ANSWER_TEXT_MAX);
		orch_run_event(run, "answer", json_pack("{s:o}", "content", orch_json_text(text)),
		               "[answer] %.*s%s", (int)cut, text, n > cut ? " …" : "");
		orch_run_event(run, "state",
		               json_pack("{s:s, s:s, s:i, s:i, s:i, s:I}", "from",
		                         orch_state_str(was), "to", "succeeded", "model_calls",
		                         run->model_calls, "tool_calls", run->tool_calls, "turns",
		                         run->turns, "tokens", (json_int_t)run->tokens),
		               "[run] succeeded");
	} else {
		s_save(run, text, NULL);
		orch_run_event(run, "state",
		               json_pack("{s:s, s:s, s:o}", "from", orch_state_str(was), "to",
		                         orch_state_str(state), "reason", orch_json_text(text)),
		               state == ORCH_CANCELLED ? "[run] cancelled" : "[run] failed: %s",
		               text);
	}
	free(clean);
	s_unlink(run);
	run->ended_next = o->ended;
	o->ended = run;
	orch_runs_schedule(o);
}

/* Runs every tool's ended hook once (after the run's end is committed). */
static void
s_release_tools(orch_run_t *run)
{
	if (run->tools_released)
		return;
	run->tools_released = 1;
	orch_gate_ended(run);
	for (int i = 0; orch_tools[i] != NULL; i++)
		if (orch_tools[i]->ended != NULL)
			orch_tools[i]->ended(run);
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
		s_release_tools(run);
		orch_run_free(&run);
	}
}

void
orch_run_cancel(orch_run_t *run)
{
	/* A reply for an abandoned request is dropped: the run no longer waits. */
	s_finish(run, ORCH_CANCELLED, "cancelled by request");
}

/* --- model steps --- */

static void
s_model_begin(orch_run_t *run)
{
	const ahp_profile_t *p = run->profile;
	if (run->model_calls >= p->limits.max_model_calls) {
		char why[96];
		snprintf(why, sizeof why, ORCH_WHY_MAX_MODEL_CALLS "%u) reached",
		         p->limits.max_model_calls);
		s_finish(run, ORCH_FAILED, why);
		return;
	}
	run->cur_seq = ++run->seq;
	run->model_calls++;
	json_t *intent = json_pack("{s:i, s:o, s:i}", "call", run->model_calls, "model",
	                           orch_json_text(p->model), "messages", (int)run->conv.n_messages);
	/* The first call records the system prompt, so a resume after a
	 * profile reload rebuilds exactly the conversation that was started. */
	if (intent != NULL && run->model_calls == 1)
		json_object_set_new(intent, "system",
		                    p->system_prompt && *p->system_prompt
		                        ? orch_json_text(p->system_prompt)
		                        : json_null());
	if (s_step_intent(run, "model", intent) != 0) {
		s_finish(run, ORCH_FAILED, "cannot encode the model step's intent");
		return;
	}
	run->attempt = 0;
	run->phase = PH_MODEL_DUE;
	s_save(run, NULL, NULL);
	orch_post(run->o, run);
}

static void s_model_failed(orch_run_t *run, orch_model_result_t *res, const char *why);

static void
s_model_send(orch_run_t *run)
{
	/* The profile a run is bound to never changes under it: its tool
	 * definitions are encoded once, not at every model call. */
	if (!run->tools_made) {
		/* exec_service's definition is servicesd's: wait for it (a
		 * short backoff that is not an attempt), or fail resumably when
		 * servicesd cannot be reached. */
		char why[300];
		int ready = orch_service_tools_ready(run, why, sizeof why);
		if (ready == 0) {
			run->phase = PH_MODEL_BACKOFF;
			run->due_ms = ahp_mono_ms() + TOOLS_WAIT_MS;
			return;
		}
		if (ready < 0) {
			orch_model_result_t res = {0};
			char reason[400];
			snprintf(res.error, sizeof res.error, "%s", why);
			snprintf(reason, sizeof reason,
			         "model call %u: the exec_service tool cannot be described: %s",
			         run->model_calls, why);
			s_model_failed(run, &res, reason);
			return;
		}
		json_t *tools = orch_tools_for(run->o, run->profile);
		run->tools_text =
		    json_array_size(tools) > 0 ? json_dumps(tools, JSON_COMPACT) : NULL;
		json_decref(tools);
		run->tools_made = 1;
	}
	size_t len = 0;
	const char *body = orch_conv_request(&run->conv, run->tools_text, &len);
	run->attempt++;
	run->phase = PH_MODEL_INFLIGHT;
	run->call = body != NULL ? orch_model_start(run->o, run, body, len) : NULL;
	if (run->call == NULL) {
		orch_model_result_t res = {0};
		snprintf(res.error, sizeof res.error,
		         body != NULL
		             ? "cannot start the HTTP request to the gateway"
		             : "the request would grow over the 16 MiB conversation ceiling");
		orch_run_model_done(run, &res);
	}
}

/* The wait before attempt `attempt + 1`: exponential from retry_base_ms,
 * full jitter over the upper half, never over retry_max_ms. */
static long
s_backoff_ms(orch_t *o, int attempt)
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
	return wait / 2 + (long)(r % (uint32_t)(wait / 2 + 1));
}

/* Completes the model step as failed and fails the run with why. */
static void
s_model_failed(orch_run_t *run, orch_model_result_t *res, const char *why)
{
	json_t *r = json_pack("{s:o, s:i, s:i, s:I}", "error", orch_json_text(why), "http_status",
	                      (int)res->http_status, "attempts", run->attempt, "latency_ms",
	                      (json_int_t)res->latency_ms);
	/* What the model did say is kept for the record (a reply cut short). */
	if (r != NULL && res->message != NULL)
		json_object_set(r, "message", res->message);
	if (r != NULL && res->journal != NULL)
		json_object_update(r, res->journal);
	char *rs = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;
	json_decref(r);
	s_step_complete(run, AHP__STATUS__ERR_UNAVAILABLE,
	                rs != NULL ? rs : "{\"error\":\"model call failed\"}");
	free(rs);
	s_finish(run, ORCH_FAILED, why);
}

void
orch_run_model_done(orch_run_t *run, orch_model_result_t *res)
{
	orch_t *o = run->o;
	if (run->phase != PH_MODEL_INFLIGHT)
		return;
	run->phase = PH_IDLE;
	if (!res->ok) {
		char why[768];
		if (res->retryable && res->retry_after_ms > o->retry_max_ms) {
			/* retry_max_ms is the ceiling of any one wait: a server that
			 * asks for longer fails the step; resume tries again. */
			snprintf(
			    why, sizeof why,
			    "model call %u: the gateway asked to retry after %ld s "
			    "(Retry-After), over retry_max_ms (%ld ms): %s%s",
			    run->model_calls, (res->retry_after_ms + 999) / 1000, o->retry_max_ms,
			    res->http_status && res->http_status != 200 ? "HTTP " : "", res->error);
			s_model_failed(run, res, why);
			return;
		}
		if (res->retryable && run->attempt <= o->model_retries) {
			long wait = s_backoff_ms(o, run->attempt);
			if (res->retry_after_ms > wait)
				wait = res->retry_after_ms;
			orch_run_event(
			    run, "model",
			    json_pack("{s:i, s:i, s:i, s:o, s:I, s:I}", "call", run->model_calls,
			              "attempt", run->attempt, "http_status", (int)res->http_status,
			              "error", orch_json_text(res->error), "wait_ms",
			              (json_int_t)wait, "latency_ms", (json_int_t)res->latency_ms),
			    "[model] retry %d/%ld after %s (wait %ld ms)", run->attempt,
			    o->model_retries, res->error, wait);
			run->phase = PH_MODEL_BACKOFF;
			run->due_ms = ahp_mono_ms() + wait;
			return;
		}
		if (res->retryable)
			snprintf(why, sizeof why, "model call %u failed after %d attempts: %s%s",
			         run->model_calls, run->attempt,
			         res->http_status && res->http_status != 200 ? "HTTP " : "",
			         res->error);
		else
			snprintf(why, sizeof why, "model call %u failed: %s", run->model_calls,
			         res->error);
		s_model_failed(run, res, why);
		return;
	}

	json_t *msg = res->message;
	json_t *r = json_pack("{s:O, s:O?, s:I, s:I, s:i}", "message", msg, "usage", res->usage,
	                      "tokens", (json_int_t)res->tokens, "latency_ms",
	                      (json_int_t)res->latency_ms, "attempts", run->attempt);
	if (r != NULL && res->journal != NULL)
		json_object_update(r, res->journal);
	char *rs = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;
	json_decref(r);
	if (rs == NULL) {
		/* model.c hands over only encodable text; still, a reply that
		 * cannot be stored fails the step, never the daemon. */
		res->ok = 0;
		snprintf(res->error, sizeof res->error, "the model reply cannot be stored");
		json_t *keep = res->message;
		res->message = NULL;
		s_model_failed(run, res, "model reply cannot be stored (encoding failed)");
		res->message = keep;
		return;
	}
	s_step_complete(run, 0, rs);
	free(rs);
	run->tokens = orch_tokens_add(run->tokens, res->tokens);
	if (orch_conv_append(&run->conv, msg) != 0) {
		s_finish(run, ORCH_FAILED, ORCH_WHY_CONV_TOO_BIG);
		return;
	}

	json_t *calls = json_object_get(msg, "tool_calls");
	size_t n = json_array_size(calls);
	json_t *data =
	    json_pack("{s:i, s:O, s:O?, s:I, s:I, s:b}", "call", run->model_calls, "message", msg,
	              "usage", res->usage, "tokens", (json_int_t)res->tokens, "latency_ms",
	              (json_int_t)res->latency_ms, "sanitized", res->sanitized);
	const char *note = res->sanitized ? "; reply sanitized: text the platform cannot store "
	                                    "or show as sent was replaced with U+FFFD"
	                                  : "";
	if (n == 0) {
		orch_run_event(run, "model", data,
		               "[model] call %u → final answer (%llu tokens, %lld ms%s)",
		               run->model_calls, (unsigned long long)res->tokens,
		               (long long)res->latency_ms, note);
		const char *content = json_string_value(json_object_get(msg, "content"));
		s_finish(run, ORCH_SUCCEEDED, content ? content : "");
		return;
	}
	orch_run_event(run, "model", data,
	               "[model] call %u → %zu tool call%s (%llu tokens, %lld ms%s)",
	               run->model_calls, n, n == 1 ? "" : "s", (unsigned long long)res->tokens,
	               (long long)res->latency_ms, note);
	json_decref(run->calls);
	run->calls = json_incref(calls);
	run->next_call = 0;
	run->turns++;
	s_save(run, NULL, NULL);
	s_advance(run);
}

/* --- tool steps --- */

int
orch_tool_waiting(const orch_run_t *run)
{
	return run->state == ORCH_RUNNING &&
	       (run->phase == PH_TOOL_DUE || run->phase == PH_TOOL_INFLIGHT ||
	        run->phase == PH_TOOL_BACKOFF);
}

void
orch_tool_due(orch_run_t *run)
{
	run->phase = PH_TOOL_DUE;
	orch_post(run->o, run);
}

void
orch_tool_backoff(orch_run_t *run, int64_t due_ms)
{
	run->phase = PH_TOOL_BACKOFF;
	run->due_ms = due_ms;
}

void
orch_tool_inflight(orch_run_t *run)
{
	run->phase = PH_TOOL_INFLIGHT;
}

void
orch_tool_done(orch_run_t *run, json_t *result, int status)
{
	if (run->state != ORCH_RUNNING || run->phase == PH_ENDED)
		return;
	char *text = result != NULL ? json_dumps(result, JSON_COMPACT) : NULL;
	json_decref(result);
	if (text == NULL) {
		/* A result that cannot be encoded fails this step, never the
		 * daemon: the model is told, and a restart replays this text. */
		json_t *e = orch_tool_error("internal", "the tool's result could not be encoded");
		text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
		json_decref(e);
		status = AHP__STATUS__ERR_INTERNAL;
		if (text == NULL) {
			s_finish(run, ORCH_FAILED, "out of memory completing a tool step");
			return;
		}
	}
	s_step_complete(run, status, text);
	json_t *tc = json_array_get(run->calls, run->next_call);
	int rc = orch_conv_append_new(&run->conv,
	                              json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id",
	                                        orch_call_str(tc, "id"), "content", text));
	free(text);
	run->next_call++;
	run->phase = PH_IDLE;
	run->tool = NULL;
	if (rc != 0) {
		s_finish(run, ORCH_FAILED, ORCH_WHY_CONV_TOO_BIG);
		return;
	}
	s_save(run, NULL, NULL);
	if (!run->tool_sync)
		s_advance(run);
}

void
orch_tool_platform_failed(orch_run_t *run, int status, const char *fmt, ...)
{
	if (run->state != ORCH_RUNNING || run->phase == PH_ENDED)
		return;
	char msg[512], why[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const char *tool = run->tool != NULL ? run->tool->name : "tool";
	json_t *r = json_pack("{s:{s:s, s:o}}", "platform_error", "status", ahp_status_str(status),
	                      "message", orch_json_text(msg));
	char *text = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;
	json_decref(r);
	/* Journaled as failed before it started: the model never sees it, and
	 * resume starts the same step again. */
	s_step_complete(run, status ? status : AHP__STATUS__ERR_INTERNAL,
	                text != NULL ? text : "{\"platform_error\":{}}");
	free(text);
	run->phase = PH_IDLE;
	run->tool = NULL;
	snprintf(why, sizeof why, "platform failure in tool %s: %s", tool, msg);
	s_finish(run, ORCH_FAILED, why);
}

/* Starts tool call run->calls[next_call]. mode: enum orch_tool_mode. */
static void
s_tool_begin(orch_run_t *run, int mode)
{
	json_t *tc = json_array_get(run->calls, run->next_call);
	const char *name = orch_call_str(tc, "name");
	const char *argstr = orch_call_str(tc, "arguments");
	json_error_t jerr;
	json_t *args = argstr ? json_loads(argstr, JSON_DECODE_ANY, &jerr) : NULL;
	const ahp_approval_t *rule;
	if (mode == ORCH_TOOL_NEW) {
		run->cur_seq = ++run->seq;
		run->tool_calls++;
		/* Arguments that are not JSON are journaled as the raw string. */
		json_t *a = args ? json_incref(args) : orch_json_text(argstr ? argstr : "");
		json_t *intent = json_pack(
		    "{s:s, s:o, s:i, s:o}", "tool_call_id", orch_call_str(tc, "id"), "name",
		    orch_json_text(name ? name : ""), "index", (int)run->next_call, "arguments", a);
		if (s_step_intent(run, "tool", intent) != 0) {
			json_decref(args);
			s_finish(run, ORCH_FAILED, "cannot encode the tool step's intent");
			return;
		}
	}
	run->tool_sync = 1;
	/* Only the step pending at the restart was waiting: later ones gate by the profile. */
	int regate = mode != ORCH_TOOL_NEW && (run->regate || orch_gate_asked(run));
	run->regate = 0;
	const orch_tool_t *t = name != NULL ? orch_tool_offered(run->profile, name) : NULL;
	run->tool = t;
	if (t == NULL) {
		orch_run_event(run, "tool",
		               json_pack("{s:o?}", "name", name ? orch_json_text(name) : NULL),
		               "[tool] %.*s → not available to this agent",
		               AHP_UTF8_CUT(name ? name : "(none)", 100));
		if (name != NULL && strcmp(name, ORCH_INVALID_TOOL_NAME) == 0)
			orch_tool_done(
			    run,
			    orch_tool_error("not_found",
			                    "the tool call had no valid tool name (a name "
			                    "is 1-64 of A-Z a-z 0-9 _ -); this agent's "
			                    "tools are listed in the request"),
			    AHP__STATUS__ERR_NOT_FOUND);
		else
			orch_tool_done(run,
			               orch_tool_error("not_found",
			                               "tool '%.*s' is not available to this agent",
			                               AHP_UTF8_CUT(name ? name : "", 100)),
			               AHP__STATUS__ERR_NOT_FOUND);
	} else if (!json_is_object(args)) {
		/* Not JSON at all (jansson says why, e.g. a \u0000 escape), or
		 * JSON that is not an object: two different mistakes to report. */
		char why[200];
		if (args == NULL)
			snprintf(why, sizeof why, "arguments are not valid JSON: %s", jerr.text);
		else
			snprintf(why, sizeof why, "arguments must be a JSON object");
		orch_run_event(run, "tool",
		               json_pack("{s:s, s:o?, s:o}", "name", name, "arguments",
		                         argstr ? orch_json_text(argstr) : NULL, "error",
		                         orch_json_text(why)),
		               "[%s] bad arguments: %s", name, why);
		orch_tool_done(run, orch_tool_error("bad_request", "%s", why),
		               AHP__STATUS__ERR_BAD_REQUEST);
	} else if ((rule = orch_tool_gate(run->profile, t, args)) != NULL || regate) {
		/* Approval is enforced by the platform (invariant 5): the call
		 * waits for a human's decision on exactly these arguments. A step
		 * that already waited keeps waiting for that decision even when a
		 * reload took the rule away: the human was asked, and may be about
		 * to say no; it never runs on the strength of an edit alone. */
		orch_gate_begin(run, t, args, rule, mode);
	} else {
		t->start(run, args, mode);
	}
	json_decref(args);
	run->tool_sync = 0;
}

void
orch_tool_start_gated(orch_run_t *run, int mode)
{
	orch_run_unwait(run);
	if (run->state != ORCH_RUNNING || run->tool == NULL)
		return;
	json_t *tc = json_array_get(run->calls, run->next_call);
	const char *argstr = orch_call_str(tc, "arguments");
	json_t *args = argstr ? json_loads(argstr, JSON_DECODE_ANY, NULL) : NULL;
	run->phase = PH_IDLE;
	if (!json_is_object(args)) {
		/* The gate only ever sees an object: a journal that says
		 * otherwise is refused, never run. */
		json_decref(args);
		orch_tool_done(run, orch_tool_error("internal", "the step's arguments are lost"),
		               AHP__STATUS__ERR_INTERNAL);
		return;
	}
	int sync = run->tool_sync;
	run->tool_sync = 1;
	run->tool->start(run, args, mode);
	run->tool_sync = sync;
	json_decref(args);
	if (!sync)
		s_advance(run);
}

void
orch_run_wait(orch_run_t *run)
{
	if (run->state != ORCH_RUNNING)
		return;
	orch_t *o = run->o;
	run->state = ORCH_WAITING;
	o->n_running--;
	s_save(run, NULL, NULL);
	orch_run_event(run, "state",
	               json_pack("{s:s, s:s}", "from", "running", "to", "waiting_approval"),
	               "[run] running → waiting_approval");
	/* Nothing runs while a human decides: the sandbox's processes stop
	 * (its workspace stays), and another run may take the slot. */
	orch_exec_park(run);
	orch_runs_schedule(o);
}

void
orch_run_unwait(orch_run_t *run)
{
	if (run->state != ORCH_WAITING)
		return;
	run->state = ORCH_RUNNING;
	run->o->n_running++;
	s_save(run, NULL, NULL);
	orch_run_event(run, "state",
	               json_pack("{s:s, s:s}", "from", "waiting_approval", "to", "running"),
	               "[run] waiting_approval → running");
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
				snprintf(why, sizeof why, ORCH_WHY_MAX_TURNS "%u) reached",
				         run->profile->limits.max_turns);
				s_finish(run, ORCH_FAILED, why);
				return;
			}
			s_tool_begin(run, ORCH_TOOL_NEW);
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
	if (orch_conv_init(&run->conv, run->profile->model_name, run->profile->system_prompt,
	                   task) != 0) {
		s_finish(run, ORCH_FAILED, ORCH_WHY_CONV_TOO_BIG);
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
		const char *why = orch_profiles_why(o, profile);
		*status = AHP__STATUS__ERR_NOT_FOUND;
		if (why != NULL)
			snprintf(err, errlen, "profile '%.64s' is not loaded: %s", profile, why);
		else
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
	if (ahp_text_blank(task)) {
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
	ahp_random_id(ORCH_RUN_ID_PREFIX, id, sizeof id);
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

/* --- restore --- */

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
	if (old != NULL && !old->tools_released) {
		if (orch_journal_commit(o->journal) != 0)
			orch_journal_failed(o, "commit");
		s_release_tools(old);
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
	run->regate = was == ORCH_WAITING;
	run->state = ORCH_RUNNING;
	o->n_running++;
	s_link(run);
	if (run->profile == NULL) {
		char why[160];
		snprintf(why, sizeof why, "profile %.64s is no longer loaded", row->profile);
		s_finish(run, ORCH_FAILED, why);
		return run;
	}

	orch_replay_t rp = {0};
	orch_replay(run, row->task, &rp);
	if (!rp.bad && rp.retry_tool && !resume) {
		/* Only a resume retries a step the platform failed. */
		rp.bad = 1;
		snprintf(rp.err, sizeof rp.err,
		         "platform failure in journaled step %u; orchctl resume starts it again",
		         run->cur_seq);
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
		if (rp.retry_tool &&
		    orch_journal_step_reopen(o->journal, run->id, run->cur_seq) != 0)
			orch_journal_failed(o, "step reopen");
		s_tool_begin(run, rp.retry_tool ? ORCH_TOOL_RETRY : ORCH_TOOL_RESUMED);
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
	for (orch_run_t *r = o->runs; r != NULL; r = r->next) {
		if (r->phase == PH_GATE && r->due_ms != 0) {
			/* A Create approvald did not take yet. */
			if (r->due_ms <= now)
				orch_post(o, r);
			else if (r->due_ms - now < next)
				next = (long)(r->due_ms - now);
			continue;
		}
		if (r->phase != PH_MODEL_BACKOFF && r->phase != PH_TOOL_BACKOFF)
			continue;
		if (r->due_ms <= now) {
			r->phase = r->phase == PH_MODEL_BACKOFF ? PH_MODEL_DUE : PH_TOOL_DUE;
			orch_post(o, r);
		} else if (r->due_ms - now < next) {
			next = (long)(r->due_ms - now);
		}
	}
	/* Request deadlines live in the daemon clients; their callbacks may end
	 * runs, which the walk above no longer touches. */
	next = orch_sbx_timers(o, now, next);
	next = orch_appr_timers(o, now, next);
	return orch_svc_timers(o, now, next);
}

void
orch_run_post_commit(orch_run_t *run)
{
	if (run->phase == PH_GATE && (run->state == ORCH_RUNNING || run->state == ORCH_WAITING)) {
		orch_gate_send(run);
		return;
	}
	if (run->state != ORCH_RUNNING)
		return;
	if (run->phase == PH_MODEL_DUE)
		s_model_send(run);
	else if (run->phase == PH_TOOL_DUE && run->tool != NULL && run->tool->send != NULL)
		run->tool->send(run);
}
