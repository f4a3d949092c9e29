/* credproxy: arguments, configuration, the privilege drop, signals and reloads around the
 * proxy engine (proxy.c). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/priv.h"
#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/secrets.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "cp.h"
#include "credproxy.pb-c.h"

static const ahp_cfg_def_t s_cfg_defs[] = {
    {"relay_socket", AHP_CFG_STR, 0, 0, "",
     "unix socket sandboxd relays sandbox connections to (PROXY v2 header required); "
     "default HOME/run/credproxy.sock"},
    {"relay_users", AHP_CFG_STR, 0, 0, "root",
     "users (SO_PEERCRED) allowed on relay_socket: sandboxd's"},
    {"api_socket", AHP_CFG_STR, 0, 0, "",
     "unix socket serving /providers/<name>/... to the orchestrator; default "
     "HOME/run/credproxy-api.sock"},
    {"api_users", AHP_CFG_STR, 0, 0, "ahp-orchestrator,root",
     "users allowed on api_socket and ctl_endpoint (names that do not exist are skipped)"},
    {"api_groups", AHP_CFG_STR, 0, 0, "", "groups allowed on api_socket and ctl_endpoint"},
    {"ctl_endpoint", AHP_CFG_STR, 0, 0, "",
     "ZeroMQ control endpoint (egress log queries); default ipc://HOME/run/credproxy-ctl.sock"},
    {"profiles_dir", AHP_CFG_STR, 0, 0, "", "agent profiles; default HOME/etc/profiles"},
    {"secrets_dir", AHP_CFG_STR, 0, 0, "",
     "one file per secret (0600); default HOME/etc/secrets/credproxy"},
    {"providers_file", AHP_CFG_STR, 0, 0, "",
     "model providers, one per line: NAME BASE-URL AUTH [SECRET]; default "
     "HOME/etc/providers.conf"},
    {"state_dir", AHP_CFG_STR, 0, 0, "",
     "the platform CA and the egress log; default HOME/state/credproxy"},
    {"upstream_ca_file", AHP_CFG_STR, 0, 0, "",
     "CA bundle that verifies upstream TLS servers (\"\" = the system store)"},
    {"resolv_conf", AHP_CFG_STR, 0, 0, "/etc/resolv.conf",
     "nameservers for upstream names (\"\" = none: only /etc/hosts and hosts_file answer)"},
    {"hosts_file", AHP_CFG_STR, 0, 0, "",
     "extra name -> address pairs (/etc/hosts format) for names without DNS"},
    {"dev_listen", AHP_CFG_STR, 0, 0, "",
     "loopback host:port where every connection is profile dev_profile (benchmarks, local "
     "tries; off by default)"},
    {"dev_profile", AHP_CFG_STR, 0, 0, "", "the profile of dev_listen connections"},
    {"user", AHP_CFG_STR, 0, 0, "ahp-credproxy",
     "started as root, run as this user once the sockets are bound (\"\" = stay root)"},
    {"max_header_bytes", AHP_CFG_INT, 1024, 1048576, "32768",
     "bytes of a request or response head"},
    {"max_headers", AHP_CFG_INT, 8, 1000, "100", "header fields in a head"},
    {"header_timeout_s", AHP_CFG_INT, 1, 3600, "10",
     "seconds a request head may take to arrive (slowloris)"},
    {"idle_timeout_s", AHP_CFG_INT, 1, 86400, "120",
     "seconds an idle keep-alive client connection is kept"},
    {"connect_timeout_s", AHP_CFG_INT, 1, 600, "10", "seconds to connect to an upstream"},
    {"response_timeout_s", AHP_CFG_INT, 1, 86400, "600",
     "seconds without a byte from the upstream before 504 / close"},
    {"egress_retain_days", AHP_CFG_INT, 0, 36500, "30",
     "days the egress log keeps a record (0 = forever)"},
    {"max_conns", AHP_CFG_INT, 1, 1000000, "4096", "client connections at once"},
    {"log_level", AHP_CFG_STR, 0, 0, "info", "debug | info | warn | error"},
    {NULL, 0, 0, 0, NULL, NULL},
};

typedef struct {
	const char *home;
	ahp_cfg_t *cfg;
	char relay_socket[PATH_MAX], api_socket[PATH_MAX], ctl_endpoint[PATH_MAX + 8];
	char profiles_dir[PATH_MAX], secrets_dir[PATH_MAX], providers_file[PATH_MAX];
	char state_dir[PATH_MAX], etc_dir[PATH_MAX], db_path[PATH_MAX + 16];
	ahp_rpc_allow_t relay_allow, api_allow;
	struct event_base *base;
	cp_proxy_t *proxy;
	cp_tls_t *tls;
	cp_egress_t *egress;
} s_main_t;

static void
s_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: credproxy [--home DIR] [--set key=value]... [serve]\n"
	    "       credproxy [--home DIR] [--set key=value]... --check-config\n"
	    "       credproxy [--home DIR] [--set key=value]... --health\n"
	    "       credproxy --help | --version\n"
	    "\n"
	    "The egress proxy: sandboxes reach only the hosts their profile's egress rules\n"
	    "allow, with the rule's credentials injected on the way out; the orchestrator's\n"
	    "model calls go to /providers/<name>/... with that provider's key. Secrets are\n"
	    "read from secrets_dir and never logged or returned.\n"
	    "\n"
	    "serve           run in the foreground (default). SIGHUP reloads profiles,\n"
	    "                secrets and providers (a bad reload keeps the previous ones);\n"
	    "                SIGTERM stops.\n"
	    "--check-config  load the configuration, every profile's egress rules, the\n"
	    "                secrets they name and the providers; exit 1 on any error.\n"
	    "--health        ask the running daemon for an answer on ctl_endpoint; exit 0\n"
	    "                when it gives one within 2 s, else 1.\n"
	    "\n"
	    "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Config: HOME/etc/credproxy.conf\n"
	    "(key = value), overridden by --set. Keys:\n");
	ahp_cfg_print_help(s_cfg_defs, f);
}

static int
s_path(s_main_t *m, const char *key, const char *sub, char *out, size_t len)
{
	const char *v = ahp_cfg_str(m->cfg, key);
	if (v != NULL && v[0] != '\0') {
		if (ahp_strlcpy(out, v, len) != 0)
			return -1;
		return 0;
	}
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
	if (ahp_home_path(m->home, "etc/credproxy.conf", conf, sizeof conf) != 0) {
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
	char ctl[PATH_MAX];
	if (s_path(m, "relay_socket", "run/credproxy.sock", m->relay_socket,
	           sizeof m->relay_socket) != 0 ||
	    s_path(m, "api_socket", "run/credproxy-api.sock", m->api_socket,
	           sizeof m->api_socket) != 0 ||
	    s_path(m, "profiles_dir", "etc/profiles", m->profiles_dir, sizeof m->profiles_dir) !=
	        0 ||
	    s_path(m, "secrets_dir", "etc/secrets/credproxy", m->secrets_dir,
	           sizeof m->secrets_dir) != 0 ||
	    s_path(m, "providers_file", "etc/providers.conf", m->providers_file,
	           sizeof m->providers_file) != 0 ||
	    s_path(m, "state_dir", "state/credproxy", m->state_dir, sizeof m->state_dir) != 0 ||
	    ahp_home_path(m->home, "etc", m->etc_dir, sizeof m->etc_dir) != 0 ||
	    ahp_home_path(m->home, "run/credproxy-ctl.sock", ctl, sizeof ctl) != 0) {
		snprintf(err, errlen, "a path is too long (HOME or a *_socket / *_dir key)");
		return -1;
	}
	const char *ce = ahp_cfg_str(m->cfg, "ctl_endpoint");
	if (ce[0] != '\0')
		snprintf(m->ctl_endpoint, sizeof m->ctl_endpoint, "%s", ce);
	else
		snprintf(m->ctl_endpoint, sizeof m->ctl_endpoint, "ipc://%s", ctl);
	snprintf(m->db_path, sizeof m->db_path, "%s/egress.db", m->state_dir);
	if (ahp_rpc_allow_parse(&m->relay_allow, ahp_cfg_str(m->cfg, "relay_users"), NULL, 0, err,
	                        errlen) != 0 ||
	    ahp_rpc_allow_parse(&m->api_allow, ahp_cfg_str(m->cfg, "api_users"),
	                        ahp_cfg_str(m->cfg, "api_groups"), 1, err, errlen) != 0)
		return -1;
	const char *dl = ahp_cfg_str(m->cfg, "dev_listen");
	if (dl[0] != '\0' && ahp_cfg_str(m->cfg, "dev_profile")[0] == '\0') {
		snprintf(err, errlen, "dev_listen is set but dev_profile is not");
		return -1;
	}
	const char *lvl = ahp_cfg_str(m->cfg, "log_level");
	int l = ahp_log_level_parse(lvl);
	if (l < 0) {
		snprintf(err, errlen, "log_level: must be debug, info, warn or error");
		return -1;
	}
	ahp_log_init("credproxy", l);
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

/* Loads profiles, secrets and providers into a new generation. With check,
 * problems go to stderr and every one counts; otherwise they are logged. */
static cp_gen_t *
s_load(s_main_t *m, bool check, bool reload, int *problems)
{
	char err[512];
	int bad = 0;
	ahp_profiles_t *profiles = ahp_profiles_load_dir(
	    m->profiles_dir, m->etc_dir, check ? s_profile_error : s_profile_error_log, &bad);
	if (profiles == NULL) {
		if (check)
			ahp_term_printf(stderr, "credproxy: cannot load profiles from %s\n",
			                m->profiles_dir);
		else
			log_error("cannot load profiles from %s", m->profiles_dir);
		*problems += 1;
		return NULL;
	}
	size_t perr = ahp_profiles_errors(profiles);
	*problems += (int)perr;
	if (reload && perr > 0) {
		/* A profile that no longer loads must not lose its rules (its
		 * sandboxes would be refused everything) nor keep rules nobody
		 * can see: the whole previous set stays. */
		log_error("%zu profile(s) failed to load (see above)", perr);
		ahp_profiles_destroy(&profiles);
		return NULL;
	}
	if (check) {
		/* A rule that injects nothing tunnels HTTPS untouched: its methods
		 * and paths can only be enforced on plain http. */
		for (size_t i = 0; i < ahp_profiles_count(profiles); i++) {
			const ahp_profile_t *p = ahp_profiles_at(profiles, i);
			for (unsigned j = 0; j < p->n_egress; j++) {
				const ahp_egress_t *e = &p->egress[j];
				if (e->n_inject == 0)
					ahp_term_printf(
					    stdout,
					    "%s: warning: egress[%u] (%s) injects nothing, so "
					    "https to it is tunnelled untouched: its methods "
					    "(GET when none are listed) and paths are "
					    "enforced for plain http only\n",
					    p->path, j, e->host);
			}
		}
	}
	ahp_secrets_t *secrets = ahp_secrets_load(m->secrets_dir);
	if (secrets == NULL) {
		if (check)
			ahp_term_printf(stderr,
			                "credproxy: cannot load secrets from %s (see above)\n",
			                m->secrets_dir);
		ahp_profiles_destroy(&profiles);
		*problems += 1;
		return NULL;
	}
	cp_policy_t *policy = cp_policy_new(profiles, secrets, err, sizeof err);
	if (policy == NULL) {
		if (check)
			ahp_term_printf(stderr, "credproxy: %s\n", err);
		else
			log_error("egress rules: %s", err);
		ahp_profiles_destroy(&profiles);
		ahp_secrets_destroy(&secrets);
		*problems += 1;
		return NULL;
	}
	cp_providers_t *providers = cp_providers_load(m->providers_file, secrets, err, sizeof err);
	if (providers == NULL) {
		if (check)
			ahp_term_printf(stderr, "credproxy: %s\n", err);
		else
			log_error("providers: %s", err);
		cp_policy_destroy(&policy);
		ahp_profiles_destroy(&profiles);
		ahp_secrets_destroy(&secrets);
		*problems += 1;
		return NULL;
	}
	if (check) {
		size_t rules = 0;
		for (size_t i = 0; i < ahp_profiles_count(profiles); i++)
			rules += ahp_profiles_at(profiles, i)->n_egress;
		ahp_term_printf(stdout,
		                "%zu profile(s) from %s (%zu with errors), %zu egress rule(s), %zu "
		                "secret(s), %zu provider(s)\n",
		                ahp_profiles_count(profiles), m->profiles_dir, perr, rules,
		                ahp_secrets_count(secrets), cp_providers_count(providers));
		for (size_t i = 0; i < cp_providers_count(providers); i++) {
			const cp_provider_t *p = cp_providers_at(providers, i);
			ahp_term_printf(stdout, "provider %s: %s://%s:%u%s auth=%s%s%s\n", p->name,
			                p->scheme, p->host, p->port, p->base_path,
			                p->auth == CP_AUTH_NONE        ? "none"
			                : p->auth == CP_AUTH_BEARER    ? "bearer"
			                : p->auth == CP_AUTH_X_API_KEY ? "x-api-key"
			                                               : "header",
			                p->secret ? " secret=" : "", p->secret ? p->secret : "");
		}
	}
	ahp_profiles_destroy(&profiles);
	cp_gen_t *g = cp_gen_new(policy, providers, secrets);
	if (g == NULL) {
		cp_policy_destroy(&policy);
		cp_providers_destroy(&providers);
		ahp_secrets_destroy(&secrets);
		*problems += 1;
	}
	return g;
}

/* What serve would refuse at start besides the profiles: the files the
 * configuration names, and dev_listen. Returns the number of problems. */
static int
s_check_files(s_main_t *m)
{
	int bad = 0;
	const char *f[] = {"hosts_file", "upstream_ca_file"};
	for (int i = 0; i < 2; i++) {
		const char *v = ahp_cfg_str(m->cfg, f[i]);
		if (v[0] == '\0')
			continue;
		FILE *fp = fopen(v, "r");
		if (fp == NULL) {
			ahp_term_printf(stderr, "credproxy: %s %s: %s\n", f[i], v, strerror(errno));
			bad++;
			continue;
		}
		if (i == 1) {
			X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
			if (x == NULL) {
				ahp_term_printf(
				    stderr,
				    "credproxy: upstream_ca_file %s: no PEM certificate in it\n",
				    v);
				bad++;
			}
			X509_free(x);
		}
		fclose(fp);
	}
	const char *dl = ahp_cfg_str(m->cfg, "dev_listen");
	if (dl[0] != '\0') {
		struct sockaddr_storage ss;
		int sl = (int)sizeof ss;
		memset(&ss, 0, sizeof ss);
		const char *cls = evutil_parse_sockaddr_port(dl, (struct sockaddr *)&ss, &sl) == 0
		                      ? cp_addr_special((struct sockaddr *)&ss)
		                      : NULL;
		if (cls == NULL || strcmp(cls, "loopback") != 0) {
			ahp_term_printf(stderr,
			                "credproxy: dev_listen %s: not a loopback host:port\n", dl);
			bad++;
		}
	}
	return bad;
}

/* Each client connection may hold two descriptors (client, upstream): the
 * soft limit goes up to the hard one, and max_conns down to what fits. */
static unsigned
s_nofile(unsigned max_conns)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return max_conns;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	rlim_t need = (rlim_t)max_conns * 2 + 64;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		unsigned fit = rl.rlim_cur > 64 ? (unsigned)((rl.rlim_cur - 64) / 2) : 1;
		log_warn("max_conns %u needs %lu descriptors but the limit is %lu: serving %u "
		         "connections at most (raise the hard RLIMIT_NOFILE)",
		         max_conns, (unsigned long)need, (unsigned long)rl.rlim_cur, fit);
		return fit;
	}
	return max_conns;
}

static void
s_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	s_main_t *m = arg;
	if (sig == SIGHUP) {
		int problems = 0;
		cp_gen_t *g = s_load(m, false, true, &problems);
		if (g == NULL) {
			log_error(
			    "reload failed; keeping the previous profiles, secrets and providers");
			return;
		}
		cp_proxy_set_gen(m->proxy, g);
		log_info("reloaded profiles, secrets and providers");
		return;
	}
	log_info("stopping on signal %d", (int)sig);
	event_base_loopexit(m->base, NULL);
}

static void
s_log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	ahp_log_flush();
}

/* --health: one EgressListRequest (run "", limit 1) on ctl_endpoint, which the
 * event loop answers; any reply (even an error) means the loop is serving. An
 * ipc:// socket file that does not exist fails at once. */
static int
s_health(s_main_t *m)
{
	Ahp__Cp__EgressListRequest el = AHP__CP__EGRESS_LIST_REQUEST__INIT;
	el.run_id = "";
	el.limit = 1;
	Ahp__Cp__Request r = AHP__CP__REQUEST__INIT;
	r.body_case = AHP__CP__REQUEST__BODY_EGRESS_LIST;
	r.egress_list = &el;
	uint8_t buf[64];
	size_t len = ahp__cp__request__pack(&r, buf);
	return ahp_rpc_health("credproxy", m->ctl_endpoint, buf, len);
}

static void
s_drop_privileges(s_main_t *m)
{
	/* The state dir holds the CA key: only this user may enter it. Memory holds
	 * secrets: not dumpable. */
	if (ahp_priv_drop(ahp_cfg_str(m->cfg, "user"), m->state_dir, AHP_PRIV_NOT_DUMPABLE) == 0 &&
	    geteuid() == 0)
		log_warn("running as root (user = \"\"): secrets are readable by any root "
		         "process anyway, but a bug here would be a root bug");
}

int
main(int argc, char **argv)
{
	const char *home_flag = NULL;
	bool check = false, health = false;
	char **sets = calloc((size_t)argc + 1, sizeof *sets);
	int nsets = 0;
	ahp_log_init("credproxy", AHP_LOG_INFO);
	if (sets == NULL)
		fatal("calloc");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_usage(stdout);
			free(sets);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("credproxy %s\n", AHP_VERSION);
			free(sets);
			return 0;
		} else if (strcmp(a, "--check-config") == 0) {
			check = true;
		} else if (strcmp(a, "--health") == 0) {
			health = true;
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
			ahp_term_printf(stderr, "credproxy: %s needs a value\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		} else if (strcmp(a, "serve") == 0) {
			/* the default */
		} else {
			ahp_term_printf(stderr, "credproxy: unknown argument \"%s\"\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		}
	}

	s_main_t m = {0};
	m.home = ahp_home(home_flag);
	char err[512] = "";
	if (s_configure(&m, sets, nsets, err, sizeof err) != 0) {
		ahp_term_printf(stderr, "credproxy: %s\n", err);
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return check || health ? 1 : 2;
	}
	if (health) {
		int rc = s_health(&m);
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return rc;
	}
	if (check) {
		int problems = 0;
		cp_gen_t *g = s_load(&m, true, false, &problems);
		problems += s_check_files(&m);
		cp_gen_unref(g);
		if (problems == 0 && g != NULL)
			printf("configuration OK\n");
		ahp_cfg_destroy(&m.cfg);
		free(sets);
		return problems == 0 && g != NULL ? 0 : 1;
	}

	signal(SIGPIPE, SIG_IGN);
	/* The sockets exist (and the stack calls credproxy ready) before the
	 * handlers below do: a SIGHUP or SIGTERM sent meanwhile waits, blocked,
	 * instead of killing the process by its default action. */
	sigset_t early;
	sigemptyset(&early);
	sigaddset(&early, SIGHUP);
	sigaddset(&early, SIGTERM);
	sigaddset(&early, SIGINT);
	sigprocmask(SIG_BLOCK, &early, NULL);
	/* Single-threaded: no locks. The changelist coalesces the add/delete
	 * pairs bufferevents make on every write into one epoll_ctl, or none. */
	struct event_config *ec = event_config_new();
	if (ec == NULL)
		fatalx("event_config_new failed");
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	m.base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (m.base == NULL)
		fatalx("event_base_new failed");
	cp_proxy_cfg_t pc = {
	    .relay_socket = m.relay_socket,
	    .api_socket = m.api_socket,
	    .dev_listen = ahp_cfg_str(m.cfg, "dev_listen"),
	    .dev_profile = ahp_cfg_str(m.cfg, "dev_profile"),
	    .relay_allow = &m.relay_allow,
	    .api_allow = &m.api_allow,
	    .hosts_file = ahp_cfg_str(m.cfg, "hosts_file"),
	    .resolv_conf = ahp_cfg_str(m.cfg, "resolv_conf"),
	    .max_header_bytes = (size_t)ahp_cfg_int(m.cfg, "max_header_bytes"),
	    .max_headers = (unsigned)ahp_cfg_int(m.cfg, "max_headers"),
	    .header_timeout_s = (unsigned)ahp_cfg_int(m.cfg, "header_timeout_s"),
	    .idle_timeout_s = (unsigned)ahp_cfg_int(m.cfg, "idle_timeout_s"),
	    .connect_timeout_s = (unsigned)ahp_cfg_int(m.cfg, "connect_timeout_s"),
	    .response_timeout_s = (unsigned)ahp_cfg_int(m.cfg, "response_timeout_s"),
	    .max_conns = s_nofile((unsigned)ahp_cfg_int(m.cfg, "max_conns")),
	};
	/* Sockets are bound while still root (the run dir may be root's); the
	 * rest (secrets, CA key, egress log) is opened as the daemon's user. */
	m.proxy = cp_proxy_new(m.base, &pc, err, sizeof err);
	if (m.proxy == NULL)
		fatalx("%s", err);
	/* The control socket is bound as root too (run/ may be root's); the
	 * egress database is opened on the first loop turn, after the drop. */
	m.egress = cp_egress_new(m.base, m.db_path, m.ctl_endpoint, &m.api_allow, err, sizeof err);
	if (m.egress == NULL)
		fatalx("egress log: %s", err);
	s_drop_privileges(&m);
	if (ahp_mkdirs(m.state_dir, 0700) != 0)
		fatal("mkdir %s", m.state_dir);
	m.tls = cp_tls_new(m.state_dir, ahp_cfg_str(m.cfg, "upstream_ca_file"), err, sizeof err);
	if (m.tls == NULL)
		fatalx("TLS: %s", err);
	cp_proxy_set_tls(m.proxy, m.tls);
	cp_egress_set_retention(m.egress, ahp_cfg_int(m.cfg, "egress_retain_days"));
	cp_proxy_set_egress(m.proxy, m.egress);
	int problems = 0;
	cp_gen_t *g = s_load(&m, false, false, &problems);
	if (g == NULL)
		fatalx("cannot load profiles, secrets or providers (see above)");
	cp_proxy_set_gen(m.proxy, g);

	struct event *sig[3];
	int sigs[3] = {SIGHUP, SIGTERM, SIGINT};
	for (int i = 0; i < 3; i++) {
		sig[i] = evsignal_new(m.base, sigs[i], s_on_signal, &m);
		if (sig[i] == NULL || event_add(sig[i], NULL) != 0)
			fatalx("cannot install signal handlers");
	}
	sigprocmask(SIG_UNBLOCK, &early, NULL); /* a pending one is handled now */
	log_info("serving relay=%s api=%s ctl=%s ca=%s profiles=%s", m.relay_socket, m.api_socket,
	         m.ctl_endpoint, cp_tls_ca_path(m.tls), m.profiles_dir);
	/* A line per request: held and written every 50 ms (warnings and errors
	 * at once), one write instead of thousands a second. */
	struct event *lf = event_new(m.base, -1, EV_PERSIST, s_log_flush_cb, NULL);
	struct timeval lft = {.tv_sec = 0, .tv_usec = 50000};
	if (lf == NULL || event_add(lf, &lft) != 0)
		fatalx("cannot start the log flush timer");
	ahp_log_hold(1);
	event_base_dispatch(m.base);
	ahp_log_hold(0);
	event_free(lf);
	for (int i = 0; i < 3; i++)
		event_free(sig[i]);
	cp_proxy_destroy(&m.proxy);
	cp_egress_destroy(&m.egress);
	cp_tls_destroy(&m.tls);
	event_base_free(m.base);
	ahp_cfg_destroy(&m.cfg);
	free(sets);
	log_info("stopped");
	return 0;
}
