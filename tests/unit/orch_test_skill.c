/* Unit tests for the orchestrator's skill tool: listing, contained reads, truncation, search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "orch.h"

typedef struct {
	char root[64];   /* temp dir */
	char skills[96]; /* root/skills: the profile's skills dir */
	char secret[96]; /* root/secret.txt: outside */
	ahp_profile_t p;
	char *tools[1];
} fixture_t;

static void
s_write(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
}

static void
s_mkpath(fixture_t *f, const char *rel, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", f->skills, rel);
}

static int
s_setup(void **state)
{
	fixture_t *f = calloc(1, sizeof *f);
	char p[256];
	snprintf(f->root, sizeof f->root, "/tmp/orch-skill-XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->skills, sizeof f->skills, "%s/skills", f->root);
	snprintf(f->secret, sizeof f->secret, "%s/secret.txt", f->root);
	mkdir(f->skills, 0700);
	s_mkpath(f, "zeta", p, sizeof p);
	mkdir(p, 0700);
	s_mkpath(f, "alpha", p, sizeof p);
	mkdir(p, 0700);
	s_mkpath(f, "alpha/deep", p, sizeof p);
	mkdir(p, 0700);
	s_mkpath(f, "zeta/SKILL.md", p, sizeof p);
	s_write(p, "# Zeta\nNothing here.\n", 21);
	s_mkpath(f, "alpha/SKILL.md", p, sizeof p);
	s_write(p, "# Alpha\nList the BREAKING changes first.\nthen the rest\n", 55);
	s_mkpath(f, "alpha/deep/SKILL.md", p, sizeof p);
	s_write(p, "# Deep\nbreaking news\n", 21);
	s_mkpath(f, "alpha/notes.md", p, sizeof p);
	s_write(p, "Breaking: notes too\n", 20);
	s_write(f->secret, "TOKEN-secret\n", 13);
	s_mkpath(f, "link.md", p, sizeof p);
	assert_int_equal(symlink(f->secret, p), 0);
	s_mkpath(f, "linkdir", p, sizeof p);
	assert_int_equal(symlink(f->root, p), 0);
	f->tools[0] = (char *)"skill";
	f->p.name = (char *)"t";
	f->p.tools = f->tools;
	f->p.n_tools = 1;
	f->p.skills_dir = f->skills;
	*state = f;
	return 0;
}

static int
s_teardown(void **state)
{
	fixture_t *f = *state;
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static json_t *
s_run(fixture_t *f, const char *args_json)
{
	json_error_t jerr;
	json_t *args = json_loads(args_json, 0, &jerr);
	assert_non_null(args);
	char summary[256];
	json_t *res = orch_skill_run(&f->p, args, summary, sizeof summary);
	json_decref(args);
	assert_non_null(res);
	assert_true(summary[0] != '\0');
	return res;
}

static const char *
s_err_status(const json_t *res)
{
	return json_string_value(json_object_get(json_object_get(res, "error"), "status"));
}

static void
test_list_sorted(void **state)
{
	fixture_t *f = *state;
	json_t *res = s_run(f, "{\"action\":\"list\"}");
	json_t *files = json_object_get(res, "files");
	assert_int_equal(json_array_size(files), 3);
	assert_string_equal(json_string_value(json_array_get(files, 0)), "alpha/SKILL.md");
	assert_string_equal(json_string_value(json_array_get(files, 1)), "alpha/deep/SKILL.md");
	assert_string_equal(json_string_value(json_array_get(files, 2)), "zeta/SKILL.md");
	json_decref(res);
}

static void
test_read_ok_and_truncated(void **state)
{
	fixture_t *f = *state;
	json_t *res = s_run(f, "{\"action\":\"read\",\"path\":\"zeta/SKILL.md\"}");
	assert_string_equal(json_string_value(json_object_get(res, "content")),
	                    "# Zeta\nNothing here.\n");
	assert_false(json_is_true(json_object_get(res, "truncated")));
	assert_int_equal(json_integer_value(json_object_get(res, "bytes")), 21);
	json_decref(res);

	/* 150 KB of 3-byte characters: cut at 100 KB on a character boundary. */
	size_t n = 150 * 1024;
	char *big = malloc(n);
	for (size_t i = 0; i + 3 <= n; i += 3)
		memcpy(big + i, "\xe2\x82\xac", 3);
	char p[256];
	s_mkpath(f, "zeta/big.md", p, sizeof p);
	s_write(p, big, n - n % 3);
	free(big);
	res = s_run(f, "{\"action\":\"read\",\"path\":\"zeta/big.md\"}");
	assert_true(json_is_true(json_object_get(res, "truncated")));
	const char *c = json_string_value(json_object_get(res, "content"));
	assert_non_null(c);
	assert_true(strlen(c) <= 100 * 1024);
	assert_int_equal(strlen(c) % 3, 0);
	assert_null(strstr(c, "\xef\xbf\xbd")); /* no replacement char from a cut sequence */
	json_decref(res);
}

static void
test_read_escapes_refused(void **state)
{
	fixture_t *f = *state;
	const char *bad[] = {
	    "{\"action\":\"read\",\"path\":\"../secret.txt\"}",
	    "{\"action\":\"read\",\"path\":\"alpha/../../secret.txt\"}",
	    "{\"action\":\"read\",\"path\":\"/etc/passwd\"}",
	    "{\"action\":\"read\",\"path\":\"link.md\"}",
	    "{\"action\":\"read\",\"path\":\"linkdir/secret.txt\"}",
	    "{\"action\":\"read\",\"path\":\"\"}",
	    "{\"action\":\"read\",\"path\":\"alpha//SKILL.md\"}",
	    "{\"action\":\"read\",\"path\":\"alpha\"}",
	    "{\"action\":\"read\",\"path\":\"nope.md\"}",
	    "{\"action\":\"read\"}",
	    "{\"action\":\"delete\"}",
	    "{}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *res = s_run(f, bad[i]);
		const char *st = s_err_status(res);
		if (st == NULL)
			fail_msg("not refused: %s", bad[i]);
		char *dump = json_dumps(res, 0);
		assert_null(strstr(dump, "TOKEN"));
		free(dump);
		json_decref(res);
	}
	json_t *res = s_run(f, "{\"action\":\"read\",\"path\":\"link.md\"}");
	assert_string_equal(s_err_status(res), "permission");
	json_decref(res);
	res = s_run(f, "{\"action\":\"read\",\"path\":\"nope.md\"}");
	assert_string_equal(s_err_status(res), "not_found");
	json_decref(res);
}

static void
test_search(void **state)
{
	fixture_t *f = *state;
	json_t *res = s_run(f, "{\"action\":\"search\",\"query\":\"breaking\"}");
	json_t *m = json_object_get(res, "matches");
	/* alpha/SKILL.md line 2, alpha/deep/SKILL.md line 2, alpha/notes.md line 1; never
	 * the symlinked secret. Case-insensitive, files in sorted order. */
	assert_int_equal(json_array_size(m), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "path")),
	                    "alpha/SKILL.md");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(m, 0), "line")), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(m, 2), "path")),
	                    "alpha/notes.md");
	assert_false(json_is_true(json_object_get(res, "truncated")));
	json_decref(res);
	res = s_run(f, "{\"action\":\"search\",\"query\":\"TOKEN\"}");
	assert_int_equal(json_array_size(json_object_get(res, "matches")), 0);
	json_decref(res);
	res = s_run(f, "{\"action\":\"search\",\"query\":\"\"}");
	assert_string_equal(s_err_status(res), "bad_request");
	json_decref(res);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_list_sorted, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_read_ok_and_truncated, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_read_escapes_refused, s_setup, s_teardown),
	    cmocka_unit_test_setup_teardown(test_search, s_setup, s_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
