/* approvald: arguments, configuration, the privilege drop, signals and reloads around the
 * event loop (server.c); the human CLI's commands go to cli.c. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
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
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "approvald.h"

static const ahp_cfg_def_t s_cfg_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "",
     "the orchestrator's socket (create, cancel, get, watch; never decide); default "
     "ipc://HOME/run/approvald.sock"},
    {"allow_users", AHP_CFG_STR, 0, 0, "ahp-orchestrator,root",
     "users (SO_PEERCRED) allowed on endpoint (names that do not exist are skipped)"},
    {"allow_groups", AHP_CFG_STR, 0, 0, "", "groups allowed on endpoint"},
    {"human_endpoint", AHP_CFG_STR, 0, 0, "",
     "the humans' socket (list, show, approve, reject, answer); default "
     "ipc://HOME/run/approvald-human.sock"},
    {"decide_users", AHP_CFG_STR, 0, 0, "root",
     "users who may use human_endpoint and decide (unless approvers_file names the "
     "request's profile)"},
    {"decide_groups", AHP_CFG_STR, 0, 0, "ahp", "groups whose members may do the same"},
    {"approvers_file", AHP_CFG_STR, 0, 0, "",
     "per-profile deciders, lines PROFILE users=a,b groups=g,h (optional); default "
     "HOME/etc/approvers.conf"},
    {"db", AHP_CFG_STR, 0, 0, "",
     "the requests and the decision log (SQLite); default "
     "HOME/state/approvald/approvald.db"},
    {"user", AHP_CFG_STR, 0, 0, "ahp-approvald",
     "started as root, run as this user once the sockets are bound (\"\" = stay root)"},
    {"log_level", AHP_CFG_STR, 0, 0, "info", "debug | info | warn | error"},
    {NULL, 0, 0, 0, NULL, NULL},
};

typedef struct {
	const char *home;
	char **sets;
	int nsets;
	ahp_cfg_t *cfg;
	char endpoint[PATH_MAX + 8], human_endpoint[PATH_MAX + 8];
	char approvers_file[PATH_MAX], db_path[PATH_MAX];
	ahp_rpc_allow_t orch_allow, human_allow, decide;
	appr_approvers_t approvers;
	appr_server_t *server;
} s_main_t;

static void
s_usage(FILE *f)
{
	fprintf(f,
	        "usage: approvald [--home DIR] [--set key=value]... serve\n"
	        "       approvald [--home DIR] [--set key=value]... --check-config | --health\n"
	        "       approvald [--home DIR] [--json] list [--all] [--run RUN] [--limit N]\n"
	        "       approvald [--home DIR] [--json] show ID\n"
	        "       approvald [--home DIR] [--json] approve ID [-m TEXT]\n"
	        "       approvald [--home DIR] [--json] reject ID [-m TEXT]\n"
	        "       approvald [--home DIR] [--json] answer ID TEXT\n"
	        "       approvald --help | --version\n"
	        "\n"
	        "Durable human approvals and questions. A client of the orchestrator's socket\n"
	        "records a request (a call's full arguments and their digest, or a question);\n"
	        "a person lists it, reads it and decides on the humans' socket, as who they\n"
	        "are (SO_PEERCRED); the decision is recorded before anyone hears of it, and\n"
	        "requests nobody decides are rejected when they expire.\n"
	        "\n"
	        "serve           run the daemon in the foreground. SIGHUP reloads the\n"
	        "                configuration's allow-lists and approvers_file (a bad reload\n"
	        "                keeps the previous ones); SIGTERM stops.\n"
	        "--check-config  load the configuration and approvers_file; exit 1 on an error.\n"
	        "--health        ask the running daemon for an answer; exit 0 when it gives\n"
	        "                one within 2 s, else 1.\n"
	        "list            pending requests, newest first (--all: decided ones too;\n"
	        "                --run RUN: that run's only).\n"
	        "show ID         every field of request ID, its full arguments and decision.\n"
	        "approve ID      approve (-m: why); reject ID rejects; answer ID TEXT answers\n"
	        "                a question.\n"
	        "--json          print approvald's reply as one JSON line.\n"
	        "Exit codes: 0 ok, 1 refused by approvald (not found, already decided,\n"
	        "expired, not permitted), 2 usage, 3 approvald not reachable.\n"
	        "\n"
	        "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Config: "
	        "HOME/etc/approvald.conf\n"
	        "(key = value), overridden by --set. Keys:\n");
	ahp_cfg_print_help(s_cfg_defs, f);
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
s_endpoint(s_main_t *m, const char *key, const char *sub, char *out, size_t len, char *err,
           size_t errlen)
{
	const char *ep = ahp_cfg_str(m->cfg, key);
	char sock[PATH_MAX];
	if (ep[0] != '\0') {
		snprintf(out, len, "%s", ep);
	} else {
		if (ahp_home_path(m->home, sub, sock, sizeof sock) != 0) {
			snprintf(err, errlen, "HOME is too long");
			return -1;
		}
		snprintf(out, len, "ipc://%s", sock);
	}
	if (strncmp(out, "ipc://", 6) != 0) {
		/* Who decides is the peer's uid: only a unix socket says who that is. */
		snprintf(err, errlen, "%s %.200s: only ipc:// endpoints are supported", key, out);
		return -1;
	}
	return 0;
}

static int
s_allow_merge(ahp_rpc_allow_t *into, const ahp_rpc_allow_t *from)
{
	for (size_t i = 0; i < from->n_uids; i++)
		if (ahp_rpc_allow_add_uid(into, from->uids[i]) != 0)
			return -1;
	for (size_t i = 0; i < from->n_gids; i++)
		if (ahp_rpc_allow_add_gid(into, from->gids[i]) != 0)
			return -1;
	return 0;
}

/* Reads the configuration into a fresh s_main_t's cfg, paths and allow-lists (for a
 * reload: into tmp, copied over on success). With cli, only what the CLI needs. */
static int
s_configure(s_main_t *m, int cli, char *err, size_t errlen)
{
	m->cfg = ahp_cfg_new(s_cfg_defs);
	if (m->cfg == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	char conf[PATH_MAX];
	if (ahp_home_path(m->home, "etc/approvald.conf", conf, sizeof conf) != 0) {
		snprintf(err, errlen, "HOME is too long");
		return -1;
	}
	if (ahp_cfg_load_file(m->cfg, conf, 1, err, errlen) != 0)
		return -1;
	for (int i = 0; i < m->nsets; i++)
		if (ahp_cfg_set(m->cfg, m->sets[i], NULL, err, errlen) != 0)
			return -1;
	if (ahp_cfg_validate(m->cfg, err, errlen) != 0)
		return -1;
	if (s_endpoint(m, "endpoint", "run/approvald.sock", m->endpoint, sizeof m->endpoint, err,
	               errlen) != 0 ||
	    s_endpoint(m, "human_endpoint", "run/approvald-human.sock", m->human_endpoint,
	               sizeof m->human_endpoint, err, errlen) != 0)
		return -1;
	if (cli)
		return 0;
	if (s_path(m, "approvers_file", "etc/approvers.conf", m->approvers_file,
	           sizeof m->approvers_file) != 0 ||
	    s_path(m, "db", "state/approvald/approvald.db", m->db_path, sizeof m->db_path) != 0) {
		snprintf(err, errlen, "a path is too long (HOME, approvers_file or db)");
		return -1;
	}
	/* The defaults name users and groups a host may not have: skipped (fewer peers,
	 * never more). A name the operator wrote must exist. */
	int def_allow = strcmp(ahp_cfg_str(m->cfg, "allow_users"), "ahp-orchestrator,root") == 0 &&
	                ahp_cfg_str(m->cfg, "allow_groups")[0] == '\0';
	if (ahp_rpc_allow_parse(&m->orch_allow, ahp_cfg_str(m->cfg, "allow_users"),
	                        ahp_cfg_str(m->cfg, "allow_groups"), def_allow, err, errlen) != 0)
		return -1;
	int def_users = strcmp(ahp_cfg_str(m->cfg, "decide_users"), "root") == 0;
	int def_groups = strcmp(ahp_cfg_str(m->cfg, "decide_groups"), "ahp") == 0;
	if (ahp_rpc_allow_parse(&m->decide, ahp_cfg_str(m->cfg, "decide_users"), NULL, def_users,
	                        err, errlen) != 0 ||
	    ahp_rpc_allow_parse(&m->decide, NULL, ahp_cfg_str(m->cfg, "decide_groups"), def_groups,
	                        err, errlen) != 0)
		return -1;
	char why[512];
	if (appr_approvers_load(m->approvers_file, &m->approvers, why, sizeof why) != 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	/* The humans' socket admits every decider: decide_* and approvers_file's. */
	m->human_allow = m->decide;
	for (size_t i = 0; i < m->approvers.n; i++)
		if (s_allow_merge(&m->human_allow, &m->approvers.rules[i].allow) != 0) {
			snprintf(err, errlen,
			         "more than %d users or groups may decide in all (decide_* and "
			         "approvers_file)",
			         AHP_RPC_ALLOW_MAX);
			return -1;
		}
	const char *lvl = ahp_cfg_str(m->cfg, "log_level");
	int l = ahp_log_level_parse(lvl);
	if (l < 0) {
		snprintf(err, errlen, "log_level: must be debug, info, warn or error");
		return -1;
	}
	ahp_log_init("approvald", l);
	return 0;
}

/* --health: any reply (even an error) means the loop is serving. */
static int
s_health(s_main_t *m)
{
	Ahp__Appr__GetRequest g = AHP__APPR__GET_REQUEST__INIT;
	g.run_id = "health";
	g.step = 1;
	Ahp__Appr__OrchRequest r = AHP__APPR__ORCH_REQUEST__INIT;
	r.body_case = AHP__APPR__ORCH_REQUEST__BODY_GET;
	r.get = &g;
	uint8_t buf[64];
	size_t len = ahp__appr__orch_request__pack(&r, buf);
	return ahp_rpc_health("approvald", m->endpoint, buf, len);
}

static void
s_print_allow(const char *what, const ahp_rpc_allow_t *a)
{
	printf("%s:", what);
	if (a->n_uids == 0 && a->n_gids == 0)
		printf(" nobody");
	for (size_t i = 0; i < a->n_uids; i++) {
		struct passwd *pw = getpwuid(a->uids[i]);
		printf(" %s", pw != NULL ? pw->pw_name : "?");
	}
	for (size_t i = 0; i < a->n_gids; i++) {
		struct group *gr = getgrgid(a->gids[i]);
		printf(" group:%s", gr != NULL ? gr->gr_name : "?");
	}
	printf("\n");
}

static int
s_check(s_main_t *m)
{
	printf("endpoint %s\n", m->endpoint);
	s_print_allow("  allowed", &m->orch_allow);
	printf("human_endpoint %s\n", m->human_endpoint);
	s_print_allow("  may decide", &m->decide);
	printf("approvers_file %s: %zu profile rule(s)\n", m->approvers_file, m->approvers.n);
	for (size_t i = 0; i < m->approvers.n; i++) {
		char what[96];
		snprintf(what, sizeof what, "  profile %s", m->approvers.rules[i].profile);
		s_print_allow(what, &m->approvers.rules[i].allow);
	}
	printf("db %s\n", m->db_path);
	printf("configuration OK\n");
	return 0;
}

static void
s_drop_privileges(s_main_t *m)
{
	/* The store's directory belongs to this user alone. approvald holds no secret:
	 * it stays dumpable. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", m->db_path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir)
		*slash = '\0';
	else
		dir[0] = '\0';
	if (ahp_priv_drop(ahp_cfg_str(m->cfg, "user"), dir, 0) == 0 && geteuid() == 0)
		log_warn("running as root (user = \"\")");
}

static int
s_on_signal(void *arg, int signo)
{
	s_main_t *m = arg;
	if (signo != SIGHUP) {
		log_info("stopping on signal %d", signo);
		return 1;
	}
	s_main_t n = {.home = m->home, .sets = m->sets, .nsets = m->nsets};
	char err[512];
	if (s_configure(&n, 0, err, sizeof err) != 0) {
		log_error("reload failed, keeping the previous allow-lists and approvers: %s", err);
		ahp_cfg_destroy(&n.cfg);
		appr_approvers_free(&n.approvers);
		return 0;
	}
	if (strcmp(n.endpoint, m->endpoint) != 0 ||
	    strcmp(n.human_endpoint, m->human_endpoint) != 0 || strcmp(n.db_path, m->db_path) != 0)
		log_warn("endpoint, human_endpoint and db change on a restart only");
	if (appr_server_set_allow(m->server, &n.orch_allow, &n.human_allow) != 0) {
		log_error("reload failed: cannot apply the allow-lists; keeping the previous ones");
		ahp_cfg_destroy(&n.cfg);
		appr_approvers_free(&n.approvers);
		return 0;
	}
	appr_server_set_deciders(m->server, &n.decide, &n.approvers);
	ahp_cfg_destroy(&n.cfg);
	log_info("reloaded allow-lists and approvers");
	return 0;
}

static int
s_serve(s_main_t *m)
{
	int sigfd = ahp_signalfd_daemon();
	if (sigfd < 0)
		fatal("signals");
	char err[512];
	appr_server_conf_t sc = {
	    .endpoint = m->endpoint,
	    .human_endpoint = m->human_endpoint,
	    .orch_allow = &m->orch_allow,
	    .human_allow = &m->human_allow,
	};
	/* The sockets are bound as root (run/ may be root's); the store is the daemon
	 * user's. */
	m->server = appr_server_new(&sc, err, sizeof err);
	if (m->server == NULL)
		fatalx("%s", err);
	s_drop_privileges(m);
	char dbdir[PATH_MAX];
	snprintf(dbdir, sizeof dbdir, "%s", m->db_path);
	char *slash = strrchr(dbdir, '/');
	if (slash != NULL && slash != dbdir) {
		*slash = '\0';
		if (ahp_mkdirs(dbdir, 0700) != 0)
			fatal("mkdir %s", dbdir);
	}
	if (appr_server_open_store(m->server, m->db_path, err, sizeof err) != 0)
		fatalx("store: %s", err);
	appr_server_set_deciders(m->server, &m->decide, &m->approvers);
	log_info("serving endpoint=%s human_endpoint=%s db=%s", m->endpoint, m->human_endpoint,
	         m->db_path);
	appr_server_run(m->server, sigfd, s_on_signal, m);
	appr_server_destroy(&m->server);
	close(sigfd);
	log_info("stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	const char *home_flag = NULL;
	int check = 0, health = 0, serve = 0, json = 0;
	char **sets = calloc((size_t)argc + 1, sizeof *sets);
	int nsets = 0, cmd = -1;
	ahp_log_init("approvald", AHP_LOG_INFO);
	if (sets == NULL)
		fatal("calloc");
	for (int i = 1; i < argc && cmd < 0; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
			s_usage(stdout);
			free(sets);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("approvald %s\n", AHP_VERSION);
			free(sets);
			return 0;
		} else if (strcmp(a, "--check-config") == 0) {
			check = 1;
		} else if (strcmp(a, "--health") == 0) {
			health = 1;
		} else if (strcmp(a, "--json") == 0) {
			json = 1;
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
			ahp_term_printf(stderr, "approvald: %s needs a value\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		} else if (strcmp(a, "serve") == 0) {
			serve = 1;
		} else if (a[0] != '-') {
			cmd = i;
		} else {
			ahp_term_printf(stderr, "approvald: unknown argument \"%s\"\n", a);
			s_usage(stderr);
			free(sets);
			return 2;
		}
	}
	if (cmd < 0 && !serve && !check && !health) {
		s_usage(stderr);
		free(sets);
		return 2;
	}

	s_main_t m = {0};
	m.home = ahp_home(home_flag);
	m.sets = sets;
	m.nsets = nsets;
	char err[512] = "";
	if (s_configure(&m, cmd >= 0, err, sizeof err) != 0) {
		ahp_term_printf(stderr, "approvald: %s\n", err);
		ahp_cfg_destroy(&m.cfg);
		appr_approvers_free(&m.approvers);
		free(sets);
		/* The CLI's and serve's configuration errors are usage errors (2);
		 * --check-config and --health report them as failures (1). */
		return cmd < 0 && (check || health) ? 1 : 2;
	}
	int rc;
	if (cmd >= 0)
		rc = appr_cli(m.human_endpoint, json, argc - cmd, argv + cmd);
	else if (health)
		rc = s_health(&m);
	else if (check)
		rc = s_check(&m);
	else
		rc = s_serve(&m);
	ahp_cfg_destroy(&m.cfg);
	appr_approvers_free(&m.approvers);
	free(sets);
	return rc;
}
