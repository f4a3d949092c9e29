/* The spawner: forked before any thread exists, it makes each sandbox's init off the event loop. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

/*
 * Creating namespaces (a network namespace above all) and moving a process
 * into a cgroup (the cgroup v1 write lock waits for an RCU grace period) take
 * milliseconds of kernel time, and so does every directory operation on a
 * slow disk. The zygote does all of it - workspaces, inits, deleting removed
 * workspaces - so sandboxd's loop only sends requests and later gets back a
 * new init's pid and control socket.
 * inits are made with CLONE_PARENT: they are sandboxd's children (it reaps
 * them; their parent-death signal follows sandboxd), not the zygote's. Being
 * forked before ZeroMQ starts its threads, the zygote is single-threaded, so
 * init (a clone of it, without exec) never inherits a lock held elsewhere.
 */

#define S_INIT_STACK (256 * 1024)
#define S_DELETERS_MAX 4
#define S_RMTREE_DEPTH 256

static char *const s_env_none[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/workspace",
    "USER=agent",
    "LOGNAME=agent",
    "SHELL=/bin/sh",
    "LANG=C.UTF-8",
    "TERM=dumb",
    "TMPDIR=/tmp",
    NULL};
static char *const s_env_proxy[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/workspace",
    "USER=agent",
    "LOGNAME=agent",
    "SHELL=/bin/sh",
    "LANG=C.UTF-8",
    "TERM=dumb",
    "TMPDIR=/tmp",
    /* Everything goes to the relay (credproxy behind it). Only the sandbox's
     * own loopback is exempt: it is a network namespace of its own, so that
     * reaches servers the agent started inside and nothing else. */
    "HTTP_PROXY=http://127.0.0.1:3128",
    "HTTPS_PROXY=http://127.0.0.1:3128",
    "ALL_PROXY=http://127.0.0.1:3128",
    "http_proxy=http://127.0.0.1:3128",
    "https_proxy=http://127.0.0.1:3128",
    "all_proxy=http://127.0.0.1:3128",
    "NO_PROXY=localhost,127.0.0.1,::1",
    "no_proxy=localhost,127.0.0.1,::1",
    /* The trust bundle with the platform CA (ca.c), for tools that do not
     * read the system path or bring their own store; node adds it to its own. */
    "SSL_CERT_FILE=" SBX_CA_BUNDLE,
    "CURL_CA_BUNDLE=" SBX_CA_BUNDLE,
    "REQUESTS_CA_BUNDLE=" SBX_CA_BUNDLE,
    "GIT_SSL_CAINFO=" SBX_CA_BUNDLE,
    "PIP_CERT=" SBX_CA_BUNDLE,
    "NODE_EXTRA_CA_CERTS=" SBX_CA_BUNDLE,
    NULL,
};

static const sbx_plan_t *s_plan;
static const struct sock_fprog *s_filter;
static const sbx_store_t *s_store;
static uint8_t *s_stack;
static pid_t s_deleters[S_DELETERS_MAX];
static char s_deleting[S_DELETERS_MAX][64];

/* ---------------------------------------------------------- workspaces -- */

/* Makes (or checks) a slot's workspace, owned by uid, and its exec log. */
static int
s_prepare(uint32_t slot, uid_t uid, char *ws, size_t wslen, char *err, size_t errlen)
{
	if (sbx_store_workspace_path(s_store, slot, ws, wslen) != 0) {
		snprintf(err, errlen, "workspace path too long");
		return -1;
	}
	bool created = mkdir(ws, 0700) == 0;
	if (!created && errno != EEXIST) {
		snprintf(err, errlen, "mkdir workspace s%u: %s", slot, strerror(errno));
		return -1;
	}
	/* never follow a link planted where the workspace should be */
	int fd = open(ws, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "workspace s%u: %s", slot, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	int rc = 0;
	if (st.st_uid != uid || st.st_gid != uid)
		rc = fchown(fd, uid, uid);
	if (rc == 0 && created)
		rc = fchmod(fd, 0700);
	close(fd);
	if (rc != 0) {
		snprintf(err, errlen, "workspace s%u owner: %s", slot, strerror(errno));
		return -1;
	}
	char log[PATH_MAX];
	if (snprintf(log, sizeof(log), "%s/s%u.log", sbx_store_dir(s_store, "execs"), slot) >=
	    (int)sizeof(log)) {
		snprintf(err, errlen, "exec log path too long");
		return -1;
	}
	int lfd = open(log, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lfd < 0) {
		snprintf(err, errlen, "exec log s%u: %s", slot, strerror(errno));
		return -1;
	}
	close(lfd);
	return 0;
}

/* Deletes a trash entry: a deleter child opens it as root, a grandchild
 * running as the workspace's uid (whatever is inside belongs to it, and it
 * cannot touch anything of the host's) empties it without following a
 * symlink, then the child removes the emptied directory. */
static void
s_start_deleter(int k, const char *name)
{
	long uid;
	char uidbuf[32];
	const char *dot = strchr(name, '.');
	if (dot == NULL || (size_t)(dot - name) >= sizeof(uidbuf))
		return;
	memcpy(uidbuf, name, (size_t)(dot - name));
	uidbuf[dot - name] = '\0';
	if (ahp_parse_long(uidbuf, 1, UINT32_MAX - 1, &uid) != 0)
		return;
	pid_t pid = fork();
	if (pid != 0) {
		if (pid > 0) {
			s_deleters[k] = pid;
			ahp_strlcpy(s_deleting[k], name, sizeof(s_deleting[k]));
		}
		return;
	}
	int tfd = open(sbx_store_dir(s_store, "trash"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fd = tfd >= 0 ? openat(tfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (fd < 0)
		_exit(1);
	pid_t g = fork();
	if (g == 0) {
		if (setgroups(0, NULL) != 0 || setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) != 0 ||
		    setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0 ||
		    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
			_exit(2);
		(void)fchmod(fd, 0700);
		_exit(sbx_rmtree_at(fd) == 0 ? 0 : 1);
	}
	int st = 1;
	if (g > 0)
		(void)waitpid(g, &st, 0);
	close(fd);
	if (unlinkat(tfd, name, AT_REMOVEDIR) != 0) {
		char line[PATH_MAX + 128];
		int n =
		    snprintf(line, sizeof(line), "sandboxd-zygote: could not delete trash/%s: %s\n",
		             name, strerror(errno));
		if (n > 0)
			(void)!write(2, line,
			             (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
		_exit(1);
	}
	_exit(0);
}

static void
s_sweep(void)
{
	DIR *d = opendir(sbx_store_dir(s_store, "trash"));
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(s_deleting[0]))
			continue;
		int free_k = -1;
		bool running = false;
		for (int k = 0; k < S_DELETERS_MAX; k++) {
			if (s_deleters[k] == 0 && free_k < 0)
				free_k = k;
			if (s_deleters[k] != 0 && strcmp(s_deleting[k], e->d_name) == 0)
				running = true;
		}
		if (running)
			continue;
		if (free_k < 0)
			break; /* the rest when a deleter finishes */
		s_start_deleter(free_k, e->d_name);
	}
	closedir(d);
}

/* Reaps finished deleters; true when any finished (sweep again). */
static bool
s_reap_deleters(void)
{
	bool any = false;
	for (;;) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p <= 0)
			return any;
		for (int k = 0; k < S_DELETERS_MAX; k++)
			if (s_deleters[k] == p) {
				s_deleters[k] = 0;
				s_deleting[k][0] = '\0';
				any = true;
			}
	}
}

static bool
s_deleting_any(void)
{
	for (int k = 0; k < S_DELETERS_MAX; k++)
		if (s_deleters[k] != 0)
			return true;
	return false;
}

/* A slot's workspace goes to the trash, its exec log away. */
static void
s_discard(uint32_t slot, uid_t uid)
{
	char ws[PATH_MAX], to[PATH_MAX], rnd[40];
	if (sbx_store_workspace_path(s_store, slot, ws, sizeof(ws)) != 0)
		return;
	struct stat st;
	if (lstat(ws, &st) == 0) {
		ahp_random_id("", rnd, sizeof(rnd));
		/* the owner is who deletes; a workspace never belongs to root */
		uid_t owner = S_ISDIR(st.st_mode) && st.st_uid != 0 ? st.st_uid : uid;
		if (!S_ISDIR(st.st_mode))
			(void)unlink(ws);
		else if (snprintf(to, sizeof(to), "%s/%u.%s", sbx_store_dir(s_store, "trash"),
		                  (unsigned)owner, rnd) < (int)sizeof(to))
			(void)rename(ws, to);
	}
	char log[PATH_MAX];
	if (snprintf(log, sizeof(log), "%s/s%u.log", sbx_store_dir(s_store, "execs"), slot) <
	    (int)sizeof(log))
		(void)unlink(log);
}

static int
s_write_proc(pid_t pid, const char *file, const char *val)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, file);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t l = strlen(val);
	ssize_t n = write(fd, val, l);
	close(fd);
	return n == (ssize_t)l ? 0 : -1;
}

/* Makes one init. On success *ctl is sandboxd's end of its control socket. */
static void
s_spawn(const sbx_spawn_req_t *req, sbx_spawn_rep_t *rep, int *ctl)
{
	static sbx_init_args_t args;
	int sv[2] = {-1, -1};
	*ctl = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(rep->err, sizeof(rep->err), "socketpair: %s", strerror(errno));
		return;
	}
	/* Whole outputs travel as one message: make room (root may force it). */
	int sz = (int)(SBX_CTL_MSG_MAX + 65536);
	for (int i = 0; i < 2; i++)
		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0)
			(void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));

	memset(&args, 0, sizeof(args));
	args.ctl = sv[1];
	args.errfd = 2;
	args.plan = s_plan;
	args.filter = s_filter;
	args.env_none = s_env_none;
	args.env_proxy = s_env_proxy;
	args.argv_area = sbx_argv_area;
	args.argv_len = sbx_argv_len;
	if (sbx_disk_attach(s_store, req->slot, req->uid, &req->lim, rep->err, sizeof(rep->err)) !=
	        0 ||
	    s_prepare(req->slot, req->uid, args.workspace, sizeof(args.workspace), rep->err,
	              sizeof(rep->err)) != 0) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	ahp_strlcpy(args.root_dir, sbx_store_dir(s_store, "root"), sizeof(args.root_dir));

	/* The cgroup namespace is made by init once it is in its cgroups. */
	int flags = CLONE_PARENT | CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
	            CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
	pid_t pid = clone(sbx_init_main, s_stack + S_INIT_STACK, flags, &args);
	close(sv[1]);
	if (pid < 0) {
		snprintf(rep->err, sizeof(rep->err), "clone: %s", strerror(errno));
		close(sv[0]);
		return;
	}
	rep->pid = pid;
	char map[64];
	snprintf(map, sizeof(map), "%d %u 1\n", SBX_INSIDE_UID, req->uid);
	if (s_write_proc(pid, "setgroups", "deny") != 0 || s_write_proc(pid, "uid_map", map) != 0 ||
	    s_write_proc(pid, "gid_map", map) != 0) {
		snprintf(rep->err, sizeof(rep->err), "uid/gid map: %s", strerror(errno));
		goto fail;
	}
	/* Commands reset their own score to 0: the OOM killer picks them first. */
	(void)s_write_proc(pid, "oom_score_adj", "-999");
	if (sbx_cgroup_create(req->cgname, &req->lim, pid) != 0) {
		snprintf(rep->err, sizeof(rep->err), "cgroup: %s", strerror(errno));
		goto fail;
	}
	sbx_ctl_hdr_t go = {SBX_CTL_GO, 0};
	if (send(sv[0], &go, sizeof(go), MSG_NOSIGNAL) != (ssize_t)sizeof(go)) {
		snprintf(rep->err, sizeof(rep->err), "start: %s", strerror(errno));
		goto fail;
	}
	*ctl = sv[0];
	return;
fail:
	kill(pid, SIGKILL); /* sandboxd reaps it */
	close(sv[0]);
}

static void
s_reply(int sock, const sbx_spawn_rep_t *rep, int ctl)
{
	if (sbx_send_fd(sock, rep, sizeof(*rep), ctl) != 0)
		_exit(0);
}

static void __attribute__((noreturn)) s_serve(int sock)
{
	for (;;) {
		/* wake up now and then while deleters run, to reap them */
		struct pollfd pf = {sock, POLLIN, 0};
		int n = poll(&pf, 1, s_deleting_any() ? 100 : -1);
		if (s_reap_deleters())
			s_sweep();
		if (n <= 0)
			continue;
		sbx_spawn_req_t req;
		ssize_t r = recv(sock, &req, sizeof(req), 0);
		if (r == 0 || (r < 0 && errno != EINTR))
			_exit(0); /* sandboxd is gone */
		if (r != (ssize_t)sizeof(req))
			continue;
		req.cgname[sizeof(req.cgname) - 1] = '\0';
		if (req.type == SBX_ZY_DISCARD) {
			(void)sbx_disk_discard(s_store, req.slot);
			s_discard(req.slot, req.uid);
			s_sweep();
			continue;
		}
		if (req.type == SBX_ZY_SWEEP) {
			s_sweep();
			continue;
		}
		if (req.type != SBX_ZY_SPAWN)
			continue;
		sbx_spawn_rep_t rep;
		memset(&rep, 0, sizeof(rep));
		rep.slot = req.slot;
		int ctl = -1;
		s_spawn(&req, &rep, &ctl);
		s_reply(sock, &rep, ctl);
		if (ctl >= 0)
			close(ctl);
	}
}

int
sbx_zygote_start(const sbx_plan_t *plan, const struct sock_fprog *filter, const sbx_store_t *store,
                 pid_t *pid_out)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return -1;
	s_stack = malloc(S_INIT_STACK);
	if (s_stack == NULL) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		prctl(PR_SET_NAME, "sandboxd-zygote", 0, 0, 0);
		close(sv[0]);
		/* only its socket and the log (stderr) */
		if (sv[1] != 3) {
			if (dup3(sv[1], 3, O_CLOEXEC) < 0)
				_exit(1);
			close(sv[1]);
		}
		syscall(SYS_close_range, 4u, ~0u, 0u);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			close(null);
		}
		s_plan = plan;
		s_filter = filter;
		s_store = store;
		s_serve(3);
	}
	close(sv[1]);
	*pid_out = pid;
	return sv[0];
}
