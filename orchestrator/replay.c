/* orchestrator: rebuilding a run from its journal — the conversation, the counters and the
 * step to continue with — without calling the model or running a tool again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch.h"

typedef struct {
	orch_run_t *run;
	const char *task;
	orch_replay_t *rp;
} s_ctx_t;

static int
s_bad(orch_replay_t *rp, uint32_t seq, const char *why)
{
	rp->bad = 1;
	snprintf(rp->err, sizeof rp->err, ORCH_WHY_JOURNAL "%u: %s", seq, why);
	return 1;
}

static int
s_model_step(s_ctx_t *c, const orch_step_row_t *row)
{
	orch_run_t *run = c->run;
	orch_replay_t *rp = c->rp;
	json_error_t jerr;
	if (run->conv.n_messages == 0) {
		/* The first call recorded the system prompt: rebuild exactly the
		 * conversation that was started, even after a profile reload. */
		json_t *intent = json_loads(row->intent, 0, &jerr);
		json_t *sys = json_object_get(intent, "system");
		int rc = orch_conv_init(&run->conv, run->profile->model_name,
		                        sys ? json_string_value(sys) : run->profile->system_prompt,
		                        c->task);
		json_decref(intent);
		if (rc != 0)
			return s_bad(rp, row->seq, ORCH_WHY_CONV_TOO_BIG);
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
		return s_bad(rp, row->seq, "model result has no message");
	}
	if (orch_conv_append(&run->conv, msg) != 0) {
		json_decref(res);
		return s_bad(rp, row->seq, ORCH_WHY_CONV_TOO_BIG);
	}
	run->tokens = orch_tokens_add(
	    run->tokens, orch_tokens_clamp(json_integer_value(json_object_get(res, "tokens"))));
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

static int
s_tool_step(s_ctx_t *c, const orch_step_row_t *row)
{
	orch_run_t *run = c->run;
	orch_replay_t *rp = c->rp;
	json_error_t jerr;
	run->tool_calls++;
	if (run->calls == NULL || run->next_call >= json_array_size(run->calls))
		return s_bad(rp, row->seq, "tool step without a matching tool call");
	json_t *intent = json_loads(row->intent, 0, &jerr);
	const char *id = json_string_value(json_object_get(intent, "tool_call_id"));
	const char *name = json_string_value(json_object_get(intent, "name"));
	json_t *tc = json_array_get(run->calls, run->next_call);
	const char *tcid = orch_call_str(tc, "id");
	if (id == NULL || tcid == NULL || strcmp(id, tcid) != 0) {
		json_decref(intent);
		return s_bad(rp, row->seq, "tool step does not match the model's tool call");
	}
	const orch_tool_t *t = orch_tool_find(name);
	if (t != NULL && t->replayed != NULL)
		t->replayed(run, intent);
	json_decref(intent);
	if (!row->completed) {
		rp->pending = 2;
		run->cur_seq = row->seq;
		return 0;
	}
	if (row->status != 0 && row->result != NULL && strstr(row->result, "\"platform_error\"")) {
		json_t *res = json_loads(row->result, 0, &jerr);
		int platform = json_object_get(res, "platform_error") != NULL;
		json_decref(res);
		if (platform) {
			/* The platform failed this step before it started; the
			 * model never saw it. Resume starts it again. */
			rp->pending = 2;
			rp->retry_tool = 1;
			run->cur_seq = row->seq;
			return 0;
		}
	}
	if (orch_conv_append_new(&run->conv,
	                         json_pack("{s:s, s:s, s:o}", "role", "tool", "tool_call_id", tcid,
	                                   "content",
	                                   orch_json_text(row->result ? row->result : "{}"))) != 0)
		return s_bad(rp, row->seq, ORCH_WHY_CONV_TOO_BIG);
	run->next_call++;
	return 0;
}

static int
s_step(void *arg, const orch_step_row_t *row)
{
	s_ctx_t *c = arg;
	if (c->rp->pending)
		return s_bad(c->rp, row->seq, "follows an unfinished step");
	c->rp->steps++;
	c->run->seq = row->seq;
	if (strcmp(row->kind, "model") == 0)
		return s_model_step(c, row);
	return s_tool_step(c, row);
}

void
orch_replay(orch_run_t *run, const char *task, orch_replay_t *rp)
{
	s_ctx_t c = {.run = run, .task = task, .rp = rp};
	if (orch_journal_steps_foreach(run->o->journal, run->id, s_step, &c) != 0)
		orch_journal_failed(run->o, "reading steps");
	if (!rp->bad && run->conv.n_messages == 0 &&
	    orch_conv_init(&run->conv, run->profile->model_name, run->profile->system_prompt,
	                   task) != 0) {
		rp->bad = 1;
		snprintf(rp->err, sizeof rp->err, "%s", ORCH_WHY_CONV_TOO_BIG);
	}
}
