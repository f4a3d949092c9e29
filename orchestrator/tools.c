/* orchestrator: the tool catalogue offered to the model, and helpers shared by the tools. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch.h"

/* Tools this orchestrator can run. A profile may list others (their daemons
 * arrive later); those are never offered. */
static const char *const s_available[] = {"skill", "exec", NULL};

static json_t *
s_def_skill(void)
{
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

static json_t *
s_def_exec(void)
{
	return json_pack(
	    "{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}}, s:[s]}}}", "type", "function", "function",
	    "name", "exec", "description",
	    "Run a shell command (/bin/sh -c) in the agent's sandbox. The working directory "
	    "persists between calls; /workspace is writable. Returns exit_code, stdout, stderr, "
	    "truncated, cwd and duration_ms.",
	    "parameters", "type", "object", "properties", "command", "type", "string",
	    "description", "The command line", "required", "command");
}

int
orch_tool_offered(const ahp_profile_t *p, const char *name)
{
	int known = 0;
	for (int i = 0; s_available[i] != NULL; i++)
		if (strcmp(s_available[i], name) == 0)
			known = 1;
	if (!known || !ahp_profile_has_tool(p, name))
		return 0;
	/* A skill tool without a skills directory would only return errors. */
	if (strcmp(name, "skill") == 0 && p->skills_dir == NULL)
		return 0;
	return 1;
}

json_t *
orch_tools_for(const ahp_profile_t *p)
{
	json_t *tools = json_array();
	if (tools == NULL)
		return NULL;
	if (orch_tool_offered(p, "skill"))
		json_array_append_new(tools, s_def_skill());
	if (orch_tool_offered(p, "exec"))
		json_array_append_new(tools, s_def_exec());
	return tools;
}

json_t *
orch_tool_error(const char *status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char *clean = ahp_utf8_sanitize((const uint8_t *)msg, strlen(msg), 0, NULL, NULL);
	json_t *e = json_pack("{s:{s:s, s:s}}", "error", "status", status, "message",
	                      clean ? clean : "error");
	free(clean);
	return e;
}

const char *
orch_fmt_size(uint64_t n, char *buf, size_t len)
{
	if (n < 1024)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else if (n < 1024 * 1024)
		snprintf(buf, len, "%.1f KB", (double)n / 1024.0);
	else
		snprintf(buf, len, "%.1f MB", (double)n / (1024.0 * 1024.0));
	return buf;
}
