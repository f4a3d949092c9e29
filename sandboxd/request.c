/* sandboxd: the ranges of Create and Exec request fields, read from the one limits table. */
#include <stdio.h>
#include <string.h>

#include "ahp/limit_table.h"
#include "sbx.h"

/* 0 on the wire means "not set": the table's default. */
static int
s_limit(ahp_limit_id_t id, uint32_t v, uint32_t *out, char *err, size_t errlen)
{
	if (v == 0)
		v = ahp_limit(id)->def;
	if (ahp_limit_check(id, v, err, errlen) != 0)
		return -1;
	*out = v;
	return 0;
}

int
sbx_request_limits(const Ahp__Sbx__Limits *in, sbx_limits_t *out, char *err, size_t errlen)
{
	Ahp__Sbx__Limits zero = AHP__SBX__LIMITS__INIT;
	if (in == NULL)
		in = &zero;
	if (s_limit(AHP_LIMIT_MEMORY_MB, in->memory_mb, &out->memory_mb, err, errlen) ||
	    s_limit(AHP_LIMIT_PIDS_MAX, in->pids_max, &out->pids_max, err, errlen) ||
	    s_limit(AHP_LIMIT_CPU_SECONDS, in->cpu_seconds, &out->cpu_seconds, err, errlen) ||
	    s_limit(AHP_LIMIT_TIMEOUT_S, in->timeout_s, &out->timeout_s, err, errlen) ||
	    s_limit(AHP_LIMIT_OUTPUT_KB, in->output_kb, &out->output_kb, err, errlen) ||
	    s_limit(AHP_LIMIT_FILE_SIZE_MB, in->file_size_mb, &out->file_size_mb, err, errlen) ||
	    s_limit(AHP_LIMIT_OPEN_FILES, in->open_files, &out->open_files, err, errlen) ||
	    s_limit(AHP_LIMIT_DISK_MB, in->disk_mb, &out->disk_mb, err, errlen) ||
	    s_limit(AHP_LIMIT_CPUS_MILLI, in->cpus_milli, &out->cpus_milli, err, errlen))
		return -1;
	return 0;
}

void
sbx_default_limits(sbx_limits_t *out)
{
	out->memory_mb = AHP_LIM_MEMORY_MB_DEF;
	out->pids_max = AHP_LIM_PIDS_MAX_DEF;
	out->cpu_seconds = AHP_LIM_CPU_SECONDS_DEF;
	out->timeout_s = AHP_LIM_TIMEOUT_S_DEF;
	out->output_kb = AHP_LIM_OUTPUT_KB_DEF;
	out->file_size_mb = AHP_LIM_FILE_SIZE_MB_DEF;
	out->open_files = AHP_LIM_OPEN_FILES_DEF;
	out->disk_mb = AHP_LIM_DISK_MB_DEF;
	out->cpus_milli = AHP_LIM_CPUS_MILLI_DEF;
}

int
sbx_exec_request_range(const Ahp__Sbx__ExecRequest *er, char *err, size_t errlen)
{
	size_t cl = er->command ? strlen(er->command) : 0;
	if (cl == 0) {
		snprintf(err, errlen, "command is empty");
		return -1;
	}
	if (cl > AHP_LIM_EXEC_COMMAND_MAX) {
		snprintf(err, errlen, "command is %zu bytes, longer than %u", cl,
		         (unsigned)AHP_LIM_EXEC_COMMAND_MAX);
		return -1;
	}
	return ahp_limit_check(AHP_LIMIT_EXEC_TIMEOUT_S, er->timeout_s, err, errlen);
}
