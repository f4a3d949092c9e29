/* Unit tests for the profile loader: every field, defaults, each error with its line:column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/profile.h"

#define DATA AHP_TEST_DATA "/profiles"
#define ETC DATA "/etc"

static int
s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Per-test temp dir, removed in teardown (never follows symlinks). */
static int
setup_tmp(void **state)
{
	char *dir = strdup("/tmp/ahp-test-profile-XXXXXX");
	if (dir == NULL || mkdtemp(dir) == NULL)
		return -1;
	*state = dir;
	return 0;
}

static int
teardown_tmp(void **state)
{
	char *dir = *state;
	int rc = nftw(dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
	return rc;
}

static void
s_write(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Loads DATA/<rel> with base dir ETC and expects "<path>:<tail>" exactly. */
static void
s_expect_error(const char *rel, const char *tail)
{
	char path[PATH_MAX], want[PATH_MAX + 2048], err[1024];
	snprintf(path, sizeof path, "%s/%s", DATA, rel);
	snprintf(want, sizeof want, "%s:%s", path, tail);
	ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
	if (p != NULL)
		fail_msg("%s loaded but should fail with: %s", rel, tail);
	assert_string_equal(err, want);
}

static void
test_full_profile(void **state)
{
	(void)state;
	char err[1024] = "";
	/* base_dir NULL: the directory above profiles/, i.e. ETC. */
	ahp_profile_t *p = ahp_profile_load(ETC "/profiles/full.yaml", NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);

	assert_string_equal(p->name, "full-profile-1");
	assert_string_equal(p->model, "openai:gpt-4o/2024-08:latest");
	assert_string_equal(p->provider, "openai");
	assert_string_equal(p->model_name, "gpt-4o/2024-08:latest");
	assert_string_equal(p->system_prompt, "You write release notes.\nFollow the skill.\n");
	assert_string_equal(p->path, ETC "/profiles/full.yaml");

	assert_int_equal(p->n_tools, 4);
	assert_string_equal(p->tools[0], "exec");
	assert_string_equal(p->tools[1], "skill");
	assert_string_equal(p->tools[2], "exec_service");
	assert_string_equal(p->tools[3], "ask_human");
	assert_int_equal(p->n_services, 2);
	assert_string_equal(p->services[0], "lookup_wiki");
	assert_string_equal(p->services[1], "publish_summary");
	assert_true(ahp_profile_has_tool(p, "ask_human"));
	assert_false(ahp_profile_has_tool(p, "shell"));
	assert_true(ahp_profile_has_service(p, "publish_summary"));
	assert_false(ahp_profile_has_service(p, "publish"));

	assert_string_equal(p->skills, "skills/demo");
	char *real = realpath(ETC "/skills/demo", NULL);
	assert_non_null(real);
	assert_string_equal(p->skills_dir, real);
	free(real);

	assert_int_equal(p->sandbox.network, AHP_NET_PROXY);
	assert_int_equal(p->sandbox.memory_mb, 512);
	assert_int_equal(p->sandbox.pids_max, 128);
	assert_int_equal(p->sandbox.cpu_seconds, 20);
	assert_int_equal(p->sandbox.timeout_s, 60);
	assert_int_equal(p->sandbox.output_kb, 128);

	assert_int_equal(p->n_egress, 3);
	ahp_egress_t *e = &p->egress[0];
	assert_string_equal(e->host, "wiki.local");
	assert_int_equal(e->n_methods, 2);
	assert_string_equal(e->methods[0], "GET");
	assert_string_equal(e->methods[1], "HEAD");
	assert_null(e->paths);
	assert_int_equal(e->n_paths, 0);
	assert_int_equal(e->n_inject, 2);
	assert_string_equal(e->inject[0].name, "Authorization");
	/* The template is kept as written: the loader never resolves secrets. */
	assert_string_equal(e->inject[0].value, "Bearer {{secret:wiki-token}}");
	assert_string_equal(e->inject[1].name, "X-Trace");
	assert_string_equal(e->inject[1].value, "static");
	e = &p->egress[1];
	assert_string_equal(e->host, "*.example.com");
	assert_int_equal(e->n_methods, 5);
	assert_string_equal(e->methods[0], "POST");
	assert_string_equal(e->methods[4], "OPTIONS");
	assert_int_equal(e->n_inject, 1);
	assert_string_equal(e->inject[0].name, "X-Api-Key");
	assert_string_equal(e->inject[0].value, "{{secret:api.key_1}}-{{secret:other}}");
	e = &p->egress[2];
	assert_string_equal(e->host, "api.internal:8443");
	assert_null(e->methods);
	assert_int_equal(e->n_methods, 0);
	assert_int_equal(e->n_paths, 2);
	assert_string_equal(e->paths[0], "/v1/");
	assert_string_equal(e->paths[1], "/health");
	assert_null(e->inject);
	assert_int_equal(e->n_inject, 0);

	assert_int_equal(p->n_approvals, 3);
	ahp_approval_t *a = &p->approvals[0];
	assert_string_equal(a->service, "publish_summary");
	assert_null(a->tool);
	assert_null(a->match);
	assert_string_equal(a->expires, "2h");
	assert_int_equal(a->expires_s, 7200);
	a = &p->approvals[1];
	assert_null(a->service);
	assert_string_equal(a->tool, "exec");
	assert_string_equal(a->match, "^(rm|git push)\\b");
	assert_string_equal(a->expires, "24h");
	assert_int_equal(a->expires_s, 86400);
	a = &p->approvals[2];
	assert_string_equal(a->tool, "ask_human");
	assert_string_equal(a->match, "deploy");
	assert_string_equal(a->expires, "7d");
	assert_int_equal(a->expires_s, 7 * 86400);

	assert_int_equal(p->limits.max_turns, 12);
	assert_int_equal(p->limits.max_model_calls, 34);

	ahp_profile_destroy(&p);
	assert_null(p);
	ahp_profile_destroy(&p); /* NULL-safe */
	ahp_profile_destroy(NULL);
}

static void
test_defaults(void **state)
{
	(void)state;
	char err[1024] = "";
	ahp_profile_t *p = ahp_profile_load(ETC "/profiles/minimal.yaml", ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_string_equal(p->name, "minimal");
	assert_string_equal(p->provider, "mock");
	assert_string_equal(p->model_name, "scripted");
	assert_string_equal(p->system_prompt, "Be brief.");
	assert_null(p->tools);
	assert_int_equal(p->n_tools, 0);
	assert_int_equal(p->n_services, 0);
	assert_null(p->skills);
	assert_null(p->skills_dir);
	assert_int_equal(p->sandbox.network, AHP_NET_NONE);
	assert_int_equal(p->sandbox.memory_mb, 256);
	assert_int_equal(p->sandbox.pids_max, 64);
	assert_int_equal(p->sandbox.cpu_seconds, 10);
	assert_int_equal(p->sandbox.timeout_s, 30);
	assert_int_equal(p->sandbox.output_kb, 64);
	assert_int_equal(p->sandbox.disk_mb, 1024);
	assert_int_equal(p->sandbox.cpus_milli, 1000);
	assert_int_equal(p->n_egress, 0);
	assert_int_equal(p->n_approvals, 0);
	assert_int_equal(p->limits.max_turns, 30);
	assert_int_equal(p->limits.max_model_calls, 50);
	assert_false(ahp_profile_has_tool(p, "exec"));
	ahp_profile_destroy(&p);

	/* Partly given nested mappings: the rest still defaults. */
	p = ahp_profile_load(ETC "/profiles/partial.yaml", ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_int_equal(p->sandbox.memory_mb, 1024);
	assert_int_equal(p->sandbox.pids_max, 64);
	assert_int_equal(p->sandbox.network, AHP_NET_NONE);
	assert_int_equal(p->limits.max_turns, 30);
	assert_int_equal(p->limits.max_model_calls, 5);
	assert_int_equal(p->n_approvals, 1);
	assert_string_equal(p->approvals[0].tool, "exec");
	assert_null(p->approvals[0].match);
	assert_string_equal(p->approvals[0].expires, "24h");
	assert_int_equal(p->approvals[0].expires_s, 86400);
	ahp_profile_destroy(&p);
}

/* One fixture per kind of error, each with its exact position. */
static void
test_error_fixtures(void **state)
{
	(void)state;
	s_expect_error("bad/unknown-top-key.yaml",
	               "3:1: unknown key 'sytem_prompt' (did you mean 'system_prompt'?)");
	s_expect_error("bad/unknown-nested-key.yaml",
	               "6:3: unknown key 'memory' in sandbox (did you mean 'memory_mb'?)");
	s_expect_error("bad/bad-type.yaml",
	               "4:8: tools must be a list, not a string (e.g. tools: [exec, skill])");
	s_expect_error("bad/out-of-range.yaml",
	               "6:13: sandbox.pids_max 8192 is out of range (allowed 8..4096)");
	s_expect_error("bad/bad-name.yaml", "2:7: name 'Release_Notes' is not valid (use 1 to 64 "
	                                    "characters from a-z, 0-9 and -)");
	s_expect_error("bad/unknown-tool.yaml",
	               "4:15: unknown tool 'shell' (known tools: exec, skill, exec_service, "
	               "ask_human)");
	s_expect_error("bad/unknown-service.yaml",
	               "6:5: unknown service 'send_email' (known services: lookup_wiki, "
	               "publish_summary)");
	s_expect_error("bad/approval-service-not-listed.yaml",
	               "5:14: approvals[0].service 'publish_summary' is not in this profile's "
	               "services (add publish_summary to services)");
	s_expect_error("bad/bad-regex.yaml", "7:12: approvals[0].match is not a valid regular "
	                                     "expression (Unmatched ( or \\()");
	s_expect_error("bad/bad-duration.yaml", "7:14: approvals[0].expires '1w' is not a duration "
	                                        "(like 30s, 15m, 24h or 7d; at most 30d)");
	s_expect_error("bad/bad-secret-template.yaml",
	               "7:22: egress[0].inject.Authorization: unsupported template "
	               "'{{secrets:wiki-token}}' (only {{secret:NAME}} is allowed, NAME made of "
	               "A-Z a-z 0-9 . _ -)");
	s_expect_error("bad/missing-required.yaml", "2:1: missing required key 'system_prompt' "
	                                            "(required keys: name, model, system_prompt)");
	s_expect_error("bad/skills-missing.yaml",
	               "4:11: skills directory 'skills/nope' does not exist (looked for " ETC
	               "/skills/nope)");
	/* The model reads what the skills directory holds: never outside etc/. */
	s_expect_error("bad/skills-outside.yaml",
	               "4:9: skills directory '/etc' is outside the platform's etc directory "
	               "(skills live under " ETC ")");
	s_expect_error("bad/skills-dotdot.yaml",
	               "4:9: skills directory '../bad' is outside the platform's etc directory "
	               "(skills live under " ETC ")");
	s_expect_error("bad/syntax-error.yaml",
	               "4:14: YAML syntax error: did not find expected ',' or ']' (while parsing "
	               "a flow sequence at line 3, column 8)");
}

/* More errors, from inline documents: {yaml, expected "line:col: message"}. */
static const struct {
	const char *yaml;
	size_t len; /* 0 = strlen */
	const char *want;
} s_cases[] = {
    {"name: a\nmodel: &m mock:x\nsystem_prompt: *m\n", 0,
     "3:16: YAML aliases (*m) are not supported in profiles (write the value out in full)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: &t [exec]\nservices: *t\n", 0,
     "5:11: YAML aliases (*t) are not supported in profiles (write the value out in full)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\n---\nname: b\n", 0,
     "4:1: a profile file holds one YAML document, found another (split it into separate "
     "files)"},
    {"name: a\nmodel: mock:x\nname: b\nsystem_prompt: p\n", 0,
     "3:1: key 'name' appears twice in profile (first given at line 1)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { memory_mb: 0256 }\n", 0,
     "4:23: sandbox.memory_mb must be a whole number, not '0256' (allowed 16..65536)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { memory_mb: 256MB }\n", 0,
     "4:23: sandbox.memory_mb must be a whole number, not '256MB' (allowed 16..65536)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox:\n  timeout_s: [1]\n", 0,
     "5:14: sandbox.timeout_s must be a number, not a list (allowed 1..3600)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec]\nservices: [lookup_wiki]\n"
     "approvals:\n  - { service: lookup_wiki, tool: exec }\n",
     0,
     "7:5: approvals[0] names both a service and a tool (an approval gates exactly one "
     "service or one tool)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\napprovals:\n  - match: x\n", 0,
     "5:5: approvals[0] needs a 'service' or a 'tool' (an approval gates exactly one service "
     "or one tool)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [skill]\napprovals:\n  - tool: exec\n", 0,
     "6:11: approvals[0].tool 'exec' is not in this profile's tools (add exec to tools)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec]\napprovals:\n  - tool: shell\n", 0,
     "6:11: unknown tool 'shell' (known tools: exec, skill, exec_service, ask_human)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki_local\n", 0,
     "5:11: egress[0].host 'wiki_local' is not a valid host: only a-z, 0-9, '-' and '.' may appear "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: Wiki.Local\n", 0,
     "5:11: egress[0].host 'Wiki.Local' is not a valid host: upper-case letters (host names are "
     "matched in lower case) "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: a.*.com\n", 0,
     "5:11: egress[0].host 'a.*.com' is not a valid host: only a-z, 0-9, '-' and '.' may appear "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"*\"\n", 0,
     "5:11: egress[0].host '*' is not a valid host: a bare * would allow every host; name the "
     "hosts "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"*.\"\n", 0,
     "5:11: egress[0].host '*.' is not a valid host: no trailing dot "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki.local.\n", 0,
     "5:11: egress[0].host 'wiki.local.' is not a valid host: no trailing dot "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: a..b\n", 0,
     "5:11: egress[0].host 'a..b' is not a valid host: empty label "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: -a.b\n", 0,
     "5:11: egress[0].host '-a.b' is not a valid host: a label starts or ends with '-' "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b\n",
     0,
     "5:11: egress[0].host 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is "
     "not a valid host: a label is longer than 63 bytes "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: 127.1\n", 0,
     "5:11: egress[0].host '127.1' is not a valid host: a numeric host must be a dotted quad like "
     "127.0.0.1 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: 0x7f.0.0.1\n", 0,
     "5:11: egress[0].host '0x7f.0.0.1' is not a valid host: a numeric host must be a dotted quad "
     "like 127.0.0.1 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: 2130706433\n", 0,
     "5:11: egress[0].host '2130706433' is not a valid host: a numeric host must be a dotted quad "
     "like 127.0.0.1 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: 0177.0.0.1\n", 0,
     "5:11: egress[0].host '0177.0.0.1' is not a valid host: a numeric host must be a dotted quad "
     "like 127.0.0.1 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: a.0x10\n", 0,
     "5:11: egress[0].host 'a.0x10' is not a valid host: a numeric host must be a dotted quad like "
     "127.0.0.1 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"*.1.2.3.4\"\n", 0,
     "5:11: egress[0].host '*.1.2.3.4' is not a valid host: a wildcard names sub-domains, not an "
     "IP address "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wé.local\n", 0,
     "5:11: egress[0].host 'wé.local' is not a valid host: non-ASCII (write an international name "
     "in punycode, xn--...) "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki.local:0\n", 0,
     "5:11: egress[0].host 'wiki.local:0' is not a valid host: the port must be a number 1..65535 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki.local:65536\n", 0,
     "5:11: egress[0].host 'wiki.local:65536' is not a valid host: the port must be a number "
     "1..65535 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki.local:080\n", 0,
     "5:11: egress[0].host 'wiki.local:080' is not a valid host: the port must be a number "
     "1..65535 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"wiki.local:\"\n", 0,
     "5:11: egress[0].host 'wiki.local:' is not a valid host: the port must be a number 1..65535 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: wiki.local:80:81\n", 0,
     "5:11: egress[0].host 'wiki.local:80:81' is not a valid host: an IPv6 address goes in "
     "brackets, e.g. [::1]:8080 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"[::1\"\n", 0,
     "5:11: egress[0].host '[::1' is not a valid host: an IPv6 address needs a closing ']' "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"[::g]\"\n", 0,
     "5:11: egress[0].host '[::g]' is not a valid host: not an IPv6 address "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"[::1]x\"\n", 0,
     "5:11: egress[0].host '[::1]x' is not a valid host: only :port may follow ']' "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: \"::1\"\n", 0,
     "5:11: egress[0].host '::1' is not a valid host: an IPv6 address goes in brackets, e.g. "
     "[::1]:8080 "
     "(write a lower-case host like wiki.local, wiki.local:8443, [fd00::1]:8080 or a wildcard like "
     "*.example.com)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - methods: [GET]\n", 0,
     "5:5: missing required key 'host' in egress[0] (required keys: host)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"a\\r\\nHost: evil\" }\n",
     0,
     "6:20: egress[0].inject.X-A contains a control character (header values cannot hold "
     "line breaks or control characters)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { \"Bad Header\": x }\n",
     0,
     "6:15: egress[0].inject: not a valid HTTP header name (letters, digits and "
     "!#$%&'*+-.^_`|~, at most 128)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: a, x-a: b }\n",
     0, "6:23: egress[0].inject: header 'x-a' is injected twice"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"Bearer {{secret:wiki\" }\n",
     0,
     "6:20: egress[0].inject.X-A: unterminated template '{{secret:wiki' (only "
     "{{secret:NAME}} is allowed, NAME made of A-Z a-z 0-9 . _ -)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"{{secret:wiki/x}}\" }\n",
     0,
     "6:20: egress[0].inject.X-A: unsupported template '{{secret:wiki/x}}' (only "
     "{{secret:NAME}} is allowed, NAME made of A-Z a-z 0-9 . _ -)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"{{secret:}}\" }\n",
     0,
     "6:20: egress[0].inject.X-A: unsupported template '{{secret:}}' (only "
     "{{secret:NAME}} is allowed, NAME made of A-Z a-z 0-9 . _ -)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"a\\0b\" }\n",
     0, "6:20: value contains a NUL character"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { X-A: \"a\\nb\" }\n",
     0,
     "6:20: egress[0].inject.X-A contains a control character (header values cannot hold "
     "line breaks or control characters)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { host: evil.example }\n",
     0,
     "6:15: egress[0].inject: header 'host' cannot be injected (Host, Content-Length, "
     "Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade and Proxy-* are set by "
     "credproxy)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { Content-Length: \"0\" }\n",
     0,
     "6:15: egress[0].inject: header 'Content-Length' cannot be injected (Host, "
     "Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade and "
     "Proxy-* are set by credproxy)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { Transfer-Encoding: chunked }\n",
     0,
     "6:15: egress[0].inject: header 'Transfer-Encoding' cannot be injected (Host, "
     "Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade and "
     "Proxy-* are set by credproxy)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { connection: close }\n",
     0,
     "6:15: egress[0].inject: header 'connection' cannot be injected (Host, "
     "Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade and "
     "Proxy-* are set by credproxy)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: { Proxy-Authorization: x }\n",
     0,
     "6:15: egress[0].inject: header 'Proxy-Authorization' cannot be injected (Host, "
     "Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, Trailer, Upgrade and "
     "Proxy-* are set by credproxy)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n    paths: []\n", 0,
     "6:12: egress[0].paths must list at least 1 path (e.g. paths: [/snippets/]; leave "
     "paths out for any path)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n    paths: /x/\n", 0,
     "6:12: egress[0].paths must be a list, not a string (e.g. paths: [/snippets/]; leave "
     "paths out for any path)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n    paths: [x/]\n", 0,
     "6:13: egress[0].paths[0] 'x/' is not a valid path prefix (a path prefix starts with "
     "'/', e.g. /snippets/; printable ASCII without spaces, '?', '#' or . and .. segments)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    paths: [/a/../b/]\n",
     0,
     "6:13: egress[0].paths[0] '/a/../b/' is not a valid path prefix (a path prefix starts "
     "with '/', e.g. /snippets/; printable ASCII without spaces, '?', '#' or . and .. "
     "segments)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    paths: [\"/a?b\"]\n",
     0,
     "6:13: egress[0].paths[0] '/a?b' is not a valid path prefix (a path prefix starts "
     "with '/', e.g. /snippets/; printable ASCII without spaces, '?', '#' or . and .. "
     "segments)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    paths: [/a/, /b/, /a/]\n",
     0, "6:23: path '/a/' is listed twice"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n"
     "    inject: \"Authorization: x\"\n",
     0,
     "6:13: egress[0].inject must be a mapping, not a string (e.g. inject: { Authorization: "
     "\"Bearer {{secret:wiki-token}}\" })"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n    methods: [get]\n", 0,
     "6:15: unknown method 'get' (did you mean 'GET'? known methods: GET, HEAD, POST, PUT, "
     "PATCH, DELETE, OPTIONS)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\negress:\n  - host: w\n    methods: []\n", 0,
     "6:14: egress[0].methods must list at least 1 method (e.g. methods: [GET, POST]; leave "
     "methods out for GET only)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { network: proxi }\n", 0,
     "4:21: unknown network mode 'proxi' (did you mean 'proxy'? allowed network modes: none, "
     "proxy)"},
    {"name: a\nmodel: gpt4\nsystem_prompt: p\n", 0,
     "2:8: model 'gpt4' is not valid (write provider:model, e.g. mock:scripted; both parts "
     "from A-Z a-z 0-9 . _ - and the model may also use / and :)"},
    {"name: a\nmodel: \"mo ck:x\"\nsystem_prompt: p\n", 0,
     "2:8: model 'mo ck:x' is not valid (write provider:model, e.g. mock:scripted; both parts "
     "from A-Z a-z 0-9 . _ - and the model may also use / and :)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec, skill, exec]\n", 0,
     "4:22: tool 'exec' is listed twice"},
    {"name: a\nmodel: mock:x\nsystem_prompt: \"  \"\n", 0, "3:16: system_prompt must not be blank"},
    /* Unicode White_Space only (U+3000, U+00A0, U+2028) is blank too. */
    {"name: a\nmodel: mock:x\nsystem_prompt: \"\\u3000\\u00a0\\u2028\"\n", 0,
     "3:16: system_prompt must not be blank"},
    {"name: a\nmodel: mock:x\nsystem_prompt:\n", 0, "3:15: system_prompt must not be empty"},
    {"name: a\nmodel: mock:x\nsystem_prompt: \"a\\0b\"\n", 0,
     "3:16: value contains a NUL character"},
    {"name: !secret a\nmodel: mock:x\nsystem_prompt: p\n", 0,
     "1:7: YAML tag '!secret' is not supported (remove the tag)"},
    {"", 0, "1:1: profile is empty (required keys: name, model, system_prompt)"},
    {"- name: a\n", 0,
     "1:1: profile must be a mapping, not a list (a profile is a mapping: name: ..., model: "
     "...)"},
    {"? [a]\n: b\n", 0, "1:3: keys in profile must be names, not a list"},
    {"zzz: 1\n", 0,
     "1:1: unknown key 'zzz' (allowed keys: name, model, system_prompt, tools, services, "
     "skills, sandbox, egress, approvals, limits)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nskills: skills/plain-file\n", 0,
     "4:9: skills path 'skills/plain-file' is not a directory (looked for " ETC
     "/skills/plain-file)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nskills: \"\"\n", 0,
     "4:9: skills must not be empty (e.g. skills: skills/release-notes)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec]\n"
     "approvals: [{ tool: exec, expires: 0s }]\n",
     0,
     "5:36: approvals[0].expires '0s' is out of range (like 30s, 15m, 24h or 7d; at most "
     "30d)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec]\n"
     "approvals: [{ tool: exec, expires: 31d }]\n",
     0,
     "5:36: approvals[0].expires '31d' is out of range (like 30s, 15m, 24h or 7d; at most "
     "30d)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nlimits: { max_model_calls: 10001 }\n", 0,
     "4:28: limits.max_model_calls 10001 is out of range (allowed 1..10000)"},
    /* sandbox.disk_mb: a whole number in the table's range */
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { disk_mb: 15 }\n", 0,
     "4:21: sandbox.disk_mb 15 is out of range (allowed 16..1048576)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { disk_mb: 1.5 }\n", 0,
     "4:21: sandbox.disk_mb must be a whole number, not '1.5' (allowed 16..1048576)"},
    /* sandbox.cpus: a decimal like Docker's --cpus, parsed strictly */
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: 1e3 }\n", 0,
     "4:18: sandbox.cpus must be a number of CPUs like 0.5 or 2, not '1e3' (write CPUs as "
     "digits, like 0.5, 1 or 2)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: -1 }\n", 0,
     "4:18: sandbox.cpus must be a number of CPUs like 0.5 or 2, not '-1' (write CPUs as "
     "digits, like 0.5, 1 or 2)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: .5 }\n", 0,
     "4:18: sandbox.cpus must be a number of CPUs like 0.5 or 2, not '.5' (write CPUs as "
     "digits, like 0.5, 1 or 2)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: 0.1234 }\n", 0,
     "4:18: sandbox.cpus must be a number of CPUs like 0.5 or 2, not '0.1234' (at most 3 "
     "decimals)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: 0 }\n", 0,
     "4:18: sandbox.cpus 0 is out of range (allowed 0.01..64)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: 0.005 }\n", 0,
     "4:18: sandbox.cpus 0.005 is out of range (allowed 0.01..64)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: 64.001 }\n", 0,
     "4:18: sandbox.cpus 64.001 is out of range (allowed 0.01..64)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { cpus: [1] }\n", 0,
     "4:18: sandbox.cpus must be a number, not a list (allowed 0.01..64)"},
    {"name: a\nmodel: mock:x\nsystem_prompt: p\nlimits: { max_turn: 3 }\n", 0,
     "4:11: unknown key 'max_turn' in limits (did you mean 'max_turns'?)"},
    {"name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 0,
     "1:7: name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is not valid "
     "(use 1 to 64 characters from a-z, 0-9 and -)"},
    {"name: a\nmodel: \xff\n", 0, "2:8: YAML syntax error: invalid leading UTF-8 octet"},
    {"name: a\n\tmodel: x\n", 0,
     "2:1: YAML syntax error: found a tab character that violates indentation (while "
     "scanning a plain scalar at line 1, column 7)"},
};

static void
test_error_cases(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], want[PATH_MAX + 2048], err[1024];

	snprintf(path, sizeof path, "%s/case.yaml", dir);
	for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
		const char *y = s_cases[i].yaml;
		s_write(path, y, s_cases[i].len ? s_cases[i].len : strlen(y));
		snprintf(want, sizeof want, "%s:%s", path, s_cases[i].want);
		err[0] = '\0';
		ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
		if (p != NULL)
			fail_msg("case %zu loaded but should fail with: %s", i, s_cases[i].want);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got: %s\nwant: %s", i, err, want);
	}
}

/* Shapes that must load: wildcard hosts, quoted numbers, absolute skills. */
static void
test_valid_variants(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], yaml[2048], err[1024];
	char *real = realpath(ETC "/skills/demo", NULL);
	assert_non_null(real);

	snprintf(path, sizeof path, "%s/ok.yaml", dir);
	snprintf(yaml, sizeof yaml,
	         "---\n"
	         "name: x-1\n"
	         "model: \"local:models/llama-3:8b\"\n"
	         "system_prompt: >\n  folded\n  text\n"
	         "tools: []\n"
	         "skills: %s\n"
	         "sandbox: { memory_mb: \"16\", pids_max: 4096, network: none, disk_mb: 16,"
	         " cpus: 1.25 }\n"
	         "egress:\n  - host: \"*.b.example\"\n    inject: {}\n  - host: 127.0.0.1\n"
	         "  - host: \"[fd00::1]:8080\"\n  - host: \"*.b.example:8443\"\n"
	         "  - host: xn--bcher-kva.example\n  - host: 10.0.0.1:65535\n"
	         "    paths: [/, /a/b]\n    inject: { X-Key: \"{{secret:Key_1.x}}\" }\n"
	         "...\n",
	         real);
	s_write(path, yaml, strlen(yaml));
	/* An absolute skills path is fine inside the etc dir. */
	ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_string_equal(p->provider, "local");
	assert_string_equal(p->model_name, "models/llama-3:8b");
	assert_string_equal(p->system_prompt, "folded text\n");
	assert_int_equal(p->n_tools, 0);
	assert_string_equal(p->skills_dir, real);
	assert_int_equal(p->sandbox.memory_mb, 16);
	assert_int_equal(p->sandbox.pids_max, 4096);
	assert_int_equal(p->sandbox.disk_mb, 16);
	assert_int_equal(p->sandbox.cpus_milli, 1250);
	assert_int_equal(p->n_egress, 6);
	assert_string_equal(p->egress[0].host, "*.b.example");
	assert_int_equal(p->egress[0].n_inject, 0);
	assert_string_equal(p->egress[1].host, "127.0.0.1");
	assert_string_equal(p->egress[2].host, "[fd00::1]:8080");
	assert_string_equal(p->egress[3].host, "*.b.example:8443");
	assert_string_equal(p->egress[4].host, "xn--bcher-kva.example");
	assert_string_equal(p->egress[5].host, "10.0.0.1:65535");
	assert_int_equal(p->egress[5].n_paths, 2);
	assert_string_equal(p->egress[5].paths[1], "/a/b");
	assert_string_equal(p->egress[5].inject[0].value, "{{secret:Key_1.x}}");
	ahp_profile_destroy(&p);
	free(real);

	/* No err buffer: still fails cleanly. */
	assert_null(ahp_profile_load(DATA "/bad/bad-name.yaml", ETC, NULL, 0));
	assert_null(ahp_profile_load(NULL, ETC, err, sizeof err));
}

/* ahp_cpus_parse: Docker's --cpus grammar, strictly (issue 10 §3). */
static void
test_cpus_parse(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint32_t milli;
	} ok[] = {{"0.5", 500},  {"1", 1000}, {"2", 2000},   {"1.25", 1250}, {"0.01", 10},
	          {"64", 64000}, {"0", 0},    {"1.5", 1500}, {"0.125", 125}, {"10.0", 10000}};
	static const char *const bad[] = {"1e3", "-1",  ".5",  "1.",     "01",     "00.5",
	                                  "+1",  " 1",  "1 ",  "0x10",   "1.2345", "",
	                                  "1,5", "inf", "nan", "123456", "1.5.0"};
	const char *why;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint32_t m = 7;
		why = NULL;
		if (ahp_cpus_parse(ok[i].s, &m, &why) != 0)
			fail_msg("'%s' refused: %s", ok[i].s, why);
		assert_int_equal(m, ok[i].milli);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint32_t m = 7;
		why = NULL;
		if (ahp_cpus_parse(bad[i], &m, &why) == 0)
			fail_msg("'%s' accepted as %u", bad[i], m);
		assert_non_null(why);
		assert_int_equal(m, 7);
	}
	assert_int_equal(ahp_cpus_parse(NULL, &(uint32_t){0}, &why), -1);
}

static void
test_symlink_and_size(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], want[PATH_MAX + 128], err[1024];

	/* A symlink to a valid profile is refused. */
	snprintf(path, sizeof path, "%s/link.yaml", dir);
	assert_int_equal(symlink(ETC "/profiles/minimal.yaml", path), 0);
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want, "%s: is a symbolic link (profiles must be regular files)",
	         path);
	assert_string_equal(err, want);

	/* Exactly 256 KiB loads; one byte more is refused before parsing. */
	size_t max = 256 * 1024;
	char *big = malloc(max + 2);
	assert_non_null(big);
	const char *head = "name: big\nmodel: mock:x\nsystem_prompt: p\n";
	memset(big, '#', max + 1);
	memcpy(big, head, strlen(head));
	for (size_t i = strlen(head) + 100; i < max; i += 100)
		big[i] = '\n';
	big[max - 1] = '\n';
	snprintf(path, sizeof path, "%s/big.yaml", dir);
	s_write(path, big, max);
	ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_string_equal(p->name, "big");
	ahp_profile_destroy(&p);

	big[max] = '\n';
	s_write(path, big, max + 1);
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want, "%s: profile is 262145 bytes (the limit is 262144 bytes)",
	         path);
	assert_string_equal(err, want);
	free(big);

	/* A directory is not a profile; a missing file names the errno. */
	snprintf(path, sizeof path, "%s/sub.yaml", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want, "%s: not a regular file", path);
	assert_string_equal(err, want);
	snprintf(path, sizeof path, "%s/missing.yaml", dir);
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want, "%s: cannot open: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);
}

/* Deep nesting and alias bombs end in an error, not a crash or a hang. */
static void
test_hostile_yaml(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], want[PATH_MAX + 128], err[1024];
	size_t depth = 100000;
	char *y = malloc(2 * depth + 16);
	assert_non_null(y);

	memcpy(y, "name: ", 6);
	memset(y + 6, '[', depth);
	memset(y + 6 + depth, ']', depth);
	memcpy(y + 6 + 2 * depth, "\n", 2);
	snprintf(path, sizeof path, "%s/deep.yaml", dir);
	s_write(path, y, strlen(y));
	free(y);
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	/* Refused at the 32nd '[' (the top mapping is level 1), before libyaml
	 * scans the rest: its cost grows with the square of the depth. */
	snprintf(want, sizeof want,
	         "%s:1:38: nesting is deeper than 32 levels (a profile needs at most 4)", path);
	assert_string_equal(err, want);

	const char *bomb = "a: &a [x, x, x, x, x, x, x, x]\n"
	                   "b: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
	                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
	                   "d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
	                   "name: [*d, *d, *d, *d, *d, *d, *d, *d]\n";
	snprintf(path, sizeof path, "%s/bomb.yaml", dir);
	s_write(path, bomb, strlen(bomb));
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want,
	         "%s:2:8: YAML aliases (*a) are not supported in profiles (write the value out "
	         "in full)",
	         path);
	assert_string_equal(err, want);
}

typedef struct {
	char msgs[4][1024];
	int n;
} s_errs_t;

static void
s_on_error(void *arg, const char *message)
{
	s_errs_t *e = arg;
	if (e->n < 4)
		snprintf(e->msgs[e->n], sizeof e->msgs[0], "%s", message);
	e->n++;
}

static void
test_load_dir(void **state)
{
	(void)state;
	s_errs_t errs = {0};

	ahp_profiles_t *set = ahp_profiles_load_dir(DATA "/dir", ETC, s_on_error, &errs);
	assert_non_null(set);
	assert_int_equal(ahp_profiles_count(set), 1);
	assert_int_equal(ahp_profiles_errors(set), 1);
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.msgs[0], DATA "/dir/b-bad.yaml:4:22: limits.max_turns 0 is out "
	                                       "of range (allowed 1..1000)");
	const ahp_profile_t *p = ahp_profiles_get(set, "good");
	assert_non_null(p);
	assert_ptr_equal(ahp_profiles_at(set, 0), p);
	assert_null(ahp_profiles_at(set, 1));
	assert_null(ahp_profiles_get(set, "bad"));
	assert_string_equal(p->path, DATA "/dir/a-good.yaml");
	ahp_profiles_destroy(&set);
	assert_null(set);
	ahp_profiles_destroy(&set);

	/* Sorted by file name; base_dir NULL resolves skills next to profiles/. */
	errs.n = 0;
	set = ahp_profiles_load_dir(ETC "/profiles", NULL, s_on_error, &errs);
	assert_int_equal(errs.n, 0);
	assert_int_equal(ahp_profiles_count(set), 3);
	assert_int_equal(ahp_profiles_errors(set), 0);
	assert_string_equal(ahp_profiles_at(set, 0)->name, "full-profile-1");
	assert_string_equal(ahp_profiles_at(set, 1)->name, "minimal");
	assert_string_equal(ahp_profiles_at(set, 2)->name, "partial");
	assert_non_null(ahp_profiles_at(set, 0)->skills_dir);
	ahp_profiles_destroy(&set);

	/* The second file with a taken name is the error; the first stays. */
	errs.n = 0;
	set = ahp_profiles_load_dir(DATA "/dup", ETC, s_on_error, &errs);
	assert_int_equal(ahp_profiles_count(set), 1);
	assert_int_equal(ahp_profiles_errors(set), 1);
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.msgs[0], DATA "/dup/b.yml:2:7: profile name 'same' is already "
	                                       "used by " DATA "/dup/a.yaml (profile names must "
	                                       "be unique)");
	assert_string_equal(ahp_profiles_get(set, "same")->system_prompt, "First.");
	ahp_profiles_destroy(&set);

	/* A missing directory: reported, NULL. */
	errs.n = 0;
	assert_null(ahp_profiles_load_dir(DATA "/nope", ETC, s_on_error, &errs));
	assert_int_equal(errs.n, 1);
	char want[PATH_MAX + 128];
	snprintf(want, sizeof want, "%s: cannot open profiles directory: %s", DATA "/nope",
	         strerror(ENOENT));
	assert_string_equal(errs.msgs[0], want);
	assert_int_equal(ahp_profiles_count(NULL), 0);
	assert_null(ahp_profiles_get(NULL, "x"));
}

/* Issue 6 §4: sandboxd refuses output_kb over 1024 at run time, so the loader
 * must refuse it too (both read the one limits table). */
static void
test_output_kb_over_sandboxd(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], want[PATH_MAX + 256], err[1024] = "";
	const char *y = "name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { output_kb: 10240 }\n";

	snprintf(path, sizeof path, "%s/a.yaml", dir);
	s_write(path, y, strlen(y));
	assert_null(ahp_profile_load(path, ETC, err, sizeof err));
	snprintf(want, sizeof want,
	         "%s:4:23: sandbox.output_kb 10240 is out of range (allowed 1..1024)", path);
	assert_string_equal(err, want);

	y = "name: a\nmodel: mock:x\nsystem_prompt: p\nsandbox: { output_kb: 1024 }\n";
	s_write(path, y, strlen(y));
	ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_int_equal(p->sandbox.output_kb, 1024);
	ahp_profile_destroy(&p);
}

/* ahp_profile_gate against full.yaml's approvals:
 *   [0] service publish_summary   [1] tool exec, match '^(rm|git push)\b'
 *   [2] tool ask_human, match deploy */
static void
test_gate(void **state)
{
	(void)state;
	char err[1024] = "";
	ahp_profile_t *p = ahp_profile_load(ETC "/profiles/full.yaml", NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	const ahp_approval_t *a = p->approvals;

	assert_null(a[0].match_re);
	assert_non_null(a[1].match_re);
	assert_non_null(a[2].match_re);

	assert_ptr_equal(ahp_profile_gate(p, "exec", NULL, "rm -rf /workspace"), &a[1]);
	assert_ptr_equal(ahp_profile_gate(p, "exec", NULL, "git push origin main"), &a[1]);
	assert_null(ahp_profile_gate(p, "exec", NULL, "git pushy")); /* \b */
	assert_null(ahp_profile_gate(p, "exec", NULL, "ls; rm x"));  /* ^ */
	assert_null(ahp_profile_gate(p, "exec", NULL, NULL));        /* "" */
	assert_null(ahp_profile_gate(p, "skill", NULL, "rm -rf /")); /* other tool */
	assert_ptr_equal(ahp_profile_gate(p, "exec_service", "publish_summary", "{}"), &a[0]);
	assert_ptr_equal(ahp_profile_gate(p, NULL, "publish_summary", NULL), &a[0]);
	assert_null(ahp_profile_gate(p, "exec_service", "lookup_wiki", "{\"topic\":\"rm\"}"));
	assert_ptr_equal(ahp_profile_gate(p, "ask_human", NULL, "{\"question\":\"deploy now?\"}"),
	                 &a[2]);
	assert_null(ahp_profile_gate(p, "ask_human", NULL, "{\"question\":\"hello\"}"));
	assert_null(ahp_profile_gate(NULL, "exec", NULL, "rm"));
	assert_null(ahp_profile_gate(p, NULL, NULL, "rm"));
	ahp_profile_destroy(&p);

	/* No approvals: nothing is gated. */
	p = ahp_profile_load(ETC "/profiles/minimal.yaml", ETC, err, sizeof err);
	assert_non_null(p);
	assert_null(ahp_profile_gate(p, "exec", NULL, "rm -rf /"));
	ahp_profile_destroy(&p);
}

/* The first rule that gates wins; a rule without match gates every call. */
static void
test_gate_order(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], err[1024] = "";
	const char *y = "name: a\nmodel: mock:x\nsystem_prompt: p\ntools: [exec, skill]\n"
	                "approvals:\n  - { tool: exec, match: '^x', expires: 1h }\n"
	                "  - tool: exec\n  - { tool: skill, match: '\"action\":\"read\"' }\n";

	snprintf(path, sizeof path, "%s/a.yaml", dir);
	s_write(path, y, strlen(y));
	ahp_profile_t *p = ahp_profile_load(path, ETC, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_ptr_equal(ahp_profile_gate(p, "exec", NULL, "xyz"), &p->approvals[0]);
	assert_int_equal(ahp_profile_gate(p, "exec", NULL, "xyz")->expires_s, 3600);
	assert_ptr_equal(ahp_profile_gate(p, "exec", NULL, "yz"), &p->approvals[1]);
	assert_ptr_equal(ahp_profile_gate(p, "exec", NULL, ""), &p->approvals[1]);
	assert_ptr_equal(ahp_profile_gate(p, "skill", NULL, "{\"action\":\"read\",\"path\":\"a\"}"),
	                 &p->approvals[2]);
	assert_null(ahp_profile_gate(p, "skill", NULL, "{\"action\":\"list\"}"));
	ahp_profile_destroy(&p);
}

typedef struct {
	char lines[8][512];
	int n;
} s_lines_t;

static void
s_on_line(void *arg, const char *line)
{
	s_lines_t *l = arg;
	if (l->n < 8)
		snprintf(l->lines[l->n], sizeof l->lines[0], "%s", line);
	l->n++;
}

/* Issue 6 §5: every field that fails closed at run time is said. */
static void
test_fail_closed_warnings(void **state)
{
	(void)state;
	char err[1024] = "";
	s_lines_t l = {0};
	ahp_profile_t *p = ahp_profile_load(ETC "/profiles/full.yaml", NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	/* egress and sandbox.network: proxy are enforced by credproxy: no warning. */
	/* exec_service and services are enforced by servicesd, approvals and
	 * ask_human by approvald: no warning either. */
	assert_int_equal(ahp_profile_warnings(p, s_on_line, &l), 0);
	assert_int_equal(l.n, 0);
	ahp_profile_destroy(&p);

	p = ahp_profile_load(ETC "/profiles/minimal.yaml", ETC, err, sizeof err);
	assert_non_null(p);
	l.n = 0;
	assert_int_equal(ahp_profile_warnings(p, s_on_line, &l), 0);
	assert_int_equal(l.n, 0);
	ahp_profile_destroy(&p);
}

/* What a reload needs: the refused files with their reason and the name they
 * ask for, name/file-name warnings, and a profile shared by two sets. */
static void
test_set_records(void **state)
{
	(void)state;
	ahp_profiles_t *set = ahp_profiles_load_dir(DATA "/dir", ETC, NULL, NULL);
	assert_non_null(set);
	assert_int_equal(ahp_profiles_errors(set), 1);
	assert_string_equal(ahp_profiles_failed_path(set, 0), DATA "/dir/b-bad.yaml");
	assert_string_equal(ahp_profiles_failed_error(set, 0),
	                    DATA "/dir/b-bad.yaml:4:22: limits.max_turns 0 is out of range "
	                         "(allowed 1..1000)");
	assert_string_equal(ahp_profiles_failed_name(set, 0), "bad"); /* its name: */
	assert_null(ahp_profiles_failed_path(set, 1));
	assert_int_equal(ahp_profiles_warning_count(set), 1);
	assert_string_equal(ahp_profiles_warning(set, 0),
	                    DATA "/dir/a-good.yaml:1:7: warning: profile name 'good' differs "
	                         "from the file name (call the file good.yaml)");
	assert_null(ahp_profiles_warning(set, 1));

	/* Two files, one name: the error names both files. */
	ahp_profiles_t *dup = ahp_profiles_load_dir(DATA "/dup", ETC, NULL, NULL);
	assert_non_null(dup);
	assert_int_equal(ahp_profiles_errors(dup), 1);
	assert_string_equal(ahp_profiles_failed_name(dup, 0), "same");
	assert_string_equal(ahp_profiles_failed_error(dup, 0),
	                    DATA "/dup/b.yml:2:7: profile name 'same' is already used by " DATA
	                         "/dup/a.yaml (profile names must be unique)");

	/* A profile kept from an older set outlives that set. */
	const ahp_profile_t *good = ahp_profiles_get(set, "good");
	assert_int_equal(ahp_profiles_add(dup, good), 0);
	assert_int_equal(ahp_profiles_add(dup, good), -1); /* name taken */
	ahp_profiles_destroy(&set);
	assert_int_equal(ahp_profiles_count(dup), 2);
	assert_ptr_equal(ahp_profiles_get(dup, "good"), good);
	assert_string_equal(good->system_prompt, "Be brief.");
	ahp_profiles_destroy(&dup);

	/* A file that cannot even say its name is known by its file name. */
	char dir[] = "/tmp/ahp-test-profile-XXXXXX", path[PATH_MAX];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/x-1.yaml", dir);
	s_write(path, "name: [\n", 8);
	set = ahp_profiles_load_dir(dir, ETC, NULL, NULL);
	assert_int_equal(ahp_profiles_errors(set), 1);
	assert_string_equal(ahp_profiles_failed_name(set, 0), "x-1");
	ahp_profiles_destroy(&set);
	unlink(path);
	rmdir(dir);
}

/* The demo profile shipped in profiles/ loads against the repo's skills/. */
static void
test_demo_profile(void **state)
{
	(void)state;
	char err[1024] = "";
	struct stat st;
	if (stat(AHP_SOURCE_DIR "/skills/release-notes", &st) < 0)
		skip(); /* skills/ is written by another part; nothing to check yet */
	ahp_profile_t *p =
	    ahp_profile_load(AHP_SOURCE_DIR "/profiles/release-notes.yaml", NULL, err, sizeof err);
	if (p == NULL)
		fail_msg("%s", err);
	assert_string_equal(p->name, "release-notes");
	assert_string_equal(p->provider, "mock");
	assert_string_equal(p->model_name, "scripted");
	assert_true(ahp_profile_has_tool(p, "skill"));
	assert_true(ahp_profile_has_tool(p, "exec"));
	assert_int_equal(p->sandbox.network, AHP_NET_NONE);
	assert_non_null(p->skills_dir);
	ahp_profile_destroy(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_profile),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_error_fixtures),
	    cmocka_unit_test_setup_teardown(test_error_cases, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_valid_variants, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_symlink_and_size, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_cpus_parse),
	    cmocka_unit_test_setup_teardown(test_hostile_yaml, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_load_dir),
	    cmocka_unit_test_setup_teardown(test_output_kb_over_sandboxd, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_gate),
	    cmocka_unit_test_setup_teardown(test_gate_order, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_fail_closed_warnings),
	    cmocka_unit_test(test_set_records),
	    cmocka_unit_test(test_demo_profile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
