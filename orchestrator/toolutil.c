/* orchestrator: helpers every tool uses — typed tool errors, JSON strings of untrusted text. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch.h"

json_t *
orch_json_textn(const char *s, size_t len)
{
	json_t *j = json_stringn(s, len);
	if (j != NULL)
		return j;
	/* Not valid UTF-8 (or a NUL inside): replace rather than fail. */
	size_t n = 0;
	char *clean = ahp_utf8_sanitize(s, len, 0, &n, NULL);
	if (clean == NULL)
		return NULL;
	j = json_stringn(clean, n);
	free(clean);
	return j;
}

json_t *
orch_json_text(const char *s)
{
	return orch_json_textn(s ? s : "", s ? strlen(s) : 0);
}

json_t *
orch_tool_error(const char *status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* vsnprintf may have cut a UTF-8 sequence, and fmt's arguments may be
	 * untrusted: the message is sanitized either way. */
	return json_pack("{s:{s:s, s:o}}", "error", "status", status, "message",
	                 orch_json_text(msg));
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
