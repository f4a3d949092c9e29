/* Fuzz target: the skill tool's arguments (orch_skill_run: action, path, query), against a
 * private skills directory with symlinks and files outside it that must stay unreachable.
 *
 * Input: a JSON object is the tool's arguments as the model sent them; anything else that is
 * valid UTF-8 is taken as the path of action=read. */
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "orch.h"

/* Tool arguments are cut from a model reply; paths over 1 KiB are refused, so a few KiB
 * cover every branch. */
#define FUZZ_SKILL_MAX 4096
#define S_SECRET "FUZZ-SECRET-OUTSIDE-THE-SKILLS-DIR"

static char s_root[PATH_MAX]; /* private dir: skills/ and the outside files */
static char s_skills[PATH_MAX];
static ahp_profile_t s_profile;

static const char *const s_files[][2] = {
    {"demo/SKILL.md", "# Demo\nUse the demo skill.\nsecond line\n"},
    {"docs/guide.md", "guide line one\nGrep me: needle\n\xc3\xa9t\xc3\xa9\n"},
    {"docs/bad-utf8.md", "needle \xff\xfe half \xe2\x82\n"},
    {"docs/notes.txt", "not markdown\n"},
    {".hidden/SKILL.md", "hidden\n"},
};

static void
s_path(char *out, size_t len, const char *a, const char *b)
{
	int n = snprintf(out, len, "%s/%s", a, b);
	FUZZ_CHECK(n > 0 && (size_t)n < len);
}

static void
s_write(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

/* Removes what s_setup made (a fixed list, no recursive delete). */
static void
s_cleanup(void)
{
	static const char *const files[] = {
	    "skills/demo/SKILL.md",  "skills/docs/guide.md",    "skills/docs/bad-utf8.md",
	    "skills/docs/notes.txt", "skills/.hidden/SKILL.md", "skills/escape.md",
	    "skills/outside",        "skills/docs/pipe.md",     "secret.md",
	    "out/SKILL.md"};
	static const char *const dirs[] = {"skills/demo", "skills/docs", "skills/.hidden", "skills",
	                                   "out"};
	char p[PATH_MAX];
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		s_path(p, sizeof p, s_root, files[i]);
		unlink(p);
	}
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		s_path(p, sizeof p, s_root, dirs[i]);
		rmdir(p);
	}
	rmdir(s_root);
}

static void
s_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char p[PATH_MAX], q[PATH_MAX];
	snprintf(s_root, sizeof s_root, "%s/ahp-fuzz-skill-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(s_root) != NULL);
	atexit(s_cleanup);
	s_path(s_skills, sizeof s_skills, s_root, "skills");
	FUZZ_CHECK(mkdir(s_skills, 0700) == 0);
	static const char *const dirs[] = {"demo", "docs", ".hidden"};
	for (size_t i = 0; i < 3; i++) {
		s_path(p, sizeof p, s_skills, dirs[i]);
		FUZZ_CHECK(mkdir(p, 0700) == 0);
	}
	for (size_t i = 0; i < sizeof s_files / sizeof s_files[0]; i++) {
		s_path(p, sizeof p, s_skills, s_files[i][0]);
		s_write(p, s_files[i][1]);
	}
	/* Outside the skills dir: a file and a directory reachable only by symlinks. */
	s_path(p, sizeof p, s_root, "secret.md");
	s_write(p, S_SECRET "\nneedle\n");
	s_path(p, sizeof p, s_root, "out");
	FUZZ_CHECK(mkdir(p, 0700) == 0);
	s_path(p, sizeof p, s_root, "out/SKILL.md");
	s_write(p, S_SECRET "\n");
	s_path(p, sizeof p, s_skills, "escape.md");
	FUZZ_CHECK(symlink("../secret.md", p) == 0);
	s_path(p, sizeof p, s_skills, "outside");
	s_path(q, sizeof q, s_root, "out");
	FUZZ_CHECK(symlink(q, p) == 0);
	s_path(p, sizeof p, s_skills, "docs/pipe.md");
	FUZZ_CHECK(mkfifo(p, 0600) == 0);
	s_profile.name = "fuzz";
	s_profile.skills_dir = s_skills;
}

/* No string of the result holds the secret (unless the input did: the fuzzer learns it from
 * strstr and puts it in paths that errors echo), and all are valid UTF-8. */
static int s_input_has_secret;

static void
s_check(const json_t *v)
{
	const char *key;
	json_t *val;
	size_t i;
	switch (json_typeof(v)) {
	case JSON_STRING:
		FUZZ_CHECK(ahp_utf8_valid(json_string_value(v), json_string_length(v), 0));
		FUZZ_CHECK(s_input_has_secret || strstr(json_string_value(v), S_SECRET) == NULL);
		break;
	case JSON_ARRAY:
		json_array_foreach(v, i, val) s_check(val);
		break;
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, key, val) s_check(val);
		break;
	default:
		break;
	}
}

/* True when a '/'-separated component of path is "..". */
static int
s_has_dotdot(const char *path)
{
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 1;
		p += n;
		if (*p == '/')
			p++;
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_SKILL_MAX)
		return 0;
	if (s_root[0] == '\0')
		s_setup();
	s_input_has_secret = memmem(data, size, S_SECRET, strlen(S_SECRET)) != NULL;
	json_t *args = json_loadb((const char *)data, size, 0, NULL);
	if (!json_is_object(args)) {
		json_decref(args);
		if (!ahp_utf8_valid(data, size, 0))
			return 0;
		args = json_pack("{s:s, s:s%}", "action", "read", "path", (const char *)data, size);
		FUZZ_CHECK(args != NULL);
	}
	char summary[512];
	memset(summary, 0x55, sizeof summary);
	json_t *res = orch_skill_run(&s_profile, args, summary, sizeof summary);
	FUZZ_CHECK(res != NULL && json_is_object(res));
	FUZZ_CHECK(memchr(summary, '\0', sizeof summary) != NULL && summary[0] != '\0');
	/* The result is journaled and sent to the model as JSON text. */
	char *s = json_dumps(res, JSON_COMPACT);
	FUZZ_CHECK(s != NULL);
	free(s);
	s_check(res);
	/* A read that succeeded named a contained path: relative, no '..'. */
	const char *action = json_string_value(json_object_get(args, "action"));
	const char *path = json_string_value(json_object_get(args, "path"));
	if (action != NULL && strcmp(action, "read") == 0 && path != NULL &&
	    json_object_get(res, "error") == NULL) {
		FUZZ_CHECK(path[0] != '/' && !s_has_dotdot(path));
		FUZZ_CHECK(json_is_string(json_object_get(res, "content")));
	}
	json_decref(res);
	json_decref(args);
	return 0;
}
