/* servicesd: arguments, configuration, the privilege drop, signals and reloads around the
 * event loop (engine.c). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/priv.h"
#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/secrets.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "servicesd.pb-c.h"
#include "svc.h"

static const ahp_cfg_def_t s_cfg_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "",
     "ZeroMQ endpoint the orchestrator calls; default ipc://HOME/run/servicesd.sock"},
    {"allow_users", AHP_CFG_STR, 0, 0, "ahp-orchestrator,root",
     "users (SO_PEERCRED) allowed on the endpoint (names that do not exist are skipped)"},
    {"allow_groups", AHP_CFG_STR, 0, 0, "", "groups allowed on the endpoint"},
    {"profiles_dir", AHP_CFG_STR, 0, 0, "", "agent profiles; default HOME/etc/profiles"},
    {"secrets_dir", AHP_CFG_STR, 0, 0, "",
     "the services' credentials, one file per secret (0600); default "
     "HOME/etc/secrets/servicesd"},
    {"services_file", AHP_CFG_STR, 0, 0, "",
     "each service's upstream: NAME url=URL [secret=NAME] [timeout_ms=N]; default "
     "HOME/etc/services.conf"},
    {"db", AHP_CFG_STR, 0, 0, "",
     "the idempotency store (SQLite); default HOME/state/servicesd/servicesd.db"},
    {"user", AHP_CFG_STR, 0, 0, "ahp-servicesd",
     "started as root, run as this user once the socket is bound (\"\" = stay root)"},
    {"max_inflight", AHP_CFG_INT, 1, 100000, "256",
     "upstream calls at once; more wait their turn (one service gets at most all but one per "
     "other service)"},
    {"retain_days", AHP_CFG_INT, 0, 36500, "30",
     "days a recorded outcome answers a repeated key (0 = forever)"},
    {"log_level", AHP_CFG_STR, 0, 0, "info", "debug | info | warn | error"},
    {NULL, 0, 0, 0, NULL, NULL},
};

typedef struct {
	const char *home;
	ahp_cfg_t *cfg;
	char endpoint[PATH_MAX + 8];
	char profiles_dir[PATH_MAX], secrets_dir[PATH_MAX], services_file[PATH_MAX];
	char etc_dir[PATH_MAX], db_path[PATH_MAX];
	ahp_rpc_allow_t allow;
	svc_engine_t *engine;
} s_main_t;

static void
s_usage(FILE *f)
{
	fprintf(f,
	        "usage: servicesd [--home DIR] [--set key=value]... [serve]\n"
	        "       servicesd [--home DIR] [--set key=value]... --check-config\n"
	        "       servicesd [--home DIR] [--set key=value]... --health\n"
	        "       servicesd --help | --version\n"
	        "\n"
	        "Typed services for agents: the orchestrator's exec_service calls arrive here,\n"
	        "are checked against the calling run's profile and the service's argument\n"
	        "schema, and run with the service's own credential (read from secrets_dir, never\n"
	        "logged or returned). Every call is keyed by run and step and recorded before\n"
	        "and after its side effect, so it happens once.\n"
	        "\n"
	        "serve           run in the foreground (default). SIGHUP reloads profiles,\n"
	        "                secrets and services.conf (a bad reload keeps the previous\n"
	        "                ones); SIGTERM stops.\n"
	        "--check-config  load the configuration, the profiles, services.conf and the\n"
	        "                secrets the configured services need; exit 1 on any error.\n"
	        "--health        ask the running daemon for an answer; exit 0 when it gives\n"
	        "                one within 2 s, else 1.\n"
	        "\n"
	        "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Config: "
	        "HOME/etc/servicesd.conf\n"
	        "(key = value), overridden by --set. Keys:\n");
	ahp_cfg_print_help(s_cfg_defs, f);
	fprintf(f, "\nServices:\n");
	for (int i = 0; svc_registry[i] != NULL; i++)
		fprintf(f, "  %-16s %s (after a crash: %s)\n", svc_registry[i]->name,
		        svc_registry[i]->summary, svc_retry_str(svc_registry[i]->retry));
}

static int
s_path(s_main_t *m, const char *key, const char *sub, char *out, size_t len)
{
	const char *v = ahp_cfg_str(m->cfg, key);
	if (v != NULL && v[0] != '\0')
		return ahp_strlcpy(out, v, len);
	return ahp_home_path(m->home, sub, out, len);
}

static int
s_configure(s_main_t *m, char **sets, int nsets, char *err, size_t errlen)
{
	m->cfg = ahp_cfg_new(s_cfg_defs);
	if (m->cfg == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	char conf[PATH_MAX];
	if (ahp_home_path(m->home, "etc/servicesd.conf", conf, sizeof conf) != 0) {
		snprintf(err, errlen, "HOME is too long");
		return -1;
	}
	if (ahp_cfg_load_file(m->cfg, conf, 1, err, errlen) != 0)
		return -1;
	for (int i = 0; i < nsets; i++)
		if (ahp_cfg_set(m->cfg, sets[i], NULL, err, errlen) != 0)
			return -1;
	if (ahp_cfg_validate(m->cfg, err, errlen) != 0)
		return -1;
	char sock[PATH_MAX];
	if (s_path(m, "profiles_dir", "etc/profiles", m->profiles_dir, sizeof m->profiles_dir) !=
	        0 ||
	    s_path(m, "secrets_dir", "etc/secrets/servicesd", m->secrets_dir,
	           sizeof m->secrets_dir) != 0 ||
	    s_path(m, "services_file", "etc/services.conf", m->services_file,
	           sizeof m->services_file) != 0 ||
	    s_path(m, "db", "state/servicesd/servicesd.db", m->db_path, sizeof m->db_path) != 0 ||
	    ahp_home_path(m->home, "etc", m->etc_dir, sizeof m->etc_dir) != 0 ||
	    ahp_home_path(m->home, "run/servicesd.sock", sock, sizeof sock) != 0) {
		snprintf(err, errlen, "a path is too long (HOME, or a *_dir / *_file / db key)");
		return -1;
	}
	const char *ep = ahp_cfg_str(m->cfg, "endpoint");
	if (ep[0] != '\0')
		snprintf(m->endpoint, sizeof m->endpoint, "%s", ep);
	else
		snprintf(m->endpoint, sizeof m->endpoint, "ipc://%s", sock);
	if (strncmp(m->endpoint, "ipc://", 6) != 0) {
		/* tcp:// would need CURVE keys, which this version does not have: a
		 * service socket anyone on the network could call is refused. */
		snprintf(err, errlen, "endpoint %.200s: only ipc:// endpoints are supported",
		         m->endpoint);
		return -1;
	}
	/* The defaults name users a host may not have: skipped (fewer peers, never
	 * more). A name the operator wrote must exist. */
	int defaults = !ahp_cfg_is_set(m->cfg, "allow_users") ||
	               strcmp(ahp_cfg_str(m->cfg, "allow_users"), "ahp-orchestrator,root") == 0;
	if (ahp_rpc_allow_parse(&m->allow, ahp_cfg_str(m->cfg, "allow_users"),
	                        ahp_cfg_str(m->cfg, "allow_groups"), defaults, err, errlen) != 0)
		return -1;
	const char *lvl = ahp_cfg_str(m->cfg, "log_level");
	int l = ahp_log_level_parse(lvl);
	if (l < 0) {
		snprintf(err, errlen, "log_level: must be debug, info, warn or error");
		return -1;
	}
	ahp_log_init("servicesd", l);
	return 0;
}

static void
s_profile_error(void *arg, const char *message)
{
	int *n = arg;
	(*n)++;
	ahp_term_printf(stderr, "%s\n", message);
}

static void
s_profile_error_log(void *arg, const char *message)
{
	(void)arg;
	log_error("%s", message);
}

/* Loads profiles, secrets and services.conf. With check, problems go to stderr and
 * each counts; otherwise they are logged. On success the three are handed over. */
static int
s_load(s_main_t *m, int check, int reload, ahp_profiles_t **profiles_p, ahp_secrets_t **secrets_p,
       svc_conf_t *conf)
{
	char err[512];
	int problems = 0, bad = 0;
	ahp_profiles_t *profiles = ahp_profiles_load_dir(
	    m->profiles_dir, m->etc_dir, check ? s_profile_error : s_profile_error_log, &bad);
	if (profiles == NULL) {
		if (check)
			ahp_term_printf(stderr, "servicesd: cannot load profiles from %s\n",
			                m->profiles_dir);
		else
			log_error("cannot load profiles from %s", m->profiles_dir);
		return -1;
	}
	size_t perr = ahp_profiles_errors(profiles);
	problems += (int)perr;
	if (reload && perr > 0) {
		/* A profile that no longer loads must not lose its services (its runs
		 * would be refused) nor keep grants nobody can see: keep the old set. */
		log_error("%zu profile(s) failed to load (see above)", perr);
		ahp_profiles_destroy(&profiles);
		return -1;
	}
	ahp_secrets_t *secrets = ahp_secrets_load(m->secrets_dir);
	if (secrets == NULL) {
		if (check)
			ahp_term_printf(stderr,
			                "servicesd: cannot load secrets from %s (see above)\n",
			                m->secrets_dir);
		else
			log_error("cannot load secrets from %s", m->secrets_dir);
		ahp_profiles_destroy(&profiles);
		return -1;
	}
	svc_conf_t c = {0};
	if (svc_conf_load(m->services_file, &c, err, sizeof err) != 0) {
		if (check)
			ahp_term_printf(stderr, "servicesd: %s\n", err);
		else
			log_error("%s", err);
		ahp_profiles_destroy(&profiles);
		ahp_secrets_destroy(&secrets);
		return -1;
	}
	/* A configured service whose secret is missing could only fail. */
	for (size_t i = 0; i < c.n; i++) {
		const svc_conf_entry_t *e = &c.entries[i];
		size_t len = 0;
		const char *v = NULL;
		if (e->secret != NULL && e->secret[0] != '\0' &&
		    ((v = ahp_secrets_get(secrets, e->secret, &len)) == NULL || len == 0 ||
		     strlen(v) != len || strpbrk(v, "\r\n") != NULL)) {
			/* Empty, or holding a NUL, CR or LF: the engine refuses it as it
			 * refuses a missing one (it would send "Bearer ", a cut token or a
			 * broken header). */
			const char *what = v == NULL
			                       ? "which is not in"
			                       : "which is empty or holds a NUL, CR or LF byte, in";
			if (check) {
				ahp_term_printf(stderr,
				                "servicesd: service %s needs secret %s, %s %s\n",
				                e->service->name, e->secret, what, m->secrets_dir);
				problems++;
			} else {
				log_warn("service %s needs secret %s, %s %s: its calls fail as "
				         "unavailable",
				         e->service->name, e->secret, what, m->secrets_dir);
			}
		}
	}
	if (check) {
		for (size_t i = 0; i < ahp_profiles_count(profiles); i++) {
			const ahp_profile_t *p = ahp_profiles_at(profiles, i);
			for (unsigned j = 0; j < p->n_services; j++) {
				const svc_service_t *s =
				    svc_find(p->services[j], strlen(p->services[j]));
				if (s != NULL && svc_conf_find(&c, s) == NULL)
					ahp_term_printf(
					    stdout,
					    "%s: warning: service %s is allowed but not "
					    "configured in %s; its calls fail as "
					    "unavailable\n",
					    p->path, s->name, m->services_file);
			}
		}
		ahp_term_printf(stdout,
		                "%zu profile(s) from %s (%zu with errors), %zu secret(s), %zu "
		                "configured service(s)\n",
		                ahp_profiles_count(profiles), m->profiles_dir, perr,
		                ahp_secrets_count(secrets), c.n);
		for (size_t i = 0; i < c.n; i++)
			ahp_term_printf(
			    stdout, "service %s: %s secret=%s timeout_ms=%ld retry=%s\n",
			    c.entries[i].service->name, c.entries[i].url,
			    c.entries[i].secret ? c.entries[i].secret : "", c.entries[i].timeout_ms,
			    svc_retry_str(c.entries[i].service->retry));
	}
	*profiles_p = profiles;
	*secrets_p = secrets;
	*conf = c;
	return problems > 0 ? 1 : 0;
}

/* --health: any reply (even an error) means the loop is serving. */
static int
s_health(s_main_t *m)
{
	Ahp__Svcd__DescribeRequest d = AHP__SVCD__DESCRIBE_REQUEST__INIT;
	d.profile = "";
	Ahp__Svcd__Request r = AHP__SVCD__REQUEST__INIT;
	r.body_case = AHP__SVCD__REQUEST__BODY_DESCRIBE;
	r.describe = &d;
	uint8_t buf[64];
	size_t len = ahp__svcd__request__pack(&r, buf);
	return ahp_rpc_health("servicesd", m->endpoint, buf, len);
}

static void
s_drop_privileges(s_main_t *m)
{
	/* The store's directory belongs to this user alone; memory holds secrets. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", m->db_path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir)
		*slash = '\0';
	else
		dir[0] = '\0';
	if (ahp_priv_drop(ahp_cfg_str(m->cfg, "user"), dir, AHP_PRIV_NOT_DUMPABLE) == 0 &&
	    geteuid() == 0)
		log_warn("running as root (user = \"\"): the services' secrets would be "
		         "exposed to a root bug");
}

static int
s_on_signal(void *arg, int signo)
{
	s_main_t *m = arg;
	if (signo != SIGHUP) {
		log_info("stopping on signal %d", signo);
		return 1;
	}
	ahp_profiles_t *profiles = NULL;
	ahp_secrets_t *secrets = NULL;
	svc_conf_t conf = {0};
	if (s_load(m, 0, 1, &profiles, &secrets, &conf) < 0) {
		log_error("reload failed; keeping the previous profiles, secrets and services");
		return 0;
	}
	svc_engine_set_gen(m->engine, profiles, secrets, &conf);
	log_info("reloaded profiles, secrets and services");
	return 0;
}

int
main(int argc, char **argv)
{
	const char *home_flag = NULL;
	int check = 0, health = 0;
	char **sets = calloc((size_t)argc + 1, sizeof *sets);
	int nsets = 0;
	ahp_log_init("servicesd", AHP_LOG_INFO);
	if (sets == NULL)
		fatal("calloc");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_usage(stdout);
			free(sets);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("servicesd %s\n", AHP_VERSION);
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
			ahp_term_printf(stderr, "servicesd: %s needs a value\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		} else if (strcmp(a, "serve") == 0) {
			/* the default */
		} else {
			ahp_term_printf(stderr, "servicesd: unknown argument \"%s\"\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		}
	}

	s_main_t m = {0};
	m.home = ahp_home(home_flag);
	char err[512] = "";
	if (s_configure(&m, sets, nsets, err, sizeof err) != 0) {
		ahp_term_printf(stderr, "servicesd: %s\n", err);
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return check || health ? 1 : 2;
	}
	if (svc_constraints_init(err, sizeof err) != 0)
		fatalx("the constraints table is broken: %s", err);
	if (health) {
		int rc = s_health(&m);
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return rc;
	}
	if (check) {
		/* The effective configuration: every key, then the paths as resolved
		 * against HOME (no key holds a secret). */
		ahp_cfg_print(m.cfg, stdout);
		ahp_term_printf(
		    stdout,
		    "effective endpoint=%s profiles_dir=%s secrets_dir=%s services_file=%s "
		    "db=%s\n",
		    m.endpoint, m.profiles_dir, m.secrets_dir, m.services_file, m.db_path);
		ahp_profiles_t *profiles = NULL;
		ahp_secrets_t *secrets = NULL;
		svc_conf_t conf = {0};
		int rc = s_load(&m, 1, 0, &profiles, &secrets, &conf);
		ahp_profiles_destroy(&profiles);
		ahp_secrets_destroy(&secrets);
		svc_conf_free(&conf);
		if (rc == 0)
			printf("configuration OK\n");
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return rc == 0 ? 0 : 1;
	}

	int sigfd = ahp_signalfd_daemon();
	if (sigfd < 0)
		fatal("signals");

	/* The socket is bound as root (run/ may be root's); the store, the secrets
	 * and the upstream calls happen as the daemon's user. */
	m.engine = svc_engine_new(m.endpoint, &m.allow,
	                          (unsigned)ahp_cfg_int(m.cfg, "max_inflight"), err, sizeof err);
	if (m.engine == NULL)
		fatalx("%s", err);
	s_drop_privileges(&m);
	char dbdir[PATH_MAX];
	snprintf(dbdir, sizeof dbdir, "%s", m.db_path);
	char *slash = strrchr(dbdir, '/');
	if (slash != NULL && slash != dbdir) {
		*slash = '\0';
		if (ahp_mkdirs(dbdir, 0700) != 0)
			fatal("mkdir %s", dbdir);
	}
	if (svc_engine_open_store(m.engine, m.db_path, err, sizeof err) != 0)
		fatalx("idempotency store: %s", err);
	svc_engine_set_retention(m.engine, ahp_cfg_int(m.cfg, "retain_days"));
	ahp_profiles_t *profiles = NULL;
	ahp_secrets_t *secrets = NULL;
	svc_conf_t conf = {0};
	if (s_load(&m, 0, 0, &profiles, &secrets, &conf) < 0)
		fatalx("cannot load profiles, secrets or services.conf (see above)");
	svc_engine_set_gen(m.engine, profiles, secrets, &conf);
	log_info("serving endpoint=%s profiles=%s services=%s db=%s", m.endpoint, m.profiles_dir,
	         m.services_file, m.db_path);
	svc_engine_run(m.engine, sigfd, s_on_signal, &m);
	svc_engine_destroy(&m.engine);
	close(sigfd);
	ahp_cfg_destroy(&m.cfg);
	free(sets);
	log_info("stopped");
	return 0;
}
