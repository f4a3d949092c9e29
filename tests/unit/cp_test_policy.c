/* Unit tests for credproxy's policy: host, authority and path normalisation, rules built
 * from profiles and secrets, and decisions. */
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

static int
s_setup(void **state)
{
	(void)state;
	ahp_log_init("cp_test_policy", AHP_LOG_WARN);
	snprintf(s_dir, sizeof s_dir, "/tmp/cp-test-policy-XXXXXX");
	return mkdtemp(s_dir) ? 0 : -1;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
s_write(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* ---- cp_host_normalize ---- */

static const struct {
	const char *in;
	const char *out; /* NULL: refused with why */
	const char *why;
} s_hosts[] = {
    {"wiki.local", "wiki.local", NULL},
    {"Wiki.LOCAL", "wiki.local", NULL},
    {"wiki.local.", "wiki.local", NULL},
    {"WIKI.local.", "wiki.local", NULL},
    {"localhost", "localhost", NULL},
    {"127.0.0.1", "127.0.0.1", NULL},
    {"xn--bcher-kva.example", "xn--bcher-kva.example", NULL},
    {"a-b.c-d.example", "a-b.c-d.example", NULL},
    {"1password.com", "1password.com", NULL},
    {"[::1]", "::1", NULL},
    {"[0:0:0:0:0:0:0:1]", "::1", NULL},
    {"[FD00:0::0001]", "fd00::1", NULL},
    {"[::ffff:127.0.0.1]", "::ffff:127.0.0.1", NULL},
    {"", NULL, "empty host"},
    {".", NULL, "empty host"},
    {"wiki.local..", NULL, "empty label"},
    {"a..b", NULL, "empty label"},
    {".a", NULL, "empty label"},
    {"-a.example", NULL, "a label starts or ends with '-'"},
    {"a-.example", NULL, "a label starts or ends with '-'"},
    {"wiki_local", NULL, "only a-z, 0-9, '-' and '.' may appear"},
    {"wiki local", NULL, "only a-z, 0-9, '-' and '.' may appear"},
    {"*.example.com", NULL, "only a-z, 0-9, '-' and '.' may appear"},
    {"b\xc3\xbc"
     "cher.example",
     NULL, "non-ASCII (write an international name in punycode, xn--...)"},
    {"127.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"0x7f.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"0x7f.0.0.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"0X7F.0.0.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"2130706433", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"0x7f000001", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"0177.0.0.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"127.000.000.001", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"127.0.0.1.", "127.0.0.1", NULL},
    {"256.0.0.1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"1.2.3.4.5", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"example.0x1", NULL, "a numeric host must be a dotted quad like 127.0.0.1"},
    {"::1", NULL, "an IPv6 address must be written in brackets"},
    {"[::1", NULL, "malformed IPv6 address"},
    {"[]", NULL, "malformed IPv6 address"},
    {"[::1%eth0]", NULL, "malformed IPv6 address"},
    {"[127.0.0.1]", NULL, "malformed IPv6 address"},
    {"[v1.x]", NULL, "malformed IPv6 address"},
};

static void
test_host_normalize(void **state)
{
	(void)state;
	char out[CP_HOST_MAX + 1];
	for (size_t i = 0; i < sizeof s_hosts / sizeof s_hosts[0]; i++) {
		const char *why = NULL;
		int rc =
		    cp_host_normalize(s_hosts[i].in, strlen(s_hosts[i].in), out, sizeof out, &why);
		if (s_hosts[i].out != NULL) {
			if (rc != 0)
				fail_msg("host %zu '%s' refused: %s", i, s_hosts[i].in, why);
			assert_string_equal(out, s_hosts[i].out);
		} else {
			if (rc != -1)
				fail_msg("host %zu '%s' accepted as '%s'", i, s_hosts[i].in, out);
			assert_non_null(why);
			if (strcmp(why, s_hosts[i].why) != 0)
				fail_msg("host %zu '%s': got '%s', want '%s'", i, s_hosts[i].in,
				         why, s_hosts[i].why);
		}
	}
}

/* Lengths and NULs: in need not be NUL-terminated; 253 is the most. */
static void
test_host_lengths(void **state)
{
	(void)state;
	char in[300], out[CP_HOST_MAX + 1];
	const char *why = NULL;

	/* 63-byte labels: 63*4 + 3 dots = 255 > 253. */
	memset(in, 'a', sizeof in);
	for (int i = 63; i < 300; i += 64)
		in[i] = '.';
	assert_int_equal(cp_host_normalize(in, 253, out, sizeof out, &why), 0);
	assert_int_equal(strlen(out), 253);
	assert_int_equal(cp_host_normalize(in, 254, out, sizeof out, &why), -1);
	assert_string_equal(why, "host name longer than 253 bytes");
	/* ...but 253 plus the trailing dot is fine. */
	in[253] = '.';
	assert_int_equal(cp_host_normalize(in, 254, out, sizeof out, &why), 0);
	memset(in, 'a', 64);
	assert_int_equal(cp_host_normalize(in, 64, out, sizeof out, &why), -1);
	assert_string_equal(why, "a label is longer than 63 bytes");
	assert_int_equal(cp_host_normalize(in, 63, out, sizeof out, &why), 0);
	/* Not NUL-terminated: only len bytes count. */
	assert_int_equal(cp_host_normalize("wiki.localXXX", 10, out, sizeof out, &why), 0);
	assert_string_equal(out, "wiki.local");
	assert_int_equal(cp_host_normalize("wiki\0local", 10, out, sizeof out, &why), -1);
	assert_string_equal(why, "only a-z, 0-9, '-' and '.' may appear");
	/* Too small an output is refused, not overrun. */
	char small[10];
	assert_int_equal(cp_host_normalize("a.b", 3, small, sizeof small, &why), -1);
}

/* ---- cp_authority_parse ---- */

static const struct {
	const char *in;
	const char *host; /* NULL: refused */
	unsigned port;
	const char *why;
} s_auth[] = {
    {"wiki.local", "wiki.local", 0, NULL},
    {"wiki.local:443", "wiki.local", 443, NULL},
    {"Wiki.Local.:8443", "wiki.local", 8443, NULL},
    {"127.0.0.1:80", "127.0.0.1", 80, NULL},
    {"[::1]:8080", "::1", 8080, NULL},
    {"[::1]", "::1", 0, NULL},
    {"a.example:65535", "a.example", 65535, NULL},
    {"a.example:0443", "a.example", 443, NULL},
    {"a.example:1", "a.example", 1, NULL},
    {"user@wiki.local", NULL, 0, "userinfo (user@host) is not allowed"},
    {"user:pw@wiki.local:80", NULL, 0, "userinfo (user@host) is not allowed"},
    {"wiki.local@evil.example", NULL, 0, "userinfo (user@host) is not allowed"},
    {"wiki.local:", NULL, 0, "malformed port"},
    {"wiki.local:0", NULL, 0, "port out of range (1..65535)"},
    {"wiki.local:65536", NULL, 0, "port out of range (1..65535)"},
    {"wiki.local:999999", NULL, 0, "malformed port"},
    {"wiki.local:8o", NULL, 0, "malformed port"},
    {"wiki.local:+80", NULL, 0, "malformed port"},
    {"wiki.local: 80", NULL, 0, "malformed port"},
    {"::1:80", NULL, 0, "an IPv6 address must be written in brackets"},
    {"[::1]:", NULL, 0, "malformed port"},
    {"[::1]x", NULL, 0, "only a port may follow an IPv6 address"},
    {"[::1", NULL, 0, "malformed IPv6 address"},
    {"", NULL, 0, "empty host"},
    {":80", NULL, 0, "empty host"},
    {"127.1:80", NULL, 0, "a numeric host must be a dotted quad like 127.0.0.1"},
};

static void
test_authority_parse(void **state)
{
	(void)state;
	char host[CP_HOST_MAX + 1];
	for (size_t i = 0; i < sizeof s_auth / sizeof s_auth[0]; i++) {
		const char *why = NULL;
		uint16_t port = 1234;
		int rc = cp_authority_parse(s_auth[i].in, strlen(s_auth[i].in), host, sizeof host,
		                            &port, &why);
		if (s_auth[i].host != NULL) {
			if (rc != 0)
				fail_msg("authority %zu '%s' refused: %s", i, s_auth[i].in, why);
			assert_string_equal(host, s_auth[i].host);
			assert_int_equal(port, s_auth[i].port);
		} else {
			if (rc != -1)
				fail_msg("authority %zu '%s' accepted", i, s_auth[i].in);
			if (strcmp(why, s_auth[i].why) != 0)
				fail_msg("authority %zu '%s': got '%s', want '%s'", i, s_auth[i].in,
				         why, s_auth[i].why);
		}
	}
}

/* ---- cp_path_check ---- */

static const struct {
	const char *in;
	const char *why; /* NULL: accepted */
} s_paths[] = {
    {"/", NULL},
    {"/snippets/durability", NULL},
    {"/a/b.c/..d/...", NULL},
    {"/a%20b", NULL},
    {"/a%2Fb", "encoded '/', '\\' or NUL in the path"},
    {"/a%2fb", "encoded '/', '\\' or NUL in the path"},
    {"/a%5cb", "encoded '/', '\\' or NUL in the path"},
    {"/a%5Cb", "encoded '/', '\\' or NUL in the path"},
    {"/a%00b", "encoded '/', '\\' or NUL in the path"},
    {"/a\\b", "backslash in the path"},
    {"/a/../b", "dot segment ('.' or '..') in the path"},
    {"/a/..", "dot segment ('.' or '..') in the path"},
    {"/a/.", "dot segment ('.' or '..') in the path"},
    {"/./a", "dot segment ('.' or '..') in the path"},
    {"/a/%2e%2e/b", "dot segment ('.' or '..') in the path"},
    {"/a/%2E./b", "dot segment ('.' or '..') in the path"},
    {"/a/.%2e", "dot segment ('.' or '..') in the path"},
    {"/a/%2e", "dot segment ('.' or '..') in the path"},
    {"/a/..;/b", "dot segment ('.' or '..') in the path"},
    {"/a/..;x=1/b", "dot segment ('.' or '..') in the path"},
    {"/a/%2e%2e%2f", "encoded '/', '\\' or NUL in the path"},
    {"/a%", "malformed percent-encoding in the path"},
    {"/a%2", "malformed percent-encoding in the path"},
    {"/a%zz", "malformed percent-encoding in the path"},
    {"/a b", "control byte or space in the path"},
    {"/a\tb", "control byte or space in the path"},
    {"/a\rb", "control byte or space in the path"},
    {"/a\x7f", "control byte or space in the path"},
    {"a/b", "the path must start with '/'"},
    {"", "the path must start with '/'"},
    {"*", "the path must start with '/'"},
};

static void
test_path_check(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof s_paths / sizeof s_paths[0]; i++) {
		const char *why = NULL;
		int rc = cp_path_check(s_paths[i].in, strlen(s_paths[i].in), &why);
		if (s_paths[i].why == NULL) {
			if (rc != 0)
				fail_msg("path %zu '%s' refused: %s", i, s_paths[i].in, why);
		} else {
			if (rc != -1)
				fail_msg("path %zu '%s' accepted", i, s_paths[i].in);
			if (strcmp(why, s_paths[i].why) != 0)
				fail_msg("path %zu '%s': got '%s', want '%s'", i, s_paths[i].in,
				         why, s_paths[i].why);
		}
	}
	const char *why = NULL;
	assert_int_equal(cp_path_check("/a\0b", 4, &why), -1);
	assert_string_equal(why, "control byte or space in the path");
	assert_int_equal(cp_path_check("/ok/../x", 3, &why), 0); /* len counts, not NUL */
}

/* ---- policy ---- */

static ahp_profiles_t *
s_profiles(const char *sub, const char *const *files)
{
	char dir[128], path[256];
	snprintf(dir, sizeof dir, "%s/%s", s_dir, sub);
	assert_int_equal(mkdir(dir, 0700), 0);
	for (size_t i = 0; files[i]; i += 2) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		s_write(path, files[i + 1], strlen(files[i + 1]));
	}
	ahp_profiles_t *set = ahp_profiles_load_dir(dir, s_dir, NULL, NULL);
	assert_non_null(set);
	assert_int_equal(ahp_profiles_errors(set), 0);
	return set;
}

static ahp_secrets_t *
s_secrets(const char *sub, const char *const *kv)
{
	char dir[128], path[256];
	snprintf(dir, sizeof dir, "%s/%s", s_dir, sub);
	assert_int_equal(mkdir(dir, 0700), 0);
	for (size_t i = 0; kv[i]; i += 2) {
		snprintf(path, sizeof path, "%s/%s", dir, kv[i]);
		s_write(path, kv[i + 1], strlen(kv[i + 1]));
	}
	ahp_secrets_t *s = ahp_secrets_load(dir);
	assert_non_null(s);
	return s;
}

static const char *const s_rn_files[] = {
    "release-notes.yaml",
    "name: release-notes\nmodel: mock:x\nsystem_prompt: p\nsandbox: { network: proxy }\n"
    "egress:\n"
    "  - host: wiki.local\n"
    "    methods: [GET, HEAD]\n"
    "    paths: [/snippets/, /health]\n"
    "    inject: { Authorization: \"Bearer {{secret:wiki-token}}\", X-Trace: static }\n"
    "  - host: wiki.local:8443\n"
    "    methods: [POST]\n"
    "  - host: \"*.example.com\"\n"
    "    methods: [GET, POST]\n"
    "    inject: { X-Api-Key: \"{{secret:Api.Key_1}}-{{secret:wiki-token}}\" }\n"
    "  - host: 127.0.0.1:9000\n"
    "  - host: \"[::1]:9001\"\n"
    "  - host: internal.example.com\n"
    "    methods: [DELETE]\n",
    "empty.yaml", "name: empty\nmodel: mock:x\nsystem_prompt: p\n", NULL};
static const char *const s_rn_secrets[] = {
    "wiki-token", "s3cr3t-wiki-token\n", "Api.Key_1", "AKIA-0123456789",
    "unused",     "never-copied",        NULL};

static void
test_policy_build(void **state)
{
	(void)state;
	char err[256] = "x";
	ahp_profiles_t *set = s_profiles("build", s_rn_files);
	ahp_secrets_t *sec = s_secrets("build-secrets", s_rn_secrets);
	cp_policy_t *pol = cp_policy_new(set, sec, err, sizeof err);
	if (pol == NULL)
		fail_msg("%s", err);
	assert_string_equal(err, "");
	/* The policy keeps copies: profiles and secrets may go. */
	ahp_profiles_destroy(&set);
	ahp_secrets_destroy(&sec);

	assert_true(cp_policy_has_profile(pol, "release-notes"));
	assert_true(cp_policy_has_profile(pol, "empty"));
	assert_false(cp_policy_has_profile(pol, "other"));
	assert_false(cp_policy_has_profile(pol, NULL));

	cp_decision_t d;
	cp_policy_decide(pol, "release-notes", "GET", "wiki.local", 80, "/snippets/durability", &d);
	assert_int_equal(d.verdict, CP_ALLOW);
	const cp_rule_t *r = d.rule;
	assert_non_null(r);
	assert_string_equal(r->profile, "release-notes");
	assert_int_equal(r->index, 0);
	assert_string_equal(r->host, "wiki.local");
	assert_false(r->wildcard);
	assert_int_equal(r->port, 0);
	assert_int_equal(r->n_methods, 2);
	assert_string_equal(r->methods[1], "HEAD");
	assert_int_equal(r->n_paths, 2);
	assert_int_equal(r->n_inject, 2);
	assert_string_equal(r->inject[0].name, "Authorization");
	/* One trailing newline of the secret file is not part of the value. */
	assert_string_equal(r->inject[0].value, "Bearer s3cr3t-wiki-token");
	assert_int_equal(r->inject[0].value_len, strlen("Bearer s3cr3t-wiki-token"));
	assert_string_equal(r->inject[1].name, "X-Trace");
	assert_string_equal(r->inject[1].value, "static");
	assert_int_equal(r->n_secrets, 1);
	assert_string_equal(r->secrets[0].name, "wiki-token");
	assert_int_equal(r->secrets[0].len, 17);
	assert_memory_equal(r->secrets[0].value, "s3cr3t-wiki-token", 17);

	/* The wildcard rule: two templates, two secrets. */
	cp_policy_decide(pol, "release-notes", "POST", "api.example.com", 443, "/v1", &d);
	assert_int_equal(d.verdict, CP_ALLOW);
	r = d.rule;
	assert_int_equal(r->index, 2);
	assert_string_equal(r->host, "*.example.com");
	assert_true(r->wildcard);
	assert_string_equal(r->inject[0].value, "AKIA-0123456789-s3cr3t-wiki-token");
	assert_int_equal(r->n_secrets, 2);
	assert_string_equal(r->secrets[0].name, "Api.Key_1");
	assert_string_equal(r->secrets[1].name, "wiki-token");

	cp_policy_decide(pol, "release-notes", "POST", "wiki.local", 8443, "/x", &d);
	assert_int_equal(d.verdict, CP_ALLOW);
	assert_int_equal(d.rule->index, 1);
	assert_int_equal(d.rule->port, 8443);
	assert_int_equal(d.rule->n_inject, 0);
	assert_int_equal(d.rule->n_secrets, 0);
	assert_string_equal(d.rule->methods[0], "POST");

	cp_policy_decide(pol, "release-notes", "GET", "127.0.0.1", 9000, "/", &d);
	assert_int_equal(d.verdict, CP_ALLOW);
	assert_int_equal(d.rule->index, 3);
	assert_string_equal(d.rule->methods[0], "GET"); /* default */
	assert_int_equal(d.rule->n_methods, 1);
	cp_policy_decide(pol, "release-notes", "GET", "::1", 9001, "/", &d);
	assert_int_equal(d.verdict, CP_ALLOW);
	assert_int_equal(d.rule->index, 4);
	assert_string_equal(d.rule->host, "::1");

	cp_policy_destroy(&pol);
	assert_null(pol);
	cp_policy_destroy(&pol);
	cp_policy_destroy(NULL);
}

static const struct {
	const char *profile, *method, *host;
	unsigned port;
	const char *path;
	enum cp_verdict verdict;
	int rule; /* index when allowed */
	const char *reason;
} s_decisions[] = {
    {"release-notes", "GET", "wiki.local", 443, "/snippets/", CP_ALLOW, 0, ""},
    {"release-notes", "HEAD", "wiki.local", 80, "/snippets/a/b", CP_ALLOW, 0, ""},
    {"release-notes", "GET", "wiki.local", 80, "/health", CP_ALLOW, 0, ""},
    {"release-notes", "GET", "wiki.local", 80, "/health/live", CP_ALLOW, 0, ""},
    {"release-notes", "GET", "wiki.local", 80, "/healthz", CP_DENY_PATH, -1,
     "path /healthz of wiki.local is not allowed in profile release-notes"},
    {"release-notes", "GET", "wiki.local", 80, "/snippets", CP_DENY_PATH, -1,
     "path /snippets of wiki.local is not allowed in profile release-notes"},
    {"release-notes", "GET", "wiki.local", 80, "/", CP_DENY_PATH, -1,
     "path / of wiki.local is not allowed in profile release-notes"},
    {"release-notes", "POST", "wiki.local", 80, "/snippets/", CP_DENY_METHOD, -1,
     "method POST to wiki.local is not allowed in profile release-notes"},
    {"release-notes", "get", "wiki.local", 80, "/snippets/", CP_DENY_METHOD, -1,
     "method get to wiki.local is not allowed in profile release-notes"},
    {"release-notes", "GET", "wiki.local", 8080, "/snippets/", CP_DENY_PORT, -1,
     "port 8080 of wiki.local is not allowed in profile release-notes"},
    /* 8443 is named, for POST only. */
    {"release-notes", "GET", "wiki.local", 8443, "/snippets/", CP_DENY_METHOD, -1,
     "method GET to wiki.local is not allowed in profile release-notes"},
    {"release-notes", "GET", "evil.example", 443, "/", CP_DENY_HOST, -1,
     "no rule for evil.example in profile release-notes"},
    {"release-notes", "GET", "wiki.local.evil.example", 80, "/snippets/", CP_DENY_HOST, -1,
     "no rule for wiki.local.evil.example in profile release-notes"},
    /* Wildcards: sub-domains at any depth, never the apex or a look-alike. */
    {"release-notes", "GET", "a.example.com", 443, "/x", CP_ALLOW, 2, ""},
    {"release-notes", "GET", "a.b.example.com", 80, "/x", CP_ALLOW, 2, ""},
    {"release-notes", "GET", "example.com", 443, "/x", CP_DENY_HOST, -1,
     "no rule for example.com in profile release-notes"},
    {"release-notes", "GET", "evilexample.com", 443, "/x", CP_DENY_HOST, -1,
     "no rule for evilexample.com in profile release-notes"},
    {"release-notes", "GET", "a.example.com", 8443, "/x", CP_DENY_PORT, -1,
     "port 8443 of a.example.com is not allowed in profile release-notes"},
    /* The first matching rule wins: internal.example.com is also covered by
     * the wildcard (rule 2) before its own rule. */
    {"release-notes", "GET", "internal.example.com", 443, "/", CP_ALLOW, 2, ""},
    {"release-notes", "DELETE", "internal.example.com", 443, "/", CP_ALLOW, 5, ""},
    {"release-notes", "PUT", "internal.example.com", 443, "/", CP_DENY_METHOD, -1,
     "method PUT to internal.example.com is not allowed in profile release-notes"},
    /* CONNECT: method and path NULL, host and port decide. */
    {"release-notes", NULL, "wiki.local", 443, NULL, CP_ALLOW, 0, ""},
    {"release-notes", NULL, "wiki.local", 8443, NULL, CP_ALLOW, 1, ""},
    {"release-notes", NULL, "wiki.local", 22, NULL, CP_DENY_PORT, -1,
     "port 22 of wiki.local is not allowed in profile release-notes"},
    {"release-notes", NULL, "127.0.0.1", 443, NULL, CP_DENY_PORT, -1,
     "port 443 of 127.0.0.1 is not allowed in profile release-notes"},
    {"release-notes", NULL, "evil.example", 443, NULL, CP_DENY_HOST, -1,
     "no rule for evil.example in profile release-notes"},
    {"empty", "GET", "wiki.local", 80, "/", CP_DENY_HOST, -1,
     "no rule for wiki.local in profile empty"},
    {"nope", "GET", "wiki.local", 80, "/", CP_DENY_PROFILE, -1, "profile nope is not loaded"},
    {"nope\r\nX-Evil: 1", "GET", "wiki.local", 80, "/", CP_DENY_PROFILE, -1,
     "profile nope??X-Evil:?1 is not loaded"},
};

static void
test_policy_decide(void **state)
{
	(void)state;
	char err[256];
	ahp_profiles_t *set = s_profiles("decide", s_rn_files);
	ahp_secrets_t *sec = s_secrets("decide-secrets", s_rn_secrets);
	cp_policy_t *pol = cp_policy_new(set, sec, err, sizeof err);
	if (pol == NULL)
		fail_msg("%s", err);
	for (size_t i = 0; i < sizeof s_decisions / sizeof s_decisions[0]; i++) {
		cp_decision_t d;
		memset(&d, 0x55, sizeof d);
		cp_policy_decide(pol, s_decisions[i].profile, s_decisions[i].method,
		                 s_decisions[i].host, (uint16_t)s_decisions[i].port,
		                 s_decisions[i].path, &d);
		if (d.verdict != s_decisions[i].verdict)
			fail_msg("decision %zu: verdict %d, want %d (%s)", i, d.verdict,
			         s_decisions[i].verdict, d.reason);
		if (s_decisions[i].rule >= 0) {
			assert_non_null(d.rule);
			if ((int)d.rule->index != s_decisions[i].rule)
				fail_msg("decision %zu: rule %u, want %d", i, d.rule->index,
				         s_decisions[i].rule);
		} else {
			assert_null(d.rule);
		}
		if (strcmp(d.reason, s_decisions[i].reason) != 0)
			fail_msg("decision %zu: reason '%s', want '%s'", i, d.reason,
			         s_decisions[i].reason);
	}
	/* A long path is cut in the reason, which stays one line under the cap. */
	char path[600];
	memset(path, 'a', sizeof path);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	cp_decision_t d;
	cp_policy_decide(pol, "release-notes", "GET", "wiki.local", 80, path, &d);
	assert_int_equal(d.verdict, CP_DENY_PATH);
	assert_true(strlen(d.reason) < CP_REASON_MAX);
	assert_non_null(strstr(d.reason, "a... of wiki.local is not allowed in profile "
	                                 "release-notes"));
	/* No policy at all: every profile is unknown. */
	cp_policy_decide(NULL, "release-notes", "GET", "wiki.local", 80, "/", &d);
	assert_int_equal(d.verdict, CP_DENY_PROFILE);
	cp_policy_destroy(&pol);
	ahp_profiles_destroy(&set);
	ahp_secrets_destroy(&sec);
}

/* A rule naming a missing secret, or one that cannot go in a header, fails
 * the whole build with "profile: egress[i]: reason". */
static void
test_policy_build_errors(void **state)
{
	(void)state;
	char err[256];
	static const char *const files[] = {
	    "a.yaml",
	    "name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: ok.example\n"
	    "  - host: wiki.local\n    inject: { Authorization: \"Bearer {{secret:missing}}\" }\n",
	    NULL};
	static const char *const secrets[] = {"other", "x", NULL};
	ahp_profiles_t *set = s_profiles("errors", files);
	ahp_secrets_t *sec = s_secrets("errors-secrets", secrets);
	assert_null(cp_policy_new(set, sec, err, sizeof err));
	assert_string_equal(err, "a: egress[1]: secret 'missing' does not exist");
	/* No secrets at all (the directory could not be read). */
	assert_null(cp_policy_new(set, NULL, err, sizeof err));
	assert_string_equal(err, "a: egress[1]: secret 'missing' does not exist");
	ahp_profiles_destroy(&set);
	ahp_secrets_destroy(&sec);

	static const char *const files2[] = {
	    "b.yaml",
	    "name: b\nmodel: mock:x\nsystem_prompt: p\negress:\n"
	    "  - host: wiki.local\n    inject: { X-Key: \"{{secret:multi}}\" }\n",
	    NULL};
	static const char *const secrets2[] = {"multi", "line1\nX-Evil: 1\n", NULL};
	set = s_profiles("errors2", files2);
	sec = s_secrets("errors2-secrets", secrets2);
	assert_null(cp_policy_new(set, sec, err, sizeof err));
	assert_string_equal(err, "b: egress[0]: secret 'multi' holds a control character and "
	                         "cannot go in a header");
	ahp_profiles_destroy(&set);
	ahp_secrets_destroy(&sec);

	/* Too long once expanded (a 64 KiB secret twice). */
	static const char *const files3[] = {
	    "c.yaml",
	    "name: c\nmodel: mock:x\nsystem_prompt: p\negress:\n"
	    "  - host: wiki.local\n    inject: { X-Key: \"{{secret:big}}{{secret:big}}\" }\n",
	    NULL};
	char *big = malloc(9000);
	assert_non_null(big);
	memset(big, 'k', 8999);
	big[8999] = '\0';
	const char *secrets3[] = {"big", big, NULL};
	set = s_profiles("errors3", files3);
	sec = s_secrets("errors3-secrets", secrets3);
	assert_null(cp_policy_new(set, sec, err, sizeof err));
	assert_string_equal(
	    err, "c: egress[0]: header 'X-Key' is longer than 16384 bytes once expanded");
	ahp_profiles_destroy(&set);
	ahp_secrets_destroy(&sec);
	free(big);

	/* No profiles: an empty policy that knows no profile. */
	cp_policy_t *pol = cp_policy_new(NULL, NULL, err, sizeof err);
	assert_non_null(pol);
	assert_false(cp_policy_has_profile(pol, "a"));
	cp_policy_destroy(&pol);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_host_normalize),      cmocka_unit_test(test_host_lengths),
	    cmocka_unit_test(test_authority_parse),     cmocka_unit_test(test_path_check),
	    cmocka_unit_test(test_policy_build),        cmocka_unit_test(test_policy_decide),
	    cmocka_unit_test(test_policy_build_errors),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
