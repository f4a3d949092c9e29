/* Unit tests for servicesd's services.conf parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svc.h"

static char s_dir[64];
static char s_path[128];

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/svc-test-conf-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(s_path, sizeof s_path, "%s/services.conf", s_dir);
	return 0;
}

static int
s_teardown(void **state)
{
	(void)state;
	unlink(s_path);
	return rmdir(s_dir);
}

static void
s_write(const char *text, size_t len)
{
	FILE *f = fopen(s_path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Loads text and expects the error "<path>:<why>" (why starts after the path). */
static void
s_fail(const char *text, const char *why)
{
	char err[512], want[512];
	svc_conf_t c = {NULL, 0};
	s_write(text, strlen(text));
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), -1);
	snprintf(want, sizeof want, "%s%s", s_path, why);
	assert_string_equal(err, want);
	assert_null(c.entries);
	assert_int_equal(c.n, 0);
}

static const svc_service_t *
s_svc(const char *name)
{
	return svc_find(name, strlen(name));
}

static void
test_good(void **state)
{
	(void)state;
	char err[256];
	svc_conf_t c = {NULL, 0};
	const char *text = "# upstreams\n"
	                   "\n"
	                   "lookup_wiki url=http://127.0.0.1:8089/   # the mock\n"
	                   "  publish_summary\turl=https://hooks.example/api/v2 secret=hook.key "
	                   "timeout_ms=2500\r\n";
	s_write(text, strlen(text));
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), 0);
	assert_int_equal(c.n, 2);
	const svc_conf_entry_t *e = svc_conf_find(&c, s_svc("lookup_wiki"));
	assert_non_null(e);
	assert_string_equal(e->url, "http://127.0.0.1:8089");
	assert_string_equal(e->secret, "wiki-token");
	assert_int_equal(e->timeout_ms, s_svc("lookup_wiki")->handler->timeout_ms);
	e = svc_conf_find(&c, s_svc("publish_summary"));
	assert_non_null(e);
	assert_string_equal(e->url, "https://hooks.example/api/v2");
	assert_string_equal(e->secret, "hook.key");
	assert_int_equal(e->timeout_ms, 2500);
	svc_conf_free(&c);
	assert_int_equal(c.n, 0);

	/* Only one service configured: the other is not. */
	text = "publish_summary url=http://[::1]:9/\n";
	s_write(text, strlen(text));
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), 0);
	assert_int_equal(c.n, 1);
	assert_null(svc_conf_find(&c, s_svc("lookup_wiki")));
	assert_string_equal(svc_conf_find(&c, s_svc("publish_summary"))->url, "http://[::1]:9");
	svc_conf_free(&c);

	/* A missing file is an empty configuration. */
	unlink(s_path);
	c.n = 99;
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), 0);
	assert_int_equal(c.n, 0);
	assert_null(c.entries);
}

static void
test_errors(void **state)
{
	(void)state;
	s_fail("lookup_wiki url=http://a\nweather url=http://b\n",
	       ":2: unknown service \"weather\"");
	s_fail("lookup_wiki url=http://a\n\nlookup_wiki url=http://b\n",
	       ":3: service lookup_wiki is configured twice");
	s_fail("lookup_wiki url=ftp://a/\n", ":1: url must start with http:// or https://: "
	                                     "\"ftp://a/\"");
	s_fail("lookup_wiki url=127.0.0.1:8089\n",
	       ":1: url must start with http:// or https://: \"127.0.0.1:8089\"");
	s_fail("lookup_wiki url=http://a/?x=1\n",
	       ":1: url must not have a query (it is a base for paths): \"http://a/?x=1\"");
	s_fail("lookup_wiki url=http://u:p@a/\n",
	       ":1: url must not hold credentials (name a secret instead): \"http://u:p@a/\"");
	s_fail("lookup_wiki url=http://a/#x\n",
	       ":1: url must not have a fragment: \"http://a/#x\"");
	s_fail("lookup_wiki\n", ":1: lookup_wiki has no url=");
	s_fail(
	    "lookup_wiki url=http://a secret=../etc/passwd\n",
	    ":1: secret \"../etc/passwd\" is not a valid secret name ([A-Za-z0-9._-]{1,128}, not "
	    "starting with '.')");
	s_fail("lookup_wiki url=http://a secret=.hidden\n",
	       ":1: secret \".hidden\" is not a valid secret name ([A-Za-z0-9._-]{1,128}, not "
	       "starting with '.')");
	s_fail("lookup_wiki url=http://a timeout_ms=0\n",
	       ":1: timeout_ms must be a number of milliseconds in 1..120000, got \"0\"");
	s_fail("lookup_wiki url=http://a timeout_ms=120001\n",
	       ":1: timeout_ms must be a number of milliseconds in 1..120000, got \"120001\"");
	s_fail("lookup_wiki url=http://a timeout_ms=5s\n",
	       ":1: timeout_ms must be a number of milliseconds in 1..120000, got \"5s\"");
	s_fail("lookup_wiki url=http://a color=blue\n",
	       ":1: unknown key \"color\" (expected url, secret or timeout_ms)");
	s_fail("lookup_wiki url=http://a url=http://b\n", ":1: url is given twice");
	s_fail("lookup_wiki http://a\n",
	       ":1: expected key=value (url, secret, timeout_ms), got \"http://a\"");

	char line[5000];
	memset(line, 'x', sizeof line);
	line[sizeof line - 1] = '\0';
	s_fail(line, ":1: line longer than 4096 bytes");

	char err[256];
	svc_conf_t c = {NULL, 0};
	s_write("lookup_wiki url=http://a\0\n", 26);
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, ":1: NUL byte in the line"));

	/* The file is capped at 64 KiB. */
	size_t n = 64 * 1024 + 1;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, '#', n);
	s_write(big, n);
	free(big);
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), -1);
	char want[256];
	snprintf(want, sizeof want, "%s: larger than 64 KiB", s_path);
	assert_string_equal(err, want);
}

/* A failed load leaves the previous configuration alone. */
static void
test_keep_on_error(void **state)
{
	(void)state;
	char err[256];
	svc_conf_t c = {NULL, 0};
	s_write("lookup_wiki url=http://a\n", 25);
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), 0);
	s_write("lookup_wiki url=gopher://a\n", 27);
	assert_int_equal(svc_conf_load(s_path, &c, err, sizeof err), -1);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.entries[0].url, "http://a");
	svc_conf_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_good, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_errors, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_keep_on_error, s_setup, s_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
