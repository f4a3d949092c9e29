/* orchestrator: its configuration (the key table, reading, SIGHUP reload) and the ownership of
 * its state directory. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define S_USER_DEFAULT "ahp-orchestrator"
#define S_ORCHCTL_USERS_DEFAULT "root"
#define S_ORCHCTL_GROUPS_DEFAULT "ahp"

/* Keys that SIGHUP may change; any other key (including ones added later)
 * keeps its start-up value until a restart, and a change is logged. */
static const char *const s_reload_keys[] = {
    "profiles_dir",  "etc_dir",        "gateway_url",  "gateway_socket", "model_timeout_ms",
    "model_retries", "retry_base_ms",  "retry_max_ms", "max_running",    "sandbox_slack_ms",
    "orchctl_users", "orchctl_groups", NULL,
};

const ahp_cfg_def_t orch_cfg_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "",
     "orchctl endpoint (default ipc://HOME/run/orchestrator.sock; restart to change)"},
    {"db", AHP_CFG_STR, 0, 0, "",
     "journal database (default HOME/state/orchestrator/orchestrator.db; restart to change)"},
    {"profiles_dir", AHP_CFG_STR, 0, 0, "", "profiles directory (default HOME/etc/profiles)"},
    {"etc_dir", AHP_CFG_STR, 0, 0, "", "base for relative skills dirs (default HOME/etc)"},
    {"gateway_url", AHP_CFG_STR, 0, 0, "http://credproxy",
     "model gateway base URL; calls go to URL/providers/<provider>/v1/chat/completions "
     "(over gateway_socket when it is set: the host part is then only the Host header)"},
    {"gateway_socket", AHP_CFG_STR, 0, 0, "",
     "unix socket the model calls go through: credproxy's provider route (default "
     "HOME/run/credproxy-api.sock; \"\" = connect to gateway_url over TCP)"},
    {"credproxy_endpoint", AHP_CFG_STR, 0, 0, "",
     "credproxy's control endpoint, where the runs' egress records are read (default "
     "ipc://HOME/run/credproxy-ctl.sock; restart to change)"},
    {"sandboxd_endpoint", AHP_CFG_STR, 0, 0, "",
     "sandboxd endpoint (default ipc://HOME/run/sandboxd.sock; restart to change)"},
    {"servicesd_endpoint", AHP_CFG_STR, 0, 0, "",
     "servicesd endpoint, where exec_service calls go (default "
     "ipc://HOME/run/servicesd.sock; restart to change)"},
    {"approvald_endpoint", AHP_CFG_STR, 0, 0, "",
     "approvald's orchestrator endpoint, where gated calls and ask_human wait for a human "
     "(default ipc://HOME/run/approvald.sock; restart to change)"},
    {"model_timeout_ms", AHP_CFG_INT, 100, 600000, "60000", "timeout of one model request"},
    {"model_retries", AHP_CFG_INT, 0, 20, "4",
     "retries of a model call on 429/5xx/timeout/connection errors"},
    {"retry_base_ms", AHP_CFG_INT, 1, 60000, "1000", "first retry backoff (doubles, jittered)"},
    {"retry_max_ms", AHP_CFG_INT, 1, 600000, "30000", "ceiling of one retry wait"},
    {"max_running", AHP_CFG_INT, 1, 100000, "512", "runs executing at once; the rest queue"},
    {"sandbox_slack_ms", AHP_CFG_INT, 100, 600000, "15000",
     "added to a profile's command timeout before sandboxd is considered lost"},
    {"user", AHP_CFG_STR, 0, 0, S_USER_DEFAULT,
     "started as root, the orchestrator drops to this user after opening its socket (it "
     "must exist and not be root; ignored when started as another user; restart to change)"},
    {"orchctl_users", AHP_CFG_STR, 0, 0, S_ORCHCTL_USERS_DEFAULT,
     "users (comma-separated) who may use orchctl, besides the orchestrator's own user"},
    {"orchctl_groups", AHP_CFG_STR, 0, 0, S_ORCHCTL_GROUPS_DEFAULT,
     "groups whose members may use orchctl (the default group is left out when the host "
     "has none)"},
    {NULL, 0, 0, 0, NULL, NULL},
};

static int
s_path(const orch_t *o, const ahp_cfg_t *cfg, const char *key, const char *prefix, const char *sub,
       char *buf, size_t len)
{
	const char *v = ahp_cfg_str(cfg, key);
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

/* A fresh configuration: defaults, HOME/etc/orchestrator.conf, then the
 * --set overrides. NULL after logging why. */
/* Why url cannot be the model gateway (NULL when it can): checked with
 * libcurl's own URL parser, so what passes here is what every model call
 * will use (a trailing "# comment" or a space would fail every call). */
static const char *
s_gateway_url_error(const char *url)
{
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return "must start with http:// or https://";
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#' || *p == '?')
			return "must be a bare URL: no spaces, control characters, '#' or '?' "
			       "(comments go on their own line)";
	CURLU *u = curl_url();
	if (u == NULL)
		return "out of memory";
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
	curl_url_cleanup(u);
	return rc == CURLUE_OK ? NULL : curl_url_strerror(rc);
}

static ahp_cfg_t *
s_cfg_read(orch_t *o)
{
	char err[512], path[PATH_MAX + 32];
	ahp_cfg_t *cfg = ahp_cfg_new(orch_cfg_defs);
	if (cfg == NULL)
		return NULL;
	/* A default that depends on HOME; "" in the file or --set means TCP. */
	snprintf(path, sizeof path, "%s/run/credproxy-api.sock", o->home);
	if (ahp_cfg_set(cfg, "gateway_socket", path, err, sizeof err) != 0) {
		log_error("gateway_socket: %s", err);
		goto fail;
	}
	snprintf(path, sizeof path, "%s/etc/orchestrator.conf", o->home);
	if (ahp_cfg_load_file(cfg, path, 1, err, sizeof err) != 0) {
		log_error("%s", err);
		goto fail;
	}
	for (int i = 0; i < o->nsets; i++) {
		if (ahp_cfg_set(cfg, o->sets[i], NULL, err, sizeof err) != 0) {
			log_error("--set %s: %s", o->sets[i], err);
			goto fail;
		}
	}
	if (ahp_cfg_validate(cfg, err, sizeof err) != 0) {
		log_error("%s", err);
		goto fail;
	}
	const char *gw = ahp_cfg_str(cfg, "gateway_url");
	const char *why = s_gateway_url_error(gw);
	if (why != NULL) {
		log_error("config gateway_url: %s (got \"%s\")", why, gw);
		goto fail;
	}
	const char *gs = ahp_cfg_str(cfg, "gateway_socket");
	struct sockaddr_un sun;
	if (strlen(gs) >= sizeof sun.sun_path || (gs[0] != '\0' && gs[0] != '/')) {
		log_error("config gateway_socket: must be \"\" or an absolute path of at most %zu "
		          "bytes (got \"%s\")",
		          sizeof sun.sun_path - 1, gs);
		goto fail;
	}
	return cfg;
fail:
	ahp_cfg_destroy(&cfg);
	return NULL;
}

/* Who may use the orchctl socket: the orchestrator's own user, then
 * orchctl_users and orchctl_groups. A default name the host lacks (the
 * group ahp before scripts/stack made it) is left out; a configured one must
 * exist. */
static int
s_allow(const orch_t *o, const ahp_cfg_t *cfg, ahp_rpc_allow_t *allow)
{
	char err[256];
	const char *users = ahp_cfg_str(cfg, "orchctl_users");
	const char *groups = ahp_cfg_str(cfg, "orchctl_groups");
	memset(allow, 0, sizeof *allow);
	(void)ahp_rpc_allow_add_uid(allow, o->run_uid);
	if (ahp_rpc_allow_parse(allow, users, NULL, strcmp(users, S_ORCHCTL_USERS_DEFAULT) == 0,
	                        err, sizeof err) != 0 ||
	    ahp_rpc_allow_parse(allow, NULL, groups, strcmp(groups, S_ORCHCTL_GROUPS_DEFAULT) == 0,
	                        err, sizeof err) != 0) {
		log_error("config orchctl_users/orchctl_groups: %s", err);
		return -1;
	}
	return 0;
}

/* The settings SIGHUP may change, from cfg into o. */
static int
s_apply_reloadable(orch_t *o, const ahp_cfg_t *cfg)
{
	char profiles_dir[sizeof o->profiles_dir], etc_dir[sizeof o->etc_dir];
	ahp_rpc_allow_t allow;
	if (s_path(o, cfg, "profiles_dir", "", "etc/profiles", profiles_dir, sizeof profiles_dir) !=
	        0 ||
	    s_path(o, cfg, "etc_dir", "", "etc", etc_dir, sizeof etc_dir) != 0 ||
	    s_allow(o, cfg, &allow) != 0)
		return -1;
	memcpy(o->profiles_dir, profiles_dir, sizeof profiles_dir);
	memcpy(o->etc_dir, etc_dir, sizeof etc_dir);
	o->allow = allow;
	/* Read where it is used (each new model request, retry, schedule), so
	 * a change applies from the next one on; calls in flight keep theirs. */
	o->gateway_url = ahp_cfg_str(cfg, "gateway_url");
	o->gateway_socket = ahp_cfg_str(cfg, "gateway_socket");
	o->model_timeout_ms = ahp_cfg_int(cfg, "model_timeout_ms");
	o->model_retries = ahp_cfg_int(cfg, "model_retries");
	o->retry_base_ms = ahp_cfg_int(cfg, "retry_base_ms");
	o->retry_max_ms = ahp_cfg_int(cfg, "retry_max_ms");
	o->max_running = ahp_cfg_int(cfg, "max_running");
	o->sbx_timeout_ms = ahp_cfg_int(cfg, "sandbox_slack_ms");
	return 0;
}

int
orch_configure(orch_t *o, const char *home_flag)
{
	const char *home = ahp_home(home_flag);
	if (ahp_strlcpy(o->home, home, sizeof o->home) != 0) {
		log_error("home path too long");
		return -1;
	}
	o->cfg = s_cfg_read(o);
	if (o->cfg == NULL)
		return -1;
	o->db_default = ahp_cfg_str(o->cfg, "db")[0] == '\0';
	if (s_path(o, o->cfg, "endpoint", "ipc://", "run/orchestrator.sock", o->endpoint,
	           sizeof o->endpoint) != 0 ||
	    s_path(o, o->cfg, "db", "", "state/orchestrator/orchestrator.db", o->db_path,
	           sizeof o->db_path) != 0 ||
	    s_path(o, o->cfg, "sandboxd_endpoint", "ipc://", "run/sandboxd.sock", o->sbx_endpoint,
	           sizeof o->sbx_endpoint) != 0 ||
	    s_path(o, o->cfg, "credproxy_endpoint", "ipc://", "run/credproxy-ctl.sock",
	           o->cp_endpoint, sizeof o->cp_endpoint) != 0 ||
	    s_path(o, o->cfg, "servicesd_endpoint", "ipc://", "run/servicesd.sock", o->svc_endpoint,
	           sizeof o->svc_endpoint) != 0 ||
	    s_path(o, o->cfg, "approvald_endpoint", "ipc://", "run/approvald.sock",
	           o->appr_endpoint, sizeof o->appr_endpoint) != 0)
		return -1;
	/* Started as root it will run as `user`; otherwise as whoever started it. */
	o->run_uid = geteuid();
	o->run_gid = getegid();
	o->drop = 0;
	if (geteuid() == 0) {
		const char *name = ahp_cfg_str(o->cfg, "user");
		struct passwd *pw = getpwnam(name);
		if (pw == NULL) {
			log_error("config user: user \"%s\" does not exist (scripts/stack creates "
			          "%s; or set user = NAME)",
			          name, S_USER_DEFAULT);
			return -1;
		}
		if (pw->pw_uid == 0 || pw->pw_gid == 0) {
			log_error("config user: \"%s\" is root (uid or gid 0); the orchestrator "
			          "needs no privilege",
			          name);
			return -1;
		}
		o->run_uid = pw->pw_uid;
		o->run_gid = pw->pw_gid;
		o->drop = 1;
		if (ahp_strlcpy(o->run_user, name, sizeof o->run_user) != 0) {
			log_error("config user: name too long");
			return -1;
		}
	}
	return s_apply_reloadable(o, o->cfg);
}

static int
s_reloadable(const char *key)
{
	for (size_t i = 0; s_reload_keys[i] != NULL; i++)
		if (strcmp(s_reload_keys[i], key) == 0)
			return 1;
	return 0;
}

static int
s_same(const ahp_cfg_t *a, const ahp_cfg_t *b, const ahp_cfg_def_t *d)
{
	switch (d->type) {
	case AHP_CFG_STR:
		return strcmp(ahp_cfg_str(a, d->name), ahp_cfg_str(b, d->name)) == 0;
	case AHP_CFG_INT:
		return ahp_cfg_int(a, d->name) == ahp_cfg_int(b, d->name);
	default:
		return ahp_cfg_bool(a, d->name) == ahp_cfg_bool(b, d->name);
	}
}

int
orch_config_reload(orch_t *o)
{
	ahp_cfg_t *cfg = s_cfg_read(o);
	if (cfg == NULL) {
		log_error("config reload refused; the running configuration stays");
		return -1;
	}
	char changed[512] = "";
	size_t used = 0;
	for (const ahp_cfg_def_t *d = orch_cfg_defs; d->name != NULL; d++) {
		/* Against the start-up values: an ignored change is reported at
		 * every reload until the restart that applies it. */
		if (!s_reloadable(d->name)) {
			if (!s_same(o->cfg_start, cfg, d))
				log_warn("config %s changed; ignored until restart", d->name);
			continue;
		}
		if (!s_same(o->cfg, cfg, d) && used < sizeof changed) {
			int n = snprintf(changed + used, sizeof changed - used, "%s%s",
			                 used ? "," : "", d->name);
			if (n > 0)
				used += (size_t)n;
		}
	}
	if (s_apply_reloadable(o, cfg) != 0) {
		/* Nothing was applied: o still points into the old cfg. */
		log_error("config reload refused; the running configuration stays");
		ahp_cfg_destroy(&cfg);
		return -1;
	}
	if (strncmp(o->endpoint, "ipc://", 6) == 0 &&
	    ahp_rpc_server_allow(o->server, &o->allow) != 0)
		log_warn("config reload: the orchctl allow-list could not be replaced");
	/* The old cfg holds the old strings; the start-up one is kept apart. */
	if (o->cfg != o->cfg_start)
		ahp_cfg_destroy(&o->cfg);
	o->cfg = cfg;
	log_info("config reloaded changed=%s gateway=%s gateway_socket=%s max_running=%ld",
	         used ? changed : "none", o->gateway_url,
	         o->gateway_socket[0] ? o->gateway_socket : "\"\"", o->max_running);
	return 0;
}

/* Chowns one of the orchestrator's own files or directories to its user,
 * without following a link it may have planted there in an earlier life
 * (O_NOFOLLOW), nor a hard link to someone else's file (one link only). */
static int
s_own(const orch_t *o, const char *path, int is_dir)
{
	int fd =
	    open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (is_dir ? O_DIRECTORY : 0));
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	struct stat st;
	int rc = -1;
	if (fstat(fd, &st) == 0 &&
	    (is_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode) && st.st_nlink == 1))
		rc = fchown(fd, o->run_uid, o->run_gid);
	else
		errno = EPERM;
	close(fd);
	return rc;
}

int
orch_own_state(orch_t *o)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	char path[PATH_MAX + 16];
	if (!o->drop)
		return 0;
	snprintf(path, sizeof path, "%s", o->db_path);
	char *slash = strrchr(path, '/');
	/* Its own state dir, when it is the default one; a configured db's
	 * directory is the operator's to prepare (docs/security.md). */
	if (o->db_default && slash != NULL && slash != path) {
		*slash = '\0';
		if (s_own(o, path, 1) != 0) {
			log_error("cannot give %s to %s: %s", path, o->run_user, strerror(errno));
			return -1;
		}
	}
	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		snprintf(path, sizeof path, "%s%s", o->db_path, sfx[i]);
		if (s_own(o, path, 0) != 0) {
			log_error("cannot give %s to %s: %s", path, o->run_user, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* OpenBSD style: once what needs root is open, become run_user for good.
 * Supplementary groups go first (they need root), the uid last; then prove
 * that root cannot be regained. */
