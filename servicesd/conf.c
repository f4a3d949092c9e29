/* servicesd: services.conf — each service's upstream base URL, secret name and timeout. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "ahp/secrets.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "svc.h"

#define S_FILE_MAX (64 * 1024) /* the whole file */
#define S_LINE_MAX 4096        /* one line, bytes */
#define S_URL_MAX 2048

static int s_fail(char *err, size_t errlen, const char *path, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* "path:line: why" (line 0: "path: why") into err. Returns -1. */
static int
s_fail(char *err, size_t errlen, const char *path, unsigned line, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	if (err == NULL || errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	why[ahp_utf8_prefix(why, sizeof why - 1)] = '\0';
	if (line > 0)
		snprintf(err, errlen, "%s:%u: %s", path, line, why);
	else
		snprintf(err, errlen, "%s: %s", path, why);
	err[ahp_utf8_prefix(err, errlen - 1)] = '\0';
	return -1;
}

void
svc_conf_free(svc_conf_t *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->entries[i].url);
		free(c->entries[i].secret);
	}
	free(c->entries);
	c->entries = NULL;
	c->n = 0;
}

const svc_conf_entry_t *
svc_conf_find(const svc_conf_t *c, const svc_service_t *s)
{
	if (c == NULL || s == NULL)
		return NULL;
	for (size_t i = 0; i < c->n; i++)
		if (c->entries[i].service == s)
			return &c->entries[i];
	return NULL;
}

/* Checks a base URL with libcurl's parser: http or https, a host, no credentials, query or
 * fragment (the handlers append path segments to it). NULL when fine, else why. */
static const char *
s_url_problem(const char *url)
{
	static char why[128];
	const char *problem = NULL;
	char *part = NULL;
	/* Said plainly before libcurl's parser gives its own reason for "host:port". */
	if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
		return "url must start with http:// or https://";
	CURLU *u = curl_url();
	if (u == NULL)
		return "out of memory";
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK) {
		snprintf(why, sizeof why, "url is not a valid URL (%s)", curl_url_strerror(rc));
		problem = why;
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &part, 0) != CURLUE_OK ||
	    (strcmp(part, "http") != 0 && strcmp(part, "https") != 0)) {
		problem = "url must start with http:// or https://";
		goto out;
	}
	curl_free(part);
	part = NULL;
	if (curl_url_get(u, CURLUPART_HOST, &part, 0) != CURLUE_OK || part[0] == '\0') {
		problem = "url has no host";
		goto out;
	}
	curl_free(part);
	part = NULL;
	if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK) {
		problem = "url must not hold credentials (name a secret instead)";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK) {
		problem = "url must not have a query (it is a base for paths)";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK) {
		problem = "url must not have a fragment";
		goto out;
	}
out:
	curl_free(part);
	curl_url_cleanup(u);
	return problem;
}

/* Parses one line (NUL-terminated, comment and newline gone) into e. 0 / -1 with err. */
static int
s_parse_line(char *line, const char *path, unsigned ln, const svc_conf_t *c, svc_conf_entry_t *e,
             char *err, size_t errlen)
{
	char *save = NULL;
	char *name = strtok_r(line, " \t", &save);
	const char *url = NULL, *secret = NULL, *timeout = NULL;

	e->service = svc_find(name, strlen(name));
	if (e->service == NULL)
		return s_fail(err, errlen, path, ln, "unknown service \"%.*s\"",
		              AHP_UTF8_CUT(name, 64));
	if (svc_conf_find(c, e->service) != NULL)
		return s_fail(err, errlen, path, ln, "service %s is configured twice",
		              e->service->name);
	for (char *tok = strtok_r(NULL, " \t", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(tok, '=');
		const char **slot = NULL;
		if (eq == NULL)
			return s_fail(err, errlen, path, ln,
			              "expected key=value (url, secret, timeout_ms), got \"%.*s\"",
			              AHP_UTF8_CUT(tok, 64));
		*eq = '\0';
		if (strcmp(tok, "url") == 0)
			slot = &url;
		else if (strcmp(tok, "secret") == 0)
			slot = &secret;
		else if (strcmp(tok, "timeout_ms") == 0)
			slot = &timeout;
		else
			return s_fail(err, errlen, path, ln,
			              "unknown key \"%.*s\" (expected url, secret or timeout_ms)",
			              AHP_UTF8_CUT(tok, 64));
		if (*slot != NULL)
			return s_fail(err, errlen, path, ln, "%s is given twice", tok);
		*slot = eq + 1;
	}
	if (url == NULL)
		return s_fail(err, errlen, path, ln, "%s has no url=", e->service->name);
	size_t ulen = strlen(url);
	if (ulen > S_URL_MAX)
		return s_fail(err, errlen, path, ln, "url is longer than %d bytes", S_URL_MAX);
	const char *why = s_url_problem(url);
	if (why != NULL)
		return s_fail(err, errlen, path, ln, "%s: \"%.*s\"", why, AHP_UTF8_CUT(url, 128));
	while (ulen > 0 && url[ulen - 1] == '/')
		ulen--;
	if (secret != NULL && !ahp_secrets_name_valid(secret))
		return s_fail(err, errlen, path, ln,
		              "secret \"%.*s\" is not a valid secret name ([A-Za-z0-9._-]{1,128}, "
		              "not starting with '.')",
		              AHP_UTF8_CUT(secret, 64));
	e->timeout_ms = e->service->handler->timeout_ms;
	if (timeout != NULL) {
		long v;
		if (ahp_parse_long(timeout, 1, SVC_TIMEOUT_MAX_MS, &v) < 0)
			return s_fail(
			    err, errlen, path, ln,
			    "timeout_ms must be a number of milliseconds in 1..%d, got \"%.*s\"",
			    SVC_TIMEOUT_MAX_MS, AHP_UTF8_CUT(timeout, 32));
		e->timeout_ms = v;
	}
	if (secret == NULL)
		secret = e->service->handler->secret;
	e->url = strndup(url, ulen);
	e->secret = secret ? strdup(secret) : NULL;
	if (e->url == NULL || (secret != NULL && e->secret == NULL)) {
		free(e->url);
		free(e->secret);
		e->url = e->secret = NULL;
		return s_fail(err, errlen, path, ln, "out of memory");
	}
	return 0;
}

int
svc_conf_load(const char *path, svc_conf_t *out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	svc_conf_t c = {NULL, 0};
	char line[S_LINE_MAX + 1];

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (path == NULL || out == NULL)
		return s_fail(err, errlen, "services.conf", 0, "no path");
	if (ahp_read_file(path, S_FILE_MAX, &buf, &len) < 0) {
		if (errno == ENOENT) {
			out->entries = NULL;
			out->n = 0;
			return 0;
		}
		if (errno == EFBIG)
			return s_fail(err, errlen, path, 0, "larger than %d KiB",
			              S_FILE_MAX / 1024);
		return s_fail(err, errlen, path, 0, "%s", strerror(errno));
	}
	unsigned ln = 0;
	size_t pos = 0;
	int rc = -1;
	while (pos < len) {
		const char *start = buf + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - start) : len - pos;
		pos += n + (nl ? 1 : 0);
		ln++;
		if (n > S_LINE_MAX) {
			s_fail(err, errlen, path, ln, "line longer than %d bytes", S_LINE_MAX);
			goto out;
		}
		if (memchr(start, '\0', n) != NULL) {
			s_fail(err, errlen, path, ln, "NUL byte in the line");
			goto out;
		}
		memcpy(line, start, n);
		line[n] = '\0';
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		/* A '#' that starts a token starts a comment (URLs with '#' are refused). */
		for (char *p = line; *p; p++) {
			if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
				*p = '\0';
				break;
			}
		}
		if (line[strspn(line, " \t")] == '\0')
			continue;
		svc_conf_entry_t e;
		memset(&e, 0, sizeof e);
		if (s_parse_line(line, path, ln, &c, &e, err, errlen) < 0)
			goto out;
		svc_conf_entry_t *grown = realloc(c.entries, (c.n + 1) * sizeof *grown);
		if (grown == NULL) {
			free(e.url);
			free(e.secret);
			s_fail(err, errlen, path, ln, "out of memory");
			goto out;
		}
		c.entries = grown;
		c.entries[c.n++] = e;
	}
	rc = 0;
out:
	free(buf);
	if (rc < 0) {
		svc_conf_free(&c);
		return -1;
	}
	*out = c;
	return 0;
}
