/* Per-sandbox cgroups: memory and pids limits, their kill counters, and killing a whole tree
 * through the freezer (cgroup v2, v1 fallback). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

/* v1 hierarchies; the freezer is optional (killing falls back to signalling
 * the task list again and again) and never holds limits. */
/* S_CPU is looked up like the freezer, but sandboxd refuses to start without
 * it: every profile has a sandbox.cpus (default 1), and a limit the platform
 * accepts but cannot enforce must fail closed, not be ignored. */
enum { S_MEM = 0, S_PIDS = 1, S_FRZ = 2, S_CPU = 3, S_NCTL = 4 };
#define S_FREEZE_WAIT_MS 200 /* how long a freeze may take before we kill anyway */

/* Instance directories: v1 has one per controller hierarchy, v2 one. */
static int s_version; /* 0 = not set up, 1, 2 */
static char s_inst[S_NCTL][PATH_MAX];
static bool s_has_cpu; /* the cpu controller is there: sandbox.cpus is enforced */

struct sbx_cgroup {
	char dir[S_NCTL][PATH_MAX]; /* v2: only [0] */
	int oom_fd;                 /* memory.oom_control (v1) / memory.events (v2) */
	int pids_fd;                /* pids.events */
};

static int
s_write(const char *dir, const char *file, const char *val)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", dir, file) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = strlen(val);
	ssize_t n = write(fd, val, len);
	int e = errno;
	close(fd);
	errno = e;
	return n == (ssize_t)len ? 0 : -1;
}

/* The own-cgroup path of a controller from /proc/self/cgroup ("" for v2's "0::"). */
static int
s_own_path(const char *ctrl, char *out, size_t len)
{
	char *buf = NULL;
	size_t n;
	if (ahp_read_file("/proc/self/cgroup", 65536, &buf, &n) != 0)
		return -1;
	int rc = -1;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		*c2 = '\0';
		const char *ctrls = c1 + 1;
		bool match = false;
		if (ctrl == NULL) {
			match = strcmp(line, "0") == 0 && *ctrls == '\0';
		} else {
			char tmp[256];
			snprintf(tmp, sizeof(tmp), "%s", ctrls);
			char *s2 = NULL;
			for (char *t = strtok_r(tmp, ",", &s2); t; t = strtok_r(NULL, ",", &s2))
				if (strcmp(t, ctrl) == 0)
					match = true;
		}
		if (match) {
			rc = ahp_strlcpy(out, c2 + 1, len);
			break;
		}
	}
	free(buf);
	return rc;
}

/* Mount point of a v1 controller hierarchy (or the v2 mount when ctrl is NULL),
 * and the hierarchy path mounted there. */
static int
s_mount_of(const char *ctrl, char *mnt, size_t mlen, char *root, size_t rlen)
{
	char *buf = NULL;
	size_t n;
	if (ahp_read_file("/proc/self/mountinfo", 1 << 20, &buf, &n) != 0)
		return -1;
	int rc = -1;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line != NULL && rc != 0;
	     line = strtok_r(NULL, "\n", &save)) {
		/* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
		char *f[6];
		char *s3 = NULL, *p = line;
		int i = 0;
		for (; i < 5; i++) {
			f[i] = strtok_r(p, " ", &s3);
			p = NULL;
			if (f[i] == NULL)
				break;
		}
		if (i < 5)
			continue;
		char *dash = strstr(s3 ? s3 : "", " - ");
		if (dash == NULL)
			continue;
		char *rest = dash + 3, *s4 = NULL;
		char *fstype = strtok_r(rest, " ", &s4);
		(void)strtok_r(NULL, " ", &s4);
		char *super = strtok_r(NULL, " ", &s4);
		if (fstype == NULL)
			continue;
		bool match = false;
		if (ctrl == NULL) {
			match = strcmp(fstype, "cgroup2") == 0;
		} else if (strcmp(fstype, "cgroup") == 0 && super != NULL) {
			char *s5 = NULL;
			for (char *t = strtok_r(super, ",", &s5); t; t = strtok_r(NULL, ",", &s5))
				if (strcmp(t, ctrl) == 0)
					match = true;
		}
		if (match && ahp_strlcpy(mnt, f[4], mlen) == 0 &&
		    ahp_strlcpy(root, f[3], rlen) == 0)
			rc = 0;
	}
	free(buf);
	return rc;
}

/* Directory of our own cgroup in a hierarchy. */
static int
s_own_dir(const char *ctrl, char *out, size_t len)
{
	char mnt[PATH_MAX], root[PATH_MAX], own[PATH_MAX];
	if (s_mount_of(ctrl, mnt, sizeof(mnt), root, sizeof(root)) != 0)
		return -1;
	if (s_own_path(ctrl, own, sizeof(own)) != 0)
		return -1;
	/* own is relative to the hierarchy root; the mount shows `root` of it */
	const char *rel = own;
	size_t rl = strlen(root);
	if (strcmp(root, "/") != 0) {
		if (strncmp(own, root, rl) != 0)
			return -1;
		rel = own + rl;
	}
	if (strcmp(rel, "/") == 0)
		rel = "";
	if (snprintf(out, len, "%s%s", mnt, rel) >= (int)len)
		return -1;
	struct stat st;
	return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* SIGKILLs every task listed in dir's cgroup.procs. Returns how many it signalled. */
static int
s_signal_tasks(const char *dir)
{
	char p[PATH_MAX];
	char *buf = NULL;
	size_t n;
	snprintf(p, sizeof(p), "%s/cgroup.procs", dir);
	if (ahp_read_file(p, 1 << 20, &buf, &n) != 0)
		return 0;
	int k = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
		long pid;
		if (ahp_parse_long(t, 2, 1L << 30, &pid) == 0 && kill((pid_t)pid, SIGKILL) == 0)
			k++;
	}
	free(buf);
	return k;
}

/* True once the freezer state file in dir reads `want` (v1 freezer.state
 * "FROZEN", v2 cgroup.events "frozen 1"), waiting up to S_FREEZE_WAIT_MS.
 * A sandbox between commands (init asleep in poll) freezes within tens of
 * microseconds: the state is read again after 20 us, doubling up to 1 ms
 * (a fixed 1 ms sleep held every kill, and the spawns queued behind it on
 * the privileged parent, for a millisecond). */
static bool
s_wait_frozen(const char *dir, const char *file, const char *want)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	int64_t deadline = ahp_mono_ms() + S_FREEZE_WAIT_MS;
	useconds_t pause = 20;
	for (;;) {
		char *buf = NULL;
		size_t n;
		if (ahp_read_file(p, 4096, &buf, &n) != 0)
			return false;
		bool done = strstr(buf, want) != NULL;
		free(buf);
		if (done)
			return true;
		if (ahp_mono_ms() >= deadline)
			return false;
		usleep(pause);
		pause = pause < 500 ? pause * 2 : 1000;
	}
}

/*
 * Kills every task of a cgroup so that none can fork past the kill: v2's
 * cgroup.kill when the kernel has it (one atomic kill of the whole subtree);
 * else freeze, SIGKILL each task (a frozen task cannot fork, so the list is
 * complete), thaw (the kills are delivered). dirs: the hierarchies' dirs of
 * the cgroup (v1: [S_FRZ] is the freezer's, "" when there is none). Without
 * a freezer the tasks are signalled until a pass finds none (bounded).
 */
static void
s_kill_tree(char dirs[S_NCTL][PATH_MAX])
{
	if (s_version == 2) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s/cgroup.kill", dirs[0]);
		if (access(p, F_OK) == 0 && s_write(dirs[0], "cgroup.kill", "1") == 0)
			return;
		if (s_write(dirs[0], "cgroup.freeze", "1") == 0) {
			(void)s_wait_frozen(dirs[0], "cgroup.events", "frozen 1");
			(void)s_signal_tasks(dirs[0]);
			(void)s_write(dirs[0], "cgroup.freeze", "0");
			return;
		}
	} else if (dirs[S_FRZ][0] != '\0' && s_write(dirs[S_FRZ], "freezer.state", "FROZEN") == 0) {
		(void)s_wait_frozen(dirs[S_FRZ], "freezer.state", "FROZEN");
		(void)s_signal_tasks(dirs[S_FRZ]);
		(void)s_write(dirs[S_FRZ], "freezer.state", "THAWED");
		return;
	}
	for (int pass = 0; pass < 16 && s_signal_tasks(dirs[0]) > 0; pass++)
		;
}

/* One directory of a leftover cgroup: its tasks killed (no freezer: signalled). */
static void
s_kill_tasks(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/cgroup.kill", dir);
	if (access(p, F_OK) == 0 && s_write(dir, "cgroup.kill", "1") == 0)
		return;
	(void)s_signal_tasks(dir);
}

/* Removes leftover sandbox cgroups of an earlier run found in hierarchy
 * `idx` (their trees are killed through the freezer first; s_version set). */
static void
s_clean_instance(int idx)
{
	DIR *d = opendir(s_inst[idx]);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || e->d_type != DT_DIR)
			continue;
		char dirs[S_NCTL][PATH_MAX];
		bool ok = true;
		for (int i = 0; i < S_NCTL; i++) {
			dirs[i][0] = '\0';
			if (s_inst[i][0] != '\0' && (s_version == 1 || i == 0) &&
			    snprintf(dirs[i], PATH_MAX, "%s/%s", s_inst[i], e->d_name) >= PATH_MAX)
				ok = false;
		}
		if (!ok)
			continue;
		s_kill_tree(dirs);
		const char *p = dirs[idx];
		for (int i = 0; i < 50 && rmdir(p) != 0 && errno == EBUSY; i++) {
			s_kill_tasks(p);
			usleep(10000);
		}
		log_info("removed leftover cgroup %s", p);
	}
	closedir(d);
}

void
sbx_cgroup_kill_all(void)
{
	int nctl = s_version == 1 ? S_NCTL : s_version == 2 ? 1 : 0;
	for (int i = nctl - 1; i >= 0; i--)
		if (s_inst[i][0] != '\0')
			s_clean_instance(i);
}

static bool
s_v2_has(const char *dir, const char *file, const char *word)
{
	char p[PATH_MAX], *buf = NULL;
	size_t n;
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	if (ahp_read_file(p, 65536, &buf, &n) != 0)
		return false;
	bool found = false;
	char *save = NULL;
	for (char *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
		if (strcmp(t, word) == 0)
			found = true;
	free(buf);
	return found;
}

/*
 * v1: an empty cgroup of the instance's freezer hierarchy (".frozen", which
 * s_clean_instance skips) kept FROZEN while sandboxd runs. The kernel
 * counts frozen freezer cgroups in a static key: the first freeze and the
 * last thaw patch the kernel's code on every CPU (text_poke and IPIs),
 * about 0.2 ms of CPU per sandbox killed through the freezer. With this
 * one always frozen, a sandbox's freeze and thaw only count. It holds no
 * task: nothing is ever frozen by it. up: made and frozen; else thawed and
 * removed.
 */
static void
s_anchor(bool up)
{
	char p[PATH_MAX];
	if (s_inst[S_FRZ][0] == '\0' ||
	    snprintf(p, sizeof(p), "%s/.frozen", s_inst[S_FRZ]) >= (int)sizeof(p))
		return;
	if (!up) {
		(void)s_write(p, "freezer.state", "THAWED");
		(void)rmdir(p);
		return;
	}
	if ((mkdir(p, 0755) != 0 && errno != EEXIST) || s_write(p, "freezer.state", "FROZEN") != 0)
		log_warn("cgroup %s: %s (kills through the freezer cost more)", p, strerror(errno));
}

static int
s_setup_v2(const char *instance)
{
	char own[PATH_MAX];
	if (s_own_dir(NULL, own, sizeof(own)) != 0)
		return -1;
	if (!s_v2_has(own, "cgroup.controllers", "memory") ||
	    !s_v2_has(own, "cgroup.controllers", "pids"))
		return -1;
	/* Controllers can be delegated only from a cgroup without processes
	 * (v2's no-internal-process rule): move sandboxd into a leaf first. */
	s_has_cpu = s_v2_has(own, "cgroup.controllers", "cpu");
	const char *ctrls = s_has_cpu ? "+memory +pids +cpu" : "+memory +pids";
	if (s_write(own, "cgroup.subtree_control", ctrls) != 0) {
		if (errno != EBUSY)
			return -1;
		char leaf[PATH_MAX];
		if (snprintf(leaf, sizeof(leaf), "%s/ahp-sandboxd-daemon", own) >=
		    (int)sizeof(leaf))
			return -1;
		if (mkdir(leaf, 0755) != 0 && errno != EEXIST)
			return -1;
		char pid[32];
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		if (s_write(leaf, "cgroup.procs", pid) != 0 ||
		    s_write(own, "cgroup.subtree_control", ctrls) != 0)
			return -1;
	}
	if (snprintf(s_inst[0], sizeof(s_inst[0]), "%s/ahp-sandboxd-%s", own, instance) >=
	    (int)sizeof(s_inst[0]))
		return -1;
	if (mkdir(s_inst[0], 0755) != 0 && errno != EEXIST)
		return -1;
	if (s_write(s_inst[0], "cgroup.subtree_control", ctrls) != 0)
		return -1;
	s_version = 2;
	s_clean_instance(0);
	return 0;
}

static int
s_setup_v1(const char *instance)
{
	const char *ctrl[S_NCTL] = {"memory", "pids", "freezer", "cpu"};
	for (int i = 0; i < S_NCTL; i++) {
		char own[PATH_MAX];
		s_inst[i][0] = '\0';
		if (s_own_dir(ctrl[i], own, sizeof(own)) != 0) {
			if (i == S_FRZ) {
				log_warn("cgroup v1 without a freezer hierarchy: a forking tree is "
				         "killed by signalling its tasks until none is left");
				continue;
			}
			if (i == S_CPU)
				continue;
			return -1;
		}
		if (snprintf(s_inst[i], sizeof(s_inst[i]), "%s/ahp-sandboxd-%s", own, instance) >=
		    (int)sizeof(s_inst[i]))
			return -1;
		if (mkdir(s_inst[i], 0755) != 0 && errno != EEXIST)
			return -1;
	}
	s_version = 1;
	/* the freezer's first: there a leftover tree is frozen and killed */
	for (int i = S_NCTL - 1; i >= 0; i--)
		if (s_inst[i][0] != '\0')
			s_clean_instance(i);
	s_anchor(true);
	/* Children must count toward parents' limits (the default on new kernels). */
	(void)s_write(s_inst[S_MEM], "memory.use_hierarchy", "1");
	s_has_cpu = s_inst[S_CPU][0] != '\0';
	return 0;
}

int
sbx_cgroup_setup(const char *instance)
{
	char mnt[PATH_MAX], root[PATH_MAX];
	bool v2 = s_mount_of(NULL, mnt, sizeof(mnt), root, sizeof(root)) == 0;
	if ((v2 && s_setup_v2(instance) == 0) || s_setup_v1(instance) == 0) {
		if (s_has_cpu)
			return 0;
		log_error("no cgroup cpu controller (v2: not delegated, v1: no cpu hierarchy): "
		          "sandbox.cpus could not be enforced");
		sbx_cgroup_teardown();
		s_version = 0;
		return -1;
	}
	log_error("no usable cgroup hierarchy with the memory and pids controllers "
	          "(v2 with delegation, or v1 memory+pids mounts)");
	return -1;
}

void
sbx_cgroup_teardown(void)
{
	s_anchor(false);
	/* empty by now; left in place (EBUSY) if anything still runs in it */
	int nctl = s_version == 1 ? S_NCTL : s_version == 2 ? 1 : 0;
	for (int i = 0; i < nctl; i++)
		if (s_inst[i][0] != '\0')
			(void)rmdir(s_inst[i]);
}

const char *
sbx_cgroup_mode(void)
{
	return s_version == 2 ? "v2" : s_version == 1 ? "v1" : "none";
}

/* Directories of cgroup `name` (v2: only [0]). 0 / -1. */
static int
s_dirs(const char *name, char dirs[S_NCTL][PATH_MAX])
{
	int nctl = s_version == 1 ? S_NCTL : 1;
	for (int i = 0; i < S_NCTL; i++)
		dirs[i][0] = '\0';
	if (s_version == 0) {
		errno = ENODEV;
		return -1;
	}
	for (int i = 0; i < nctl; i++)
		if (s_inst[i][0] != '\0' &&
		    snprintf(dirs[i], PATH_MAX, "%s/%s", s_inst[i], name) >= PATH_MAX) {
			errno = ENAMETOOLONG;
			return -1;
		}
	return 0;
}

/* CPU bandwidth: cpus_milli thousandths of a CPU per 100 ms period (v1
 * cpu.cfs_period_us + cpu.cfs_quota_us, v2 cpu.max "quota period"). The
 * quota is for the whole cgroup: 2 busy loops under cpus 0.5 share half a
 * CPU. 0 / -1 (errno). */
static int
s_write_cpu(const char *dir, uint32_t cpus_milli)
{
	char quota[32];
	if (cpus_milli == 0)
		cpus_milli = AHP_LIM_CPUS_MILLI_DEF;
	/* 100000 us * milli / 1000; at least the kernel's 1 ms minimum */
	snprintf(quota, sizeof(quota), "%u", cpus_milli * 100u < 1000u ? 1000u : cpus_milli * 100u);
	if (s_version == 2) {
		char max[48];
		snprintf(max, sizeof(max), "%s 100000", quota);
		return s_write(dir, "cpu.max", max);
	}
	/* a quota is checked against the period: set the period first */
	if (s_write(dir, "cpu.cfs_period_us", "100000") != 0)
		return -1;
	return s_write(dir, "cpu.cfs_quota_us", quota);
}

static int
s_write_limits(char dirs[S_NCTL][PATH_MAX], const sbx_limits_t *lim)
{
	char mem[32], pids[32];
	snprintf(mem, sizeof(mem), "%llu", (unsigned long long)lim->memory_mb << 20);
	/* +1: init itself is a task of the cgroup */
	snprintf(pids, sizeof(pids), "%u", lim->pids_max + 1);
	const char *piddir = s_version == 1 ? dirs[S_PIDS] : dirs[0];
	if (s_version == 1) {
		/* memsw must stay >= the limit: when raising, memsw goes first */
		if (s_write(dirs[0], "memory.limit_in_bytes", mem) != 0) {
			(void)s_write(dirs[0], "memory.memsw.limit_in_bytes", mem);
			if (s_write(dirs[0], "memory.limit_in_bytes", mem) != 0)
				return -1;
		}
		/* No swap on top of the limit, when swap accounting exists. */
		(void)s_write(dirs[0], "memory.memsw.limit_in_bytes", mem);
	} else {
		if (s_write(dirs[0], "memory.max", mem) != 0)
			return -1;
		(void)s_write(dirs[0], "memory.swap.max", "0");
	}
	if (s_has_cpu && s_write_cpu(s_version == 1 ? dirs[S_CPU] : dirs[0], lim->cpus_milli) != 0)
		return -1;
	return s_write(piddir, "pids.max", pids);
}

/* v1: the task list of each hierarchy, open for writing (by root: the kernel
 * checks the opener's credentials), for init to join by writing "0" (itself,
 * one thread). Moving another process takes the global threadgroup lock,
 * whose writer side waits for an RCU grace period (5-15 ms here, on the
 * spawner's serial path); moving oneself as a single thread does not. */
static int
s_open_joins(char dirs[S_NCTL][PATH_MAX], int fds[SBX_CG_JOIN_MAX])
{
	int n = 0;
	for (int i = 0; i < S_NCTL && n < SBX_CG_JOIN_MAX; i++) {
		if (dirs[i][0] == '\0')
			continue;
		int dfd = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int fd = dfd >= 0 ? openat(dfd, "tasks", O_WRONLY | O_CLOEXEC) : -1;
		if (dfd >= 0) {
			int e = errno;
			close(dfd);
			errno = e;
		}
		if (fd < 0) {
			int e = errno;
			for (int k = 0; k < n; k++)
				close(fds[k]);
			errno = e;
			return -1;
		}
		fds[n++] = fd;
	}
	return n;
}

int
sbx_cgroup_create(const char *name, const sbx_limits_t *lim, pid_t pid, int joins[SBX_CG_JOIN_MAX])
{
	char dirs[S_NCTL][PATH_MAX];
	if (s_dirs(name, dirs) != 0)
		return -1;
	int nctl = s_version == 1 ? S_NCTL : 1;
	for (int i = 0; i < nctl; i++) {
		if (dirs[i][0] == '\0')
			continue;
		if (mkdir(dirs[i], 0755) == 0)
			continue;
		if (errno == ENOENT && mkdir(s_inst[i], 0755) == 0 && mkdir(dirs[i], 0755) == 0)
			continue; /* the instance dir was removed under us: made again */
		if (errno != EEXIST)
			return -1;
		/* left by a sandbox that died with an earlier sandboxd */
		s_kill_tree(dirs);
		s_kill_tasks(dirs[i]);
		for (int k = 0; k < 50 && rmdir(dirs[i]) != 0 && errno == EBUSY; k++)
			usleep(2000);
		if (mkdir(dirs[i], 0755) != 0)
			return -1;
	}
	if (s_write_limits(dirs, lim) != 0)
		return -1;
	if (pid == 0)
		return s_version == 1 ? s_open_joins(dirs, joins) : (errno = ENOTSUP, -1);
	char v[32];
	snprintf(v, sizeof(v), "%d", (int)pid);
	for (int i = 0; i < nctl; i++)
		if (dirs[i][0] != '\0' && s_write(dirs[i], "cgroup.procs", v) != 0)
			return -1;
	return 0;
}

sbx_cgroup_t *
sbx_cgroup_open(const char *name)
{
	sbx_cgroup_t *self = calloc(1, sizeof(*self));
	if (self == NULL)
		return NULL;
	self->oom_fd = self->pids_fd = -1;
	char p[PATH_MAX + 32];
	if (s_dirs(name, self->dir) != 0)
		goto fail;
	snprintf(p, sizeof(p), "%s/%s", self->dir[0],
	         s_version == 1 ? "memory.oom_control" : "memory.events");
	self->oom_fd = open(p, O_RDONLY | O_CLOEXEC);
	snprintf(p, sizeof(p), "%s/pids.events", s_version == 1 ? self->dir[S_PIDS] : self->dir[0]);
	self->pids_fd = open(p, O_RDONLY | O_CLOEXEC);
	if (self->oom_fd < 0 || self->pids_fd < 0)
		goto fail;
	return self;
fail:
	log_error("cgroup %s: %s", name, strerror(errno));
	sbx_cgroup_destroy(&self);
	return NULL;
}

int
sbx_cgroup_set_limits(const char *name, const sbx_limits_t *lim)
{
	char dirs[S_NCTL][PATH_MAX];
	if (s_dirs(name, dirs) != 0)
		return -1;
	return s_write_limits(dirs, lim);
}

/* Value after `key ` in a flat keyed file. */
static uint64_t
s_counter(int fd, const char *key)
{
	char buf[1024];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	size_t kl = strlen(key);
	for (char *l = buf; l != NULL && *l != '\0';) {
		if (strncmp(l, key, kl) == 0 && l[kl] == ' ')
			return strtoull(l + kl + 1, NULL, 10);
		l = strchr(l, '\n');
		if (l != NULL)
			l++;
	}
	return 0;
}

int
sbx_cgroup_counters(sbx_cgroup_t *self, sbx_cg_counters_t *out)
{
	out->oom_kills = s_counter(self->oom_fd, "oom_kill");
	out->pids_denied = s_counter(self->pids_fd, "max");
	return 0;
}

int
sbx_cgroup_remove(const char *name)
{
	char dirs[S_NCTL][PATH_MAX];
	if (s_dirs(name, dirs) != 0)
		return -1;
	int nctl = s_version == 1 ? S_NCTL : 1;
	bool busy = false;
	for (int i = 0; i < nctl; i++) {
		if (dirs[i][0] == '\0' || rmdir(dirs[i]) == 0 || errno == ENOENT) {
			dirs[i][0] = '\0';
			continue;
		}
		if (errno != EBUSY) {
			log_warn("rmdir %s: %s", dirs[i], strerror(errno));
			dirs[i][0] = '\0';
			continue;
		}
		busy = true;
	}
	if (!busy)
		return 0;
	/* tasks left: kill the tree (frozen first), the rest goes next time */
	s_kill_tree(dirs);
	errno = EBUSY;
	return -1;
}

void
sbx_cgroup_destroy(sbx_cgroup_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	sbx_cgroup_t *self = *self_p;
	if (self->oom_fd >= 0)
		close(self->oom_fd);
	if (self->pids_fd >= 0)
		close(self->pids_fd);
	free(self);
	*self_p = NULL;
}
