/* The one limits table: every limit that more than one component checks (profile loader,
 * sandboxd's request validation, the orchestrator, orchctl) comes from here. Not named
 * limits.h: common/include/ahp is on the include path, where that would shadow <limits.h>. */
#ifndef AHP_LIMIT_TABLE_H
#define AHP_LIMIT_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The values are macros so that compile-time users (array sizes, #defines
 * such as SBX_OUTPUT_KB_MAX or EXEC_COMMAND_MAX) take them from here too; the
 * table in limit_table.c is built from the same macros, and docs/profiles.md is
 * checked against the table (tests/unit/test_limits.c).
 */

/* Per-sandbox limits: profile `sandbox:` and sandboxd's CreateRequest.limits. */
#define AHP_LIM_MEMORY_MB_MIN 16
#define AHP_LIM_MEMORY_MB_MAX 65536
#define AHP_LIM_MEMORY_MB_DEF 256
#define AHP_LIM_PIDS_MAX_MIN 8
#define AHP_LIM_PIDS_MAX_MAX 4096
#define AHP_LIM_PIDS_MAX_DEF 64
#define AHP_LIM_CPU_SECONDS_MIN 1
#define AHP_LIM_CPU_SECONDS_MAX 3600
#define AHP_LIM_CPU_SECONDS_DEF 10
#define AHP_LIM_TIMEOUT_S_MIN 1
#define AHP_LIM_TIMEOUT_S_MAX 3600
#define AHP_LIM_TIMEOUT_S_DEF 30
/* Per stream; both streams fit in one sandboxd reply under 4 MiB. */
#define AHP_LIM_OUTPUT_KB_MIN 1
#define AHP_LIM_OUTPUT_KB_MAX 1024
#define AHP_LIM_OUTPUT_KB_DEF 64
/* /workspace and /tmp together: the size of the sandbox's own filesystem. */
#define AHP_LIM_DISK_MB_MIN 16
#define AHP_LIM_DISK_MB_MAX 1048576
#define AHP_LIM_DISK_MB_DEF 1024
/* CPU bandwidth (cgroup cpu controller); the profile writes CPUs as a decimal. */
#define AHP_LIM_CPUS_MILLI_MIN 10
#define AHP_LIM_CPUS_MILLI_MAX 64000
#define AHP_LIM_CPUS_MILLI_DEF 1000
/* Create-request fields no profile sets (sandboxd applies the default). */
#define AHP_LIM_FILE_SIZE_MB_MIN 1
#define AHP_LIM_FILE_SIZE_MB_MAX 1048576
#define AHP_LIM_FILE_SIZE_MB_DEF 1024
#define AHP_LIM_OPEN_FILES_MIN 16
#define AHP_LIM_OPEN_FILES_MAX 65536
#define AHP_LIM_OPEN_FILES_DEF 1024

/* ExecRequest: the per-command timeout override (0 = the sandbox's timeout_s)
 * and the command itself. The command goes to /bin/sh -c as one argv string,
 * which the kernel caps at 128 KiB (MAX_ARG_STRLEN); 64 KiB stays under it. */
#define AHP_LIM_EXEC_TIMEOUT_S_MIN 0
#define AHP_LIM_EXEC_TIMEOUT_S_MAX AHP_LIM_TIMEOUT_S_MAX
#define AHP_LIM_EXEC_TIMEOUT_S_DEF 0
#define AHP_LIM_EXEC_COMMAND_MIN 1
#define AHP_LIM_EXEC_COMMAND_MAX (64 * 1024)
#define AHP_LIM_EXEC_COMMAND_DEF 0

/* Per-run limits: profile `limits:`, enforced by the orchestrator. */
#define AHP_LIM_MAX_TURNS_MIN 1
#define AHP_LIM_MAX_TURNS_MAX 1000
#define AHP_LIM_MAX_TURNS_DEF 30
#define AHP_LIM_MAX_MODEL_CALLS_MIN 1
#define AHP_LIM_MAX_MODEL_CALLS_MAX 10000
#define AHP_LIM_MAX_MODEL_CALLS_DEF 50

/* A submitted task: orchctl and the orchestrator's Submit. */
#define AHP_LIM_TASK_MIN 1
#define AHP_LIM_TASK_MAX (64 * 1024)
#define AHP_LIM_TASK_DEF 0

/* Egress rules (profile `egress[].paths`): path prefixes per rule and the length
 * of one; the profile loader checks them, credproxy matches within them. */
#define AHP_LIM_EGRESS_PATHS_MIN 1
#define AHP_LIM_EGRESS_PATHS_MAX 32
#define AHP_LIM_EGRESS_PATHS_DEF 0
#define AHP_LIM_EGRESS_PATH_MIN 1
#define AHP_LIM_EGRESS_PATH_MAX 1024
#define AHP_LIM_EGRESS_PATH_DEF 0

typedef enum {
	AHP_LIMIT_MEMORY_MB,
	AHP_LIMIT_PIDS_MAX,
	AHP_LIMIT_CPU_SECONDS,
	AHP_LIMIT_TIMEOUT_S,
	AHP_LIMIT_OUTPUT_KB,
	AHP_LIMIT_DISK_MB,
	AHP_LIMIT_CPUS_MILLI,
	AHP_LIMIT_FILE_SIZE_MB,
	AHP_LIMIT_OPEN_FILES,
	AHP_LIMIT_EXEC_TIMEOUT_S,
	AHP_LIMIT_EXEC_COMMAND,
	AHP_LIMIT_MAX_TURNS,
	AHP_LIMIT_MAX_MODEL_CALLS,
	AHP_LIMIT_TASK,
	AHP_LIMIT_EGRESS_PATHS,
	AHP_LIMIT_EGRESS_PATH,
	AHP_LIMIT__COUNT
} ahp_limit_id_t;

typedef struct {
	const char *name;       /* profile key path ("sandbox.output_kb") or request field */
	const char *unit;       /* "MiB", "KiB", "s", "bytes", "" */
	uint32_t min, max, def; /* def 0: no default (required, or "use another limit") */
	const char *checked_by; /* who checks it, for the reference */
	const char *doc;        /* one line for docs/profiles.md */
} ahp_limit_t;

/* The entry for id; NULL when id is out of range. Static storage. */
const ahp_limit_t *ahp_limit(ahp_limit_id_t id);
/* The entry named name (e.g. "sandbox.output_kb"); NULL when there is none. */
const ahp_limit_t *ahp_limit_by_name(const char *name);

/* 0 when min <= v <= max; else -1 with "<name> <v> is out of range (allowed
 * <min>..<max>)" in err (err may be NULL). The one range check every
 * component uses, so they cannot disagree. */
int ahp_limit_check(ahp_limit_id_t id, uint64_t v, char *err, size_t errlen);

/* Writes the table as the Markdown rows of docs/profiles.md's generated block
 * (between "<!-- limits:begin -->" and "<!-- limits:end -->"), header included. */
void ahp_limits_markdown(FILE *out);

#endif
