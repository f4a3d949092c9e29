/* servicesd: typed errors for the model — HTTP statuses and libcurl transport errors. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "ahp/text.h"
#include "svc.h"

/* Copies text into dst (size bytes) as one line of valid UTF-8: control characters and
 * invalid bytes are escaped (ahp_term_escape, one-line mode) and the result is cut at a
 * character boundary. */
static void
s_copy_line(char *dst, size_t size, const char *text)
{
	char *esc = ahp_term_escape(text, strlen(text), AHP_TERM_ONE_LINE);
	const char *src = esc != NULL ? esc : "(out of memory)";
	size_t n = ahp_utf8_prefix(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	free(esc);
}

int
svc_error(svc_error_t *err, const char *code, int retryable, const char *field, const char *fmt,
          ...)
{
	/* Room for the message plus quoted text that escaping may expand; cut below. */
	char msg[SVC_MESSAGE_MAX * 2];
	va_list ap;
	if (err == NULL)
		return -1;
	memset(err, 0, sizeof *err);
	snprintf(err->code, sizeof err->code, "%s", code ? code : "internal");
	err->retryable = retryable != 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* vsnprintf may have cut a character in two at the end: drop the partial one. */
	msg[ahp_utf8_prefix(msg, sizeof msg - 1)] = '\0';
	s_copy_line(err->message, sizeof err->message, msg);
	if (field != NULL)
		s_copy_line(err->field, sizeof err->field, field);
	return -1;
}

/* The first max characters of body as valid UTF-8 text (invalid bytes and NULs become
 * U+FFFD) in buf, for quoting; controls are escaped later by svc_error. */
static void
s_body_start(const uint8_t *body, size_t len, char *buf, size_t size, size_t max_chars)
{
	buf[0] = '\0';
	if (body == NULL || len == 0)
		return;
	/* 4 bytes per character at most: never sanitize more than can be shown. */
	size_t take = len < max_chars * 4 ? len : max_chars * 4;
	char *s = ahp_utf8_sanitize(body, take, 0, NULL, NULL);
	if (s == NULL)
		return;
	size_t o = 0, chars = 0;
	while (s[o] != '\0' && chars < max_chars) {
		unsigned char c = (unsigned char)s[o];
		size_t w = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
		if (o + w >= size)
			break;
		o += w;
		chars++;
	}
	/* A cut sequence at the end of take became U+FFFD: harmless. */
	memcpy(buf, s, o);
	buf[o] = '\0';
	free(s);
}

int
svc_http_status_error(long status, const uint8_t *body, size_t len, svc_error_t *err)
{
	char quote[121 * 4];
	const char *code = "http_error";
	int retryable = 0;
	if (status == 401 || status == 403) {
		code = "unauthorized";
	} else if (status == 404) {
		code = "not_found";
	} else if (status == 408 || status == 425 || status == 429 ||
	           (status >= 500 && status <= 599)) {
		retryable = 1;
	}
	s_body_start(body, len, quote, sizeof quote, 120);
	if (quote[0] != '\0')
		svc_error(err, code, retryable, NULL, "the service answered HTTP %ld: %s", status,
		          quote);
	else
		svc_error(err, code, retryable, NULL, "the service answered HTTP %ld", status);
	err->http_status = status >= 0 && status <= 999 ? (int)status : 0;
	return -1;
}

int
svc_curl_error(int curlcode, const char *detail, svc_error_t *err)
{
	const char *code = "unavailable";
	const char *what = "the service could not be reached";
	int retryable = 1;
	switch ((CURLcode)curlcode) {
	case CURLE_COULDNT_CONNECT:
		what = "could not connect to the service";
		break;
	case CURLE_OPERATION_TIMEDOUT:
		code = "timeout";
		what = "the service did not answer in time";
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		code = "dns";
		what = "the service's host name could not be resolved";
		break;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_USE_SSL_FAILED:
		code = "tls";
		what = "TLS with the service failed";
		retryable = 0;
		break;
	case CURLE_FILESIZE_EXCEEDED:
		code = "bad_response";
		what = "the service's answer is larger than 1 MiB";
		retryable = 0;
		break;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		what = "the connection to the service failed";
		break;
	default:
		break;
	}
	const char *why =
	    detail != NULL && detail[0] != '\0' ? detail : curl_easy_strerror((CURLcode)curlcode);
	return svc_error(err, code, retryable, NULL, "%s: %.*s", what, AHP_UTF8_CUT(why, 256));
}
