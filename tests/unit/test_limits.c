/* Unit tests for the one limits table: the profile loader and sandboxd's request validation
 * agree on every shared range, and docs/profiles.md shows the table as it is.
 * `test_limits --markdown` prints the block docs/profiles.md must hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ahp/limit_table.h"
#include "ahp/profile.h"
#include "ahp/util.h"
#include "sbx.h"

#define BEGIN_MARK "<!-- limits:begin (generated: build/tests/test_limits --markdown) -->\n"
#define END_MARK "<!-- limits:end -->\n"

static int
setup_tmp(void **state)
{
	char *dir = strdup("/tmp/ahp-test-limits-XXXXXX");
	if (dir == NULL || mkdtemp(dir) == NULL)
		return -1;
	*state = dir;
	return 0;
}

static int
teardown_tmp(void **state)
{
	char *dir = *state, path[PATH_MAX];
	snprintf(path, sizeof path, "%s/p.yaml", dir);
	unlink(path);
	int rc = rmdir(dir);
	free(dir);
	return rc;
}

/* Loads a profile whose only non-required key is `section: { key: v }`.
 * 0 when it loads; else -1 with the loader's message in err. */
static int
s_load(const char *dir, const char *name, uint64_t v, char *err, size_t errlen)
{
	char path[PATH_MAX], yaml[256], section[32];
	const char *dot = strchr(name, '.');
	assert_non_null(dot);
	snprintf(section, sizeof section, "%.*s", (int)(dot - name), name);
	snprintf(path, sizeof path, "%s/p.yaml", dir);
	snprintf(yaml, sizeof yaml, "name: p\nmodel: mock:x\nsystem_prompt: s\n%s: { %s: %llu }\n",
	         section, dot + 1, (unsigned long long)v);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(yaml, f);
	assert_int_equal(fclose(f), 0);
	err[0] = '\0';
	ahp_profile_t *p = ahp_profile_load(path, "/nonexistent", err, errlen);
	if (p == NULL)
		return -1;
	ahp_profile_destroy(&p);
	return 0;
}

static uint32_t *
s_field(Ahp__Sbx__Limits *l, ahp_limit_id_t id)
{
	switch (id) {
	case AHP_LIMIT_MEMORY_MB:
		return &l->memory_mb;
	case AHP_LIMIT_PIDS_MAX:
		return &l->pids_max;
	case AHP_LIMIT_CPU_SECONDS:
		return &l->cpu_seconds;
	case AHP_LIMIT_TIMEOUT_S:
		return &l->timeout_s;
	case AHP_LIMIT_OUTPUT_KB:
		return &l->output_kb;
	case AHP_LIMIT_DISK_MB:
		return &l->disk_mb;
	default:
		return NULL;
	}
}

/* Issue 6 §4: for every profile field sandboxd also checks, the loader and
 * sandboxd's CreateRequest validation accept and refuse the same values, at
 * min-1, min, max and max+1, with the same message. */
static void
test_loader_and_sandboxd_agree(void **state)
{
	const char *dir = *state;
	const ahp_limit_id_t shared[] = {AHP_LIMIT_MEMORY_MB,   AHP_LIMIT_PIDS_MAX,
	                                 AHP_LIMIT_CPU_SECONDS, AHP_LIMIT_TIMEOUT_S,
	                                 AHP_LIMIT_OUTPUT_KB,   AHP_LIMIT_DISK_MB};
	for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
		const ahp_limit_t *lim = ahp_limit(shared[i]);
		assert_non_null(lim);
		uint64_t vals[4] = {(uint64_t)lim->min - 1, lim->min, lim->max,
		                    (uint64_t)lim->max + 1};
		for (int k = 0; k < 4; k++) {
			uint64_t v = vals[k];
			bool in = v >= lim->min && v <= lim->max;
			char lerr[1024], serr[256] = "";
			int lrc = s_load(dir, lim->name, v, lerr, sizeof lerr);
			if ((lrc == 0) != in)
				fail_msg("loader %s %llu: %s", lim->name, (unsigned long long)v,
				         lrc ? lerr : "accepted");

			Ahp__Sbx__Limits req = AHP__SBX__LIMITS__INIT;
			sbx_limits_t out;
			memset(&out, 0, sizeof out);
			*s_field(&req, shared[i]) = (uint32_t)v;
			int src = sbx_request_limits(&req, &out, serr, sizeof serr);
			if (v == 0) {
				/* 0 on the wire is "not set" (sandboxd's default); the
				 * loader never sends it: it fills the same default. */
				assert_int_equal(src, 0);
				continue;
			}
			if ((src == 0) != in)
				fail_msg("sandboxd %s %llu: %s", lim->name, (unsigned long long)v,
				         src ? serr : "accepted");
			if (!in) {
				/* Same words: the loader's message is "file:l:c: " + it. */
				size_t ll = strlen(lerr), sl = strlen(serr);
				if (ll < sl || strcmp(lerr + ll - sl, serr) != 0)
					fail_msg("loader says '%s', sandboxd says '%s'", lerr,
					         serr);
			}
		}
	}
}

/* The per-run limits: the loader's range is the table's. */
static void
test_loader_run_limits(void **state)
{
	const char *dir = *state;
	const ahp_limit_id_t ids[] = {AHP_LIMIT_MAX_TURNS, AHP_LIMIT_MAX_MODEL_CALLS};
	for (size_t i = 0; i < 2; i++) {
		const ahp_limit_t *lim = ahp_limit(ids[i]);
		char err[1024], want[128];
		assert_int_equal(s_load(dir, lim->name, lim->min, err, sizeof err), 0);
		assert_int_equal(s_load(dir, lim->name, lim->max, err, sizeof err), 0);
		assert_int_equal(s_load(dir, lim->name, lim->max + 1ull, err, sizeof err), -1);
		snprintf(want, sizeof want, "%s %u is out of range (allowed %u..%u)", lim->name,
		         lim->max + 1, lim->min, lim->max);
		assert_non_null(strstr(err, want));
		assert_int_equal(s_load(dir, lim->name, lim->min - 1ull, err, sizeof err), -1);
	}
}

/* sandbox.cpus: the loader takes CPUs as a decimal, sandboxd millicpus; both
 * bounds agree (0.01 CPU = 10 millicpus .. 64 CPUs = 64000). */
static void
test_cpus_agree(void **state)
{
	const char *dir = *state;
	static const struct {
		const char *cpus;
		uint32_t milli;
		bool in;
	} v[] = {{"0.009", 9, false},
	         {"0.01", 10, true},
	         {"64", 64000, true},
	         {"64.001", 64001, false},
	         {"0.5", 500, true}};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		char path[PATH_MAX], yaml[256], err[1024] = "", serr[256] = "";
		snprintf(path, sizeof path, "%s/p.yaml", dir);
		snprintf(yaml, sizeof yaml,
		         "name: p\nmodel: mock:x\nsystem_prompt: s\nsandbox: { cpus: %s }\n",
		         v[i].cpus);
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fputs(yaml, f);
		assert_int_equal(fclose(f), 0);
		ahp_profile_t *p = ahp_profile_load(path, "/nonexistent", err, sizeof err);
		if ((p != NULL) != v[i].in)
			fail_msg("loader cpus %s: %s", v[i].cpus, p ? "accepted" : err);
		if (p != NULL)
			assert_int_equal(p->sandbox.cpus_milli, v[i].milli);
		ahp_profile_destroy(&p);
		Ahp__Sbx__Limits req = AHP__SBX__LIMITS__INIT;
		sbx_limits_t out;
		req.cpus_milli = v[i].milli;
		int src = sbx_request_limits(&req, &out, serr, sizeof serr);
		if ((src == 0) != v[i].in)
			fail_msg("sandboxd cpus_milli %u: %s", v[i].milli, src ? serr : "accepted");
		if (src == 0)
			assert_int_equal(out.cpus_milli, v[i].milli);
	}
}

/* store.c needs loop.c's id checks; the records here use plain ids. */
bool
sbx_valid_id(const char *s)
{
	return s != NULL && *s != '\0' && strchr(s, '/') == NULL && s[0] != '.';
}

bool
sbx_valid_exec_id(const char *s)
{
	return sbx_valid_id(s);
}

/* Sandbox records keep disk_mb and cpus_milli; a record written before they
 * existed loads with the defaults (issue 10 §3: workspaces survive an upgrade). */
static void
test_meta_limits(void **state)
{
	const char *dir = *state;
	char sd[PATH_MAX], p[PATH_MAX + 64];
	snprintf(sd, sizeof sd, "%s/state", dir);
	sbx_store_t *st = sbx_store_new(sd);
	assert_non_null(st);
	sbx_meta_t m, r;
	memset(&m, 0, sizeof m);
	sbx_default_limits(&m.lim);
	m.lim.disk_mb = 64;
	m.lim.cpus_milli = 1250;
	m.slot = 3;
	memcpy(m.cwd, "/workspace", sizeof("/workspace"));
	assert_int_equal(sbx_store_meta_write(st, "new", &m, true), 0);
	assert_int_equal(sbx_store_meta_read(st, "new", &r), 0);
	assert_int_equal(r.lim.disk_mb, 64);
	assert_int_equal(r.lim.cpus_milli, 1250);
	assert_int_equal(r.slot, 3);

	snprintf(p, sizeof p, "%s/sandboxes/old.meta", sd);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs("profile=x\nnetwork=0\nslot=5\nmemory_mb=128\npids_max=64\ncpu_seconds=10\n"
	      "timeout_s=30\noutput_kb=64\nfile_size_mb=1024\nopen_files=1024\n"
	      "created_ms=1\nexecs=2\nkept=0\nkept_ms=0\ncwd=/workspace\n",
	      f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(sbx_store_meta_read(st, "old", &r), 0);
	assert_int_equal(r.slot, 5);
	assert_int_equal(r.lim.memory_mb, 128);
	assert_int_equal(r.lim.disk_mb, AHP_LIM_DISK_MB_DEF);
	assert_int_equal(r.lim.cpus_milli, AHP_LIM_CPUS_MILLI_DEF);
	sbx_store_destroy(&st);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", sd);
	assert_int_equal(system(cmd), 0);
}

/* Defaults: what the loader fills is what sandboxd assumes for "not set". */
static void
test_defaults_agree(void **state)
{
	const char *dir = *state;
	char path[PATH_MAX], err[1024];
	snprintf(path, sizeof path, "%s/p.yaml", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("name: p\nmodel: mock:x\nsystem_prompt: s\n", f);
	assert_int_equal(fclose(f), 0);
	ahp_profile_t *p = ahp_profile_load(path, "/nonexistent", err, sizeof err);
	assert_non_null(p);
	sbx_limits_t d;
	assert_int_equal(sbx_request_limits(NULL, &d, err, sizeof err), 0);
	assert_int_equal(p->sandbox.memory_mb, d.memory_mb);
	assert_int_equal(p->sandbox.pids_max, d.pids_max);
	assert_int_equal(p->sandbox.cpu_seconds, d.cpu_seconds);
	assert_int_equal(p->sandbox.timeout_s, d.timeout_s);
	assert_int_equal(p->sandbox.output_kb, d.output_kb);
	assert_int_equal(p->sandbox.disk_mb, d.disk_mb);
	assert_int_equal(p->sandbox.cpus_milli, d.cpus_milli);
	assert_int_equal(p->limits.max_turns, ahp_limit(AHP_LIMIT_MAX_TURNS)->def);
	assert_int_equal(p->limits.max_model_calls, ahp_limit(AHP_LIMIT_MAX_MODEL_CALLS)->def);
	sbx_limits_t d2;
	sbx_default_limits(&d2);
	assert_memory_equal(&d, &d2, sizeof d);
	ahp_profile_destroy(&p);
}

/* ExecRequest: the command length the orchestrator's exec tool allows
 * (EXEC_COMMAND_MAX = AHP_LIM_EXEC_COMMAND_MAX) and the timeout override. */
static void
test_exec_request(void **state)
{
	(void)state;
	char err[128];
	Ahp__Sbx__ExecRequest er = AHP__SBX__EXEC_REQUEST__INIT;
	char *cmd = malloc(AHP_LIM_EXEC_COMMAND_MAX + 2);
	assert_non_null(cmd);
	memset(cmd, 'x', AHP_LIM_EXEC_COMMAND_MAX + 1);
	cmd[AHP_LIM_EXEC_COMMAND_MAX + 1] = '\0';
	er.command = cmd;
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), -1);
	assert_string_equal(err, "command is 65537 bytes, longer than 65536");
	cmd[AHP_LIM_EXEC_COMMAND_MAX] = '\0';
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), 0);
	er.command = (char *)"";
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), -1);
	assert_string_equal(err, "command is empty");
	er.command = (char *)"true";
	er.timeout_s = AHP_LIM_EXEC_TIMEOUT_S_MAX;
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), 0);
	er.timeout_s = 0;
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), 0);
	er.timeout_s = AHP_LIM_EXEC_TIMEOUT_S_MAX + 1;
	assert_int_equal(sbx_exec_request_range(&er, err, sizeof err), -1);
	assert_string_equal(err, "exec.timeout_s 3601 is out of range (allowed 0..3600)");
	/* A profile's timeout is always a valid override. */
	assert_true(AHP_LIM_TIMEOUT_S_MAX <= AHP_LIM_EXEC_TIMEOUT_S_MAX);
	free(cmd);
}

static void
test_table(void **state)
{
	(void)state;
	char err[128];
	for (int i = 0; i < AHP_LIMIT__COUNT; i++) {
		const ahp_limit_t *l = ahp_limit((ahp_limit_id_t)i);
		assert_non_null(l);
		assert_true(l->min <= l->max);
		assert_true(l->def == 0 || (l->def >= l->min && l->def <= l->max));
		assert_ptr_equal(ahp_limit_by_name(l->name), l);
	}
	assert_null(ahp_limit(AHP_LIMIT__COUNT));
	assert_null(ahp_limit_by_name("sandbox.gpus"));
	assert_int_equal(ahp_limit_check(AHP_LIMIT_OUTPUT_KB, 10240, err, sizeof err), -1);
	assert_string_equal(err, "sandbox.output_kb 10240 is out of range (allowed 1..1024)");
	assert_int_equal(ahp_limit_check(AHP_LIMIT__COUNT, 1, err, sizeof err), -1);
	assert_int_equal(ahp_limit_check(AHP_LIMIT_OUTPUT_KB, 1024, NULL, 0), 0);
}

/* Issue 6 §7: docs/profiles.md holds the table as generated, between the
 * markers; regenerate with `build/tests/test_limits --markdown`. */
/* sandboxd keeps at most 8 ready disk images of a size, and at most 8 GiB of
 * them, but always one (sbx.h sbx_disk_ready_max). */
static void
test_ready_max(void **state)
{
	(void)state;
	assert_int_equal(sbx_disk_ready_max(32), 8);
	assert_int_equal(sbx_disk_ready_max(1024), 8);
	assert_int_equal(sbx_disk_ready_max(1025), 7);
	assert_int_equal(sbx_disk_ready_max(4096), 2);
	assert_int_equal(sbx_disk_ready_max(8192), 1);
	assert_int_equal(sbx_disk_ready_max(51200), 1);
	assert_int_equal(sbx_disk_ready_max(AHP_LIM_DISK_MB_MAX), 1);
	assert_int_equal(sbx_disk_ready_max(0), SBX_READY_MAX);
}

static void
test_docs_match_table(void **state)
{
	(void)state;
	char *doc = NULL, *gen = NULL;
	size_t doc_len = 0, gen_len = 0;
	if (ahp_read_file(AHP_SOURCE_DIR "/docs/profiles.md", 1 << 20, &doc, &doc_len) != 0)
		fail_msg("cannot read docs/profiles.md");
	FILE *m = open_memstream(&gen, &gen_len);
	assert_non_null(m);
	ahp_limits_markdown(m);
	assert_int_equal(fclose(m), 0);
	const char *b = strstr(doc, BEGIN_MARK);
	const char *e = b ? strstr(b, END_MARK) : NULL;
	if (b == NULL || e == NULL)
		fail_msg("docs/profiles.md lacks the markers %s ... %s", BEGIN_MARK, END_MARK);
	b += strlen(BEGIN_MARK);
	size_t blen = (size_t)(e - b);
	if (blen != gen_len || memcmp(b, gen, gen_len) != 0)
		fail_msg("docs/profiles.md's limits block differs from the table; regenerate it "
		         "with build/tests/test_limits --markdown. Expected:\n%s",
		         gen);
	free(doc);
	free(gen);
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--markdown") == 0) {
		fputs(BEGIN_MARK, stdout);
		ahp_limits_markdown(stdout);
		fputs(END_MARK, stdout);
		return 0;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test_setup_teardown(test_loader_and_sandboxd_agree, setup_tmp,
	                                    teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_loader_run_limits, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_cpus_agree, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_meta_limits, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_defaults_agree, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_exec_request),
	    cmocka_unit_test(test_docs_match_table),
	    cmocka_unit_test(test_ready_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
