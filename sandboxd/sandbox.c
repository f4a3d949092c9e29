/* One sandbox as sandboxd sees it: the root plan, starting init in new namespaces, the exec queue.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/proxyv2.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "sbx.h"

#define S_COPY_BUDGET (8u << 20) /* bytes of host /etc copied into the template */

/* ------------------------------------------------------------ the plan -- */

static int
s_add(sbx_plan_t *p, int kind, int flags, unsigned mode, unsigned size_kb, const char *dst,
      const char *src)
{
	if (p->n >= SBX_MNT_MAX) {
		errno = E2BIG;
		return -1;
	}
	sbx_mnt_t *m = &p->m[p->n];
	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->flags = flags;
	m->mode = mode;
	m->size_kb = size_kb;
	if (ahp_strlcpy(m->dst, dst, sizeof(m->dst)) != 0 ||
	    ahp_strlcpy(m->src, src ? src : "", sizeof(m->src)) != 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	p->n++;
	return 0;
}

static int
s_write_file(int dirfd, const char *name, const char *content)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -1;
	size_t len = strlen(content);
	ssize_t n = write(fd, content, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/* Copies a host /etc entry into the template: symlinks as symlinks, world-
 * readable files by content (no set-id bits), directories recursively. Files
 * others may not read are skipped: they might be secrets. */
static int
s_copy_entry(const char *src, int dstdir, const char *name, int depth, size_t *budget)
{
	struct stat st;
	if (lstat(src, &st) != 0 || depth > 4)
		return 0;
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(src, target, sizeof(target) - 1);
		if (n <= 0)
			return 0;
		target[n] = '\0';
		return symlinkat(target, dstdir, name) == 0 || errno == EEXIST ? 0 : -1;
	}
	if (!(st.st_mode & S_IROTH))
		return 0;
	if (S_ISDIR(st.st_mode)) {
		if (!(st.st_mode & S_IXOTH))
			return 0;
		if (mkdirat(dstdir, name, 0755) != 0 && errno != EEXIST)
			return -1;
		int sub = openat(dstdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *d = opendir(src);
		if (sub < 0 || d == NULL) {
			if (sub >= 0)
				close(sub);
			if (d != NULL)
				closedir(d);
			return -1;
		}
		int rc = 0;
		struct dirent *e;
		while (rc == 0 && (e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char p[PATH_MAX];
			if (snprintf(p, sizeof(p), "%s/%s", src, e->d_name) >= (int)sizeof(p))
				continue;
			rc = s_copy_entry(p, sub, e->d_name, depth + 1, budget);
		}
		closedir(d);
		close(sub);
		return rc;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > *budget)
		return 0;
	char *buf = NULL;
	size_t len;
	if (ahp_read_file(src, (size_t)st.st_size + 1, &buf, &len) != 0)
		return 0;
	*budget -= len;
	int fd = openat(dstdir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	                (mode_t)(st.st_mode & 0755));
	ssize_t w = fd >= 0 ? write(fd, buf, len) : -1;
	if (fd >= 0)
		close(fd);
	free(buf);
	return w == (ssize_t)len ? 0 : -1;
}

/* Host /etc entries a shell and common tools need; nothing else of /etc is
 * visible (no shadow, no machine secrets, no daemon config). */
static const char *const s_etc_copy[] = {"ld.so.cache",    "ld.so.conf",  "ld.so.conf.d",
                                         "alternatives",   "ssl/certs",   "ca-certificates.conf",
                                         "localtime",      "timezone",    "protocols",
                                         "services",       "mime.types",  "os-release",
                                         "debian_version", "gai.conf",    "host.conf",
                                         "magic",          "magic.mime",  "shells",
                                         "profile",        "bash.bashrc", "inputrc",
                                         "python3",        "python3.11",  "mailcap",
                                         "mke2fs.conf",    NULL};

/* The /etc template lives on a small tmpfs mounted at the state dir's etc/:
 * a sandbox's mountinfo then shows "/" as the root of its /etc, not the
 * host path of the state dir. Mounted once (kept across a crash, reused),
 * unmounted at a clean stop (sbx_disk_release_all). */
#define S_ETC_TMPFS "size=16m,mode=0755,nr_inodes=4096"

static int
s_etc_tmpfs(const char *etc)
{
	char parent[PATH_MAX];
	struct stat a, b;
	if (snprintf(parent, sizeof(parent), "%s/..", etc) >= (int)sizeof(parent) ||
	    lstat(etc, &a) != 0 || stat(parent, &b) != 0)
		return -1;
	if (a.st_dev != b.st_dev)
		return 0; /* mounted by an earlier run */
	return mount("ahp-sandbox-etc", etc, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
	             S_ETC_TMPFS);
}

static int
s_write_template(const char *etc)
{
	if (s_etc_tmpfs(etc) != 0)
		return -1;
	int dfd = open(etc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	/* Fresh every start: the content is ours, rebuilt from the host. */
	if (sbx_rmtree_at(dfd) != 0) {
		close(dfd);
		return -1;
	}
	int rc = 0;
	rc |= s_write_file(dfd, "passwd",
	                   "root:x:0:0:root:/root:/usr/sbin/nologin\n"
	                   "agent:x:1000:1000:agent:/workspace:/bin/sh\n"
	                   "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
	rc |= s_write_file(dfd, "group", "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n");
	rc |= s_write_file(dfd, "hosts",
	                   "127.0.0.1\tlocalhost\n127.0.1.1\t" SBX_HOSTNAME
	                   "\n::1\tlocalhost ip6-localhost\n");
	rc |= s_write_file(dfd, "hostname", SBX_HOSTNAME "\n");
	/* No name servers: DNS fails fast (nothing listens on 127.0.0.1:53).
	 * Names are resolved by the egress proxy, never inside. */
	rc |= s_write_file(dfd, "resolv.conf", "# no DNS inside the sandbox; use the proxy\n");
	rc |= s_write_file(
	    dfd, "nsswitch.conf",
	    "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
	    "protocols: files\nservices: files\nethers: files\nrpc: files\n");
	if (mkdirat(dfd, "ssl", 0755) != 0)
		rc = -1;
	size_t budget = S_COPY_BUDGET;
	for (int i = 0; s_etc_copy[i] != NULL && rc == 0; i++) {
		char src[PATH_MAX];
		snprintf(src, sizeof(src), "/etc/%s", s_etc_copy[i]);
		rc = s_copy_entry(src, dfd, s_etc_copy[i], 0, &budget);
	}
	close(dfd);
	return rc;
}

/* A sandbox path from config: absolute, normalized, not in a system area. */
static bool
s_valid_sandbox_path(const char *p)
{
	static const char *const reserved[] = {"usr",   "bin",       "sbin", "lib",  "lib64",
	                                       "lib32", "libx32",    "etc",  "proc", "dev",
	                                       "tmp",   "workspace", "sys",  NULL};
	if (p[0] != '/' || p[1] == '\0' || strlen(p) >= 200)
		return false;
	if (strstr(p, "//") != NULL || strstr(p, "/./") != NULL || strstr(p, "/../") != NULL)
		return false;
	size_t l = strlen(p);
	if (p[l - 1] == '/' || (l >= 3 && strcmp(p + l - 3, "/..") == 0) ||
	    (l >= 2 && strcmp(p + l - 2, "/.") == 0))
		return false;
	for (int i = 0; reserved[i] != NULL; i++) {
		size_t rl = strlen(reserved[i]);
		if (strncmp(p + 1, reserved[i], rl) == 0 && (p[1 + rl] == '\0' || p[1 + rl] == '/'))
			return false;
	}
	return true;
}

static int
s_plan_ro_binds(const char *spec, sbx_plan_t *plan, char *err, size_t errlen)
{
	char buf[4096];
	if (ahp_strlcpy(buf, spec, sizeof(buf)) != 0) {
		snprintf(err, errlen, "ro_bind: too long");
		return -1;
	}
	char *save = NULL;
	for (char *item = strtok_r(buf, ",", &save); item != NULL;
	     item = strtok_r(NULL, ",", &save)) {
		while (*item == ' ')
			item++;
		if (*item == '\0')
			continue;
		char *colon = strchr(item, ':');
		if (colon == NULL) {
			snprintf(err, errlen, "ro_bind: '%s' is not HOSTPATH:SANDBOXPATH", item);
			return -1;
		}
		*colon = '\0';
		const char *host = item, *in = colon + 1;
		struct stat st;
		if (host[0] != '/' || stat(host, &st) != 0) {
			snprintf(err, errlen, "ro_bind: host path '%s' does not exist", host);
			return -1;
		}
		if (!s_valid_sandbox_path(in)) {
			snprintf(
			    err, errlen,
			    "ro_bind: sandbox path '%s' must be absolute, normalized and outside "
			    "/usr /etc /proc /dev /tmp /workspace ...",
			    in);
			return -1;
		}
		int flags = SBX_MNT_F_RO | (S_ISDIR(st.st_mode) ? 0 : SBX_MNT_F_FILE);
		if (s_add(plan, SBX_MNT_BIND, flags, 0, 0, in + 1, host) != 0) {
			snprintf(err, errlen, "ro_bind: too many entries");
			return -1;
		}
	}
	return 0;
}

/* Top-level entries of a root: directories bound read-only, symlinks copied. */
static int
s_plan_top(sbx_plan_t *plan, const char *base, const char *name)
{
	char p[PATH_MAX], target[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof(p), "%s/%s", strcmp(base, "/") == 0 ? "" : base, name) >=
	    (int)sizeof(p))
		return -1;
	if (lstat(p, &st) != 0)
		return 0;
	if (S_ISLNK(st.st_mode)) {
		ssize_t n = readlink(p, target, sizeof(target) - 1);
		if (n <= 0)
			return 0;
		target[n] = '\0';
		return s_add(plan, SBX_MNT_SYMLINK, 0, 0, 0, name, target);
	}
	if (S_ISDIR(st.st_mode))
		return s_add(plan, SBX_MNT_BIND, SBX_MNT_F_RO, 0, 0, name, p);
	if (S_ISREG(st.st_mode))
		return s_add(plan, SBX_MNT_BIND, SBX_MNT_F_RO | SBX_MNT_F_FILE, 0, 0, name, p);
	return 0;
}

int
sbx_plan_build(const sbx_config_t *cfg, const sbx_store_t *store, sbx_plan_t *plan, char *err,
               size_t errlen)
{
	memset(plan, 0, sizeof(*plan));
	int rc = 0;
	if (cfg->rootfs[0] != '\0') {
		struct stat st;
		if (stat(cfg->rootfs, &st) != 0 || !S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "rootfs: '%s' is not a directory", cfg->rootfs);
			return -1;
		}
		DIR *d = opendir(cfg->rootfs);
		if (d == NULL) {
			snprintf(err, errlen, "rootfs: %s", strerror(errno));
			return -1;
		}
		static const char *const skip[] = {".",   "..",        "proc", "dev",
		                                   "tmp", "workspace", "sys",  NULL};
		struct dirent *e;
		while (rc == 0 && (e = readdir(d)) != NULL) {
			bool s = false;
			for (int i = 0; skip[i] != NULL; i++)
				s = s || strcmp(e->d_name, skip[i]) == 0;
			if (!s)
				rc = s_plan_top(plan, cfg->rootfs, e->d_name);
		}
		closedir(d);
	} else {
		static const char *const top[] = {"usr",   "bin",   "sbin",   "lib",
		                                  "lib64", "lib32", "libx32", NULL};
		for (int i = 0; top[i] != NULL && rc == 0; i++)
			rc = s_plan_top(plan, "/", top[i]);
		/* store is NULL for --check-config: plan only, nothing written */
		if (store != NULL && s_write_template(sbx_store_dir(store, "etc")) != 0) {
			snprintf(err, errlen, "writing the /etc template: %s", strerror(errno));
			return -1;
		}
		rc = rc ? rc
		        : s_add(plan, SBX_MNT_BIND, SBX_MNT_F_RO, 0, 0, "etc",
		                store ? sbx_store_dir(store, "etc") : "/etc");
		static const char *const dirs[] = {"home", "root", "run", "opt",
		                                   "var",  "mnt",  NULL};
		for (int i = 0; dirs[i] != NULL && rc == 0; i++)
			rc = s_add(plan, SBX_MNT_DIR, 0, 0755, 0, dirs[i], NULL);
		rc = rc ? rc : s_add(plan, SBX_MNT_SYMLINK, 0, 0, 0, "var/tmp", "/tmp");
	}

	/* /proc of the sandbox's own pid namespace, with the host-wide knobs
	 * masked or read-only (docker's list; only what this kernel has). */
	rc = rc ? rc : s_add(plan, SBX_MNT_PROC, 0, 0, 0, "proc", NULL);
	/* the sandbox's own memory and CPU limits instead of the host's (static,
	 * like lxcfs: disk.c writes them at spawn and at claim) */
	rc = rc ? rc
	        : s_add(plan, SBX_MNT_DISK, SBX_MNT_F_RO | SBX_MNT_F_FILE, 0, 0, "proc/meminfo",
	                "proc/meminfo");
	rc = rc ? rc
	        : s_add(plan, SBX_MNT_DISK, SBX_MNT_F_RO | SBX_MNT_F_FILE, 0, 0, "proc/cpuinfo",
	                "proc/cpuinfo");
	/* docker's list, and what shows other sandboxes or the host: every loop
	 * device's live I/O counters (diskstats, partitions: other sandboxes'
	 * disks) and the host's boot arguments (cmdline) */
	static const char *const masks[] = {
	    "kcore",      "keys",        "kmsg",        "latency_stats",
	    "timer_list", "timer_stats", "sched_debug", "sysrq-trigger",
	    "kallsyms",   "diskstats",   "partitions",  "cmdline",
	    NULL};
	for (int i = 0; masks[i] != NULL && rc == 0; i++) {
		char hp[64];
		snprintf(hp, sizeof(hp), "/proc/%s", masks[i]);
		if (access(hp, F_OK) != 0)
			continue;
		snprintf(hp, sizeof(hp), "proc/%s", masks[i]);
		rc = s_add(plan, SBX_MNT_MASK, 0, 0, 0, hp, NULL);
	}
	static const char *const ro[] = {"sys", "irq", "bus", "fs", "acpi", "scsi", "asound", NULL};
	for (int i = 0; ro[i] != NULL && rc == 0; i++) {
		char hp[64];
		snprintf(hp, sizeof(hp), "/proc/%s", ro[i]);
		if (access(hp, F_OK) != 0)
			continue;
		snprintf(hp, sizeof(hp), "proc/%s", ro[i]);
		rc = s_add(plan, SBX_MNT_RDONLY, SBX_MNT_F_OPTIONAL, 0, 0, hp, NULL);
	}

	/* A minimal /dev: a few host nodes, no disks, no ttys but the null tty. */
	rc = rc ? rc : s_add(plan, SBX_MNT_TMPFS, 0, 0755, 64, "dev", NULL);
	static const char *const nodes[] = {"null",    "zero", "full", "random",
	                                    "urandom", "tty",  NULL};
	for (int i = 0; nodes[i] != NULL && rc == 0; i++) {
		char in[32], host[32];
		snprintf(in, sizeof(in), "dev/%s", nodes[i]);
		snprintf(host, sizeof(host), "/dev/%s", nodes[i]);
		rc = s_add(plan, SBX_MNT_BIND, SBX_MNT_F_FILE | SBX_MNT_F_DEV | SBX_MNT_F_OPTIONAL,
		           0, 0, in, host);
	}
	static const char *const links[][2] = {{"dev/fd", "/proc/self/fd"},
	                                       {"dev/stdin", "/proc/self/fd/0"},
	                                       {"dev/stdout", "/proc/self/fd/1"},
	                                       {"dev/stderr", "/proc/self/fd/2"}};
	for (size_t i = 0; i < 4 && rc == 0; i++)
		rc = s_add(plan, SBX_MNT_SYMLINK, 0, 0, 0, links[i][0], links[i][1]);
	rc = rc ? rc : s_add(plan, SBX_MNT_TMPFS, 0, 01777, 64 * 1024, "dev/shm", NULL);
	rc = rc ? rc : s_add(plan, SBX_MNT_SEAL, 0, 0, 0, "dev", NULL);
	/* /tmp is a directory of the sandbox's disk: it counts toward disk_mb
	 * with /workspace (the tmp_mb setting is refused) */
	rc = rc ? rc : s_add(plan, SBX_MNT_DISK, 0, 0, 0, "tmp", "tmp");
	rc = rc ? rc : s_add(plan, SBX_MNT_WORKSPACE, 0, 0, 0, "workspace", NULL);
	if (rc != 0) {
		snprintf(err, errlen, "root plan: %s", strerror(errno));
		return -1;
	}
	return s_plan_ro_binds(cfg->ro_bind, plan, err, errlen);
}

/* ----------------------------------------------------------- sandboxes -- */

/*
 * Life of a sandbox: SPAWNING (the zygote makes init) -> STARTING (init builds
 * the root) -> SPARE (built, waiting in the pool for a run) or straight on to
 * CLAIMING (told its network mode) -> READY (serving execs) -> DEAD (killed;
 * gone once init is reaped and its cgroup removed).
 */
enum { S_SPAWNING, S_STARTING, S_SPARE, S_CLAIMING, S_READY, S_DEAD };

typedef struct s_exec {
	char exec_id[SBX_EXEC_ID_MAX + 1];
	char *command;
	uint32_t timeout_s;
	ahp_rpc_req_t *waiters[SBX_WAITERS_MAX];
	int n_waiters;
	sbx_cg_counters_t base;
	struct s_exec *next;
} s_exec_t;

struct sbx_sandbox {
	sbx_daemon_t *d;
	char id[SBX_ID_MAX + 1]; /* ".spare-<slot>" while in the pool */
	bool spare;              /* made for the pool: claimed when a run needs it */
	sbx_meta_t meta;
	uid_t uid;
	char cgname[32];
	int state;
	pid_t init_pid;
	int ctl;
	int listener;
	sbx_cgroup_t *cg;
	bool cg_gone;
	s_exec_t *cur;
	s_exec_t *qhead, *qtail;
	int qlen;
	ahp_rpc_req_t *create_waiters[SBX_WAITERS_MAX];
	bool create_existed[SBX_WAITERS_MAX];
	int n_create;
	sbx_relay_t **relays;
	int n_relays;
	uint8_t pp2[AHP_PP2_HEADER_MAX]; /* proxy mode: the PROXY v2 header of every relay */
	size_t pp2_len;
	sbx_execlog_t *log;
	bool spawn_pending; /* the zygote has not answered yet */
	bool discard;       /* set by retire(): workspace, log and slot go once gone */
	bool fresh;         /* a new run or spare: the slot's records on disk are not its own */
	bool need_limits;   /* a spare claimed while spawning: its run's limits once spawned */
};

/* One receive buffer for all control sockets: the loop is single-threaded. */
static uint8_t *s_rx;

sbx_sandbox_t *
sbx_sandbox_new(sbx_daemon_t *d, const char *id, const sbx_meta_t *meta, uint32_t slot)
{
	if (s_rx == NULL) {
		s_rx = malloc(SBX_CTL_MSG_MAX + 64);
		if (s_rx == NULL)
			return NULL;
	}
	const sbx_config_t *cfg = sbx_daemon_config(d);
	sbx_sandbox_t *self = calloc(1, sizeof(*self));
	if (self == NULL)
		return NULL;
	self->d = d;
	if (id == NULL) {
		self->spare = true;
		snprintf(self->id, sizeof(self->id), ".spare-%u", slot);
	} else {
		ahp_strlcpy(self->id, id, sizeof(self->id));
	}
	self->meta = *meta;
	self->meta.slot = slot;
	self->meta.kept = false;
	/* a record on disk always has its creation time (set at claim) */
	self->fresh = meta->created_ms == 0;
	if (self->meta.cwd[0] != '/')
		memcpy(self->meta.cwd, "/workspace", sizeof("/workspace"));
	self->uid = (uid_t)(cfg->uid_base + slot);
	/* cgroups are named by uid slot, unique among live sandboxes: a spare's
	 * cgroup needs no rename when a run claims it */
	snprintf(self->cgname, sizeof(self->cgname), "s%u", slot);
	self->ctl = self->listener = -1;
	self->state = S_SPAWNING;
	self->relays =
	    calloc(cfg->relay_max_conns ? cfg->relay_max_conns : 1, sizeof(*self->relays));
	if (self->relays == NULL) {
		free(self);
		return NULL;
	}
	return self;
}

static void
s_exec_free(s_exec_t *e)
{
	if (e == NULL)
		return;
	free(e->command);
	free(e);
}

static void
s_fail_waiters(sbx_sandbox_t *self, s_exec_t *e, int status, const char *why)
{
	for (int i = 0; i < e->n_waiters; i++)
		sbx_reply_error(self->d, &e->waiters[i], status, why);
	e->n_waiters = 0;
}

/* Relayed connections of every sandbox together, and how many the worker's
 * descriptors allow (sbx_relay_budget_set): each costs two, and the worker
 * must never run out. At EMFILE libzmq aborts the process in its accept
 * (every sandbox dies with the worker), so relay_max_conns per sandbox alone
 * was not enough: nine sandboxes of 64 connections reached 1,024. */
static size_t s_relays_total;
static size_t s_relays_budget = SIZE_MAX;

static void
s_close_io(sbx_sandbox_t *self)
{
	for (int i = 0; i < self->n_relays; i++)
		sbx_relay_destroy(&self->relays[i]);
	s_relays_total -= (size_t)self->n_relays;
	self->n_relays = 0;
	if (self->listener >= 0)
		close(self->listener);
	self->listener = -1;
	if (self->ctl >= 0)
		close(self->ctl);
	self->ctl = -1;
}

/* Asks the privileged parent to remove the cgroup. 0 gone / -1 (EBUSY: again later). */
static int
s_remove_cgroup(sbx_sandbox_t *self)
{
	sbx_spawn_req_t req;
	memset(&req, 0, sizeof(req));
	req.type = SBX_ZY_RMCG;
	req.slot = self->meta.slot;
	return sbx_daemon_call(self->d, &req);
}

void
sbx_sandbox_kill(sbx_sandbox_t *self, int status, const char *why)
{
	/* The privileged parent kills init (its child), and with it the whole
	 * pid namespace at once (zygote.c s_kill_slot): no fork races the kill. */
	if (self->state != S_DEAD && (self->init_pid > 0 || self->spawn_pending))
		sbx_daemon_kill_slot(self->d, self->meta.slot);
	if (self->state != S_DEAD && !self->spare)
		log_info("sandbox %s stopped: %s", self->id, why);
	self->state = S_DEAD;
	s_close_io(self);
	for (int i = 0; i < self->n_create; i++)
		sbx_reply_error(self->d, &self->create_waiters[i], status, why);
	self->n_create = 0;
	if (self->cur != NULL) {
		/* Its intent is on disk without a result: Fetch says interrupted. */
		s_fail_waiters(self, self->cur, status, why);
		s_exec_free(self->cur);
		self->cur = NULL;
	}
	while (self->qhead != NULL) {
		s_exec_t *e = self->qhead;
		self->qhead = e->next;
		s_fail_waiters(self, e, status, why);
		s_exec_free(e);
	}
	self->qtail = NULL;
	self->qlen = 0;
}

void
sbx_sandbox_destroy(sbx_sandbox_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	sbx_sandbox_t *self = *self_p;
	sbx_sandbox_kill(self, AHP__STATUS__ERR_UNAVAILABLE, "sandboxd is stopping");
	if (self->cg != NULL) {
		(void)s_remove_cgroup(self);
		sbx_cgroup_destroy(&self->cg);
	}
	sbx_execlog_close(&self->log);
	free(self->relays);
	free(self);
	*self_p = NULL;
}

const char *
sbx_sandbox_id(const sbx_sandbox_t *self)
{
	return self->id;
}

void
sbx_sandbox_retire(sbx_sandbox_t *self, bool discard)
{
	snprintf(self->id, sizeof(self->id), ".gone-%u", self->meta.slot);
	self->discard = discard;
}

bool
sbx_sandbox_discards(const sbx_sandbox_t *self)
{
	return self->discard || self->spare;
}

bool
sbx_sandbox_is_spare(const sbx_sandbox_t *self)
{
	return self->spare;
}

bool
sbx_sandbox_alive(const sbx_sandbox_t *self)
{
	return self->state != S_DEAD;
}

bool
sbx_sandbox_claiming(const sbx_sandbox_t *self)
{
	/* or a Create waits for it to start: building more now would only
	 * compete with it for the spawner and the CPUs */
	return self->state == S_CLAIMING ||
	       (self->n_create > 0 && (self->state == S_SPAWNING || self->state == S_STARTING));
}

bool
sbx_sandbox_ready(const sbx_sandbox_t *self)
{
	return self->state == S_READY || (self->spare && self->state == S_SPARE);
}

bool
sbx_sandbox_gone(const sbx_sandbox_t *self)
{
	return self->state == S_DEAD && self->init_pid == 0 && !self->spawn_pending &&
	       self->cg_gone;
}

pid_t
sbx_sandbox_init_pid(const sbx_sandbox_t *self)
{
	return self->init_pid;
}

const sbx_meta_t *
sbx_sandbox_meta(const sbx_sandbox_t *self)
{
	return &self->meta;
}

uint32_t
sbx_sandbox_slot(const sbx_sandbox_t *self)
{
	return self->meta.slot;
}

int
sbx_sandbox_ctl_fd(const sbx_sandbox_t *self)
{
	return self->ctl;
}

void
sbx_relay_budget_set(size_t n)
{
	s_relays_budget = n;
}

static bool
s_relay_room(const sbx_sandbox_t *self)
{
	const sbx_config_t *cfg = sbx_daemon_config(self->d);
	return (uint32_t)self->n_relays < cfg->relay_max_conns && s_relays_total < s_relays_budget;
}

int
sbx_sandbox_listener_fd(const sbx_sandbox_t *self)
{
	if (self->listener < 0 || !s_relay_room(self))
		return -1; /* at a cap: connections wait in the backlog */
	return self->listener;
}

int
sbx_sandbox_start(sbx_sandbox_t *self, char *err, size_t errlen)
{
	sbx_spawn_req_t req;
	memset(&req, 0, sizeof(req));
	req.type = SBX_ZY_SPAWN;
	req.slot = self->meta.slot;
	req.uid = (uint32_t)self->uid;
	req.lim = self->meta.lim;
	ahp_strlcpy(req.cgname, self->cgname, sizeof(req.cgname));
	if (sbx_daemon_zygote(self->d, &req) != 0) {
		snprintf(err, errlen, "cannot reach the zygote");
		self->state = S_DEAD;
		self->cg_gone = true;
		return -1;
	}
	self->state = S_SPAWNING;
	self->spawn_pending = true;
	return 0;
}

static int s_set_limits(sbx_sandbox_t *self);

/* The zygote answered: init exists (pid) and ctl is our end of its socket. */
void
sbx_sandbox_on_spawned(sbx_sandbox_t *self, const sbx_spawn_rep_t *rep, int ctl)
{
	self->spawn_pending = false;
	if (rep->pid > 0)
		self->init_pid = rep->pid;
	if (rep->pid > 0)
		self->cg = sbx_cgroup_open(self->cgname);
	/* the zygote made the log with the workspace */
	if (self->log == NULL && rep->err[0] == '\0')
		self->log = sbx_execlog_open(sbx_daemon_store(self->d), self->meta.slot, true);
	if (self->state != S_SPAWNING || ctl < 0 || rep->err[0] != '\0' || self->cg == NULL ||
	    self->log == NULL) {
		if (ctl >= 0)
			close(ctl);
		char why[256];
		snprintf(why, sizeof(why), "sandbox start failed: %s",
		         rep->err[0]         ? rep->err
		         : ctl < 0           ? "no control socket"
		         : self->cg == NULL  ? "cannot open its cgroup's counters"
		         : self->log == NULL ? "cannot open its exec log"
		                             : "it was destroyed while starting");
		if (self->spare && self->state == S_SPAWNING)
			sbx_daemon_pool_result(self->d, false);
		if (self->state != S_DEAD)
			log_error("sandbox %s: %s", self->id, why);
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, why);
		sbx_sandbox_reap_cgroup(self);
		return;
	}
	self->ctl = ctl;
	fcntl(ctl, F_SETFL, O_NONBLOCK);
	self->state = S_STARTING;
	if (self->need_limits) {
		self->need_limits = false;
		if (s_set_limits(self) != 0)
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL,
			                 "setting the claimed spare's limits failed");
	}
}

/* Tells init its network mode; READY comes back (with the proxy listener). */
static int
s_send_claim(sbx_sandbox_t *self)
{
	bool fresh = self->meta.created_ms == 0;
	if (fresh)
		self->meta.created_ms = ahp_now_ms();
	if (!self->meta.oneshot &&
	    sbx_store_meta_write(sbx_daemon_store(self->d), self->id, &self->meta, fresh) != 0)
		log_warn("sandbox %s: writing metadata: %s", self->id, strerror(errno));
	struct {
		sbx_ctl_hdr_t h;
		sbx_ctl_claim_t c;
	} m = {{SBX_CTL_CLAIM, sizeof(sbx_ctl_claim_t)}, {(uint32_t)self->meta.network}};
	if (send(self->ctl, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		return -1;
	self->state = S_CLAIMING;
	/* proxy mode: the header every relayed connection gets, known now so a
	 * command may follow the claim (s_takes_exec); 0 when it does not encode
	 * (READY then fails the run, as Create's check should have) */
	self->pp2_len = 0;
	if (self->meta.network == AHP__SBX__NETWORK_MODE__NET_PROXY) {
		ssize_t n =
		    ahp_proxyv2_encode(self->id, self->meta.profile, self->pp2, sizeof(self->pp2));
		self->pp2_len = n > 0 ? (size_t)n : 0;
	}
	return 0;
}

/* Whether the limits a → b change what the privileged parent set at spawn:
 * the cgroup's memory, pids and CPU bandwidth and the /proc/meminfo and
 * /proc/cpuinfo files (memory, CPUs). The rest (timeouts, rlimits, output
 * cap) is sent with each command; the disk size is fixed at spawn. */
static bool
s_parent_limits_differ(const sbx_limits_t *a, const sbx_limits_t *b)
{
	return a->memory_mb != b->memory_mb || a->pids_max != b->pids_max ||
	       a->cpus_milli != b->cpus_milli;
}

/* The run's limits on a claimed spare's cgroup and /proc files (root's). */
static int
s_set_limits(sbx_sandbox_t *self)
{
	sbx_spawn_req_t lr;
	memset(&lr, 0, sizeof(lr));
	lr.type = SBX_ZY_LIMITS;
	lr.slot = self->meta.slot;
	lr.lim = self->meta.lim;
	return sbx_daemon_call(self->d, &lr);
}

int
sbx_sandbox_start_stage(const sbx_sandbox_t *self)
{
	return self->state == S_STARTING ? 2 : self->state == S_SPAWNING ? 1 : 0;
}

int
sbx_sandbox_claim(sbx_sandbox_t *self, const char *id, const sbx_meta_t *meta, char *err,
                  size_t errlen)
{
	bool built = self->state == S_SPARE;
	if (!self->spare || (!built && self->state != S_STARTING && self->state != S_SPAWNING)) {
		snprintf(err, errlen, "not a spare");
		return -1;
	}
	/* a disk cannot change size under a running sandbox: a run that asks
	 * for another size gets a sandbox of its own (the spare stays) */
	if (meta->lim.disk_mb != self->meta.lim.disk_mb) {
		snprintf(err, errlen, "the spare's disk is %u MiB, the run asks for %u",
		         self->meta.lim.disk_mb, meta->lim.disk_mb);
		return -1;
	}
	/* The spare's cgroup and /proc files got its own limits at spawn (no
	 * command has run in it since): a run asking for the same ones needs no
	 * call to the privileged parent (~0.5 ms on the claim's path). */
	bool set = s_parent_limits_differ(&self->meta.lim, &meta->lim);
	ahp_strlcpy(self->id, id, sizeof(self->id));
	self->spare = false;
	uint32_t slot = self->meta.slot;
	self->meta = *meta;
	self->meta.slot = slot;
	self->meta.kept = false;
	memcpy(self->meta.cwd, "/workspace", sizeof("/workspace"));
	/* A spare still starting is a run's sandbox from now on: built, it is
	 * claimed like one (s_on_ready); not spawned yet, it gets its limits
	 * once its cgroup exists (sbx_sandbox_on_spawned). */
	if (self->state == S_SPAWNING) {
		self->need_limits = set;
		return 0;
	}
	if ((set && s_set_limits(self) != 0) || (built && s_send_claim(self) != 0)) {
		snprintf(err, errlen, "claiming a spare sandbox: %s", strerror(errno));
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, err);
		/* nothing of the run stays: no record, the slot is freed once gone */
		(void)sbx_store_meta_unlink(sbx_daemon_store(self->d), id);
		sbx_sandbox_retire(self, true);
		return -1;
	}
	return 0;
}

static void
s_reply_created(sbx_sandbox_t *self, ahp_rpc_req_t **req, bool existed)
{
	char ws[PATH_MAX];
	if (sbx_store_workspace_path(sbx_daemon_store(self->d), self->meta.slot, ws, sizeof(ws)) !=
	    0)
		ws[0] = '\0';
	sbx_reply_create(self->d, req, self->id, existed, ws);
}

void
sbx_sandbox_wait_ready(sbx_sandbox_t *self, ahp_rpc_req_t **req, bool existed)
{
	if (self->state == S_READY) {
		s_reply_created(self, req, existed);
		return;
	}
	if (self->state == S_DEAD || self->n_create >= SBX_WAITERS_MAX) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_UNAVAILABLE,
		                "sandbox is not starting");
		return;
	}
	self->create_waiters[self->n_create] = *req;
	self->create_existed[self->n_create] = existed;
	self->n_create++;
	*req = NULL;
}

/* ------------------------------------------------------------------ exec -- */

/* Whether init takes a command now. A claimed sandbox takes one right behind
 * its CLAIM, before READY comes back: init reads its orders in turn, so the
 * command starts after the claim is carried out (its network mode and
 * environment set), and a claim that fails (init sends FAIL and exits) fails
 * the command too, as it would have failed a command still queued. In proxy
 * mode only when READY cannot fail on the worker's side: the PROXY header of
 * the run's name encodes (s_send_claim made it). */
static bool
s_takes_exec(const sbx_sandbox_t *self)
{
	return self->state == S_READY ||
	       (self->state == S_CLAIMING &&
	        (self->meta.network != AHP__SBX__NETWORK_MODE__NET_PROXY || self->pp2_len > 0));
}

static void
s_dispatch(sbx_sandbox_t *self)
{
	if (!s_takes_exec(self) || self->cur != NULL || self->qhead == NULL)
		return;
	s_exec_t *e = self->qhead;
	self->qhead = e->next;
	if (self->qhead == NULL)
		self->qtail = NULL;
	self->qlen--;
	e->next = NULL;
	self->cur = e;

	/* a one-shot's command is asked for once, by a client that waits: no
	 * record to answer a later Fetch from (the sandbox goes with the reply) */
	if (!self->meta.oneshot && sbx_execlog_intent(self->log, e->exec_id) != 0) {
		/* EEXIST: raced with a record on disk; never run twice. */
		int st = errno == EEXIST ? AHP__STATUS__ERR_INTERRUPTED : AHP__STATUS__ERR_INTERNAL;
		log_error("sandbox %s: exec %s intent: %s", self->id, e->exec_id, strerror(errno));
		s_fail_waiters(self, e, st, "cannot record the exec");
		s_exec_free(e);
		self->cur = NULL;
		s_dispatch(self);
		return;
	}
	sbx_cgroup_counters(self->cg, &e->base);

	const sbx_limits_t *l = &self->meta.lim;
	sbx_ctl_exec_t o = {
	    .timeout_ms = (e->timeout_s ? e->timeout_s : l->timeout_s) * 1000u,
	    .cpu_seconds = l->cpu_seconds,
	    .output_cap = l->output_kb * 1024u,
	    .open_files = l->open_files,
	    .file_size = (uint64_t)l->file_size_mb << 20,
	    .cwd_len = (uint32_t)strlen(self->meta.cwd),
	    .cmd_len = (uint32_t)strlen(e->command),
	};
	sbx_ctl_hdr_t h = {SBX_CTL_EXEC, (uint32_t)(sizeof(o) + o.cwd_len + o.cmd_len)};
	struct iovec iov[4] = {
	    {&h, sizeof(h)}, {&o, sizeof(o)}, {self->meta.cwd, o.cwd_len}, {e->command, o.cmd_len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 4};
	if (sendmsg(self->ctl, &mh, MSG_NOSIGNAL) < 0) {
		log_error("sandbox %s: sending exec: %s", self->id, strerror(errno));
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERRUPTED,
		                 "sandbox control channel failed");
		return;
	}
	if (ahp_log_enabled(AHP_LOG_DEBUG))
		log_debug("sandbox %s: exec %s started", self->id, e->exec_id);
}

static s_exec_t *
s_find(sbx_sandbox_t *self, const char *exec_id)
{
	if (self->cur != NULL && strcmp(self->cur->exec_id, exec_id) == 0)
		return self->cur;
	for (s_exec_t *e = self->qhead; e != NULL; e = e->next)
		if (strcmp(e->exec_id, exec_id) == 0)
			return e;
	return NULL;
}

/* Answers from the records on disk. Returns true when answered. */
static bool
s_answer_stored(sbx_sandbox_t *self, ahp_rpc_req_t **req, const char *exec_id, bool fetch)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	/* A sandbox still being (re)started has no log open yet. A revived one
	 * answers from its log on disk; a fresh one has no records at all: the
	 * slot's log there is still its previous holder's until the zygote
	 * discards it (the worker reads it first). Answering from it gave a new
	 * run the previous run's output for a reused exec id, before the reply
	 * to its Create (a client waiting for that one hung). */
	int r = 0;
	if (self->log != NULL)
		r = sbx_execlog_lookup(self->log, exec_id, &buf, &len);
	else if (!self->fresh)
		r = sbx_store_exec_lookup(sbx_daemon_store(self->d), self->meta.slot, exec_id, &buf,
		                          &len);
	if (r == 2) {
		sbx_reply_exec_packed(self->d, req, buf, len);
		free(buf);
		return true;
	}
	if (r == 1) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_INTERRUPTED,
		                "the command's outcome was lost (sandboxd stopped while it ran); "
		                "it is not run again");
		return true;
	}
	if (r < 0) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_INTERNAL,
		                "cannot read exec records");
		return true;
	}
	if (fetch) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_NOT_FOUND, "no such exec id");
		return true;
	}
	return false;
}

static bool
s_attach(sbx_sandbox_t *self, ahp_rpc_req_t **req, const char *exec_id)
{
	s_exec_t *e = s_find(self, exec_id);
	if (e == NULL)
		return false;
	if (e->n_waiters >= SBX_WAITERS_MAX) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_LIMIT,
		                "too many waiters on this exec");
		return true;
	}
	e->waiters[e->n_waiters++] = *req;
	*req = NULL;
	return true;
}

void
sbx_sandbox_exec(sbx_sandbox_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__ExecRequest *er)
{
	if (s_attach(self, req, er->exec_id))
		return;
	if (s_answer_stored(self, req, er->exec_id, false))
		return;
	if (!sbx_sandbox_alive(self)) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_UNAVAILABLE, "sandbox is stopping");
		return;
	}
	if (self->qlen >= SBX_QUEUE_MAX) {
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_LIMIT, "too many queued execs");
		return;
	}
	s_exec_t *e = calloc(1, sizeof(*e));
	if (e == NULL || (e->command = strdup(er->command)) == NULL) {
		free(e);
		sbx_reply_error(self->d, req, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}
	ahp_strlcpy(e->exec_id, er->exec_id, sizeof(e->exec_id));
	e->timeout_s = er->timeout_s;
	e->waiters[0] = *req;
	e->n_waiters = 1;
	*req = NULL;
	if (self->qtail != NULL)
		self->qtail->next = e;
	else
		self->qhead = e;
	self->qtail = e;
	self->qlen++;
	s_dispatch(self);
}

void
sbx_sandbox_fetch(sbx_sandbox_t *self, ahp_rpc_req_t **req, const char *exec_id)
{
	if (s_attach(self, req, exec_id))
		return;
	s_answer_stored(self, req, exec_id, true);
}

/* Which limit ended the command, from init's report and the cgroup counters. */
static int
s_killed_by(const sbx_sandbox_t *self, const sbx_ctl_done_t *d, const sbx_cg_counters_t *before,
            const sbx_cg_counters_t *after)
{
	if (d->flags & SBX_DONE_TIMEOUT)
		return AHP__SBX__KILLED_BY__KILLED_TIMEOUT;
	if (after->oom_kills > before->oom_kills)
		return AHP__SBX__KILLED_BY__KILLED_MEMORY;
	int ws = d->wstatus;
	bool xcpu = (WIFSIGNALED(ws) && WTERMSIG(ws) == SIGXCPU) ||
	            (WIFEXITED(ws) && WEXITSTATUS(ws) == 128 + SIGXCPU);
	bool cpu_kill = WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL &&
	                d->cpu_us + 100000u >= (uint64_t)self->meta.lim.cpu_seconds * 1000000u;
	if (xcpu || cpu_kill)
		return AHP__SBX__KILLED_BY__KILLED_CPU;
	if (after->pids_denied > before->pids_denied)
		return AHP__SBX__KILLED_BY__KILLED_PIDS;
	return AHP__SBX__KILLED_BY__KILLED_NONE;
}

static void
s_on_done(sbx_sandbox_t *self, const uint8_t *p, size_t len)
{
	sbx_result_view_t v;
	const char *why = "protocol error from init";
	if (self->cur == NULL ||
	    sbx_init_parse_done(p, len, self->meta.lim.output_kb * 1024u, &v, &why) != 0) {
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, why);
		return;
	}
	sbx_ctl_done_t d = v.done;
	const uint8_t *out = v.out, *err = v.err;
	const char *cwd = v.cwd;
	s_exec_t *e = self->cur;
	self->cur = NULL;
	self->meta.execs++;
	if (d.cwd_len > 0 &&
	    (d.cwd_len != strlen(self->meta.cwd) || memcmp(cwd, self->meta.cwd, d.cwd_len) != 0)) {
		memcpy(self->meta.cwd, cwd, d.cwd_len);
		self->meta.cwd[d.cwd_len] = '\0';
		/* the cwd survives a sandboxd restart */
		if (!self->meta.oneshot && sbx_store_meta_write(sbx_daemon_store(self->d), self->id,
		                                                &self->meta, false) != 0)
			log_warn("sandbox %s: writing metadata: %s", self->id, strerror(errno));
	}
	sbx_cg_counters_t now;
	sbx_cgroup_counters(self->cg, &now);

	Ahp__Sbx__ExecResult r = AHP__SBX__EXEC_RESULT__INIT;
	r.exec_id = e->exec_id;
	if (WIFEXITED(d.wstatus))
		r.exit_code = WEXITSTATUS(d.wstatus);
	else if (WIFSIGNALED(d.wstatus))
		r.exit_code = 128 + WTERMSIG(d.wstatus);
	else
		r.exit_code = 128;
	r.stdout.data = (uint8_t *)out;
	r.stdout.len = d.out_len;
	r.stderr.data = (uint8_t *)err;
	r.stderr.len = d.err_len;
	r.truncated = (d.flags & SBX_DONE_TRUNCATED) != 0;
	/* The next command runs in meta.cwd whatever its bytes, but a proto
	 * string (and whoever shows it) gets valid UTF-8 only: a directory
	 * whose name is not UTF-8 is reported as "" (unknown), never raw and
	 * never as a sanitized name that no directory has. */
	const char *shown =
	    ahp_utf8_valid(self->meta.cwd, strlen(self->meta.cwd), 0) ? self->meta.cwd : "";
	r.cwd = (char *)shown;
	r.duration_ms = d.duration_ms;
	r.killed_by = s_killed_by(self, &d, &e->base, &now);

	size_t plen = ahp__sbx__exec_result__get_packed_size(&r);
	uint8_t *packed = malloc(plen ? plen : 1);
	if (packed == NULL) {
		s_fail_waiters(self, e, AHP__STATUS__ERR_INTERNAL, "out of memory");
	} else {
		ahp__sbx__exec_result__pack(&r, packed);
		if (!self->meta.oneshot &&
		    sbx_execlog_result(self->log, e->exec_id, packed, plen) != 0)
			log_error("sandbox %s: storing result of %s: %s", self->id, e->exec_id,
			          strerror(errno));
		for (int i = 0; i < e->n_waiters; i++)
			sbx_reply_exec_packed(self->d, &e->waiters[i], packed, plen);
		e->n_waiters = 0;
		free(packed);
	}
	if (r.killed_by != AHP__SBX__KILLED_BY__KILLED_NONE || ahp_log_enabled(AHP_LOG_DEBUG)) {
		static const char *const kb[] = {"none", "timeout", "memory", "pids", "cpu"};
		char ec[16], dur[16], so[16];
		snprintf(ec, sizeof(ec), "%d", r.exit_code);
		snprintf(dur, sizeof(dur), "%u", r.duration_ms);
		snprintf(so, sizeof(so), "%u", d.out_len);
		ahp_log_kv(r.killed_by ? AHP_LOG_INFO : AHP_LOG_DEBUG, self->id, e->exec_id,
		           "exec done", "exit", ec, "killed_by", kb[r.killed_by], "duration_ms",
		           dur, "stdout_bytes", so, "cwd", shown, NULL);
	}
	s_exec_free(e);
	s_dispatch(self);
}

static void
s_on_ready(sbx_sandbox_t *self, int fd)
{
	if (self->state == S_STARTING) {
		/* built: a spare waits in the pool, a run's sandbox is claimed now */
		if (fd >= 0)
			close(fd);
		if (self->spare) {
			self->state = S_SPARE;
			sbx_daemon_pool_result(self->d, true);
			return;
		}
		if (s_send_claim(self) != 0)
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL,
			                 "claiming the sandbox failed");
		else
			s_dispatch(self);
		return;
	}
	if (self->state != S_CLAIMING) {
		if (fd >= 0)
			close(fd);
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, "unexpected READY from init");
		return;
	}
	if (self->meta.network == AHP__SBX__NETWORK_MODE__NET_PROXY) {
		if (fd < 0) {
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, "init sent no listener");
			return;
		}
		/* Every relayed connection names its run and profile; one that
		 * cannot be named is not relayed at all (Create checks first). */
		ssize_t n =
		    ahp_proxyv2_encode(self->id, self->meta.profile, self->pp2, sizeof(self->pp2));
		if (n <= 0) {
			close(fd);
			sbx_sandbox_kill(self, AHP__STATUS__ERR_BAD_REQUEST, SBX_PROXY_NAME_ERROR);
			return;
		}
		self->pp2_len = (size_t)n;
		self->listener = fd;
		fcntl(fd, F_SETFL, O_NONBLOCK);
	} else if (fd >= 0) {
		close(fd);
	}
	self->state = S_READY;
	for (int i = 0; i < self->n_create; i++)
		s_reply_created(self, &self->create_waiters[i], self->create_existed[i]);
	self->n_create = 0;
	s_dispatch(self);
}

void
sbx_sandbox_on_ctl(sbx_sandbox_t *self)
{
	for (int turn = 0; turn < 8 && self->ctl >= 0; turn++) {
		int fd;
		ssize_t n = sbx_recv_fd(self->ctl, s_rx, SBX_CTL_MSG_MAX + 64, MSG_DONTWAIT, &fd);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == EMSGSIZE) {
				sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL,
				                 "bad message from init");
				return;
			}
			n = 0;
		}
		if (n == 0) {
			/* init is gone; SIGCHLD tells how */
			if (self->state != S_DEAD)
				sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERRUPTED,
				                 "the sandbox's init exited");
			return;
		}
		sbx_ctl_hdr_t h;
		if ((size_t)n < sizeof(h)) {
			if (fd >= 0)
				close(fd);
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, "bad message from init");
			return;
		}
		memcpy(&h, s_rx, sizeof(h));
		if (h.len != (size_t)n - sizeof(h)) {
			if (fd >= 0)
				close(fd);
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, "bad message from init");
			return;
		}
		switch (h.type) {
		case SBX_CTL_READY:
			s_on_ready(self, fd);
			fd = -1;
			break;
		case SBX_CTL_FAIL: {
			char why[300];
			snprintf(why, sizeof(why), "sandbox setup failed: %.*s",
			         (int)(h.len > 256 ? 256 : h.len), (const char *)s_rx + sizeof(h));
			log_error("sandbox %s: %s", self->id, why);
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL, why);
			break;
		}
		case SBX_CTL_DONE:
			s_on_done(self, s_rx + sizeof(h), h.len);
			break;
		default:
			sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERNAL,
			                 "unknown message from init");
		}
		if (fd >= 0)
			close(fd);
	}
}

void
sbx_sandbox_on_init_exit(sbx_sandbox_t *self, int status)
{
	self->init_pid = 0;
	if (self->state != S_DEAD) {
		char why[96];
		if (WIFSIGNALED(status))
			snprintf(why, sizeof(why), "the sandbox's init was killed by signal %d",
			         WTERMSIG(status));
		else
			snprintf(why, sizeof(why), "the sandbox's init exited with %d",
			         WEXITSTATUS(status));
		log_warn("sandbox %s: %s", self->id, why);
		sbx_sandbox_kill(self, AHP__STATUS__ERR_INTERRUPTED, why);
	}
	sbx_sandbox_reap_cgroup(self);
}

int
sbx_sandbox_reap_cgroup(sbx_sandbox_t *self)
{
	if (self->cg_gone)
		return 1;
	if (self->init_pid > 0 || self->spawn_pending)
		return 0;
	if (s_remove_cgroup(self) == 0 || errno != EBUSY) {
		sbx_cgroup_destroy(&self->cg);
		self->cg_gone = true;
		return 1;
	}
	return 0;
}

void
sbx_sandbox_on_accept(sbx_sandbox_t *self)
{
	const sbx_config_t *cfg = sbx_daemon_config(self->d);
	for (int i = 0; i < 16 && self->listener >= 0; i++) {
		if (!s_relay_room(self))
			return;
		int c = accept4(self->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0)
			return;
		sbx_relay_t *r = sbx_relay_new(c, cfg->proxy_socket, self->pp2, self->pp2_len);
		if (r == NULL)
			continue; /* proxy absent: the client's connection is reset */
		self->relays[self->n_relays++] = r;
		s_relays_total++;
	}
}

int
sbx_sandbox_relays(sbx_sandbox_t *self, sbx_relay_t ***relays)
{
	*relays = self->relays;
	return self->n_relays;
}

void
sbx_sandbox_relay_done(sbx_sandbox_t *self, int i)
{
	if (i < 0 || i >= self->n_relays)
		return;
	sbx_relay_destroy(&self->relays[i]);
	self->relays[i] = self->relays[self->n_relays - 1];
	self->relays[self->n_relays - 1] = NULL;
	self->n_relays--;
	s_relays_total--;
}

void
sbx_sandbox_info(const sbx_sandbox_t *self, Ahp__Sbx__SandboxInfo *info)
{
	info->sandbox_id = (char *)self->id;
	info->profile = (char *)self->meta.profile;
	info->network = self->meta.network;
	info->created_ms = self->meta.created_ms;
	info->execs = self->meta.execs;
	info->busy = self->cur != NULL;
}
