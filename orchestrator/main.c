/* orchestrator: arguments, set-up, the privilege drop and the signal plumbing around the event
 * loop. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: orchestrator [--home DIR] [--set key=value]... [--check-config]\n"
	             "       orchestrator [--home DIR] [--set key=value]... --health\n"
	             "       orchestrator --help | --version\n"
	             "\n"
	             "Runs agent profiles: the agent loop, the step journal and the orchctl API.\n"
	             "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Configuration is read\n"
	             "from HOME/etc/orchestrator.conf (optional) then --set overrides.\n"
	             "SIGTERM stops cleanly (unfinished runs resume at the next start);\n"
	             "SIGHUP reloads the configuration (keys marked \"restart to change\"\n"
	             "keep their value until a restart) and the profiles (a file that no\n"
	             "longer loads keeps its last good version). Started as root, it opens its\n"
	             "socket, then runs as `user`. --check-config loads the configuration and\n"
	             "every profile and exits 1 on any error (file:line:column); fields that\n"
	             "fail closed until their daemon exists (approvals, services, egress, ...)\n"
	             "print a warning and do not fail it (docs/profiles.md).\n"
	             "--health asks the running daemon for an answer on its endpoint; exit 0\n"
	             "when it gives one within 2 s, else 1.\n"
	             "\n"
	             "configuration keys:\n");
	ahp_cfg_print_help(orch_cfg_defs, out);
}

/* --health: one List request of at most one run, which the loop answers at
 * once without a log line (a compose healthcheck asks every few seconds);
 * any reply (even an error) means the loop is serving. An ipc:// socket file
 * that does not exist fails at once. */
static int
s_health(orch_t *o)
{
	Ahp__Orch__ListRequest l = AHP__ORCH__LIST_REQUEST__INIT;
	l.limit = 1;
	Ahp__Orch__Request r = AHP__ORCH__REQUEST__INIT;
	r.body_case = AHP__ORCH__REQUEST__BODY_LIST;
	r.list = &l;
	uint8_t buf[64];
	size_t len = ahp__orch__request__pack(&r, buf);
	return ahp_rpc_health("orchestrator", o->endpoint, buf, len);
}

/* Fills a path from a config key, or from HOME/sub when the key is empty. */
static void
s_drop_privileges(orch_t *o)
{
	if (!o->drop)
		return;
	if (setgroups(1, &o->run_gid) != 0)
		fatal("setgroups");
	if (setresgid(o->run_gid, o->run_gid, o->run_gid) != 0)
		fatal("setresgid");
	if (setresuid(o->run_uid, o->run_uid, o->run_uid) != 0)
		fatal("setresuid");
	uid_t r, e, s;
	gid_t rg, eg, sg;
	if (getresuid(&r, &e, &s) != 0 || r != o->run_uid || e != o->run_uid || s != o->run_uid ||
	    getresgid(&rg, &eg, &sg) != 0 || rg != o->run_gid || eg != o->run_gid ||
	    sg != o->run_gid)
		fatalx("privilege drop did not take");
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
		fatalx("privilege drop: root could be regained");
	/* Nothing this process starts may gain privilege either. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		fatal("prctl(PR_SET_NO_NEW_PRIVS)");
	log_info("running as user=%s uid=%u gid=%u", o->run_user, (unsigned)o->run_uid,
	         (unsigned)o->run_gid);
}

static void
s_check_error(void *arg, const char *message)
{
	(void)arg;
	ahp_term_printf(stderr, "%s\n", message);
}

static void
s_check_warning(void *arg, const char *line)
{
	(void)arg;
	ahp_term_printf(stdout, "%s\n", line);
}

/* Reports each bad profile (stderr, file:line:column) and each field that
 * will fail closed at run time (stdout, "<file>: warning: ..."); returns the
 * number of bad files. Warnings do not fail the check: the profile is valid,
 * and what it asks for is refused at run time rather than done unchecked. */
static size_t
s_check_profiles(orch_t *o)
{
	ahp_profiles_t *set =
	    ahp_profiles_load_dir(o->profiles_dir, o->etc_dir, s_check_error, NULL);
	if (set == NULL)
		return 1;
	for (size_t i = 0; i < ahp_profiles_warning_count(set); i++)
		ahp_term_printf(stdout, "%s\n", ahp_profiles_warning(set, i));
	for (size_t i = 0; i < ahp_profiles_count(set); i++)
		ahp_profile_warnings(ahp_profiles_at(set, i), s_check_warning, NULL);
	size_t bad = ahp_profiles_errors(set);
	ahp_term_printf(stdout, "%zu profile(s) loaded from %s, %zu with errors\n",
	                ahp_profiles_count(set), o->profiles_dir, bad);
	ahp_profiles_destroy(&set);
	return bad;
}

static int
s_signals(orch_t *o)
{
	o->sigfd = ahp_signalfd_daemon();
	return o->sigfd < 0 ? -1 : 0;
}

static void
s_pidfile(orch_t *o, int create)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/run/orchestrator.pid", o->home);
	if (!create) {
		/* Remove it only while it still names us: another instance that
		 * failed to start must not orphan the live daemon's pid file. */
		char *buf = NULL;
		size_t len = 0;
		long pid = 0;
		if (ahp_read_file(path, 64, &buf, &len) == 0) {
			buf[strcspn(buf, "\n")] = '\0';
			if (ahp_parse_long(buf, 1, LONG_MAX, &pid) == 0 && pid == (long)getpid())
				unlink(path);
		}
		free(buf);
		return;
	}
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		log_warn("cannot write %s: %s", path, strerror(errno));
		return;
	}
	fprintf(f, "%ld\n", (long)getpid());
	fclose(f);
}

int
main(int argc, char **argv)
{
	const char *home_flag = NULL;
	int check = 0, health = 0;
	/* Kept for the process's life: SIGHUP re-applies them. */
	char **sets = calloc((size_t)argc, sizeof *sets);
	int nsets = 0;

	ahp_log_init("orchestrator", AHP_LOG_INFO);
	if (sets == NULL)
		fatal("calloc");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_usage(stdout);
			free(sets);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("orchestrator %s\n", AHP_VERSION);
			free(sets);
			return 0;
		} else if (strcmp(a, "--check-config") == 0) {
			check = 1;
		} else if (strcmp(a, "--health") == 0) {
			health = 1;
		} else if (strcmp(a, "--home") == 0 && i + 1 < argc) {
			home_flag = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			home_flag = a + 7;
		} else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
			sets[nsets++] = argv[++i];
		} else if (strncmp(a, "--set=", 6) == 0) {
			sets[nsets++] = argv[i] + 6;
		} else if (strcmp(a, "--home") == 0 || strcmp(a, "--set") == 0) {
			/* the branches above took it with its value: none is left */
			ahp_term_printf(stderr, "orchestrator: %s needs a value\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		} else {
			ahp_term_printf(stderr, "orchestrator: unknown argument \"%s\"\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		}
	}

	orch_t *o = calloc(1, sizeof *o);
	if (o == NULL)
		fatal("calloc");
	o->sigfd = -1;
	o->replies_tail = &o->replies;
	o->sets = sets;
	o->nsets = nsets;
	int cfg_ok = orch_configure(o, home_flag) == 0;
	o->cfg_start = o->cfg;
	if (health) {
		int rc = cfg_ok ? s_health(o) : 1;
		ahp_cfg_destroy(&o->cfg);
		free(sets);
		free(o);
		return rc;
	}
	if (check) {
		size_t bad = cfg_ok ? s_check_profiles(o) : 0;
		if (cfg_ok && bad == 0)
			printf("configuration OK\n");
		ahp_cfg_destroy(&o->cfg);
		free(sets);
		free(o);
		return cfg_ok && bad == 0 ? 0 : 1;
	}
	if (!cfg_ok)
		fatalx("bad configuration");

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("curl_global_init failed");
	if (s_signals(o) != 0)
		fatal("signalfd");
	if (orch_loop_setup(o) != 0)
		fatalx("set-up failed");
	s_pidfile(o, 1);
	s_drop_privileges(o);
	if (orch_loop_start(o) != 0)
		fatalx("set-up failed");
	log_info("serving endpoint=%s db=%s gateway=%s gateway_socket=%s credproxy=%s profiles=%zu",
	         o->endpoint, o->db_path, o->gateway_url,
	         o->gateway_socket[0] ? o->gateway_socket : "\"\"", o->cp_endpoint,
	         ahp_profiles_count(o->profiles->set));
	orch_loop_run(o);
	log_info("stopping");
	orch_loop_teardown(o);
	s_pidfile(o, 0);
	close(o->sigfd);
	if (o->cfg != o->cfg_start)
		ahp_cfg_destroy(&o->cfg_start);
	ahp_cfg_destroy(&o->cfg);
	free(sets);
	free(o);
	curl_global_cleanup();
	return 0;
}
