/* sandboxd's configuration table and loading, shared by the full program and the lean front. */
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "ahp/cfg.h"
#include "ahp/util.h"
#include "sbx.h"

/* clang-format off */
const ahp_cfg_def_t sbx_cfg_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "", "RPC endpoint (default ipc://HOME/run/sandboxd.sock)"},
    {"exec_socket", AHP_CFG_STR, 0, 0, "",
     "unix SOCK_SEQPACKET socket serving only the one-shot Run of `sandboxd exec`, with the "
     "endpoint's allow_users/allow_groups (default HOME/run/sandboxd-exec.sock)"},
    {"state_dir", AHP_CFG_STR, 0, 0, "",
     "workspaces, sandbox metadata, exec results (default HOME/state/sandboxd); one "
     "sandboxd per state_dir (a second refuses to start: state_dir/sandboxd.lock)"},
    {"proxy_socket", AHP_CFG_STR, 0, 0, "",
     "unix socket the egress relay connects to (default HOME/run/credproxy.sock); every "
     "relayed connection starts with a PROXY protocol v2 header naming the sandbox's run "
     "and profile"},
    {"proxy_ca_file", AHP_CFG_STR, 0, 0, "",
     "the platform CA certificate (PEM) added to the trust store of the sandboxes "
     "(/etc/ssl/certs/ca-certificates.crt, /etc/ahp/ca.crt) (default "
     "HOME/state/credproxy/ca.crt; missing: system bundle only)"},
    {"ro_bind", AHP_CFG_STR, 0, 0, "",
     "comma-separated HOSTPATH:SANDBOXPATH read-only binds added to every sandbox"},
    {"rootfs", AHP_CFG_STR, 0, 0, "",
     "directory used as the sandbox root instead of the host allowlist (/usr, /bin, ...)"},
    {"keep_workspaces", AHP_CFG_BOOL, 0, 0, "false",
     "never delete workspaces on Destroy (no retain_failed_* limit applies)"},
    {"uid_base", AHP_CFG_INT, 1000, 2000000000, "200000",
     "first host uid of the range sandboxes run as (uid 1000 inside)"},
    {"uid_count", AHP_CFG_INT, 1, 1000000, "65536", "size of that range"},
    {"tmp_mb", AHP_CFG_STR, 0, 0, "",
     "no longer applies, refused when set: /tmp is on the sandbox's disk (a profile's "
     "sandbox.disk_mb)"},
    {"max_sandboxes", AHP_CFG_INT, 1, 100000, "1024", "sandboxes alive at once"},
    {"relay_max_conns", AHP_CFG_INT, 1, 4096, "64", "relayed connections per sandbox"},
    {"pool_size", AHP_CFG_INT, 0, 64, "2",
     "sandboxes built ahead of time for new runs (0: build each on demand)"},
    {"retain_failed_max", AHP_CFG_INT, 0, 100000, "32",
     "workspaces kept by a Destroy with keep_workspace (failed runs, exec --keep) at most; "
     "the oldest is deleted first (0: none is kept)"},
    {"retain_failed_s", AHP_CFG_INT, 1, 315360000, "604800",
     "age after which such a workspace is deleted (seconds)"},
    {"allow_users", AHP_CFG_STR, 0, 0, SBX_ALLOW_USERS_DEFAULT,
     "users whose processes may use the endpoint and the exec socket (SO_PEERCRED): the "
     "orchestrator's user, and root for `sandboxd exec`; names that do not exist are an "
     "error, except in the default"},
    {"allow_groups", AHP_CFG_STR, 0, 0, "",
     "groups whose members may use the endpoint and the exec socket (comma-separated names)"},
    {"user", AHP_CFG_STR, 0, 0, "ahp-sandboxd",
     "the unprivileged user the worker runs as (RPC, exec store, egress relay); the "
     "process started as root keeps only namespaces, uid maps, cgroups and workspaces. "
     "\"root\": no drop (a warning); a user that does not exist is an error"},
    {NULL, 0, 0, 0, NULL, NULL},
};
/* clang-format on */

int
sbx_conf_load(const char *home, const char *const *sets, int n_sets, ahp_cfg_t **out, char *err,
              size_t errlen)
{
	char conf[PATH_MAX];
	*out = NULL;
	ahp_cfg_t *c = ahp_cfg_new(sbx_cfg_defs);
	if (c == NULL || ahp_home_path(home, "etc/sandboxd.conf", conf, sizeof(conf)) != 0) {
		snprintf(err, errlen, "bad home %s", home);
		ahp_cfg_destroy(&c);
		return -1;
	}
	int rc = ahp_cfg_load_file(c, conf, 1, err, errlen);
	for (int k = 0; rc == 0 && k < n_sets; k++)
		rc = ahp_cfg_set(c, sets[k], NULL, err, errlen);
	if (rc == 0)
		rc = ahp_cfg_validate(c, err, errlen);
	if (rc != 0) {
		ahp_cfg_destroy(&c);
		return -1;
	}
	*out = c;
	return 0;
}

int
sbx_conf_exec_socket(const ahp_cfg_t *c, const char *home, char *buf, size_t len, char *err,
                     size_t errlen)
{
	const char *v = ahp_cfg_str(c, "exec_socket");
	int rc = v[0] != '\0' ? ahp_strlcpy(buf, v, len)
	                      : ahp_home_path(home, "run/sandboxd-exec.sock", buf, len);
	if (rc != 0 || strlen(buf) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "exec_socket: longer than a unix socket path allows%s",
		         v[0] != '\0' ? "" : " (HOME is too long: set exec_socket)");
		return -1;
	}
	if (v[0] != '\0' && buf[0] != '/') {
		snprintf(err, errlen, "exec_socket: must be an absolute path");
		return -1;
	}
	return 0;
}

bool
sbx_profile_name_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > SBX_PROFILE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

int
sbx_conf_worker_user(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	if (strcmp(user, "root") == 0) {
		*uid = 0;
		*gid = 0;
		return 0;
	}
	struct passwd *pw = getpwnam(user);
	if (pw == NULL || pw->pw_uid == 0) {
		snprintf(
		    err, errlen,
		    "user \"%s\" (the worker's) %s: create it (useradd --system --no-create-home "
		    "--shell /usr/sbin/nologin %s) or set user = root",
		    user, pw == NULL ? "does not exist" : "is root", user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}
