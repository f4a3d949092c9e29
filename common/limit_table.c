/* The one limits table (see ahp/limit_table.h): ranges, defaults and their reference rows. */
#include "ahp/limit_table.h"

#include <stdio.h>
#include <string.h>

#define S_ROW(id, nm, un, by, dc)                                                                  \
	[AHP_LIMIT_##id] = {.name = nm,                                                            \
	                    .unit = un,                                                            \
	                    .min = AHP_LIM_##id##_MIN,                                             \
	                    .max = AHP_LIM_##id##_MAX,                                             \
	                    .def = AHP_LIM_##id##_DEF,                                             \
	                    .checked_by = by,                                                      \
	                    .doc = dc}

static const ahp_limit_t s_limits[AHP_LIMIT__COUNT] = {
    S_ROW(MEMORY_MB, "sandbox.memory_mb", "MiB", "profile loader, sandboxd Create",
          "memory of the sandbox's cgroup (commands and /tmp together)"),
    S_ROW(PIDS_MAX, "sandbox.pids_max", "processes", "profile loader, sandboxd Create",
          "processes and threads alive at once in the sandbox"),
    S_ROW(CPU_SECONDS, "sandbox.cpu_seconds", "s", "profile loader, sandboxd Create",
          "CPU time of each process of a command (RLIMIT_CPU; all of them "
          "together: cpus x timeout_s)"),
    S_ROW(TIMEOUT_S, "sandbox.timeout_s", "s", "profile loader, sandboxd Create",
          "wall clock of one command; then everything in it is killed"),
    S_ROW(OUTPUT_KB, "sandbox.output_kb", "KiB", "profile loader, sandboxd Create",
          "stdout and stderr kept per command, each; the rest is cut (truncated)"),
    S_ROW(DISK_MB, "sandbox.disk_mb", "MiB", "profile loader, sandboxd Create",
          "what /workspace and /tmp may hold together (a filesystem of this size); "
          "then writes fail with ENOSPC"),
    S_ROW(CPUS_MILLI, "sandbox.cpus", "millicpus", "profile loader, sandboxd Create",
          "CPU bandwidth of the whole sandbox (cgroup cpu controller); the profile writes "
          "CPUs as a decimal, e.g. 0.5 = 500"),
    S_ROW(FILE_SIZE_MB, "create.file_size_mb", "MiB", "sandboxd Create",
          "largest file a command may write (not a profile field)"),
    S_ROW(OPEN_FILES, "create.open_files", "files", "sandboxd Create",
          "open files per process (not a profile field)"),
    S_ROW(EXEC_TIMEOUT_S, "exec.timeout_s", "s", "sandboxd Exec",
          "per-command override of sandbox.timeout_s; 0 keeps the sandbox's"),
    S_ROW(EXEC_COMMAND, "exec.command", "bytes", "orchestrator exec tool, sandboxd Exec",
          "length of one exec command"),
    S_ROW(MAX_TURNS, "limits.max_turns", "turns", "profile loader, orchestrator",
          "model replies with tool calls in one run; then the run fails"),
    S_ROW(MAX_MODEL_CALLS, "limits.max_model_calls", "calls", "profile loader, orchestrator",
          "model calls of one run (a retried request counts once); then the run fails"),
    S_ROW(TASK, "task", "bytes", "orchctl, orchestrator Submit",
          "length of a submitted task (not a profile field)"),
    S_ROW(EGRESS_PATHS, "egress[].paths", "prefixes", "profile loader",
          "path prefixes one egress rule allows; none written = any path"),
    S_ROW(EGRESS_PATH, "egress[].paths[]", "bytes", "profile loader", "length of one path prefix"),
};

const ahp_limit_t *
ahp_limit(ahp_limit_id_t id)
{
	if ((int)id < 0 || id >= AHP_LIMIT__COUNT)
		return NULL;
	return &s_limits[id];
}

const ahp_limit_t *
ahp_limit_by_name(const char *name)
{
	for (size_t i = 0; name && i < AHP_LIMIT__COUNT; i++)
		if (strcmp(s_limits[i].name, name) == 0)
			return &s_limits[i];
	return NULL;
}

int
ahp_limit_check(ahp_limit_id_t id, uint64_t v, char *err, size_t errlen)
{
	const ahp_limit_t *l = ahp_limit(id);
	if (l == NULL) {
		if (err && errlen)
			snprintf(err, errlen, "unknown limit %d", (int)id);
		return -1;
	}
	if (v >= l->min && v <= l->max)
		return 0;
	if (err && errlen)
		snprintf(err, errlen, "%s %llu is out of range (allowed %u..%u)", l->name,
		         (unsigned long long)v, l->min, l->max);
	return -1;
}

void
ahp_limits_markdown(FILE *out)
{
	fprintf(out, "| limit | unit | min | max | default | checked by | meaning |\n");
	fprintf(out, "|---|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < AHP_LIMIT__COUNT; i++) {
		const ahp_limit_t *l = &s_limits[i];
		char def[16];
		if (l->def == 0)
			snprintf(def, sizeof def, "-");
		else
			snprintf(def, sizeof def, "%u", l->def);
		fprintf(out, "| `%s` | %s | %u | %u | %s | %s | %s |\n", l->name, l->unit, l->min,
		        l->max, def, l->checked_by, l->doc);
	}
}
