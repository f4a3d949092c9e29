/* The privileged parent: root, single-threaded for life; forks the unprivileged worker and spawns,
 * kills and reaps every sandbox's init for it. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "ahp/log.h"
#include "ahp/priv.h"
#include "ahp/util.h"
#include "sbx.h"

/*
 * Privilege separation, OpenBSD style. The process started as root stays
 * root and never creates a thread (no ZeroMQ, no library that might): it is
 * the spawner. Creating namespaces (a network namespace above all) and
 * moving a process into a cgroup (the v1 write lock waits for an RCU grace
 * period) take milliseconds of kernel time, and so does every directory
 * operation on a slow disk: all of that happens here, off the worker's event
 * loop. inits are cloned from this process without exec, so they must come
 * from a single-threaded one (no lock held by another thread, no stack of
 * another thread shared); they are its children: it reaps them and reports
 * each exit to the worker after its SPAWNED answer, so the worker never sees
 * a pid it does not know. Their parent-death signal follows this process.
 *
 * The worker is forked first thing after setup, before anything could make
 * a thread, and drops to `user`: it decodes RPC, keeps the exec store,
 * relays egress and asks for everything else with the fixed-size messages
 * of sbx.h, which are validated here (known type, slot < uid_count, limits
 * in the limits table; uid and cgroup name derived from the slot). A worker
 * that dies is replaced after the sandboxes it ran are killed and their
 * cgroups removed (their workspaces and records stay for the new worker);
 * more than S_RESTARTS_MAX deaths in S_RESTART_WINDOW_MS stop sandboxd.
 */

#define S_RESTARTS_MAX 5
#define S_RESTART_WINDOW_MS 60000

#define S_INIT_STACK (256 * 1024)
#define S_DELETERS_MAX 4
#define S_DISCARDERS_MAX 8
#define S_RMTREE_DEPTH 256

#ifdef MFD_NOEXEC_SEAL
#define S_MFD_NOEXEC MFD_NOEXEC_SEAL
#else
#define S_MFD_NOEXEC 0x0008U /* linux/memfd.h, Linux 6.3 */
#endif

static sbx_config_t s_cfg;
static sbx_plan_t *s_plan;
static struct sock_fprog s_filter_prog;
static const struct sock_fprog *s_filter = &s_filter_prog;
static sbx_store_t *s_store;
static uint8_t *s_stack;
/* The lean init (sbx.h SBX_INIT_EXE): the program, O_PATH, and the sealed data every init maps;
 * -1 when it is not there (init is then the clone itself, sbx_init_main). */
static int s_init_exe = -1;
static int s_init_data = -1;
static uid_t s_wuid; /* the worker's user */
static gid_t s_wgid;
static pid_t s_worker;
static pid_t s_parent;                /* our pid (the worker checks it is still its parent) */
static int s_async = -1, s_call = -1; /* our ends of the worker's sockets */
static int s_lock_fd = -1;            /* state_dir/sandboxd.lock, write-locked while we live */
static struct s_init {
	pid_t pid;
	uint32_t slot;
} * s_inits; /* live inits: at most one per uid slot (uid_count entries) */
static int s_n_inits;
static pid_t s_deleters[S_DELETERS_MAX];
static char s_deleting[S_DELETERS_MAX][64];
static struct s_discarder {
	pid_t pid; /* 0: free; s_helper.pid: the helper's */
	uint32_t slot;
	uid_t uid;
} s_discarders[S_DISCARDERS_MAX]; /* slots whose disk a child is discarding */
/* The discard helper: a child forked once, before the worker, that discards
 * the slots it is sent one after the other (s_helper_main). A child forked
 * per discard cost a fork, an exit and the copy-on-write faults of both
 * processes, ~0.7 ms of CPU per sandbox on the path of the next spare's
 * build. When it already has S_HELPER_QUEUE discards, or is gone, a child
 * is forked for the discard as before (a discard may wait up to 5 s for
 * its old ext4 instance: the others do not queue behind it). */
#define S_HELPER_QUEUE 4
static struct {
	pid_t pid; /* 0: none */
	int fd;    /* our end: s_helper_msg_t each way */
	int queued;
} s_helper = {0, -1, 0};
typedef struct {
	uint32_t slot;
	uint32_t uid;
} s_helper_msg_t;
static pid_t s_preparer;      /* the child making the next disk image (sbx_disk_prepare) */
static pid_t s_self;          /* our pid (children check it is still their parent) */
static uint32_t s_prepare_mb; /* the disk size of the last spawn: what to prepare */
/* What each slot's cgroup and /proc files were last set to (by its spawn or
 * a LIMITS call), so that a claim with the same limits (a spare made with
 * the profile's own values) writes nothing: 5 cgroup files and 2 files of
 * the disk on the one-shot's path. `set` is cleared whenever the cgroup may
 * be gone or was made again (a spawn sets it afresh). */
static struct s_lim_set {
	uint32_t memory_mb, pids_max, cpus_milli;
	bool set;
} * s_lims; /* uid_count entries */

static void
s_lims_note(uint32_t slot, const sbx_limits_t *lim)
{
	if (s_lims == NULL || slot >= s_cfg.uid_count)
		return;
	s_lims[slot] = (struct s_lim_set){lim->memory_mb, lim->pids_max, lim->cpus_milli, true};
}

static bool
s_lims_same(uint32_t slot, const sbx_limits_t *lim)
{
	return s_lims != NULL && slot < s_cfg.uid_count && s_lims[slot].set &&
	       s_lims[slot].memory_mb == lim->memory_mb && s_lims[slot].pids_max == lim->pids_max &&
	       s_lims[slot].cpus_milli == lim->cpus_milli;
}

static void
s_lims_forget(uint32_t slot)
{
	if (s_lims != NULL && slot < s_cfg.uid_count)
		s_lims[slot].set = false;
}

/* sbx.h. A second `serve` on the same state_dir used to get as far as its
 * worker (whose check is the RPC socket) after it had restored, cleaned and
 * then, stopping, unmounted the first one's disks and left disks/.stopped
 * beside them while the first went on mounting new ones (the mark says no
 * disk needs checking after a crash). A record lock, not flock: it belongs
 * to this process only, so no child (worker, helpers) holds it after this
 * process is gone, and the kernel drops it when the process dies however it
 * dies; children close their copy of the descriptor (s_child_drop_lock). */
int
sbx_priv_lock(const char *state_dir, char *err, size_t errlen)
{
	if (s_lock_fd >= 0)
		return 0;
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/sandboxd.lock", state_dir) >= (int)sizeof(path)) {
		snprintf(err, errlen, "state_dir %.400s: path too long", state_dir);
		return -1;
	}
	if (ahp_mkdirs(state_dir, 0700) != 0) {
		snprintf(err, errlen, "state_dir %.400s: %s", state_dir, strerror(errno));
		return -1;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%.450s: %s", path, strerror(errno));
		return -1;
	}
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	if (fcntl(fd, F_SETLK, &fl) != 0) {
		int e = errno;
		struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		bool known = (e == EAGAIN || e == EACCES) && fcntl(fd, F_GETLK, &who) == 0 &&
		             who.l_type != F_UNLCK;
		if (known)
			snprintf(err, errlen,
			         "another sandboxd (pid %ld) uses state_dir %.400s: one state_dir "
			         "serves one sandboxd",
			         (long)who.l_pid, state_dir);
		else
			snprintf(err, errlen, "locking %.450s: %s", path, strerror(e));
		close(fd);
		return -1;
	}
	s_lock_fd = fd;
	return 0;
}

/* In a child of this process that does not exec: the lock is this process's
 * (a record lock), the child has no business with its file. */
static void
s_child_drop_lock(void)
{
	if (s_lock_fd >= 0)
		close(s_lock_fd);
	s_lock_fd = -1;
}

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
	/* execs/ is the worker's: what is there may be a link it planted. A
	 * file is handed over only when it is a plain one of root's (made just
	 * now) with no other name. */
	int lfd = open(log, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	struct stat lst;
	if (lfd >= 0 && fstat(lfd, &lst) == 0 &&
	    (!S_ISREG(lst.st_mode) || lst.st_nlink != 1 ||
	     (lst.st_uid != 0 && lst.st_uid != s_wuid))) {
		close(lfd);
		lfd = -1;
		errno = EPERM;
	}
	if (lfd < 0 || fstat(lfd, &lst) != 0 ||
	    ((lst.st_uid != s_wuid || lst.st_gid != s_wgid) && fchown(lfd, s_wuid, s_wgid) != 0)) {
		snprintf(err, errlen, "exec log s%u: %s", slot, strerror(errno));
		if (lfd >= 0)
			close(lfd);
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
	s_child_drop_lock();
	int tfd = open(sbx_store_dir(s_store, "trash"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fd = tfd >= 0 ? openat(tfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (fd < 0)
		_exit(1);
	pid_t g = fork();
	if (g == 0) {
		/* It walks a tree the sandbox made, as the sandbox's uid: it keeps
		 * nothing of this process's (the worker's sockets, the helper's)
		 * but the tree and stderr. */
		if ((fd > 3 && syscall(SYS_close_range, 3u, (unsigned)fd - 1, 0u) != 0) ||
		    syscall(SYS_close_range, (unsigned)fd + 1, ~0u, 0u) != 0)
			_exit(2);
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

static bool
s_deleting_any(void)
{
	for (int k = 0; k < S_DELETERS_MAX; k++)
		if (s_deleters[k] != 0)
			return true;
	return false;
}

/* A slot's workspace goes to the trash, its exec log away. recycle: the
 * disk image is emptied for a later disk (may wait: a child only). */
static void
s_discard_now(uint32_t slot, uid_t uid, bool recycle)
{
	/* the disk first: its lazy unmount leaves an empty mount point, and
	 * the image goes with it (disk.c) */
	(void)sbx_disk_discard(s_store, slot, recycle);
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

/* Tells the worker the slot's disk, workspace and log are gone: the slot
 * may be used again. */
static void
s_discarded(uint32_t slot)
{
	sbx_spawn_rep_t rep;
	memset(&rep, 0, sizeof(rep));
	rep.type = SBX_ZY_DISCARDED;
	rep.slot = slot;
	if (s_async >= 0)
		(void)send(s_async, &rep, sizeof(rep), MSG_NOSIGNAL);
}

/* A discard of the helper's is over (its answer for slot came, or it died:
 * then the slot is discarded here, without keeping the image). */
static void
s_helper_done(uint32_t slot, bool lost)
{
	for (int k = 0; k < S_DISCARDERS_MAX; k++) {
		if (s_helper.pid == 0 || s_discarders[k].pid != s_helper.pid ||
		    s_discarders[k].slot != slot)
			continue;
		if (lost)
			s_discard_now(slot, s_discarders[k].uid, false);
		s_discarders[k].pid = 0;
		s_helper.queued--;
		s_discarded(slot);
		return;
	}
}

/* The helper is gone (it died, or we stop): what it had not done is done here. */
static void
s_helper_gone(void)
{
	if (s_helper.pid == 0)
		return;
	for (int k = 0; k < S_DISCARDERS_MAX; k++)
		if (s_discarders[k].pid == s_helper.pid)
			s_helper_done(s_discarders[k].slot, true);
	if (s_helper.fd >= 0)
		close(s_helper.fd);
	s_helper.fd = -1;
	s_helper.pid = 0;
	s_helper.queued = 0;
}

/* Reads the helper's answers: all that are there (block: at least one).
 * false when the helper is gone (its socket closed). */
static bool
s_helper_read(bool block)
{
	for (;;) {
		s_helper_msg_t m;
		ssize_t r = recv(s_helper.fd, &m, sizeof(m), block ? 0 : MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return true;
		if (r != (ssize_t)sizeof(m))
			return false; /* gone: reaped and finished in s_reap */
		s_helper_done(m.slot, false);
		block = false;
	}
}

/* Waits for the child discarding slot's disk (any slot: UINT32_MAX). A
 * spawn on the slot must not find the previous disk mounted; a stop or a
 * new worker must find every discard done. */
static void
s_discard_wait(uint32_t slot)
{
	for (int k = 0; k < S_DISCARDERS_MAX; k++) {
		if (s_discarders[k].pid == 0 ||
		    (slot != UINT32_MAX && s_discarders[k].slot != slot))
			continue;
		if (s_helper.pid != 0 && s_discarders[k].pid == s_helper.pid) {
			/* answers come in order: read until this one's. Until the
			 * helper is gone: then s_helper_gone has finished this one
			 * here and both pids are 0 (compared, they would match for
			 * ever: a waitpid(0) loop, and a stop that never ended). */
			pid_t hp = s_helper.pid;
			while (s_helper.pid == hp && s_discarders[k].pid == hp)
				if (!s_helper_read(true)) {
					int st = 0;
					while (waitpid(hp, &st, 0) < 0 && errno == EINTR)
						;
					log_warn(
					    "the discard helper died (status %#x): discards fork "
					    "again",
					    st);
					s_helper_gone();
				}
			continue;
		}
		int st;
		while (waitpid(s_discarders[k].pid, &st, 0) < 0 && errno == EINTR)
			;
		s_discarders[k].pid = 0;
		s_discarded(s_discarders[k].slot);
	}
}

/* Discards a slot off the spawner's path: unmounting the disk (the ext4
 * teardown, the loop device's release) and unlinking its fallocated image
 * (freeing its extents) take 5-40 ms of kernel time. A child does it; the
 * worker gets DISCARDED when it is reaped and only then uses the slot again
 * (and a SPAWN for it waits: s_discard_wait). Done here when no child can. */
static void
s_discard(uint32_t slot, uid_t uid)
{
	int k = 0;
	while (k < S_DISCARDERS_MAX && s_discarders[k].pid != 0)
		k++;
	if (k < S_DISCARDERS_MAX && s_helper.pid != 0 && s_helper.queued < S_HELPER_QUEUE) {
		s_helper_msg_t m = {slot, uid};
		if (send(s_helper.fd, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT) ==
		    (ssize_t)sizeof(m)) {
			s_discarders[k] = (struct s_discarder){s_helper.pid, slot, uid};
			s_helper.queued++;
			return;
		}
	}
	pid_t pid = k < S_DISCARDERS_MAX ? fork() : -1;
	if (pid == 0) {
		s_child_drop_lock();
		/* never outlives this process: a new sandboxd must not find an
		 * image being emptied (disk.c s_recycle) */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != s_self)
			_exit(1);
		s_discard_now(slot, uid, true);
		_exit(0);
	}
	if (pid < 0) {
		s_discard_now(slot, uid, false);
		s_discarded(slot);
		return;
	}
	s_discarders[k] = (struct s_discarder){pid, slot, uid};
}

/* The helper's loop: discards each slot it is sent (recycling its image, as
 * a discarder child does) and answers with it. Exits when sandboxd closes
 * its end, dies with it. */
static void __attribute__((noreturn)) s_helper_main(int fd)
{
	prctl(PR_SET_NAME, "sandboxd-disk", 0, 0, 0); /* the discard helper (15 chars at most) */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != s_self)
		_exit(1);
	for (;;) {
		s_helper_msg_t m;
		ssize_t r = recv(fd, &m, sizeof(m), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(m) || m.slot >= s_cfg.uid_count)
			_exit(0);
		s_discard_now(m.slot, m.uid, true);
		if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
			_exit(0);
	}
}

/* Forks the discard helper (before the worker: nothing of the worker's in
 * it). Without one, every discard forks a child. */
static void
s_start_helper(int sigfd)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		close(sigfd);
		s_child_drop_lock();
		s_helper_main(sv[1]);
	}
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return;
	}
	s_helper.pid = pid;
	s_helper.fd = sv[0];
	s_helper.queued = 0;
}

/* The next spawn's disk image is made ahead by a child (fallocate and the
 * template copy: a millisecond or two the spawn no longer waits for). */
static void
s_prepare_disk(uint32_t mb)
{
	s_prepare_mb = mb;
	/* A discarded disk emptied for reuse is usually there, or one is being
	 * emptied (asked again when its discarder is reaped): no fork then. A
	 * preparer racing the discarders made a new image each time and left
	 * them no free ready name: they deleted theirs. */
	if (s_preparer != 0 || sbx_disk_ready(s_store, mb))
		return;
	for (int k = 0; k < S_DISCARDERS_MAX; k++)
		if (s_discarders[k].pid != 0)
			return;
	pid_t pid = fork();
	if (pid == 0) {
		s_child_drop_lock();
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != s_self)
			_exit(1);
		_exit(sbx_disk_prepare(s_store, mb) == 0 ? 0 : 1);
	}
	if (pid > 0)
		s_preparer = pid;
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
/* The live init of a slot (index in s_inits), or -1. */
static int
s_init_of(uint32_t slot)
{
	for (int i = 0; i < s_n_inits; i++)
		if (s_inits[i].slot == slot)
			return i;
	return -1;
}

/* The pre-exec half of a lean init: a clone(CLONE_VM|CLONE_VFORK) on s_stack, so it copies
 * none of our address space and we wait only until its execve. System calls only, as in a
 * vfork child. */
typedef struct {
	int src[2 + SBX_CG_JOIN_MAX]; /* ctl, data, joins: to fds 3, 4, 5.. */
	int n_src;
	volatile int err;
	const char *volatile step;
} s_lean_t;

static int
s_lean_child(void *arg)
{
	s_lean_t *l = arg;
	int hi[2 + SBX_CG_JOIN_MAX], exe;
	/* Above every target first (a source may sit on one), then into place
	 * without close-on-exec; everything else is closed by the execve. */
	l->step = "dup";
	for (int i = 0; i < l->n_src; i++)
		if ((hi[i] = fcntl(l->src[i], F_DUPFD_CLOEXEC, 16)) < 0)
			goto fail;
	if ((exe = fcntl(s_init_exe, F_DUPFD_CLOEXEC, 16)) < 0)
		goto fail;
	for (int i = 0; i < l->n_src; i++)
		if (dup3(hi[i], SBX_INIT_FD_CTL + i, 0) < 0)
			goto fail;
	l->step = "close_range";
	if (syscall(SYS_close_range, (unsigned)(SBX_INIT_FD_CTL + l->n_src), ~0u,
	            CLOSE_RANGE_CLOEXEC) != 0)
		goto fail;
	/* Our capabilities in the new user namespace would not survive the
	 * execve: uid 0 is not mapped in it (only the agent's uid is, and not
	 * yet), so the kernel does not treat the program as root's. Ambient
	 * capabilities carry them over, for a program without file
	 * capabilities; init clears them (s_drop_privileges) before any
	 * command runs. */
	l->step = "capabilities";
	struct __user_cap_header_struct ch = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct cd[2];
	if (syscall(SYS_capget, &ch, cd) != 0)
		goto fail;
	for (int i = 0; i < 2; i++)
		cd[i].inheritable = cd[i].permitted;
	if (syscall(SYS_capset, &ch, cd) != 0)
		goto fail;
	for (int c = 0; c < 64; c++)
		if (cd[c / 32].permitted & (1u << (c % 32)))
			if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0 &&
			    errno != EINVAL)
				goto fail;
	l->step = "execve " SBX_INIT_EXE;
	static char *const argv[] = {SBX_INIT_EXE, NULL};
	static char *const envp[] = {NULL};
	syscall(SYS_execveat, exe, "", argv, envp, AT_EMPTY_PATH);
fail:
	l->err = errno != 0 ? errno : EINVAL;
	_exit(127); /* this process only: it shares our memory, not our thread group */
}

/* Finds the lean init beside our own program and writes what every init reads into a sealed
 * memfd. Without either, init stays the clone (logged once). */
static void
s_lean_setup(void)
{
	char self[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash == NULL)
		return;
	*slash = '\0';
	snprintf(path, sizeof(path), "%s/%s", self, SBX_INIT_EXE);
	int fd = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		log_info("privsep: no %s (%s): each init is a clone of this process", path,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	/* root runs it with every capability of a sandbox: only root may change it */
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
		log_warn("privsep: %s is not a regular file of ours, unwritable by others: not "
		         "used, each init is a clone of this process",
		         path);
		close(fd);
		return;
	}
	sbx_init_data_t h = {.magic = SBX_INIT_MAGIC};
	h.plan_off = (uint32_t)((sizeof(h) + 7) & ~(size_t)7);
	h.plan_len = (uint32_t)(offsetof(sbx_plan_t, m) + (size_t)s_plan->n * sizeof(sbx_mnt_t));
	h.filter_off = (uint32_t)((h.plan_off + h.plan_len + 7) & ~(uint32_t)7);
	h.filter_n = s_filter_prog.len;
	h.size = h.filter_off + h.filter_n * (uint32_t)sizeof(struct sock_filter);
	/* never executable (where vm.memfd_noexec asks for it, a memfd without
	 * this flag is refused); a kernel before 6.3 does not know the flag */
	int m = memfd_create("sandboxd-init-data", MFD_CLOEXEC | MFD_ALLOW_SEALING | S_MFD_NOEXEC);
	if (m < 0 && errno == EINVAL)
		m = memfd_create("sandboxd-init-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m < 0 || ftruncate(m, h.size) != 0 ||
	    pwrite(m, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    pwrite(m, s_plan, h.plan_len, h.plan_off) != (ssize_t)h.plan_len ||
	    pwrite(m, s_filter_prog.filter, h.filter_n * sizeof(struct sock_filter),
	           h.filter_off) != (ssize_t)(h.filter_n * sizeof(struct sock_filter)) ||
	    fcntl(m, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
		log_warn("privsep: init data memfd: %s; each init is a clone of this process",
		         strerror(errno));
		if (m >= 0)
			close(m);
		close(fd);
		return;
	}
	s_init_exe = fd;
	s_init_data = m;
	log_debug("privsep: inits run %s", path);
}

static void
s_spawn(const sbx_spawn_req_t *req, sbx_spawn_rep_t *rep, int *ctl)
{
	static sbx_init_args_t args;
	int sv[2] = {-1, -1};
	*ctl = -1;
	if (s_init_of(req->slot) >= 0) {
		snprintf(rep->err, sizeof(rep->err), "uid slot %u still has an init", req->slot);
		return;
	}
	if ((uint32_t)s_n_inits >= s_cfg.uid_count) {
		snprintf(rep->err, sizeof(rep->err), "too many inits");
		return;
	}
	s_discard_wait(req->slot); /* the worker waits for DISCARDED: only after a restart */
	s_lims_forget(req->slot);
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
	args.env_none = sbx_env_none;
	args.env_proxy = sbx_env_proxy;
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
	/* v1: the cgroup is made now and init joins it itself, first thing
	 * (sbx_cgroup_create); v2: it is moved in after the clone */
	args.n_joins = sbx_cgroup_create(req->cgname, &req->lim, 0, args.joins);
	if (args.n_joins < 0 && errno != ENOTSUP) {
		snprintf(rep->err, sizeof(rep->err), "cgroup: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return;
	}

	/* The cgroup namespace is made by init once it is in its cgroups. Our
	 * child: we reap it and tell the worker. */
	int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
	            CLONE_NEWUTS | SIGCHLD;
	pid_t pid = -1;
	int clone_errno = 0;
	if (s_init_exe >= 0) {
		/* The lean init: its start message first (queued, so init
		 * reads it without waiting), then a clone that shares our
		 * memory until it execs sandboxd-init. */
		static sbx_init_spawn_t sp;
		static s_lean_t lean;
		memset(&sp, 0, sizeof(sp));
		sp.magic = SBX_INIT_MAGIC;
		sp.n_joins = args.n_joins > 0 ? args.n_joins : 0;
		memcpy(sp.workspace, args.workspace, sizeof(sp.workspace));
		memcpy(sp.root_dir, args.root_dir, sizeof(sp.root_dir));
		memset(&lean, 0, sizeof(lean));
		lean.src[0] = sv[1];
		lean.src[1] = s_init_data;
		for (int i = 0; i < sp.n_joins; i++)
			lean.src[2 + i] = args.joins[i];
		lean.n_src = 2 + sp.n_joins;
		if (send(sv[0], &sp, sizeof(sp), MSG_NOSIGNAL) != (ssize_t)sizeof(sp)) {
			clone_errno = errno;
		} else {
			pid = clone(s_lean_child, s_stack + S_INIT_STACK,
			            flags | CLONE_VM | CLONE_VFORK, &lean);
			clone_errno = errno;
			if (pid > 0 && lean.err != 0) {
				/* It exited before its execve (reaped here: the
				 * worker never hears of this pid). What fails
				 * here fails every time (a noexec mount, a
				 * policy): init is the clone from now on, this
				 * one included, without the queued message. */
				(void)waitpid(pid, NULL, 0);
				/* Only what fails every time switches for good; a
				 * transient error (ENOMEM, EAGAIN, EMFILE, EINTR)
				 * fails this spawn alone. */
				bool lasting = lean.err == EACCES || lean.err == EPERM ||
				               lean.err == ENOENT || lean.err == ENOEXEC ||
				               lean.err == ENOSYS || lean.err == EINVAL;
				log_error("privsep: starting %s: %s: %s%s", SBX_INIT_EXE, lean.step,
				          strerror(lean.err),
				          lasting
				              ? "; each init is a clone of this process from now on"
				              : "");
				clone_errno = lean.err;
				pid = -1;
				if (lasting) {
					close(s_init_exe);
					close(s_init_data);
					s_init_exe = s_init_data = -1;
					(void)recv(sv[1], &sp, 0, MSG_DONTWAIT | MSG_TRUNC);
				}
			}
		}
	}
	if (s_init_exe < 0) {
		pid = clone(sbx_init_main, s_stack + S_INIT_STACK, flags, &args);
		clone_errno = errno;
	}
	close(sv[1]);
	for (int i = 0; i < args.n_joins; i++)
		close(args.joins[i]);
	if (pid < 0) {
		snprintf(rep->err, sizeof(rep->err), "clone: %s", strerror(clone_errno));
		close(sv[0]);
		return;
	}
	rep->pid = pid;
	s_inits[s_n_inits].pid = pid;
	s_inits[s_n_inits].slot = req->slot;
	s_n_inits++;
	char map[64];
	snprintf(map, sizeof(map), "%d %u 1\n", SBX_INSIDE_UID, req->uid);
	if (s_write_proc(pid, "setgroups", "deny") != 0 || s_write_proc(pid, "uid_map", map) != 0 ||
	    s_write_proc(pid, "gid_map", map) != 0) {
		snprintf(rep->err, sizeof(rep->err), "uid/gid map: %s", strerror(errno));
		goto fail;
	}
	/* init's OOM score is left at 0. Root writing oom_score_adj (it was
	 * -999) also sets the process's oom_score_adj_min, which every command
	 * inherits: a command could lower its own score back to it and make the
	 * host's OOM killer take a daemon instead. init is tiny, so the OOM
	 * killer picks the command that holds the memory anyway. */
	if (args.n_joins < 0 && sbx_cgroup_create(req->cgname, &req->lim, pid, NULL) != 0) {
		snprintf(rep->err, sizeof(rep->err), "cgroup: %s", strerror(errno));
		goto fail;
	}
	sbx_ctl_hdr_t go = {SBX_CTL_GO, 0};
	if (send(sv[0], &go, sizeof(go), MSG_NOSIGNAL) != (ssize_t)sizeof(go)) {
		snprintf(rep->err, sizeof(rep->err), "start: %s", strerror(errno));
		goto fail;
	}
	/* the cgroup (sbx_cgroup_create) and the /proc files (sbx_disk_attach)
	 * hold req->lim now */
	s_lims_note(req->slot, &req->lim);
	*ctl = sv[0];
	return;
fail:
	/* the pid namespace dies with its init (s_kill_slot); reaped here, the
	 * worker hears of it after the answer */
	kill(pid, SIGKILL);
	close(sv[0]);
}

/* ----------------------------------------------------------- messages -- */

/* The worker's request, checked: a known type and a slot in range; what the
 * parent acts on (uid, cgroup name) is derived from the slot here. 0 / -1. */
static int
s_valid(sbx_spawn_req_t *req, bool call)
{
	bool is_call =
	    req->type == SBX_ZY_LIMITS || req->type == SBX_ZY_RMCG || req->type == SBX_ZY_CA;
	bool is_async = req->type == SBX_ZY_SPAWN || req->type == SBX_ZY_DISCARD ||
	                req->type == SBX_ZY_SWEEP || req->type == SBX_ZY_KILL;
	if (call ? !is_call : !is_async)
		return -1;
	if (req->slot >= s_cfg.uid_count)
		return -1;
	req->uid = s_cfg.uid_base + req->slot;
	snprintf(req->cgname, sizeof(req->cgname), "s%u", req->slot);
	if (req->type == SBX_ZY_SPAWN || req->type == SBX_ZY_LIMITS) {
		/* the limits table's ranges, as a Create request is checked */
		Ahp__Sbx__Limits l = AHP__SBX__LIMITS__INIT;
		l.memory_mb = req->lim.memory_mb;
		l.pids_max = req->lim.pids_max;
		l.cpu_seconds = req->lim.cpu_seconds;
		l.timeout_s = req->lim.timeout_s;
		l.output_kb = req->lim.output_kb;
		l.file_size_mb = req->lim.file_size_mb;
		l.open_files = req->lim.open_files;
		l.disk_mb = req->lim.disk_mb;
		l.cpus_milli = req->lim.cpus_milli;
		sbx_limits_t chk;
		char err[160];
		if (sbx_request_limits(&l, &chk, err, sizeof(err)) != 0 ||
		    memcmp(&chk, &req->lim, sizeof(chk)) != 0)
			return -1;
	}
	return 0;
}

/*
 * Kills the slot's whole sandbox. With its init known (our child, so its
 * pid cannot be reused before we reap it): SIGKILL to init, the pid
 * namespace's reaper. Every process of the sandbox is in that namespace
 * (setns and unshare are refused inside), and as init exits the kernel
 * stops the namespace from allocating pids, then kills every process in it
 * (zap_pid_ns_processes; a fork under way is cancelled): one atomic kill
 * that a tree forking up to pids_max cannot race, as the freezer's. Unlike
 * the freezer, nothing is left frozen if this process dies in the middle
 * (a cgroup v1 tree frozen, then never thawed, stayed in the refrigerator
 * with its SIGKILL pending until the next start). No init known: it was
 * reaped already (it died on its own, and the worker's KILL came after), and
 * its namespace, every task of the slot, went with it; a task still in the
 * cgroup would keep it from being removed (RMCG), which kills what is left.
 */
static void
s_kill_slot(uint32_t slot)
{
	int i = s_init_of(slot);
	if (i >= 0)
		kill(s_inits[i].pid, SIGKILL);
}

static void
s_on_async(void)
{
	for (int turn = 0; turn < 16 && s_async >= 0; turn++) {
		sbx_spawn_req_t req;
		ssize_t r = recv(s_async, &req, sizeof(req), MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r <= 0) {
			close(s_async); /* the worker is gone: reaped below */
			s_async = -1;
			return;
		}
		if (r != (ssize_t)sizeof(req) || s_valid(&req, false) != 0) {
			log_warn("privsep: refused a malformed request from the worker");
			continue;
		}
		switch (req.type) {
		case SBX_ZY_DISCARD:
			if (s_init_of(req.slot) >= 0) {
				log_warn("privsep: discard of slot %u refused: its init lives",
				         req.slot);
				s_discarded(req.slot);
				break;
			}
			s_discard(req.slot, req.uid);
			break;
		case SBX_ZY_SWEEP:
			s_sweep();
			break;
		case SBX_ZY_KILL:
			s_kill_slot(req.slot);
			break;
		case SBX_ZY_SPAWN: {
			sbx_spawn_rep_t rep;
			memset(&rep, 0, sizeof(rep));
			rep.type = SBX_ZY_SPAWNED;
			rep.slot = req.slot;
			int ctl = -1;
			s_spawn(&req, &rep, &ctl);
			if (sbx_send_fd(s_async, &rep, sizeof(rep), ctl) != 0 && rep.pid > 0)
				s_kill_slot(req.slot);
			if (ctl >= 0)
				close(ctl);
			if (rep.err[0] == '\0')
				s_prepare_disk(req.lim.disk_mb); /* after the answer went out */
			break;
		}
		default:
			break;
		}
	}
}

static void
s_on_call(void)
{
	sbx_spawn_req_t req;
	ssize_t r = recv(s_call, &req, sizeof(req), MSG_DONTWAIT);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		close(s_call);
		s_call = -1;
		return;
	}
	sbx_call_rep_t rep = {r == (ssize_t)sizeof(req) ? req.type : 0,
	                      r == (ssize_t)sizeof(req) ? req.slot : 0, -1, EINVAL};
	if (r == (ssize_t)sizeof(req) && s_valid(&req, true) == 0) {
		int rc = -1;
		if (req.type == SBX_ZY_LIMITS && s_lims_same(req.slot, &req.lim)) {
			rc = 0; /* a claim with the limits the spare was made with */
		} else if (req.type ==
		           SBX_ZY_LIMITS) { /* a claim: the cgroup and the /proc files */
			s_lims_forget(req.slot);
			rc = sbx_cgroup_set_limits(req.cgname, &req.lim) != 0
			         ? -1
			         : sbx_disk_proc_files(s_store, req.slot, &req.lim);
			if (rc == 0)
				s_lims_note(req.slot, &req.lim);
		} else if (req.type == SBX_ZY_RMCG) {
			s_lims_forget(req.slot);
			rc = s_init_of(req.slot) >= 0 ? (errno = EBUSY, -1)
			                              : sbx_cgroup_remove(req.cgname);
		} else if (req.type == SBX_ZY_CA) {
			rc = sbx_ca_refresh(&s_cfg, s_store) < 0 ? (errno = EIO, -1) : 0;
		}
		rep.rc = rc == 0 ? 0 : -1;
		rep.err = rc == 0 ? 0 : errno;
	} else {
		log_warn("privsep: refused a malformed call from the worker");
	}
	(void)send(s_call, &rep, sizeof(rep), MSG_NOSIGNAL);
}

/* ------------------------------------------------------------ children -- */

/* Reaps every finished child: inits (reported to the worker), deleters, the
 * worker. Returns the worker's wait status when it was reaped, else -1. */
static int
s_reap(bool *sweep)
{
	int worker_status = -1;
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p <= 0)
			return worker_status;
		if (p == s_worker) {
			s_worker = 0;
			worker_status = st;
			continue;
		}
		bool found = p == s_preparer;
		if (found)
			s_preparer = 0;
		if (!found && s_helper.pid != 0 && p == s_helper.pid) {
			log_warn("the discard helper died (status %#x): discards fork again", st);
			s_helper_gone();
			*sweep = true;
			found = true;
		}
		for (int k = 0; !found && k < S_DISCARDERS_MAX; k++)
			if (s_discarders[k].pid == p) {
				s_discarders[k].pid = 0;
				s_discarded(s_discarders[k].slot);
				*sweep = true; /* the workspace went to the trash */
				found = true;
				if (s_prepare_mb != 0)
					s_prepare_disk(s_prepare_mb); /* when it kept no image */
			}
		for (int k = 0; !found && k < S_DELETERS_MAX; k++)
			if (s_deleters[k] == p) {
				s_deleters[k] = 0;
				s_deleting[k][0] = '\0';
				*sweep = true;
				found = true;
			}
		for (int i = 0; !found && i < s_n_inits; i++) {
			if (s_inits[i].pid != p)
				continue;
			sbx_spawn_rep_t rep;
			memset(&rep, 0, sizeof(rep));
			rep.type = SBX_ZY_EXITED;
			rep.slot = s_inits[i].slot;
			rep.pid = p;
			rep.status = st;
			if (s_async >= 0)
				(void)send(s_async, &rep, sizeof(rep), MSG_NOSIGNAL);
			s_inits[i] = s_inits[--s_n_inits];
			found = true;
		}
	}
}

/* The worker is gone: no sandbox may outlive it unseen. Kills every init
 * and its tree, reaps them and removes their cgroups (workspaces and records
 * stay: a new worker revives the sandboxes from them). */
static void
s_kill_all(void)
{
	for (int i = 0; i < s_n_inits; i++)
		s_kill_slot(s_inits[i].slot);
	for (int i = 0; i < s_n_inits; i++) {
		int st;
		(void)waitpid(s_inits[i].pid, &st, 0);
	}
	s_n_inits = 0;
	/* every sandbox cgroup, also those of inits reaped before the worker
	 * could remove them */
	sbx_cgroup_kill_all();
	if (s_lims != NULL)
		memset(s_lims, 0, s_cfg.uid_count * sizeof(*s_lims));
}

/* ------------------------------------------------------------ the worker -- */

static void
s_mark(void *arg, const char *id, const sbx_meta_t *meta)
{
	(void)id;
	uint8_t *used = arg;
	if (meta->slot < s_cfg.uid_count)
		used[meta->slot / 8] |= (uint8_t)(1u << (meta->slot % 8));
}

static bool
s_used(void *arg, uint32_t slot)
{
	const uint8_t *used = arg;
	return slot < s_cfg.uid_count && (used[slot / 8] & (1u << (slot % 8)));
}

static void
s_discard_orphan(void *arg, uint32_t slot)
{
	(void)arg;
	/* slots come from file names in dirs the worker writes (execs/) */
	if (slot >= s_cfg.uid_count)
		return;
	s_discard_now(slot, s_cfg.uid_base + slot, false);
}

/* What a crash or an interrupted Destroy left behind: workspaces and logs
 * no record claims (destroyed sandboxes, pool spares) go to the trash, then
 * the trash is emptied. Runs before each worker starts. */
static void
s_clean_orphans(void)
{
	s_discard_wait(UINT32_MAX); /* none half done under a new worker */
	uint8_t *used = calloc(s_cfg.uid_count / 8 + 1, 1);
	if (used == NULL)
		return;
	sbx_store_meta_each(s_store, s_mark, used);
	sbx_store_orphans(s_store, s_used, s_discard_orphan, used);
	free(used);
	s_sweep();
}

static void __attribute__((noreturn)) s_worker_main(int async, int call)
{
	prctl(PR_SET_NAME, "sandboxd-worker", 0, 0, 0);
	char err[512];
	/* As root still: bind the RPC socket (run/ is root's), then hand it over. */
	sbx_daemon_t *d = sbx_daemon_new(&s_cfg, async, call, err, sizeof(err));
	if (d == NULL) {
		log_error("worker: %s", err);
		_exit(3);
	}
	if (strncmp(s_cfg.endpoint, "ipc://", 6) == 0 &&
	    lchown(s_cfg.endpoint + 6, s_wuid, s_wgid) != 0)
		log_warn("worker: chown %s: %s", s_cfg.endpoint + 6, strerror(errno));
	if (strcmp(s_cfg.user, "root") != 0)
		(void)ahp_priv_drop(s_cfg.user, NULL, AHP_PRIV_NOT_DUMPABLE);
	/* after the drop (a credential change clears it): die with the parent */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != s_parent)
		_exit(3);
	log_info("worker serving on %s (cgroups %s, state %s, uid_base %u, pool %u)",
	         s_cfg.endpoint, sbx_cgroup_mode(), s_cfg.state_dir, s_cfg.uid_base,
	         s_cfg.pool_size);
	int rc = sbx_daemon_run(d);
	sbx_daemon_destroy(&d);
	_exit(rc == 0 ? 0 : 1);
}

static int
s_start_worker(int sigfd)
{
	int a[2], c[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, a) != 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, c) != 0) {
		close(a[0]);
		close(a[1]);
		return -1;
	}
	s_parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		close(a[0]);
		close(a[1]);
		close(c[0]);
		close(c[1]);
		return -1;
	}
	if (pid == 0) {
		close(a[0]);
		close(c[0]);
		close(sigfd);
		s_child_drop_lock();
		/* the helper trusts what comes on its socket: never the worker's */
		if (s_helper.fd >= 0)
			close(s_helper.fd);
		/* nor the lean init's program and data (read-only; only ours) */
		if (s_init_exe >= 0)
			close(s_init_exe);
		if (s_init_data >= 0)
			close(s_init_data);
		s_worker_main(a[1], c[1]);
	}
	close(a[1]);
	close(c[1]);
	s_async = a[0];
	s_call = c[0];
	s_worker = pid;
	return 0;
}

/* ------------------------------------------------------------- the setup -- */

/* The worker's directories: sandboxes/ and execs/ (and what is in them) are
 * its own; state_dir is only traversable. */
static int
s_give_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fchown(fd, s_wuid, s_wgid);
	rc |= fchmod(fd, 0700);
	DIR *d = fdopendir(dup(fd));
	if (d != NULL) {
		struct dirent *e;
		/* Only root's plain files (records from before the split): a
		 * link the worker planted to a file of someone else's is
		 * never given to it (nlink 1, no symlink followed). */
		struct stat st;
		while ((e = readdir(d)) != NULL)
			if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == 0)
				(void)fchownat(fd, e->d_name, s_wuid, s_wgid, AT_SYMLINK_NOFOLLOW);
		closedir(d);
	}
	close(fd);
	return rc;
}

/* The worker must reach state_dir and run/ (the relay socket) through HOME:
 * HOME and the directories between it and them get search permission for
 * others (as scripts/stack lays them out: 0711, nothing listable) when they
 * lack it. Paths outside HOME are the operator's to open up. */
static void
s_traversable(const char *home, const char *path)
{
	size_t hl = strlen(home);
	if (s_wuid == 0 || strncmp(path, home, hl) != 0 || (path[hl] != '/' && path[hl] != '\0'))
		return;
	char p[PATH_MAX];
	if (ahp_strlcpy(p, path, sizeof(p)) != 0)
		return;
	for (;;) {
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
		    (st.st_mode & S_IXOTH) == 0) {
			if (chmod(p, (st.st_mode & 07777) | S_IXGRP | S_IXOTH) == 0)
				log_info("%s: search permission for the worker (mode %04o)", p,
				         (unsigned)((st.st_mode & 07777) | S_IXGRP | S_IXOTH));
		}
		if (strlen(p) <= hl)
			break;
		char *slash = strrchr(p, '/');
		if (slash == NULL || slash == p)
			break;
		*slash = '\0';
	}
}

/* Whether the worker (s_wuid/s_wgid, no supplementary groups) may search
 * every directory from / down to path; -1 with a message naming the first
 * one it may not (a HOME under a 0700 directory such as a mktemp -d would
 * otherwise fail every sandbox later, with nothing pointing at the cause). */
static int
s_reachable(const char *path, char *err, size_t errlen)
{
	if (s_wuid == 0 || path[0] != '/')
		return 0;
	char p[PATH_MAX];
	if (ahp_strlcpy(p, path, sizeof(p)) != 0)
		return 0;
	for (char *c = p + 1;; c++) {
		bool end = *c == '\0';
		if (*c != '/' && !end)
			continue;
		*c = '\0';
		struct stat st;
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode) &&
		    !(st.st_uid == s_wuid   ? st.st_mode & S_IXUSR
		      : st.st_gid == s_wgid ? st.st_mode & S_IXGRP
		                            : st.st_mode & S_IXOTH)) {
			snprintf(err, errlen,
			         "the worker (uid %u) cannot search %.120s (mode %04o): give it "
			         "search permission, e.g. chmod o+x %.120s",
			         (unsigned)s_wuid, p, (unsigned)(st.st_mode & 07777), p);
			return -1;
		}
		if (end)
			return 0;
		*c = '/';
	}
}

static int
s_setup(const sbx_config_t *cfg, char *err, size_t errlen)
{
	s_cfg = *cfg;
	if (strcmp(cfg->user, "root") == 0) {
		s_wuid = 0;
		s_wgid = 0;
		log_warn("user = root: the worker (RPC, exec store, egress relay) keeps root; "
		         "create an unprivileged user for it");
	} else if (sbx_conf_worker_user(cfg->user, &s_wuid, &s_wgid, err, errlen) != 0) {
		return -1;
	}
	/* Supplementary groups would follow init into every sandbox (a user
	 * namespace cannot drop them once setgroups is denied): none at all. */
	if (setgroups(0, NULL) != 0) {
		snprintf(err, errlen, "setgroups: %s (sandboxd must run as root)", strerror(errno));
		return -1;
	}
	s_store = sbx_store_new(cfg->state_dir);
	if (s_store == NULL) {
		snprintf(err, errlen, "cannot use state_dir %.400s", cfg->state_dir);
		return -1;
	}
	/* before anything in state_dir is read, cleaned or mounted (serve takes
	 * it before its pid file: this finds it held) */
	if (sbx_priv_lock(cfg->state_dir, err, errlen) != 0)
		return -1;
	char run[PATH_MAX] = "";
	if (ahp_home_path(cfg->home, "run", run, sizeof(run)) == 0)
		s_traversable(cfg->home, run);
	s_traversable(cfg->home, cfg->state_dir);
	if (s_reachable(cfg->state_dir, err, errlen) != 0 ||
	    (run[0] != '\0' && s_reachable(run, err, errlen) != 0))
		return -1;
	if (chmod(cfg->state_dir, 0711) != 0 ||
	    s_give_dir(sbx_store_dir(s_store, "sandboxes")) != 0 ||
	    s_give_dir(sbx_store_dir(s_store, "execs")) != 0) {
		snprintf(err, errlen, "state_dir %.400s: giving the worker its dirs: %s",
		         cfg->state_dir, strerror(errno));
		return -1;
	}
	s_plan = calloc(1, sizeof(*s_plan));
	s_stack = malloc(S_INIT_STACK);
	s_inits = calloc(cfg->uid_count, sizeof(*s_inits));
	s_lims = calloc(cfg->uid_count, sizeof(*s_lims));
	if (s_plan == NULL || s_stack == NULL || s_inits == NULL || s_lims == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (sbx_plan_build(&s_cfg, s_store, s_plan, err, errlen) != 0)
		return -1;
	/* workspaces of sandboxes from before a restart */
	if (sbx_disk_restore(s_store, err, errlen) != 0)
		return -1;
	/* into the fresh /etc template, before any sandbox exists */
	(void)sbx_ca_refresh(&s_cfg, s_store);
	if (sbx_seccomp_build(&s_filter_prog) != 0) {
		snprintf(err, errlen, "building the seccomp filter failed");
		return -1;
	}
	s_lean_setup();
	/* The instance name keeps two sandboxd's (two homes) apart in cgroups. */
	uint32_t h = 2166136261u;
	for (const char *p = cfg->state_dir; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	char inst[16];
	snprintf(inst, sizeof(inst), "%08x", h);
	if (sbx_cgroup_setup(inst) != 0) {
		snprintf(err, errlen,
		         "cgroups: need the memory, pids and cpu controllers (see the log)");
		return -1;
	}
	return 0;
}

int
sbx_priv_run(const sbx_config_t *cfg)
{
	char err[512];
	if (s_setup(cfg, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 1;
	}
	/* Signals arrive on a descriptor; blocked before any child exists, so
	 * the worker starts with them blocked too. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0)
		fatal("signalfd");
	prctl(PR_SET_NAME, "sandboxd-priv", 0, 0, 0);
	s_self = getpid();
	s_clean_orphans();
	s_start_helper(sigfd);
	int64_t restarts[S_RESTARTS_MAX] = {0}; /* when the last ones happened (a ring) */
	int next_restart = 0, rc = 0;
	bool stopping = false;
	if (s_start_worker(sigfd) != 0)
		fatal("fork the worker");
	for (;;) {
		struct pollfd pf[4] = {{sigfd, POLLIN, 0},
		                       {s_async, POLLIN, 0},
		                       {s_call, POLLIN, 0},
		                       {s_helper.fd, POLLIN, 0}};
		int n = poll(pf, 4, s_deleting_any() ? 100 : -1);
		if (n < 0 && errno != EINTR)
			fatal("poll");
		struct signalfd_siginfo si;
		while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				stopping = true;
				if (s_worker > 0)
					kill(s_worker, SIGTERM);
			} else if (si.ssi_signo == SIGHUP && s_worker > 0) {
				kill(s_worker, SIGHUP);
			}
		}
		if (n > 0 && s_call >= 0 && (pf[2].revents & (POLLIN | POLLHUP | POLLERR)))
			s_on_call();
		bool sweep = false;
		/* answers before new requests: a spawn on a slot just discarded
		 * need not wait */
		if (n > 0 && s_helper.fd >= 0 && (pf[3].revents & (POLLIN | POLLHUP | POLLERR))) {
			(void)s_helper_read(false);
			sweep = true; /* a workspace may have gone to the trash */
			if (s_prepare_mb != 0)
				s_prepare_disk(s_prepare_mb); /* when it kept no image */
		}
		if (n > 0 && s_async >= 0 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
			s_on_async();
		int wst = s_reap(&sweep);
		if (sweep)
			s_sweep();
		if (wst < 0)
			continue;
		/* the worker is gone */
		if (s_async >= 0)
			close(s_async);
		if (s_call >= 0)
			close(s_call);
		s_async = s_call = -1;
		s_kill_all();
		bool clean = WIFEXITED(wst) && WEXITSTATUS(wst) == 0;
		if (stopping || clean) {
			rc = clean ? 0 : 1;
			break;
		}
		if (WIFEXITED(wst) && WEXITSTATUS(wst) == 3) {
			log_error("the worker could not start: stopping");
			rc = 1;
			break;
		}
		int64_t now = ahp_mono_ms();
		int recent = 0;
		for (int i = 0; i < S_RESTARTS_MAX; i++)
			recent += restarts[i] != 0 && now - restarts[i] < S_RESTART_WINDOW_MS;
		if (recent >= S_RESTARTS_MAX) {
			log_error("the worker died %d times within %ds: stopping", recent,
			          S_RESTART_WINDOW_MS / 1000);
			rc = 1;
			break;
		}
		restarts[next_restart] = now;
		next_restart = (next_restart + 1) % S_RESTARTS_MAX;
		log_error("the worker died (%s %d): its sandboxes were killed; restarting it",
		          WIFSIGNALED(wst) ? "signal" : "status",
		          WIFSIGNALED(wst) ? WTERMSIG(wst) : WEXITSTATUS(wst));
		s_clean_orphans();
		if (s_start_worker(sigfd) != 0)
			fatal("fork the worker");
	}
	/* Deleters still running finish on their own (they hold no lock);
	 * disks are unmounted before sbx_disk_stop looks. */
	s_discard_wait(UINT32_MAX);
	if (s_helper.pid != 0) {
		pid_t hp = s_helper.pid;
		s_helper_gone();   /* nothing queued (waited for above) */
		kill(hp, SIGKILL); /* children of ours may hold its socket a while */
		while (waitpid(hp, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (s_preparer > 0)
		(void)waitpid(s_preparer, NULL, 0);
	sbx_disk_stop(s_store); /* spares' disks and the /etc tmpfs go; the rest unmounted */
	sbx_cgroup_teardown();
	close(sigfd);
	if (s_init_exe >= 0)
		close(s_init_exe);
	if (s_init_data >= 0)
		close(s_init_data);
	free(s_filter_prog.filter);
	free(s_plan);
	free(s_stack);
	free(s_inits);
	free(s_lims);
	sbx_store_destroy(&s_store);
	return rc;
}
