/* Unit tests for servicesd's typed errors: svc_error, HTTP statuses, libcurl codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <curl/curl.h>

#include "ahp/text.h"
#include "svc.h"

static void
test_svc_error(void **state)
{
	(void)state;
	svc_error_t err;
	memset(&err, 0x55, sizeof err);
	assert_int_equal(svc_error(&err, "validation", 0, "a.b", "%s: %d", "x", 5), -1);
	assert_string_equal(err.code, "validation");
	assert_string_equal(err.field, "a.b");
	assert_string_equal(err.message, "x: 5");
	assert_int_equal(err.retryable, 0);
	assert_int_equal(err.http_status, 0);

	/* Replaces earlier content; field NULL is empty. */
	svc_error(&err, "timeout", 7, NULL, "late");
	assert_string_equal(err.field, "");
	assert_int_equal(err.retryable, 1);

	/* Control characters escaped; invalid UTF-8 shown as bytes: one valid line. */
	svc_error(&err, "internal", 0, "f\nx", "a\nb\x1b[2J\xff");
	assert_string_equal(err.message, "a\\x0ab\\x1b[2J\\xff");
	assert_string_equal(err.field, "f\\x0ax");

	/* Long messages are cut at a character boundary. */
	char big[2000];
	for (size_t i = 0; i + 2 < sizeof big; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[sizeof big - 1] = '\0';
	big[sizeof big - 2] = '\0';
	svc_error(&err, "internal", 0, big, "x%s", big);
	size_t n = strlen(err.message);
	assert_true(n < SVC_MESSAGE_MAX);
	assert_true(n >= SVC_MESSAGE_MAX - 3);
	assert_true(ahp_utf8_valid(err.message, n, 0));
	assert_true(strlen(err.field) < SVC_FIELD_MAX);
	assert_true(ahp_utf8_valid(err.field, strlen(err.field), 0));
}

static void
s_status(long status, const char *code, int retryable)
{
	svc_error_t err;
	assert_int_equal(svc_http_status_error(status, NULL, 0, &err), -1);
	assert_string_equal(err.code, code);
	assert_int_equal(err.retryable, retryable);
	assert_int_equal(err.http_status, status);
}

static void
test_http_status(void **state)
{
	(void)state;
	s_status(401, "unauthorized", 0);
	s_status(403, "unauthorized", 0);
	s_status(404, "not_found", 0);
	s_status(408, "http_error", 1);
	s_status(425, "http_error", 1);
	s_status(429, "http_error", 1);
	s_status(500, "http_error", 1);
	s_status(502, "http_error", 1);
	s_status(503, "http_error", 1);
	s_status(599, "http_error", 1);
	s_status(400, "http_error", 0);
	s_status(409, "http_error", 0);
	s_status(422, "http_error", 0);
	s_status(301, "http_error", 0);

	svc_error_t err;
	svc_http_status_error(404, NULL, 0, &err);
	assert_string_equal(err.message, "the service answered HTTP 404");
	const char *b = "{\"error\": \"unauthorized\"}";
	svc_http_status_error(401, (const uint8_t *)b, strlen(b), &err);
	assert_string_equal(err.message,
	                    "the service answered HTTP 401: {\"error\": \"unauthorized\"}");

	/* Escaped, NULs and invalid bytes replaced, at most 120 characters quoted. */
	const uint8_t raw[] = "ok\n\x1b[31m\0\xff";
	svc_http_status_error(500, raw, sizeof raw - 1, &err);
	assert_string_equal(err.message, "the service answered HTTP 500: ok\\x0a\\x1b[31m"
	                                 "\xef\xbf\xbd\xef\xbf\xbd");
	char long_body[400];
	memset(long_body, 'z', sizeof long_body);
	svc_http_status_error(500, (const uint8_t *)long_body, sizeof long_body, &err);
	assert_int_equal(strlen(err.message), strlen("the service answered HTTP 500: ") + 120);
	uint8_t euros[600];
	for (size_t i = 0; i < sizeof euros; i += 3)
		memcpy(euros + i, "\xe2\x82\xac", 3);
	svc_http_status_error(500, euros, sizeof euros, &err);
	assert_int_equal(strlen(err.message), strlen("the service answered HTTP 500: ") + 360);
	assert_true(ahp_utf8_valid(err.message, strlen(err.message), 0));
}

static void
s_curl(int code, const char *want, int retryable)
{
	svc_error_t err;
	assert_int_equal(svc_curl_error(code, "", &err), -1);
	assert_string_equal(err.code, want);
	assert_int_equal(err.retryable, retryable);
	assert_int_equal(err.http_status, 0);
}

static void
test_curl(void **state)
{
	(void)state;
	s_curl(CURLE_COULDNT_CONNECT, "unavailable", 1);
	s_curl(CURLE_OPERATION_TIMEDOUT, "timeout", 1);
	s_curl(CURLE_COULDNT_RESOLVE_HOST, "dns", 1);
	s_curl(CURLE_COULDNT_RESOLVE_PROXY, "dns", 1);
	s_curl(CURLE_SSL_CONNECT_ERROR, "tls", 0);
	s_curl(CURLE_PEER_FAILED_VERIFICATION, "tls", 0);
	s_curl(CURLE_SSL_CACERT_BADFILE, "tls", 0);
	s_curl(CURLE_GOT_NOTHING, "unavailable", 1);
	s_curl(CURLE_RECV_ERROR, "unavailable", 1);
	s_curl(CURLE_SEND_ERROR, "unavailable", 1);
	s_curl(CURLE_PARTIAL_FILE, "unavailable", 1);
	s_curl(CURLE_FILESIZE_EXCEEDED, "bad_response", 0);
	s_curl(CURLE_UNSUPPORTED_PROTOCOL, "unavailable", 1);
	s_curl(9999, "unavailable", 1);

	svc_error_t err;
	svc_curl_error(CURLE_COULDNT_CONNECT,
	               "Failed to connect to 127.0.0.1 port 1 after 0 ms: Connection refused",
	               &err);
	assert_string_equal(err.message, "could not connect to the service: Failed to connect to "
	                                 "127.0.0.1 port 1 after 0 ms: Connection refused");
	/* No detail: curl's text for the code. */
	svc_curl_error(CURLE_OPERATION_TIMEDOUT, NULL, &err);
	assert_string_equal(err.message, "the service did not answer in time: Timeout was reached");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_svc_error),
	    cmocka_unit_test(test_http_status),
	    cmocka_unit_test(test_curl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
