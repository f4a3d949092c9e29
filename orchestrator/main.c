/* orchestrator: arguments, configuration, set-up and the signal plumbing around the event loop. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

const ahp_cfg_def_t orch_cfg_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "",
     "orchctl endpoint (default ipc://HOME/run/orchestrator.sock)"},
    {"db", AHP_CFG_STR, 0, 0, "", "journal database (default HOME/state/orchestrator.db)"},
    {"profiles_dir", AHP_CFG_STR, 0, 0, "", "profiles directory (default HOME/etc/profiles)"},
    {"etc_dir", AHP_CFG_STR, 0, 0, "", "base for relative skills dirs (default HOME/etc)"},
    {"gateway_url", AHP_CFG_STR, 0, 0, NULL,
     "model gateway base URL; calls go to URL/providers/<provider>/v1/chat/completions"},
    {"sandboxd_endpoint", AHP_CFG_STR, 0, 0, "",
     "sandboxd endpoint (default ipc://HOME/run/sandboxd.sock)"},
    {"model_timeout_ms", AHP_CFG_INT, 100, 600000, "60000", "timeout of one model request"},
    {"model_retries", AHP_CFG_INT, 0, 20, "4",
     "retries of a model call on 429/5xx/timeout/connection errors"},
    {"retry_base_ms", AHP_CFG_INT, 1, 60000, "1000", "first retry backoff (doubles, jittered)"},
    {"retry_max_ms", AHP_CFG_INT, 1, 600000, "30000", "ceiling of one retry wait"},
    {"max_running", AHP_CFG_INT, 1, 100000, "512", "runs executing at once; the rest queue"},
    {"sandbox_slack_ms", AHP_CFG_INT, 100, 600000, "15000",
     "added to a profile's command timeout before sandboxd is considered lost"},
    {NULL, 0, 0, 0, NULL, NULL},
};

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: orchestrator [--home DIR] [--set key=value]... [--check-config]\n"
	             "                    [--help] [--version]\n"
	             "\n"
	             "Runs agent profiles: the agent loop, the step journal and the orchctl API.\n"
	             "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Configuration is read\n"
	             "from HOME/etc/orchestrator.conf (optional) then --set overrides.\n"
	             "SIGTERM stops cleanly (unfinished runs resume at the next start);\n"
	             "SIGHUP reloads profiles (a file that no longer loads keeps its last good\n"
	             "version). --check-config loads the configuration and every profile and\n"
	             "exits 1 on any error (file:line:column); fields that fail closed until\n"
	             "their daemon exists (approvals, services, egress, ...) print a warning\n"
	             "and do not fail it (docs/profiles.md).\n"
	             "\n"
	             "configuration keys:\n");
	ahp_cfg_print_help(orch_cfg_defs, out);
}

/* Fills a path from a config key, or from HOME/sub when the key is empty. */
static int
s_path(orch_t *o, const char *key, const char *prefix, const char *sub, char *buf, size_t len)
{
	const char *v = ahp_cfg_str(o->cfg, key);
	int n;
	if (v != NULL && *v != '\0')
		n = snprintf(buf, len, "%s", v);
	else
		n = snprintf(buf, len, "%s%s/%s", prefix, o->home, sub);
	if (n < 0 || (size_t)n >= len) {
		log_error("config %s: path too long", key);
		return -1;
	}
	return 0;
}

static int
s_configure(orch_t *o, const char *home_flag, char **sets, int nsets)
{
	char err[512], path[PATH_MAX + 32];
	const char *home = ahp_home(home_flag);
	if (ahp_strlcpy(o->home, home, sizeof o->home) != 0) {
		log_error("home path too long");
		return -1;
	}
	o->cfg = ahp_cfg_new(orch_cfg_defs);
	if (o->cfg == NULL)
		return -1;
	snprintf(path, sizeof path, "%s/etc/orchestrator.conf", o->home);
	if (ahp_cfg_load_file(o->cfg, path, 1, err, sizeof err) != 0) {
		log_error("%s", err);
		return -1;
	}
	for (int i = 0; i < nsets; i++) {
		if (ahp_cfg_set(o->cfg, sets[i], NULL, err, sizeof err) != 0) {
			log_error("--set %s: %s", sets[i], err);
			return -1;
		}
	}
	if (ahp_cfg_validate(o->cfg, err, sizeof err) != 0) {
		log_error("%s", err);
		return -1;
	}
	if (s_path(o, "endpoint", "ipc://", "run/orchestrator.sock", o->endpoint,
	           sizeof o->endpoint) != 0 ||
	    s_path(o, "db", "", "state/orchestrator.db", o->db_path, sizeof o->db_path) != 0 ||
	    s_path(o, "profiles_dir", "", "etc/profiles", o->profiles_dir,
	           sizeof o->profiles_dir) != 0 ||
	    s_path(o, "etc_dir", "", "etc", o->etc_dir, sizeof o->etc_dir) != 0 ||
	    s_path(o, "sandboxd_endpoint", "ipc://", "run/sandboxd.sock", o->sbx_endpoint,
	           sizeof o->sbx_endpoint) != 0)
		return -1;
	o->gateway_url = ahp_cfg_str(o->cfg, "gateway_url");
	if (strncmp(o->gateway_url, "http://", 7) != 0 &&
	    strncmp(o->gateway_url, "https://", 8) != 0) {
		log_error("config gateway_url: must start with http:// or https:// (got \"%s\")",
		          o->gateway_url);
		return -1;
	}
	o->model_timeout_ms = ahp_cfg_int(o->cfg, "model_timeout_ms");
	o->model_retries = ahp_cfg_int(o->cfg, "model_retries");
	o->retry_base_ms = ahp_cfg_int(o->cfg, "retry_base_ms");
	o->retry_max_ms = ahp_cfg_int(o->cfg, "retry_max_ms");
	o->max_running = ahp_cfg_int(o->cfg, "max_running");
	o->sbx_timeout_ms = ahp_cfg_int(o->cfg, "sandbox_slack_ms");
	return 0;
}

static void
s_check_error(void *arg, const char *message)
{
	(void)arg;
	fprintf(stderr, "%s\n", message);
}

static void
s_check_warning(void *arg, const char *line)
{
	(void)arg;
	printf("%s\n", line);
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
		printf("%s\n", ahp_profiles_warning(set, i));
	for (size_t i = 0; i < ahp_profiles_count(set); i++)
		ahp_profile_warnings(ahp_profiles_at(set, i), s_check_warning, NULL);
	size_t bad = ahp_profiles_errors(set);
	printf("%zu profile(s) loaded from %s, %zu with errors\n", ahp_profiles_count(set),
	       o->profiles_dir, bad);
	ahp_profiles_destroy(&set);
	return bad;
}

static int
s_signals(orch_t *o)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	o->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
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
	int check = 0;
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
		} else if (strcmp(a, "--home") == 0 && i + 1 < argc) {
			home_flag = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			home_flag = a + 7;
		} else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
			sets[nsets++] = argv[++i];
		} else if (strncmp(a, "--set=", 6) == 0) {
			sets[nsets++] = argv[i] + 6;
		} else {
			fprintf(stderr, "orchestrator: unknown argument \"%s\"\n", a);
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
	int cfg_ok = s_configure(o, home_flag, sets, nsets) == 0;
	free(sets);
	if (check) {
		size_t bad = cfg_ok ? s_check_profiles(o) : 0;
		if (cfg_ok && bad == 0)
			printf("configuration OK\n");
		ahp_cfg_destroy(&o->cfg);
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
	log_info("serving endpoint=%s db=%s gateway=%s profiles=%zu", o->endpoint, o->db_path,
	         o->gateway_url, ahp_profiles_count(o->profiles->set));
	orch_loop_run(o);
	log_info("stopping");
	orch_loop_teardown(o);
	s_pidfile(o, 0);
	close(o->sigfd);
	ahp_cfg_destroy(&o->cfg);
	free(o);
	curl_global_cleanup();
	return 0;
}
