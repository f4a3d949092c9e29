/* orchestrator: the tool table, the catalogue offered to each profile, and the approval gate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch.h"

/* --- the skill tool (stateless: it runs at once) --- */

/* A skill tool without a skills directory would only return errors. */
static int
s_skill_usable(const ahp_profile_t *p)
{
	return p->skills_dir != NULL;
}

static json_t *
s_skill_definition(orch_t *o, const ahp_profile_t *p)
{
	(void)o;
	(void)p;
	return json_pack(
	    "{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:[sss], s:s}, s:{s:s, s:s}, "
	    "s:{s:s, s:s}}, s:[s]}}}",
	    "type", "function", "function", "name", "skill", "description",
	    "Read the agent's skill files (Markdown instructions). action=list returns every "
	    "SKILL.md path; action=read returns one file's content (path relative to the skills "
	    "directory); action=search finds lines containing query (case-insensitive).",
	    "parameters", "type", "object", "properties", "action", "type", "string", "enum",
	    "list", "read", "search", "description", "What to do", "path", "type", "string",
	    "description", "File to read, e.g. release-notes/SKILL.md", "query", "type", "string",
	    "description", "Text to search for", "required", "action");
}

static void
s_skill_start(orch_run_t *run, const json_t *args, int mode)
{
	(void)mode; /* reading a file again after a restart is harmless */
	char summary[512];
	json_t *res = orch_skill_run(run->profile, args, summary, sizeof summary);
	orch_run_event(run, "skill", json_pack("{s:O, s:O}", "arguments", args, "result", res),
	               "[skill] %s", summary);
	orch_tool_done(run, res, json_object_get(res, "error") ? AHP__STATUS__ERR_BAD_REQUEST : 0);
}

static const orch_tool_t s_tool_skill = {
    .name = "skill",
    .slot = ORCH_TOOL_SKILL,
    .usable = s_skill_usable,
    .definition = s_skill_definition,
    .start = s_skill_start,
};

/* --- ask_human: a free-form question for a person, answered with approvald --- */

#define ASK_QUESTION_MAX 4000 /* bytes of a question */

static json_t *
s_ask_definition(orch_t *o, const ahp_profile_t *p)
{
	(void)o;
	(void)p;
	return json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s, s:i, s:i}}, s:[s]}}}", "type",
	                 "function", "function", "name", "ask_human", "description",
	                 "Ask a person a question and wait for the answer (it may take hours). "
	                 "Returns {answer, by}, or an error when nobody answered in time.",
	                 "parameters", "type", "object", "properties", "question", "type", "string",
	                 "description", "The question, in full", "minLength", 1, "maxLength",
	                 ASK_QUESTION_MAX, "required", "question");
}

static void
s_ask_start(orch_run_t *run, const json_t *args, int mode)
{
	const json_t *jq = json_object_get(args, "question");
	const char *q = json_string_value(jq);
	size_t n = json_string_length(jq);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)args, k, v)
	{
		if (strcmp(k, "question") != 0) {
			orch_tool_done(run,
			               orch_tool_error("bad_request",
			                               "unknown argument '%.*s': ask_human takes "
			                               "question only",
			                               AHP_UTF8_CUT(k, 64)),
			               AHP__STATUS__ERR_BAD_REQUEST);
			return;
		}
	}
	if (q == NULL || n == 0 || n > ASK_QUESTION_MAX || strlen(q) != n || ahp_text_blank(q)) {
		orch_tool_done(run,
		               orch_tool_error("bad_request",
		                               "argument 'question' must be a non-blank string of "
		                               "1-%d bytes without NUL characters",
		                               ASK_QUESTION_MAX),
		               AHP__STATUS__ERR_BAD_REQUEST);
		return;
	}
	/* Asked again after a restart: approvald's Create is idempotent. */
	orch_gate_question(run, q, mode);
}

const orch_tool_t orch_tool_ask = {
    .name = "ask_human",
    .slot = ORCH_TOOL_ASK,
    .definition = s_ask_definition,
    .start = s_ask_start,
};

/* Tools this orchestrator can run. A profile may list others (their daemons
 * arrive later); those are never offered, and a call to them is answered
 * with a typed not_found error. */
const orch_tool_t *const orch_tools[] = {&s_tool_skill, &orch_tool_exec, &orch_tool_service,
                                         &orch_tool_ask, NULL};

const orch_tool_t *
orch_tool_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (int i = 0; orch_tools[i] != NULL; i++)
		if (strcmp(orch_tools[i]->name, name) == 0)
			return orch_tools[i];
	return NULL;
}

const orch_tool_t *
orch_tool_offered(const ahp_profile_t *p, const char *name)
{
	const orch_tool_t *t = orch_tool_find(name);
	if (t == NULL || !ahp_profile_has_tool(p, name) || (t->usable != NULL && !t->usable(p)))
		return NULL;
	return t;
}

json_t *
orch_tools_for(orch_t *o, const ahp_profile_t *p)
{
	json_t *tools = json_array();
	if (tools == NULL)
		return NULL;
	for (int i = 0; orch_tools[i] != NULL; i++) {
		if (orch_tool_offered(p, orch_tools[i]->name) == NULL)
			continue;
		json_t *d = orch_tools[i]->definition(o, p);
		if (d != NULL)
			json_array_append_new(tools, d);
	}
	return tools;
}

const char *
orch_call_str(const json_t *tc, const char *field)
{
	if (strcmp(field, "id") == 0)
		return json_string_value(json_object_get(tc, "id"));
	return json_string_value(json_object_get(json_object_get(tc, "function"), field));
}

/* --- the approval gate --- */

const ahp_approval_t *
orch_tool_gate(const ahp_profile_t *p, const orch_tool_t *t, const json_t *args)
{
	const char *subject = t->subject != NULL ? t->subject(args) : NULL;
	/* A service call: `service:` rules gate it by the service it names,
	 * and match on that service's arguments (`{}` when it gives none). */
	const char *service = t->service != NULL ? t->service(args) : NULL;
	const json_t *on = args;
	if (t->service_args != NULL) {
		on = t->service_args(args);
		if (on == NULL)
			subject = "{}";
	}
	char *dump = NULL;
	if (subject == NULL) {
		dump = json_dumps(on, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		subject = dump != NULL ? dump : "";
	}
	const ahp_approval_t *a = ahp_profile_gate(p, t->name, service, subject);
	free(dump);
	return a;
}
