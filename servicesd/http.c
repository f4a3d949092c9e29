/* servicesd: the HTTP request a handler builds (header lines, URL from escaped segments). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "svc.h"

/* A header line is a request's header, not an upstream's input: this bounds a bug, not an
 * attack (secrets are at most 64 KiB). */
#define S_HEADER_MAX (72 * 1024)

int
svc_http_header(svc_http_t *h, const char *fmt, ...)
{
	va_list ap;
	if (h == NULL || h->n_headers < 0 || h->n_headers >= SVC_HTTP_HEADERS_MAX)
		return -1;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || n > S_HEADER_MAX)
		return -1;
	char *line = malloc((size_t)n + 1);
	if (line == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(line, (size_t)n + 1, fmt, ap);
	va_end(ap);
	/* A CR or LF would end the line and start another header (a token with a newline in
	 * it); a NUL would cut it short. strlen < n finds the NUL. */
	if (strlen(line) != (size_t)n || strpbrk(line, "\r\n") != NULL) {
		explicit_bzero(line, (size_t)n);
		free(line);
		return -1;
	}
	h->headers[h->n_headers++] = line;
	return 0;
}

void
svc_http_free(svc_http_t *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < h->n_headers && i < SVC_HTTP_HEADERS_MAX; i++) {
		if (h->headers[i] != NULL) {
			explicit_bzero(h->headers[i], strlen(h->headers[i]));
			free(h->headers[i]);
		}
	}
	free(h->url);
	free(h->body);
	memset(h, 0, sizeof *h);
}

/* One path segment, percent-encoded: curl_easy_escape keeps only RFC 3986's unreserved
 * characters (ALPHA DIGIT - . _ ~), so '/', '?', '#', '%' and spaces are encoded; a segment
 * of dots only ("." or "..") would be removed by dot-segment normalisation (RFC 3986
 * 5.2.4, which libcurl applies), so its dots are encoded too. Caller frees with free(). */
static char *
s_segment(const char *seg)
{
	size_t n = strlen(seg);
	if (n > 0 && strspn(seg, ".") == n) {
		char *out = malloc(n * 3 + 1);
		if (out == NULL)
			return NULL;
		for (size_t i = 0; i < n; i++)
			memcpy(out + i * 3, "%2E", 3);
		out[n * 3] = '\0';
		return out;
	}
	char *e = curl_easy_escape(NULL, seg, (int)n);
	if (e == NULL)
		return NULL;
	char *out = strdup(e);
	curl_free(e);
	return out;
}

int
svc_path_segment_check(const char *value, const char *field, svc_error_t *err)
{
	size_t n = value != NULL ? strlen(value) : 0;
	if (n == 0 || strspn(value, ".") == n)
		return svc_error(
		    err, "validation", 0, field,
		    "%s: must not be empty, \".\" or \"..\" (it is a URL path segment)", field);
	return 0;
}

char *
svc_url_join(const char *base, ...)
{
	va_list ap;
	if (base == NULL)
		return NULL;
	size_t blen = strlen(base);
	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	size_t len = blen;
	char *out = malloc(blen + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, base, blen);
	out[len] = '\0';
	va_start(ap, base);
	for (const char *seg = va_arg(ap, const char *); seg != NULL;
	     seg = va_arg(ap, const char *)) {
		if (strlen(seg) > INT32_MAX / 3)
			goto fail;
		char *e = s_segment(seg);
		if (e == NULL)
			goto fail;
		size_t elen = strlen(e);
		char *grown = realloc(out, len + 1 + elen + 1);
		if (grown == NULL) {
			free(e);
			goto fail;
		}
		out = grown;
		out[len++] = '/';
		memcpy(out + len, e, elen);
		len += elen;
		out[len] = '\0';
		free(e);
	}
	va_end(ap);
	return out;
fail:
	va_end(ap);
	free(out);
	return NULL;
}
