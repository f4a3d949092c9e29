/* sandboxd: command line, configuration, and the serve / exec / policy modes. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/profile.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "sbx.h"

const char *const sbx_version = AHP_VERSION;
char *sbx_argv_area;
size_t sbx_argv_len;

static void
s_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sandboxd [--home DIR] [--set key=value]... [serve]\n"
	    "       sandboxd [--home DIR] exec --profile P [--keep] [--timeout S] -- CMD...\n"
	    "       sandboxd [--home DIR] policy [--json]\n"
	    "       sandboxd [--home DIR] [--set key=value]... --check-config | --health\n"
	    "       sandboxd --help | --version\n"
	    "\n"
	    "serve   run the daemon in the foreground (default); SIGTERM stops it, destroying\n"
	    "        live sandboxes but keeping their workspaces for a restart.\n"
	    "exec    run CMD and its ARGs exactly as given (each word quoted for /bin/sh -c) in\n"
	    "        a one-shot sandbox with profile P's limits and network; prints its output\n"
	    "        and exits with its exit code (killed: 128+signal; sandboxd unreachable or\n"
	    "        failing: 125; bad usage or unknown profile: 2; interrupted: 130). --keep\n"
	    "        keeps the workspace (refused when retain_failed_max = 0). `exec --help`\n"
	    "        prints exec's usage.\n"
	    "policy  print the seccomp policy applied to sandboxed commands: the default\n"
	    "        action, the allowlist and refusals with their reasons, the argument\n"
	    "        rules (--json: the same as one JSON object). Exit 1 when it cannot be\n"
	    "        built (e.g. a syscall name libseccomp does not know).\n"
	    "--check-config  check the configuration, the sandbox plan, the seccomp filter\n"
	    "        and the profiles of HOME/etc/profiles (as exec reads them); exit 1 on an\n"
	    "        error, each named with its file and line.\n"
	    "--health  ask the running daemon for an answer on its endpoint; exit 0 when\n"
	    "        it gives one within 2 s, else 1.\n"
	    "\n"
	    "HOME is --home, else $AHP_HOME, else /var/lib/ahp. Config: HOME/etc/sandboxd.conf\n"
	    "(key = value), overridden by --set. Keys:\n");
	ahp_cfg_print_help(sbx_cfg_defs, f);
}

/* Fills the resolved config; HOME-relative defaults for empty values. */
static int
s_resolve(const ahp_cfg_t *c, const char *home, sbx_config_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (home[0] != '/') {
		snprintf(err, errlen,
		         "the home directory must be an absolute path (--home, AHP_HOME): %.200s",
		         home);
		return -1;
	}
	int rc = ahp_strlcpy(out->home, home, sizeof(out->home));
	const char *v = ahp_cfg_str(c, "state_dir");
	if (v[0] != '\0')
		rc |= ahp_strlcpy(out->state_dir, v, sizeof(out->state_dir));
	else
		rc |= ahp_home_path(home, "state/sandboxd", out->state_dir, sizeof(out->state_dir));
	v = ahp_cfg_str(c, "endpoint");
	if (v[0] != '\0') {
		rc |= ahp_strlcpy(out->endpoint, v, sizeof(out->endpoint));
	} else {
		char p[PATH_MAX];
		rc |= ahp_home_path(home, "run/sandboxd.sock", p, sizeof(p));
		if (snprintf(out->endpoint, sizeof(out->endpoint), "ipc://%s", p) >=
		    (int)sizeof(out->endpoint))
			rc = -1;
	}
	if (sbx_conf_exec_socket(c, home, out->exec_socket, sizeof(out->exec_socket), err,
	                         errlen) != 0)
		return -1;
	v = ahp_cfg_str(c, "proxy_socket");
	if (v[0] != '\0') {
		if (ahp_strlcpy(out->proxy_socket, v, sizeof(out->proxy_socket)) != 0) {
			snprintf(err, errlen,
			         "proxy_socket: longer than a unix socket path allows");
			return -1;
		}
	} else if (ahp_home_path(home, "run/credproxy.sock", out->proxy_socket,
	                         sizeof(out->proxy_socket)) != 0) {
		snprintf(err, errlen, "HOME is too long for run/credproxy.sock (set proxy_socket)");
		return -1;
	}
	if (out->proxy_socket[0] != '/') {
		snprintf(err, errlen, "proxy_socket: must be an absolute path");
		return -1;
	}
	v = ahp_cfg_str(c, "proxy_ca_file");
	if (v[0] != '\0')
		rc |= ahp_strlcpy(out->proxy_ca_file, v, sizeof(out->proxy_ca_file));
	else
		rc |= ahp_home_path(home, "state/credproxy/ca.crt", out->proxy_ca_file,
		                    sizeof(out->proxy_ca_file));
	if (out->proxy_ca_file[0] != '/') {
		snprintf(err, errlen, "proxy_ca_file: must be an absolute path");
		return -1;
	}
	rc |= ahp_strlcpy(out->ro_bind, ahp_cfg_str(c, "ro_bind"), sizeof(out->ro_bind));
	rc |= ahp_strlcpy(out->rootfs, ahp_cfg_str(c, "rootfs"), sizeof(out->rootfs));
	out->keep_workspaces = ahp_cfg_bool(c, "keep_workspaces") != 0;
	out->uid_base = (uint32_t)ahp_cfg_int(c, "uid_base");
	out->uid_count = (uint32_t)ahp_cfg_int(c, "uid_count");
	out->max_sandboxes = (uint32_t)ahp_cfg_int(c, "max_sandboxes");
	out->relay_max_conns = (uint32_t)ahp_cfg_int(c, "relay_max_conns");
	out->pool_size = (uint32_t)ahp_cfg_int(c, "pool_size");
	out->retain_failed_max = (uint32_t)ahp_cfg_int(c, "retain_failed_max");
	out->retain_failed_s = (uint32_t)ahp_cfg_int(c, "retain_failed_s");
	if (rc != 0) {
		snprintf(err, errlen, "a configured path is too long");
		return -1;
	}
	/* Who may talk to sandboxd. The default names the orchestrator's system
	 * user, which a host may not have yet (sandboxd started on its own):
	 * it is then left out, admitting only root; a configured name must exist. */
	const char *users = ahp_cfg_str(c, "allow_users");
	char aerr[256];
	if (ahp_rpc_allow_parse(&out->allow, users, ahp_cfg_str(c, "allow_groups"),
	                        strcmp(users, SBX_ALLOW_USERS_DEFAULT) == 0, aerr,
	                        sizeof aerr) != 0) {
		snprintf(err, errlen, "allow_users/allow_groups: %s", aerr);
		return -1;
	}
	if (ahp_strlcpy(out->user, ahp_cfg_str(c, "user"), sizeof(out->user)) != 0 ||
	    out->user[0] == '\0') {
		snprintf(err, errlen, "user: a user name (or root) is required");
		return -1;
	}
	if (out->state_dir[0] != '/') {
		snprintf(err, errlen, "state_dir: must be an absolute path");
		return -1;
	}
	/* what serve would refuse, --check-config refuses too */
	uid_t wuid;
	gid_t wgid;
	char uerr[400];
	if (sbx_conf_worker_user(out->user, &wuid, &wgid, uerr, sizeof(uerr)) != 0) {
		snprintf(err, errlen, "%s", uerr);
		return -1;
	}
	if (strncmp(out->endpoint, "ipc:///", 7) != 0) {
		snprintf(err, errlen,
		         "endpoint: must be ipc:// and an absolute path (ipc:///PATH)");
		return -1;
	}
	/* Accepted and not enforced would be worse than refused: /tmp is a
	 * directory of the sandbox's disk since sandbox.disk_mb came. */
	if (ahp_cfg_str(c, "tmp_mb")[0] != '\0') {
		snprintf(err, errlen,
		         "tmp_mb: no longer applies (/tmp is on the sandbox's disk, counted with "
		         "/workspace in a profile's sandbox.disk_mb): remove it");
		return -1;
	}
	if ((uint64_t)out->uid_base + out->uid_count > 0xfffffffeULL) {
		snprintf(err, errlen, "uid_base + uid_count is beyond the uid space");
		return -1;
	}
	return 0;
}

/* Each sandbox runs as host uid and gid uid_base + slot (zygote.c). A range
 * that holds an account's uid or a group's gid would run an agent's commands
 * as that user or group on the host (files it owns on a shared mount, its
 * quota, its limits), so it is refused. Reads the whole passwd and group
 * databases (getpwent/getgrent: not thread-safe; called before any thread).
 * 0, or -1 with err naming the first account found. */
static int
s_check_uid_range(const sbx_config_t *cfg, char *err, size_t errlen)
{
	uint64_t lo = cfg->uid_base, hi = (uint64_t)cfg->uid_base + cfg->uid_count;
	const char *kind = NULL;
	unsigned id = 0;
	char who[300] = "";
	setpwent();
	for (struct passwd *pw; kind == NULL && (pw = getpwent()) != NULL;) {
		if (pw->pw_uid >= lo && pw->pw_uid < hi) {
			kind = "uid", id = (unsigned)pw->pw_uid;
			snprintf(who, sizeof(who), "user %s", pw->pw_name);
		}
	}
	endpwent();
	setgrent();
	for (struct group *gr; kind == NULL && (gr = getgrent()) != NULL;) {
		if (gr->gr_gid >= lo && gr->gr_gid < hi) {
			kind = "gid", id = (unsigned)gr->gr_gid;
			snprintf(who, sizeof(who), "group %s", gr->gr_name);
		}
	}
	endgrent();
	if (kind == NULL)
		return 0;
	snprintf(err, errlen,
	         "uid_base/uid_count: the sandboxes' range %llu-%llu holds %s %u (%s); sandboxes "
	         "must run as ids no account or group uses",
	         (unsigned long long)lo, (unsigned long long)hi - 1, kind, id, who);
	return -1;
}

/* run/sandboxd.pid, written under a record lock held for this process's life:
 * the run directory (sockets, pid file) is the home's, and two sandboxd on one
 * home with different state_dirs would otherwise overwrite, then delete, each
 * other's pid file (scripts/stack finds the daemon by it). 0; -1 with err when
 * another live sandboxd holds it; a file that cannot be written is only a
 * warning (1). */
static int
s_write_pidfile(const char *home, char *err, size_t errlen)
{
	char p[PATH_MAX], buf[32];
	if (ahp_home_path(home, "run/sandboxd.pid", p, sizeof(p)) != 0)
		return 1;
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return 1;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	if (fcntl(fd, F_SETLK, &fl) != 0) {
		struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		if ((errno == EAGAIN || errno == EACCES) && fcntl(fd, F_GETLK, &who) == 0 &&
		    who.l_type != F_UNLCK) {
			snprintf(
			    err, errlen,
			    "another sandboxd (pid %ld) serves the home %.400s (run/sandboxd.pid): "
			    "one home serves one sandboxd",
			    (long)who.l_pid, home);
			close(fd);
			return -1;
		}
		close(fd);
		return 1;
	}
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		close(fd);
		return 1;
	}
	return 0; /* fd stays open: the lock lasts as long as this process */
}

static int
s_serve(const sbx_config_t *cfg)
{
	if (geteuid() != 0)
		fatalx("sandboxd serve must run as root (it builds namespaces, maps uids and "
		       "writes cgroups)");
	char run[PATH_MAX];
	if (ahp_home_path(cfg->home, "run", run, sizeof(run)) != 0 || ahp_mkdirs(run, 0700) != 0)
		fatal("cannot create %s", run);
	/* the state_dir's lock first: a second sandboxd on it must not touch
	 * anything of the first's, run/sandboxd.pid included */
	char err[512];
	if (sbx_priv_lock(cfg->state_dir, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 1;
	}
	int pf = s_write_pidfile(cfg->home, err, sizeof(err));
	if (pf < 0) {
		log_error("%s", err);
		return 1;
	}
	if (pf > 0)
		log_warn("cannot write run/sandboxd.pid: %s", strerror(errno));
	/* This process stays root and single-threaded: it forks the worker
	 * first and spawns for it (zygote.c). */
	int rc = sbx_priv_run(cfg);
	char p[PATH_MAX];
	if (ahp_home_path(cfg->home, "run/sandboxd.pid", p, sizeof(p)) == 0)
		(void)unlink(p);
	log_info("stopped");
	return rc;
}

static void
s_check_profile_error(void *arg, const char *message)
{
	*(int *)arg += 1;
	ahp_term_printf(stderr, "sandboxd: %s\n", message);
}

static int
s_check(const sbx_config_t *cfg)
{
	char err[512];
	sbx_plan_t *plan = calloc(1, sizeof(*plan));
	if (plan == NULL)
		return 1;
	sbx_config_t c = *cfg;
	/* the /etc template is written by serve; here only the plan is checked */
	int rc = sbx_plan_build(&c, NULL, plan, err, sizeof(err));
	free(plan);
	if (rc != 0) {
		ahp_term_printf(stderr, "sandboxd: %s\n", err);
		return 1;
	}
	struct sock_fprog prog;
	if (sbx_seccomp_build(&prog) != 0) {
		ahp_term_printf(stderr, "sandboxd: the seccomp filter cannot be built\n");
		return 1;
	}
	free(prog.filter);
	/* the profiles `sandboxd exec --profile` resolves (loop.c s_profile): a
	 * file that would not load there is reported here, not at a one-shot */
	char dir[4096];
	if (ahp_home_path(cfg->home, "etc/profiles", dir, sizeof(dir)) != 0) {
		ahp_term_printf(stderr, "sandboxd: HOME path too long\n");
		return 1;
	}
	struct stat st;
	if (stat(dir, &st) != 0 && errno == ENOENT) {
		printf("note: %s does not exist: sandboxd exec --profile finds no profile\n", dir);
	} else {
		int bad = 0;
		ahp_profiles_t *ps = ahp_profiles_load_dir(dir, NULL, s_check_profile_error, &bad);
		if (ps == NULL)
			bad++;
		ahp_profiles_destroy(&ps);
		if (bad != 0)
			return 1;
	}
	printf("configuration OK\n");
	return 0;
}

/* --health: one Fetch with empty ids, which the loop refuses at once
 * (ERR_BAD_REQUEST) without touching a sandbox or the disk; any reply (even an
 * error) means the loop is serving. An ipc:// socket file that does not exist
 * fails at once. */
static int
s_health(const sbx_config_t *cfg)
{
	char err[256] = "";
	struct stat st;
	if (strncmp(cfg->endpoint, "ipc://", 6) == 0 && stat(cfg->endpoint + 6, &st) != 0) {
		snprintf(err, sizeof err, "%s: %s", cfg->endpoint + 6, strerror(errno));
		ahp_term_printf(stderr, "sandboxd: not healthy at %s: %s\n", cfg->endpoint, err);
		return 1;
	}
	ahp_rpc_client_t *cl = ahp_rpc_client_new(NULL, cfg->endpoint);
	if (cl == NULL) {
		ahp_term_printf(stderr, "sandboxd: not healthy at %s: cannot connect\n",
		                cfg->endpoint);
		return 1;
	}
	Ahp__Sbx__FetchRequest f = AHP__SBX__FETCH_REQUEST__INIT;
	f.sandbox_id = "";
	f.exec_id = "";
	Ahp__Sbx__Request r = AHP__SBX__REQUEST__INIT;
	r.body_case = AHP__SBX__REQUEST__BODY_FETCH;
	r.fetch = &f;
	uint8_t buf[64];
	size_t len = ahp__sbx__request__pack(&r, buf);
	uint8_t *reply = NULL;
	size_t rlen = 0;
	int status = 0;
	/* Not idempotent-retried: one attempt of 2 s. */
	int rc = ahp_rpc_call(cl, buf, len, 2000, 0, 0, &reply, &rlen, &status, err, sizeof err);
	free(reply);
	ahp_rpc_client_destroy(&cl);
	if (rc != 0 && status != AHP__STATUS__ERR_PERMISSION_DENIED) {
		ahp_term_printf(stderr, "sandboxd: not healthy at %s: %s\n", cfg->endpoint, err);
		return 1;
	}
	printf("sandboxd: serving at %s\n", cfg->endpoint);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc > 0) {
		sbx_argv_area = argv[0];
		sbx_argv_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
	}
	const char *home_flag = NULL;
	const char *sets[64];
	int n_sets = 0, check = 0, health = 0, i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_usage(stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0) {
			printf("sandboxd %s\n", sbx_version);
			return 0;
		}
		if (strcmp(a, "--check-config") == 0) {
			check = 1;
		} else if (strcmp(a, "--health") == 0) {
			health = 1;
		} else if (strcmp(a, "--home") == 0 && i + 1 < argc) {
			home_flag = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			home_flag = a + 7;
		} else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
			if (n_sets == (int)(sizeof(sets) / sizeof(sets[0]))) {
				ahp_term_printf(stderr, "sandboxd: too many --set\n");
				return 2;
			}
			sets[n_sets++] = argv[++i];
		} else if (strcmp(a, "--home") == 0 || strcmp(a, "--set") == 0) {
			/* the branches above took it with its value: none is left */
			ahp_term_printf(stderr, "sandboxd: %s needs a value\n", a);
			s_usage(stderr);
			return 2;
		} else if (a[0] == '-') {
			ahp_term_printf(stderr, "sandboxd: unknown option %s\n", a);
			s_usage(stderr);
			return 2;
		} else {
			break;
		}
	}
	const char *mode = i < argc ? argv[i++] : "serve";
	bool is_exec = strcmp(mode, "exec") == 0;
	if (!is_exec && strcmp(mode, "serve") != 0 && strcmp(mode, "policy") != 0) {
		ahp_term_printf(stderr, "sandboxd: unknown command %s\n", mode);
		s_usage(stderr);
		return 2;
	}
	if (strcmp(mode, "serve") == 0 && i < argc) {
		ahp_term_printf(stderr, "sandboxd: serve takes no arguments\n");
		return 2;
	}
	ahp_log_init("sandboxd", AHP_LOG_INFO);

	const char *home = ahp_home(home_flag);
	char err[512];
	ahp_cfg_t *c = NULL;
	int rc = sbx_conf_load(home, sets, n_sets, &c, err, sizeof(err));
	sbx_config_t cfg;
	if (rc == 0)
		rc = s_resolve(c, home, &cfg, err, sizeof(err));
	ahp_cfg_destroy(&c);
	if (rc != 0) {
		ahp_term_printf(stderr, "sandboxd: %s\n", err);
		return is_exec ? 125 : 1;
	}
	if (health)
		return s_health(&cfg);
	if ((check || strcmp(mode, "serve") == 0) &&
	    s_check_uid_range(&cfg, err, sizeof(err)) != 0) {
		ahp_term_printf(stderr, "sandboxd: %s\n", err);
		return 1;
	}
	if (check)
		return s_check(&cfg);
	if (strcmp(mode, "policy") == 0) {
		int json = i < argc && strcmp(argv[i], "--json") == 0;
		if (i + json < argc) {
			ahp_term_printf(stderr, "sandboxd: policy takes only --json\n");
			return 2;
		}
		return sbx_seccomp_describe(stdout, json) == 0 ? 0 : 1;
	}
	if (is_exec)
		return sbx_cli_exec(home, cfg.exec_socket, argc - i, argv + i);
	return s_serve(&cfg);
}
