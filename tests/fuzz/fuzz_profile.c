/* Fuzz target: the profile loader (ahp_profile_load), reading the input as a profile file in a
 * private temporary etc/ directory (profiles/, and skills/ for relative skills: paths). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/profile.h"
#include "ahp/text.h"
#include "fuzz.h"

static char s_etc[PATH_MAX];
static char s_file[PATH_MAX];

static void
s_path(char *out, size_t len, const char *rel)
{
	int n = snprintf(out, len, "%s/%s", s_etc, rel);
	FUZZ_CHECK(n > 0 && (size_t)n < len);
}

/* rm -r of the private dir at exit; it only ever holds what s_setup made. */
static void
s_cleanup(void)
{
	char p[PATH_MAX];
	unlink(s_file);
	s_path(p, sizeof p, "skills/demo/SKILL.md");
	unlink(p);
	s_path(p, sizeof p, "skills/demo");
	rmdir(p);
	s_path(p, sizeof p, "skills");
	rmdir(p);
	s_path(p, sizeof p, "profiles");
	rmdir(p);
	rmdir(s_etc);
}

static void
s_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char p[PATH_MAX];
	snprintf(s_etc, sizeof s_etc, "%s/ahp-fuzz-profile-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(s_etc) != NULL);
	s_path(p, sizeof p, "profiles");
	FUZZ_CHECK(mkdir(p, 0700) == 0);
	s_path(p, sizeof p, "skills");
	FUZZ_CHECK(mkdir(p, 0700) == 0);
	s_path(p, sizeof p, "skills/demo");
	FUZZ_CHECK(mkdir(p, 0700) == 0);
	s_path(p, sizeof p, "skills/demo/SKILL.md");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	close(fd);
	s_path(s_file, sizeof s_file, "profiles/fuzz.yaml");
	atexit(s_cleanup);
}

static void
s_check_str(const char *s)
{
	if (s != NULL)
		FUZZ_CHECK(ahp_utf8_valid(s, strlen(s), 0));
}

/* What a loaded profile promises its users (orchestrator, --check-config). */
static void
s_check_profile(const ahp_profile_t *p)
{
	FUZZ_CHECK(p->name != NULL && p->model != NULL && p->provider != NULL &&
	           p->model_name != NULL && p->path != NULL);
	size_t n = strlen(p->name);
	FUZZ_CHECK(n >= 1 && n <= 64);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((p->name[i] >= 'a' && p->name[i] <= 'z') ||
		           (p->name[i] >= '0' && p->name[i] <= '9') || p->name[i] == '-');
	s_check_str(p->model);
	s_check_str(p->system_prompt);
	for (unsigned i = 0; i < p->n_tools; i++)
		s_check_str(p->tools[i]);
	for (unsigned i = 0; i < p->n_services; i++)
		s_check_str(p->services[i]);
	if (p->skills_dir != NULL)
		FUZZ_CHECK(p->skills_dir[0] == '/');
	for (unsigned i = 0; i < p->n_egress; i++) {
		FUZZ_CHECK(p->egress[i].host != NULL);
		s_check_str(p->egress[i].host);
		for (unsigned k = 0; k < p->egress[i].n_inject; k++)
			FUZZ_CHECK(p->egress[i].inject[k].name != NULL &&
			           p->egress[i].inject[k].value != NULL);
	}
	for (unsigned i = 0; i < p->n_approvals; i++)
		FUZZ_CHECK((p->approvals[i].service == NULL) != (p->approvals[i].tool == NULL));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (s_etc[0] == '\0')
		s_setup();
	int fd = open(s_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
	close(fd);
	char err[1024];
	ahp_profile_t *p = ahp_profile_load(s_file, NULL, err, sizeof err);
	if (p == NULL) {
		/* The error is printed by --check-config and logged. */
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(ahp_utf8_valid(err, strlen(err), 0));
		return 0;
	}
	s_check_profile(p);
	ahp_profile_destroy(&p);
	FUZZ_CHECK(p == NULL);
	return 0;
}
