/* Unit tests for credproxy's providers.conf loader: every field, comments, defaults, and
 * each error with its path:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "cp.h"

static char s_dir[64];
static ahp_secrets_t *s_sec;

static void
s_write(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static int
s_setup(void **state)
{
	(void)state;
	char sub[128], path[256];
	ahp_log_init("cp_test_providers", AHP_LOG_WARN);
	snprintf(s_dir, sizeof s_dir, "/tmp/cp-test-providers-XXXXXX");
	if (mkdtemp(s_dir) == NULL)
		return -1;
	snprintf(sub, sizeof sub, "%s/secrets", s_dir);
	if (mkdir(sub, 0700) < 0)
		return -1;
	static const char *const kv[] = {"openai-key", "sk-test-123\n", "anthropic", "ak-1",
	                                 "multi",      "a\nb",          NULL};
	for (size_t i = 0; kv[i]; i += 2) {
		snprintf(path, sizeof path, "%s/%s", sub, kv[i]);
		s_write(path, kv[i + 1], strlen(kv[i + 1]));
	}
	s_sec = ahp_secrets_load(sub);
	return s_sec ? 0 : -1;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	ahp_secrets_destroy(&s_sec);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static cp_providers_t *
s_load(const char *text, char *path, size_t plen, char *err, size_t errlen)
{
	snprintf(path, plen, "%s/providers.conf", s_dir);
	s_write(path, text, strlen(text));
	return cp_providers_load(path, s_sec, err, errlen);
}

static void
test_load(void **state)
{
	(void)state;
	char path[256], err[512] = "x";
	cp_providers_t *p = s_load("# model providers\n"
	                           "\n"
	                           "mock http://127.0.0.1:8099 none\n"
	                           "  openai   https://api.openai.com  bearer openai-key  \n"
	                           "claude https://api.anthropic.com/v1/ x-api-key anthropic\r\n"
	                           "gw http://[::1]:4000/api/ header:X-Gateway-Key openai-key\n"
	                           "\t# indented comment\n"
	                           "local HTTP://LocalHost. none",
	                           path, sizeof path, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_string_equal(err, "");
	assert_int_equal(cp_providers_count(p), 5);

	const cp_provider_t *m = cp_providers_find(p, "mock");
	assert_non_null(m);
	assert_ptr_equal(m, cp_providers_at(p, 0));
	assert_string_equal(m->scheme, "http");
	assert_string_equal(m->host, "127.0.0.1");
	assert_int_equal(m->port, 8099);
	assert_string_equal(m->base_path, "");
	assert_int_equal(m->auth, CP_AUTH_NONE);
	assert_null(m->header);
	assert_null(m->secret);

	const cp_provider_t *o = cp_providers_at(p, 1);
	assert_string_equal(o->name, "openai");
	assert_string_equal(o->scheme, "https");
	assert_string_equal(o->host, "api.openai.com");
	assert_int_equal(o->port, 443);
	assert_string_equal(o->base_path, "");
	assert_int_equal(o->auth, CP_AUTH_BEARER);
	assert_string_equal(o->secret, "openai-key");

	const cp_provider_t *c = cp_providers_find(p, "claude");
	assert_string_equal(c->base_path, "/v1");
	assert_int_equal(c->auth, CP_AUTH_X_API_KEY);
	assert_string_equal(c->secret, "anthropic");

	const cp_provider_t *g = cp_providers_find(p, "gw");
	assert_string_equal(g->host, "::1");
	assert_int_equal(g->port, 4000);
	assert_string_equal(g->base_path, "/api");
	assert_int_equal(g->auth, CP_AUTH_HEADER);
	assert_string_equal(g->header, "X-Gateway-Key");

	const cp_provider_t *l = cp_providers_find(p, "local");
	assert_string_equal(l->scheme, "http");
	assert_string_equal(l->host, "localhost");
	assert_int_equal(l->port, 80);

	assert_null(cp_providers_find(p, "nope"));
	assert_null(cp_providers_find(p, NULL));
	assert_null(cp_providers_at(p, 5));
	cp_providers_destroy(&p);
	assert_null(p);
	cp_providers_destroy(&p);
}

static void
test_missing_and_empty(void **state)
{
	(void)state;
	char path[256], err[256];
	snprintf(path, sizeof path, "%s/absent.conf", s_dir);
	cp_providers_t *p = cp_providers_load(path, s_sec, err, sizeof err);
	assert_non_null(p);
	assert_int_equal(cp_providers_count(p), 0);
	cp_providers_destroy(&p);
	p = s_load("", path, sizeof path, err, sizeof err);
	assert_non_null(p);
	assert_int_equal(cp_providers_count(p), 0);
	cp_providers_destroy(&p);
	p = s_load("# only comments\n\n   \n", path, sizeof path, err, sizeof err);
	assert_non_null(p);
	assert_int_equal(cp_providers_count(p), 0);
	cp_providers_destroy(&p);
	assert_int_equal(cp_providers_count(NULL), 0);
	/* A directory is not a file. */
	p = cp_providers_load(s_dir, s_sec, err, sizeof err);
	assert_null(p);
	char want[256];
	snprintf(want, sizeof want, "%s: cannot read: Is a directory", s_dir);
	assert_string_equal(err, want);
}

static const struct {
	const char *text;
	const char *want; /* after "path:" */
} s_errors[] = {
    {"mock\n", "1: too few fields (write NAME BASE-URL AUTH [SECRET], e.g. \"openai "
               "https://api.openai.com bearer openai-key\")"},
    {"# c\nmock http://x none a b\n", "2: too many fields (write NAME BASE-URL AUTH [SECRET], "
                                      "e.g. \"openai https://api.openai.com bearer "
                                      "openai-key\")"},
    {"Mock http://x none\n",
     "1: provider name 'Mock' is not valid (use 1 to 64 characters from a-z, 0-9 and -)"},
    {"mock ftp://x none\n", "1: base URL scheme 'ftp' is not http or https"},
    {"mock x none\n", "1: base URL 'x' is not a URL (write e.g. https://api.openai.com)"},
    {"mock /v1 none\n", "1: base URL '/v1' needs a scheme and a host"},
    {"mock http://u:p@x none\n",
     "1: base URL 'http://u:p@x' holds user information (put credentials in a secret)"},
    {"mock http://x/?a=1 none\n", "1: base URL 'http://x/?a=1' has a query or fragment"},
    {"mock http://x/#f none\n", "1: base URL 'http://x/#f' has a query or fragment"},
    {"mock http://127.1/ none\n",
     "1: base URL host '127.1': a numeric host must be a dotted quad like 127.0.0.1"},
    {"mock http://x:0/ none\n", "1: base URL port 0 is not allowed"},
    {"mock http://x/a/../b none\n",
     "1: base URL path '/a/../b': dot segment ('.' or '..') in the path"},
    {"mock http://x basic\n",
     "1: unknown auth 'basic' (use none, bearer, x-api-key or header:NAME)"},
    {"mock http://x none openai-key\n", "1: auth none takes no secret"},
    {"mock http://x bearer\n", "1: auth bearer needs a secret name"},
    {"mock http://x bearer nope\n", "1: secret 'nope' does not exist in the secrets directory"},
    {"mock http://x bearer multi\n",
     "1: secret 'multi' holds a control character and cannot go in a header"},
    {"mock http://x header:Host openai-key\n",
     "1: header 'Host': Host, Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, "
     "Trailer, Upgrade and Proxy-* cannot be injected (credproxy sets them)"},
    {"mock http://x header: openai-key\n",
     "1: header '': not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, at "
     "most 128)"},
    {"mock http://x none\nother http://y none\nmock http://z none\n",
     "3: provider 'mock' is defined twice"},
};

static void
test_errors(void **state)
{
	(void)state;
	char path[256], err[512], want[768];
	for (size_t i = 0; i < sizeof s_errors / sizeof s_errors[0]; i++) {
		err[0] = '\0';
		cp_providers_t *p = s_load(s_errors[i].text, path, sizeof path, err, sizeof err);
		if (p != NULL)
			fail_msg("case %zu loaded", i);
		snprintf(want, sizeof want, "%s:%s", path, s_errors[i].want);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got: %s\nwant: %s", i, err, want);
	}
	/* The secret's value is never printed, even when it is refused. */
	s_load("mock http://x bearer openai-key extra\n", path, sizeof path, err, sizeof err);
	assert_null(strstr(err, "sk-test"));
	/* No secrets at all. */
	snprintf(path, sizeof path, "%s/providers.conf", s_dir);
	s_write(path, "openai https://api.openai.com bearer openai-key\n", 48);
	assert_null(cp_providers_load(path, NULL, err, sizeof err));
	snprintf(want, sizeof want,
	         "%s:1: secret 'openai-key' does not exist in the secrets "
	         "directory",
	         path);
	assert_string_equal(err, want);
}

/* Bounded: a file over 64 KiB, and more than 256 providers. */
static void
test_bounds(void **state)
{
	(void)state;
	char path[256], err[512], want[512];
	size_t cap = 70 * 1024;
	char *big = malloc(cap + 1);
	assert_non_null(big);
	memset(big, '#', cap);
	big[cap] = '\0';
	assert_null(s_load(big, path, sizeof path, err, sizeof err));
	snprintf(want, sizeof want, "%s: larger than 65536 bytes", path);
	assert_string_equal(err, want);
	size_t o = 0;
	for (int i = 0; i < 257; i++)
		o += (size_t)snprintf(big + o, cap - o, "p%d http://x none\n", i);
	assert_null(s_load(big, path, sizeof path, err, sizeof err));
	snprintf(want, sizeof want, "%s:257: more than 256 providers", path);
	assert_string_equal(err, want);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_load),
	    cmocka_unit_test(test_missing_and_empty),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
