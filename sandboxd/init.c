/* A sandbox's init (pid 1 inside): builds the root, drops every privilege, runs commands on order.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/fsuid.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#ifndef __GLIBC__
/* musl (the lean sandboxd-init, initmain.c) has no wrappers for the new
 * mount API (glibc 2.36 has): the kernel's uapi header and the system calls. */
#include <linux/mount.h>
#endif

#include "ahp/util.h"

#include "sbx.h"

/*
 * init starts one of two ways (zygote.c s_spawn). Normally the privileged
 * parent's clone execs the lean sandboxd-init (a static musl program:
 * initmain.c and this file), which reads what the parent computed from the
 * descriptors it inherits (sbx_init_lean_main). Without that program (no
 * musl at build, a sanitizer build) init is the clone itself, a copy of the
 * privileged parent without exec, entered at sbx_init_main. That parent is
 * single-threaded, but in either case init never calls malloc or stdio:
 * buffers come from mmap, messages are formatted with snprintf into stack
 * arrays, and commands are started with clone(CLONE_VM|CLONE_VFORK) like
 * posix_spawn.
 */

#define S_CTL_FD 3
#define S_STACK_SIZE (256 * 1024)
#define S_DRAIN_MS 1000 /* after the shell exits and the rest is killed: wait for pipe EOF */

/* Linux 6.6 (not in older uapi headers): the notifying task and the listener
 * wake each other on the waker's CPU. */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

/* The commands' environments (sbx.h): the same base for both network modes. */
#define S_ENV_BASE                                                                                 \
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/workspace",    \
	    "USER=agent", "LOGNAME=agent", "SHELL=/bin/sh", "LANG=C.UTF-8", "TERM=dumb",           \
	    "TMPDIR=/tmp"
char *const sbx_env_none[] = {S_ENV_BASE, NULL};
char *const sbx_env_proxy[] = {
    S_ENV_BASE,
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

static int s_ctl = -1;
static int s_errfd = 2;
static int s_devnull = -1;
static int s_sigfd = -1;
static char *const *s_env; /* chosen at claim */
static int s_notify = -1;  /* seccomp listener: exit_group of sandboxed processes */
static const sbx_init_args_t *s_args;

/* mmap'd buffers: the order in, the captured output out. */
static uint8_t *s_inbuf;
static size_t s_inbuf_len;
static uint8_t *s_out[2];
static size_t s_out_cap = SBX_OUTPUT_KB_MAX * 1024;
static uint8_t *s_stack;
static char s_cwd[SBX_CWD_MAX];
static mode_t s_umask = 022; /* init's at start: every command's */
static cpu_set_t s_cpus;     /* init's CPUs, read at start: what every command gets */
static bool s_have_cpus;

/* Ends init (or the pre-exec child) with the exit(2) system call: exit_group
 * goes to init's own seccomp notifier, and init cannot answer itself. Both
 * are single-threaded, so exit(2) ends the process. */
static void __attribute__((noreturn)) s_exit(int code)
{
	for (;;)
		syscall(SYS_exit, code);
}

#ifdef __GLIBC__
static const char *
s_errname(int e)
{
	const char *n = strerrorname_np(e);
	return n != NULL ? n : "E?";
}
#else
/* musl has no strerrorname_np: the names init's failures can carry. */
static const char *
s_errname(int e)
{
#define S_E(x)                                                                                     \
	case x:                                                                                    \
		return #x
	switch (e) {
		S_E(EPERM);
		S_E(ENOENT);
		S_E(ESRCH);
		S_E(EINTR);
		S_E(EIO);
		S_E(E2BIG);
		S_E(ENOEXEC);
		S_E(EBADF);
		S_E(ECHILD);
		S_E(EAGAIN);
		S_E(ENOMEM);
		S_E(EACCES);
		S_E(EFAULT);
		S_E(EBUSY);
		S_E(EEXIST);
		S_E(EXDEV);
		S_E(ENODEV);
		S_E(ENOTDIR);
		S_E(EISDIR);
		S_E(EINVAL);
		S_E(ENFILE);
		S_E(EMFILE);
		S_E(ENOSPC);
		S_E(EROFS);
		S_E(EMLINK);
		S_E(EPIPE);
		S_E(ENAMETOOLONG);
		S_E(ENOSYS);
		S_E(ELOOP);
		S_E(EPROTO);
		S_E(EMSGSIZE);
		S_E(EOPNOTSUPP);
		S_E(EADDRINUSE);
		S_E(EADDRNOTAVAIL);
		S_E(ECONNRESET);
		S_E(ETXTBSY);
	default:
		return "E?";
	}
#undef S_E
}

static int
fsopen(const char *fs, unsigned flags)
{
	return (int)syscall(SYS_fsopen, fs, flags);
}

static int
fsconfig(int fd, unsigned cmd, const char *key, const void *value, int aux)
{
	return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}

static int
fsmount(int fd, unsigned flags, unsigned attrs)
{
	return (int)syscall(SYS_fsmount, fd, flags, attrs);
}

static int
move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags)
{
	return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int
open_tree(int dfd, const char *path, unsigned flags)
{
	return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int
mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *a, size_t size)
{
	return (int)syscall(SYS_mount_setattr, dfd, path, flags, a, size);
}
#endif

/* ahp_write_all's loop, here so that the lean sandboxd-init links no libahp code. */
static int
s_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reports a setup failure to sandboxd (and its log) and exits. */
static void __attribute__((noreturn, format(printf, 1, 2))) s_fail(const char *fmt, ...)
{
	int e = errno;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	n += snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", s_errname(e));
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	sbx_ctl_hdr_t h = {SBX_CTL_FAIL, (uint32_t)n};
	struct iovec iov[2] = {{&h, sizeof(h)}, {msg, (size_t)n}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	if (s_ctl >= 0)
		(void)sendmsg(s_ctl, &mh, MSG_NOSIGNAL);
	char line[600];
	int l = snprintf(line, sizeof(line), "sandboxd-init: %.*s\n", n, msg);
	if (l > 0)
		(void)s_write_all(s_errfd, line,
		                  (size_t)l < sizeof(line) ? (size_t)l : sizeof(line) - 1);
	s_exit(1);
}

static uint64_t
s_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *
s_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		s_fail("mmap %zu", len);
	return p;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Makes [p, p + len) resident and writable now (p page-aligned). */
static void
s_prefault(uint8_t *p, size_t len)
{
	if (madvise(p, len, MADV_POPULATE_WRITE) != 0)
		memset(p, 0, len);
}

/* ---------------------------------------------------------------- setup -- */

static int
s_fsmount(const char *type, const char *size, const char *mode, unsigned attrs)
{
	int fs = fsopen(type, FSOPEN_CLOEXEC);
	if (fs < 0)
		s_fail("fsopen %s", type);
	if (size != NULL && fsconfig(fs, FSCONFIG_SET_STRING, "size", size, 0) != 0)
		s_fail("fsconfig %s size", type);
	if (mode != NULL && fsconfig(fs, FSCONFIG_SET_STRING, "mode", mode, 0) != 0)
		s_fail("fsconfig %s mode", type);
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0)
		s_fail("fsconfig %s create", type);
	int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
	if (m < 0)
		s_fail("fsmount %s", type);
	close(fs);
	return m;
}

static void
s_setattr(int fd, const char *path, unsigned flags, uint64_t set, const char *what)
{
	struct mount_attr a = {.attr_set = set};
	if (mount_setattr(fd, path, flags, &a, sizeof(a)) != 0)
		s_fail("mount_setattr %s", what);
}

/* A detached clone of a host path with the plan's flags applied. -1 when an
 * optional source is missing. */
static int
s_clone_src(const char *src, int flags)
{
	/* the workspace is named by sandboxd: never through a symlink */
	unsigned nofollow = (flags & SBX_MNT_F_NOFOLLOW) ? AT_SYMLINK_NOFOLLOW : 0;
	int fd =
	    open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | nofollow);
	if (fd < 0) {
		if ((flags & SBX_MNT_F_OPTIONAL) && errno == ENOENT)
			return -1;
		s_fail("open_tree %s", src);
	}
	uint64_t set = MOUNT_ATTR_NOSUID;
	if (!(flags & SBX_MNT_F_DEV))
		set |= MOUNT_ATTR_NODEV;
	if (flags & SBX_MNT_F_RO)
		set |= MOUNT_ATTR_RDONLY;
	s_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, set, src);
	return fd;
}

/* A path of the sandbox's own disk: the workspace is <disk>/ws (disk.c),
 * so the disk's root is the workspace path without its last component. */
static int
s_clone_disk(const sbx_mnt_t *m)
{
	char p[PATH_MAX];
	const char *ws = s_args->workspace;
	const char *slash = strrchr(ws, '/');
	if (slash == NULL ||
	    snprintf(p, sizeof(p), "%.*s/%s", (int)(slash - ws), ws, m->src) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		s_fail("disk path %s", m->src);
	}
	return s_clone_src(p, m->flags | SBX_MNT_F_NOFOLLOW);
}

/* mkdir -p of a relative path under root (components created 0755). */
static void
s_mkdirs(int root, const char *rel, unsigned mode)
{
	char p[256];
	if (snprintf(p, sizeof(p), "%s", rel) >= (int)sizeof(p))
		s_fail("path too long %s", rel);
	for (char *s = strchr(p, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdirat(root, p, 0755) != 0 && errno != EEXIST)
			s_fail("mkdir %s", p);
		*s = '/';
	}
	if (mkdirat(root, p, mode) != 0 && errno != EEXIST)
		s_fail("mkdir %s", p);
}

/* Makes the mount point for dst: a directory, or an empty file. Existing
 * entries (inside a read-only bind such as /etc) are used as they are. */
static void
s_mountpoint(int root, const char *dst, bool file)
{
	struct stat st;
	if (fstatat(root, dst, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return;
	if (!file) {
		s_mkdirs(root, dst, 0755);
		return;
	}
	const char *slash = strrchr(dst, '/');
	if (slash != NULL) {
		char parent[256];
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - dst), dst);
		s_mkdirs(root, parent, 0755);
	}
	int fd = openat(root, dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		s_fail("create %s", dst);
	close(fd);
}

static void
s_attach(int src, int root, const char *dst)
{
	if (move_mount(src, "", root, dst, MOVE_MOUNT_F_EMPTY_PATH) != 0)
		s_fail("move_mount %s", dst);
	close(src);
}

static void
s_build_root(void)
{
	const sbx_plan_t *plan = s_args->plan;
	int src[SBX_MNT_MAX];

	/* Every host source is cloned while init still has host-root file
	 * access (the state dir is 0700 root): afterwards it works with the
	 * sandbox uid, which the host treats as nobody in particular. */
	for (int i = 0; i < plan->n; i++) {
		const sbx_mnt_t *m = &plan->m[i];
		src[i] = -1;
		if (m->kind == SBX_MNT_BIND)
			src[i] = s_clone_src(m->src, m->flags);
		else if (m->kind == SBX_MNT_WORKSPACE)
			src[i] = s_clone_src(s_args->workspace, SBX_MNT_F_NOFOLLOW);
		else if (m->kind == SBX_MNT_DISK)
			src[i] = s_clone_disk(m);
		else if (m->kind == SBX_MNT_MASK)
			src[i] = s_clone_src("/dev/null", SBX_MNT_F_DEV | SBX_MNT_F_RO);
	}
	int rootdir = open(s_args->root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (rootdir < 0)
		s_fail("open %s", s_args->root_dir);

	/* Files created in a tmpfs of this user namespace need an fsuid mapped
	 * in it (host root is not), and a new tmpfs root belongs to the fsuid
	 * that creates it: from here on, files are made as the agent. */
	setfsgid(SBX_INSIDE_UID);
	setfsuid(SBX_INSIDE_UID);
	if ((uid_t)setfsuid((uid_t)-1) != SBX_INSIDE_UID)
		s_fail("setfsuid");

	int root = s_fsmount("tmpfs", "1m", "0755", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (move_mount(root, "", rootdir, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) !=
	    0)
		s_fail("move_mount root");
	close(rootdir);

	for (int i = 0; i < plan->n; i++) {
		const sbx_mnt_t *m = &plan->m[i];
		struct stat st;
		char sz[32], mode[16];
		int fd;
		switch (m->kind) {
		case SBX_MNT_DIR:
			s_mkdirs(root, m->dst, m->mode);
			break;
		case SBX_MNT_SYMLINK:
			if (symlinkat(m->src, root, m->dst) != 0 && errno != EEXIST)
				s_fail("symlink %s", m->dst);
			break;
		case SBX_MNT_BIND:
		case SBX_MNT_WORKSPACE:
		case SBX_MNT_DISK:
			if (src[i] < 0)
				break; /* optional and absent */
			s_mountpoint(root, m->dst, (m->flags & SBX_MNT_F_FILE) != 0);
			s_attach(src[i], root, m->dst);
			break;
		case SBX_MNT_TMPFS:
			snprintf(sz, sizeof(sz), "%uk", m->size_kb);
			snprintf(mode, sizeof(mode), "%o", m->mode);
			fd = s_fsmount("tmpfs", sz, mode, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
			s_mountpoint(root, m->dst, false);
			s_attach(fd, root, m->dst);
			break;
		case SBX_MNT_PROC:
			fd = s_fsmount("proc", NULL, NULL,
			               MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
			s_mountpoint(root, m->dst, false);
			s_attach(fd, root, m->dst);
			break;
		case SBX_MNT_MASK:
			if (fstatat(root, m->dst, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
			    S_ISDIR(st.st_mode)) {
				close(src[i]);
				break;
			}
			s_attach(src[i], root, m->dst);
			break;
		case SBX_MNT_RDONLY:
			fd = open_tree(root, m->dst,
			               OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
			if (fd < 0) {
				if (errno == ENOENT && (m->flags & SBX_MNT_F_OPTIONAL))
					break;
				s_fail("open_tree %s", m->dst);
			}
			s_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE,
			          MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, m->dst);
			s_attach(fd, root, m->dst);
			break;
		case SBX_MNT_SEAL:
			s_setattr(root, m->dst, 0, MOUNT_ATTR_RDONLY, m->dst);
			break;
		default:
			errno = EINVAL;
			s_fail("plan entry %d", i);
		}
	}
	s_setattr(root, "", AT_EMPTY_PATH, MOUNT_ATTR_RDONLY, "/");

	/* pivot_root(".", ".") stacks the old root on the new one; detaching
	 * it leaves only the sandbox tree (runc's trick, no temp directory). */
	if (fchdir(root) != 0)
		s_fail("fchdir root");
	if (syscall(SYS_pivot_root, ".", ".") != 0)
		s_fail("pivot_root");
	if (umount2(".", MNT_DETACH) != 0)
		s_fail("umount old root");
	if (chdir("/") != 0)
		s_fail("chdir /");
	close(root);
}

static void
s_network(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		s_fail("socket");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		s_fail("SIOCGIFFLAGS lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		s_fail("SIOCSIFFLAGS lo");
	close(s);
}

/* The egress listener of proxy mode, made at claim time (an unprivileged
 * port: no capability needed). sandboxd accepts on it and relays. */
static int
s_listen(void)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l < 0)
		s_fail("socket listener");
	int one = 1;
	(void)setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(SBX_PROXY_PORT)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		s_fail("bind 127.0.0.1:%d", SBX_PROXY_PORT);
	if (listen(l, 128) != 0)
		s_fail("listen");
	return l;
}

static void
s_drop_privileges(void)
{
	/* Lock the uid-0 special cases off for good, while CAP_SETPCAP is held. */
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
	                                 SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
	                                 SECBIT_NO_CAP_AMBIENT_RAISE |
	                                 SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) != 0)
		s_fail("securebits");
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
			s_fail("capbset drop %d", c);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
		s_fail("ambient clear");
	if (setresgid(SBX_INSIDE_UID, SBX_INSIDE_UID, SBX_INSIDE_UID) != 0)
		s_fail("setresgid");
	if (setresuid(SBX_INSIDE_UID, SBX_INSIDE_UID, SBX_INSIDE_UID) != 0)
		s_fail("setresuid");
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) != 0)
		s_fail("capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		s_fail("no_new_privs");
	/* Commands share the agent uid: not dumpable keeps them out of init's
	 * /proc entries and memory. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		s_fail("dumpable");
	/* Credential changes clear the parent-death signal: set it last. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
		s_fail("pdeathsig");
}

static void
s_send_ready(int listener)
{
	sbx_ctl_hdr_t h = {SBX_CTL_READY, 0};
	if (sbx_send_fd(s_ctl, &h, sizeof(h), listener) != 0)
		s_fail("send ready");
	if (listener >= 0)
		close(listener); /* sandboxd holds the only copy now */
}

/* ----------------------------------------------------------------- exec -- */

typedef struct {
	const char *cmd;
	const char *cwd;
	const sbx_ctl_exec_t *o;
	int outw, errw;
	bool pinned; /* started on init's CPU: give it back s_cpus first */
	volatile int err;
	const char *volatile step;
} s_child_t;

/* Runs on its own stack in init's memory until execve (CLONE_VFORK keeps
 * init suspended meanwhile): only async-signal-safe system calls here. The
 * seccomp filter is inherited from init: nothing to load per command. */
static int
s_child(void *arg)
{
	s_child_t *c = arg;
	sigset_t none;
	sigemptyset(&none);
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigaction(SIGPIPE, &dfl, NULL);
	sigprocmask(SIG_SETMASK, &none, NULL);

	/* A session of its own, which makes its process group an orphaned
	 * one (its parent, init, is in another session): the kernel discards
	 * SIGTSTP, SIGTTIN and SIGTTOU sent to it, so a command cannot stop
	 * itself into its timeout (`kill -TSTP $$`). Staying in init's session
	 * (setpgid) saved a scheduler autogroup per command (~0.01-0.03 of the
	 * warm ratio) and broke that: test `session`. */
	c->step = "setsid";
	if (setsid() < 0)
		goto fail;
	c->step = "dup2";
	if (dup2(s_devnull, 0) < 0 || dup2(c->outw, 1) < 0 || dup2(c->errw, 2) < 0)
		goto fail;
	c->step = "close_range";
	if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
		goto fail;
	umask(s_umask); /* shared with init (CLONE_FS): the last command's is undone */
	if (chdir(c->cwd) != 0 && chdir("/workspace") != 0)
		(void)chdir("/");

	/* s_cpus is init's set read once at start: a command that narrowed
	 * init's (same uid) does not narrow the next command's. Cannot fail
	 * unless the machine's CPUs changed under us: then it stays where it
	 * is, and runs. */
	if (c->pinned)
		(void)sched_setaffinity(0, sizeof(s_cpus), &s_cpus);
	c->step = "setrlimit";
	struct rlimit cpu = {c->o->cpu_seconds, (rlim_t)c->o->cpu_seconds + 1};
	struct rlimit fsz = {c->o->file_size, c->o->file_size};
	struct rlimit nof = {c->o->open_files, c->o->open_files};
	struct rlimit core = {0, 0};
	if (setrlimit(RLIMIT_CPU, &cpu) != 0 || setrlimit(RLIMIT_FSIZE, &fsz) != 0 ||
	    setrlimit(RLIMIT_NOFILE, &nof) != 0 || setrlimit(RLIMIT_CORE, &core) != 0)
		goto fail;
	/* The OOM score: init's (0, and its minimum 0: the spawner never writes
	 * it), inherited. (Writing "0" here was dead: init is not dumpable, so
	 * /proc/self is root's and the open always failed with EACCES.) */
	char *argv[] = {(char *)"sh", (char *)"-c", (char *)c->cmd, NULL};
	c->step = "execve /bin/sh";
	execve("/bin/sh", argv, s_env);
fail:
	c->err = errno;
	s_exit(127);
}

typedef struct {
	int fd;
	size_t len;
	bool eof;
} s_stream_t;

static void
s_drain(s_stream_t *s, uint8_t *buf, bool *truncated)
{
	static uint8_t scratch[16384];
	for (;;) {
		ssize_t n;
		if (s->len < s_out_cap)
			n = read(s->fd, buf + s->len, s_out_cap - s->len);
		else
			n = read(s->fd, scratch, sizeof(scratch));
		if (n > 0) {
			if (s->len < s_out_cap)
				s->len += (size_t)n;
			else
				*truncated = true; /* keep reading so the writer never blocks */
			continue;
		}
		if (n == 0)
			s->eof = true;
		else if (errno == EINTR)
			continue;
		else if (errno != EAGAIN)
			s->eof = true;
		return;
	}
}

/* An absolute path without control characters (it crosses the control socket
 * and is kept in the sandbox's key=value metadata, one line). Its bytes need
 * not be UTF-8: the shell stays where the command left it whatever the name,
 * and sandboxd checks UTF-8 (ahp_utf8_valid) where it reports the cwd. */
static bool
s_clean_path(const char *p, size_t n)
{
	if (n == 0 || p[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

/* The shell's current directory while it is stopped at exit (or still
 * running, on timeout). The shell shares init's fs_struct (CLONE_FS, see
 * s_run), so this is init's own: getcwd(2), the kernel's path of the one
 * directory both stand in. (Reading /proc/<pid>/cwd did the same through a
 * /proc lookup of a new pid each time, and left dentries for the reaping to
 * invalidate: ~20 us more per command here.) Empty when unknown or
 * unusable. */
static void
s_read_cwd(char *out, size_t len)
{
	char buf[SBX_CWD_MAX + 16];
	out[0] = '\0';
	/* the raw call: a cwd outside our root comes back as "(unreachable)...",
	 * an unlinked one as ENOENT; its length counts the NUL */
	long n = syscall(SYS_getcwd, buf, sizeof(buf));
	if (n <= 1 || (size_t)n > len || buf[n - 1] != '\0')
		return;
	n--;
	struct stat st;
	/* paths outside our root, control bytes: keep the old cwd */
	if (!s_clean_path(buf, (size_t)n) || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
		return;
	memcpy(out, buf, (size_t)n + 1);
}

/*
 * The cwd side channel. init's seccomp filter (inherited by every command)
 * turns exit_group(2) into a notification to init. When the notifying process
 * is the command's shell, init reads /proc/<pid>/cwd while the shell is held
 * in the system call, then lets the call continue. Nothing the command prints
 * or does can forge this: it comes from the kernel's view of the process.
 */
static pid_t s_shell = -1;
static char s_shell_cwd[SBX_CWD_MAX];
static bool s_shell_cwd_seen;

/* True when tid is the shell or one of its threads (a threaded program the
 * shell exec'd may exit from any thread; the notification names the thread). */
static bool
s_of_shell(pid_t tid)
{
	if (tid == s_shell)
		return true;
	char p[64];
	struct stat st;
	snprintf(p, sizeof(p), "/proc/%d/task/%d", (int)s_shell, (int)tid);
	return stat(p, &st) == 0;
}

static void
s_on_notify(void)
{
	struct seccomp_notif req;
	struct seccomp_notif_resp resp;
	for (int i = 0; i < 64; i++) {
		memset(&req, 0, sizeof(req));
		if (ioctl(s_notify, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0)
			return; /* nothing pending, or the task died meanwhile */
		if (s_shell > 0 && !s_shell_cwd_seen && s_of_shell((pid_t)req.pid)) {
			s_read_cwd(s_shell_cwd, sizeof(s_shell_cwd));
			/* only trust what was read while the id still names that task */
			if (ioctl(s_notify, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) != 0)
				s_shell_cwd[0] = '\0';
			s_shell_cwd_seen = true;
		}
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		(void)ioctl(s_notify, SECCOMP_IOCTL_NOTIF_SEND, &resp);
		struct pollfd pf = {s_notify, POLLIN, 0};
		if (poll(&pf, 1, 0) <= 0 || !(pf.revents & POLLIN))
			return;
	}
}

/* Reaps children; true when `shell` was among them (its status in *wstatus).
 * *none_left (may be NULL): wait4 said ECHILD, init has no child at all. As
 * init is the pid namespace's reaper, every other process of the sandbox is
 * its child or a descendant of one (an orphan is reparented to init before
 * its parent can be reaped), so then init is alone in the sandbox. */
static bool
s_reap(pid_t shell, int *wstatus, struct rusage *ru, bool *none_left)
{
	bool done = false;
	if (none_left != NULL)
		*none_left = false;
	for (;;) {
		int ws;
		struct rusage r;
		pid_t p = wait4(-1, &ws, WNOHANG, &r);
		if (p < 0 && errno == ECHILD && none_left != NULL)
			*none_left = true;
		if (p <= 0)
			return done;
		if (p == shell) {
			*wstatus = ws;
			*ru = r;
			done = true;
		}
	}
}

static void
s_run(const sbx_ctl_exec_t *o, const char *cwd, const char *cmd)
{
	int outp[2], errp[2];
	bool truncated = false, timed_out = false, shell_done = false;
	char newcwd[SBX_CWD_MAX];
	newcwd[0] = '\0';
	int wstatus = 0;
	struct rusage ru;
	memset(&ru, 0, sizeof(ru));
	uint32_t flags = 0;

	s_out_cap = o->output_cap;
	if (pipe2(outp, O_CLOEXEC) != 0)
		s_fail("pipe");
	if (pipe2(errp, O_CLOEXEC) != 0)
		s_fail("pipe");
	s_child_t c = {.cmd = cmd, .cwd = cwd, .o = o, .outw = outp[1], .errw = errp[1]};
	s_shell_cwd[0] = '\0';
	s_shell_cwd_seen = false;
	/* The child starts on this CPU, where init is about to wait for its
	 * execve anyway: left to itself the kernel places a new task on an
	 * idle CPU, and waking that one (and, at the command's exit, init
	 * back on this one) costs tens of microseconds in a VM. Only where it
	 * starts: s_child gives it init's CPUs before its execve. */
	int cpu = s_have_cpus ? sched_getcpu() : -1;
	if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &s_cpus)) {
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		c.pinned = sched_setaffinity(0, sizeof(one), &one) == 0;
	}
	uint64_t t0 = s_mono_ms();
	/* CLONE_FS: the shell shares init's cwd, root and umask, so init reads
	 * the shell's cwd as its own (s_read_cwd). The root cannot move (chroot
	 * and pivot_root are refused by the filter, and no capability is left),
	 * init resolves no relative path, and s_child sets the cwd and the
	 * umask afresh for every command. The shell's children get their own
	 * copy, as usual (only clone(CLONE_FS) shares it further, as it would
	 * share the shell's). */
	pid_t pid =
	    clone(s_child, s_stack + S_STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_FS | SIGCHLD, &c);
	int spawn_errno = pid < 0 ? errno : c.err;
	if (c.pinned)
		(void)sched_setaffinity(0, sizeof(s_cpus), &s_cpus);
	s_shell = pid;
	close(outp[1]);
	close(errp[1]);
	s_stream_t st[2] = {{outp[0], 0, false}, {errp[0], 0, false}};
	fcntl(outp[0], F_SETFL, O_NONBLOCK);
	fcntl(errp[0], F_SETFL, O_NONBLOCK);

	if (pid < 0) {
		flags |= SBX_DONE_NOSPAWN;
		shell_done = true;
		wstatus = 127 << 8;
		int n = snprintf((char *)s_out[1], s_out_cap,
		                 "sandboxd: cannot start /bin/sh: %s\n", s_errname(spawn_errno));
		st[1].len = n > 0 ? (size_t)n < s_out_cap ? (size_t)n : s_out_cap : 0;
		st[0].eof = st[1].eof = true;
	} else if (spawn_errno != 0) {
		char line[160];
		int n = snprintf(line, sizeof(line), "sandboxd: %s: %s\n", c.step,
		                 s_errname(spawn_errno));
		if (n > 0)
			(void)s_write_all(s_errfd, line, (size_t)n);
	}

	uint64_t deadline = t0 + o->timeout_ms, exit_at = 0;
	while (!(st[0].eof && st[1].eof && shell_done)) {
		uint64_t now = s_mono_ms();
		if (!shell_done && !timed_out && now >= deadline) {
			/* Wall clock over: remember where the shell was, then kill
			 * every process of the sandbox but us (pid 1 is exempt). */
			s_read_cwd(newcwd, sizeof(newcwd));
			timed_out = true;
			kill(-1, SIGKILL);
		}
		if (shell_done && now >= exit_at + S_DRAIN_MS)
			break; /* a writer stuck in the kernel: stop reading */
		int tmo;
		if (shell_done)
			tmo = (int)(exit_at + S_DRAIN_MS - now);
		else if (timed_out)
			tmo = 1000;
		else
			tmo = (int)(deadline - now);
		/* Once the shell's exit_group has been let go, it only tears
		 * itself down: watch for its SIGCHLD alone, not also for each
		 * of its pipe ends closing (each a wake-up of init, a context
		 * switch, then another when the next one closes). What is in
		 * the pipes is read once it is reaped; the pipes stay watched
		 * for everyone else while it runs. */
		bool quiet = s_shell_cwd_seen && !shell_done && !timed_out;
		struct pollfd pf[5] = {
		    {st[0].eof || quiet ? -1 : st[0].fd, POLLIN, 0},
		    {st[1].eof || quiet ? -1 : st[1].fd, POLLIN, 0},
		    {s_sigfd, POLLIN, 0},
		    {s_notify, POLLIN, 0},
		    {s_ctl, 0, 0}, /* hang-up only: sandboxd gone */
		};
		int n = poll(pf, 5, tmo);
		if (n < 0 && errno != EINTR)
			s_fail("poll");
		if (n <= 0)
			continue;
		if (pf[4].revents & (POLLHUP | POLLERR))
			s_exit(0); /* the kernel kills the rest of the pid namespace */
		if (pf[3].revents & POLLIN)
			s_on_notify();
		for (int i = 0; i < 2; i++)
			if (pf[i].revents)
				s_drain(&st[i], s_out[i], &truncated);
		if (pf[2].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(s_sigfd, &si, sizeof(si)) == sizeof(si))
				;
			int ws;
			struct rusage r;
			bool alone;
			if (s_reap(shell_done ? -1 : pid, &ws, &r, &alone) && !shell_done) {
				wstatus = ws;
				ru = r;
				shell_done = true;
				exit_at = s_mono_ms();
				/* A command's processes end with it: nothing runs
				 * between commands (a paused run costs nothing, a
				 * fork bomb dies with the command that started it).
				 * Not when init has no child left: kill(-1) walks
				 * every process of the host under the tasklist
				 * lock, for nothing (most commands leave nothing). */
				if (!alone)
					kill(-1, SIGKILL);
				/* usually all of it and EOF: no poll round for that */
				for (int i = 0; i < 2; i++)
					if (!st[i].eof)
						s_drain(&st[i], s_out[i], &truncated);
			}
		}
	}
	uint32_t duration = (uint32_t)(s_mono_ms() - t0);
	close(st[0].fd);
	close(st[1].fd);
	s_shell = -1;
	if (!timed_out && s_shell_cwd_seen)
		memcpy(newcwd, s_shell_cwd, sizeof(newcwd));
	if (timed_out)
		flags |= SBX_DONE_TIMEOUT;
	if (truncated)
		flags |= SBX_DONE_TRUNCATED;

	sbx_ctl_done_t d = {
	    .wstatus = wstatus,
	    .flags = flags,
	    .duration_ms = duration,
	    .out_len = (uint32_t)st[0].len,
	    .err_len = (uint32_t)st[1].len,
	    .cwd_len = (uint32_t)strlen(newcwd),
	    .cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
	              (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec,
	};
	if (d.cwd_len > 0)
		memcpy(s_cwd, newcwd, d.cwd_len + 1);
	sbx_ctl_hdr_t h = {SBX_CTL_DONE, (uint32_t)(sizeof(d) + d.out_len + d.err_len + d.cwd_len)};
	struct iovec iov[5] = {{&h, sizeof(h)},
	                       {&d, sizeof(d)},
	                       {s_out[0], d.out_len},
	                       {s_out[1], d.err_len},
	                       {newcwd, d.cwd_len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 5};
	if (sendmsg(s_ctl, &mh, MSG_NOSIGNAL) < 0)
		s_exit(0); /* sandboxd is gone */
	/* Give big outputs' pages back: they count against the memory limit. */
	for (int i = 0; i < 2; i++)
		if (st[i].len > 65536)
			madvise(s_out[i], SBX_OUTPUT_KB_MAX * 1024, MADV_DONTNEED);
}

int
sbx_init_parse_order(uint8_t *buf, size_t n, size_t cap, bool claimed, sbx_order_t *out,
                     const char **why)
{
	sbx_ctl_hdr_t h;
	memset(out, 0, sizeof(*out));
	*why = "bad order";
	if (n < sizeof(h) || cap < n + 2)
		return -1;
	memcpy(&h, buf, sizeof(h));
	if (h.len != n - sizeof(h))
		return -1;
	if (h.type == SBX_CTL_CLAIM && h.len == sizeof(sbx_ctl_claim_t) && !claimed) {
		out->type = SBX_CTL_CLAIM;
		memcpy(&out->claim, buf + sizeof(h), sizeof(out->claim));
		return 0;
	}
	if (h.type != SBX_CTL_EXEC || h.len < sizeof(sbx_ctl_exec_t) || !claimed)
		return -1;
	sbx_ctl_exec_t o;
	memcpy(&o, buf + sizeof(h), sizeof(o));
	if (o.cwd_len >= SBX_CWD_MAX || o.cmd_len > SBX_CMD_MAX ||
	    (size_t)o.cwd_len + o.cmd_len != h.len - sizeof(o) ||
	    o.output_cap > SBX_OUTPUT_KB_MAX * 1024u) {
		*why = "bad order sizes";
		return -1;
	}
	/* NUL-terminate in place: cap leaves room for the two terminators. */
	char *cwd = (char *)buf + sizeof(h) + sizeof(o);
	char *cmd = cwd + o.cwd_len + 1;
	memmove(cmd, cwd + o.cwd_len, o.cmd_len);
	cmd[o.cmd_len] = '\0';
	cwd[o.cwd_len] = '\0';
	out->type = SBX_CTL_EXEC;
	out->exec = o;
	out->cwd = o.cwd_len == 0 ? NULL : cwd;
	out->cmd = cmd;
	return 0;
}

/* Validates one order from sandboxd (CLAIM once, then EXECs) and carries it out. */
static void
s_on_order(size_t n)
{
	sbx_order_t o;
	const char *why;
	if (sbx_init_parse_order(s_inbuf, n, s_inbuf_len, s_env != NULL, &o, &why) != 0) {
		errno = EPROTO;
		s_fail("%s", why);
	}
	if (o.type == SBX_CTL_CLAIM) {
		bool proxy = o.claim.network == AHP__SBX__NETWORK_MODE__NET_PROXY;
		s_env = proxy ? s_args->env_proxy : s_args->env_none;
		s_send_ready(proxy ? s_listen() : -1);
		return;
	}
	s_run(&o.exec, o.cwd != NULL ? o.cwd : s_cwd, o.cmd);
}

static void __attribute__((noreturn)) s_serve(void)
{
	for (;;) {
		struct pollfd pf[3] = {
		    {s_ctl, POLLIN, 0}, {s_sigfd, POLLIN, 0}, {s_notify, POLLIN, 0}};
		if (poll(pf, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			s_fail("poll");
		}
		if (pf[2].revents & POLLIN)
			s_on_notify(); /* background jobs of earlier commands exiting */
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(s_sigfd, &si, sizeof(si)) == sizeof(si))
				;
			int ws;
			struct rusage ru;
			(void)s_reap(-1, &ws, &ru, NULL); /* orphans of earlier commands */
		}
		if (pf[0].revents & POLLIN) {
			ssize_t n = recv(s_ctl, s_inbuf, s_inbuf_len, MSG_TRUNC);
			if (n == 0)
				s_exit(0);
			if (n < 0) {
				if (errno == EINTR || errno == EAGAIN)
					continue;
				s_exit(0);
			}
			if ((size_t)n > s_inbuf_len - 2) {
				errno = EMSGSIZE;
				s_fail("order too large");
			}
			s_on_order((size_t)n);
		} else if (pf[0].revents & (POLLHUP | POLLERR)) {
			s_exit(0);
		}
	}
}

int
sbx_init_main(void *arg)
{
	s_args = arg;
	s_errfd = s_args->errfd;
	/* Into the sandbox's cgroups before anything else (v1: the privileged
	 * parent opened their task lists; "0" is this thread) */
	s_ctl = s_args->ctl; /* s_fail's channel until it moves to S_CTL_FD */
	for (int i = 0; i < s_args->n_joins; i++) {
		if (write(s_args->joins[i], "0", 1) != 1)
			s_fail("joining the cgroup");
		close(s_args->joins[i]);
	}
	if (s_args->argv_area != NULL && s_args->argv_len > 0) {
		static const char name[] = "sandboxd-init";
		memset(s_args->argv_area, 0, s_args->argv_len);
		memcpy(s_args->argv_area, name,
		       sizeof(name) <= s_args->argv_len ? sizeof(name) : s_args->argv_len - 1);
	}
	/* Dies with sandboxd; the pid namespace dies with us. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	prctl(PR_SET_NAME, "sandboxd-init", 0, 0, 0);
	setsid();

	/* Only the control socket and the log survive from sandboxd's fds. */
	if (s_args->ctl != S_CTL_FD && dup3(s_args->ctl, S_CTL_FD, O_CLOEXEC) < 0)
		s_exit(1);
	/* The lean start hands it over at 3 as it is (without close-on-exec,
	 * or its execve would have closed it): no command inherits it either way. */
	if (fcntl(S_CTL_FD, F_SETFD, FD_CLOEXEC) != 0)
		s_exit(1);
	s_ctl = S_CTL_FD;
	if (s_errfd != 2 && dup2(s_errfd, 2) < 0)
		s_exit(1);
	s_errfd = 2;
	syscall(SYS_close_range, 4u, ~0u, 0u);
	s_devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (s_devnull < 0)
		s_fail("open /dev/null");
	dup2(s_devnull, 0);
	dup2(s_devnull, 1);

	s_umask = umask(022);
	umask(s_umask);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_SETMASK, &mask, NULL);
	struct sigaction ign = {.sa_handler = SIG_IGN};
	sigaction(SIGPIPE, &ign, NULL);

	s_inbuf_len =
	    sizeof(sbx_ctl_hdr_t) + sizeof(sbx_ctl_exec_t) + SBX_CWD_MAX + SBX_CMD_MAX + 64;
	s_inbuf = s_map(s_inbuf_len);
	s_out[0] = s_map(SBX_OUTPUT_KB_MAX * 1024);
	s_out[1] = s_map(SBX_OUTPUT_KB_MAX * 1024);
	s_stack = s_map(S_STACK_SIZE);
	memcpy(s_cwd, "/workspace", sizeof("/workspace"));

	/* Wait until sandboxd has written our uid/gid maps and cgroups. */
	sbx_ctl_hdr_t go;
	ssize_t n = recv(s_ctl, &go, sizeof(go), 0);
	if (n != (ssize_t)sizeof(go) || go.type != SBX_CTL_GO)
		s_exit(0);

	/* A cgroup namespace rooted at the sandbox's own cgroup. */
	if (unshare(CLONE_NEWCGROUP) != 0)
		s_fail("unshare cgroup");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		s_fail("make / private");
	s_build_root();
	if (sethostname(SBX_HOSTNAME, strlen(SBX_HOSTNAME)) != 0)
		s_fail("sethostname");
	s_network();
	s_drop_privileges();
	/* init runs under the commands' filter too; the listener it gets back
	 * is the cwd side channel (s_on_notify). */
	s_notify = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
	                        SECCOMP_FILTER_FLAG_NEW_LISTENER, s_args->filter);
	if (s_notify < 0)
		s_fail("seccomp");
	fcntl(s_notify, F_SETFD, FD_CLOEXEC);
	/* The exit_group round trip stays on one CPU: the kernel wakes init
	 * on the exiting task's CPU, and the task on init's, instead of each
	 * waking a CPU that may be idle. A scheduling hint only (it changes
	 * no decision): a kernel without it (before 6.6) refuses it, and the
	 * round trip works as before. */
	(void)ioctl(s_notify, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
	            (uint64_t)SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
	s_have_cpus = sched_getaffinity(0, sizeof(s_cpus), &s_cpus) == 0;

	s_sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s_sigfd < 0)
		s_fail("signalfd");
	/* Fault in what the first command touches, so a spare pays for it: one
	 * madvise(MADV_POPULATE_WRITE) per range (Linux 5.14) rather than a page
	 * fault per page, each a trap to the hypervisor in a VM; memset where
	 * the kernel has no MADV_POPULATE_WRITE. */
	s_prefault(s_stack + S_STACK_SIZE - 65536, 65536);
	s_prefault(s_inbuf, 65536);
	s_send_ready(-1);
	s_serve();
}

int
sbx_init_lean_main(void)
{
	static sbx_init_args_t args;
	static sbx_init_spawn_t sp;
	static struct sock_fprog filter;
	s_ctl = SBX_INIT_FD_CTL; /* s_fail's channel */
	/* The parent queued this before the clone: it is there already. */
	ssize_t n = recv(SBX_INIT_FD_CTL, &sp, sizeof(sp), MSG_TRUNC | MSG_DONTWAIT);
	if (n != (ssize_t)sizeof(sp) || sp.magic != SBX_INIT_MAGIC || sp.n_joins < 0 ||
	    sp.n_joins > SBX_CG_JOIN_MAX || memchr(sp.workspace, 0, sizeof(sp.workspace)) == NULL ||
	    memchr(sp.root_dir, 0, sizeof(sp.root_dir)) == NULL) {
		errno = EPROTO;
		s_fail("bad spawn message (%zd bytes)", n);
	}
	struct stat st;
	sbx_init_data_t h;
	if (fstat(SBX_INIT_FD_DATA, &st) != 0 || st.st_size < (off_t)sizeof(h) ||
	    st.st_size > (off_t)UINT32_MAX)
		s_fail("init data");
	size_t size = (size_t)st.st_size;
	const uint8_t *d = mmap(NULL, size, PROT_READ, MAP_PRIVATE, SBX_INIT_FD_DATA, 0);
	if (d == MAP_FAILED)
		s_fail("mmap init data");
	close(SBX_INIT_FD_DATA);
	memcpy(&h, d, sizeof(h));
	/* Each bound is checked on its own, in 64 bits: no sum wraps. */
	size_t plan_min = offsetof(sbx_plan_t, m);
	const sbx_plan_t *plan = (const sbx_plan_t *)(d + h.plan_off);
	if (h.magic != SBX_INIT_MAGIC || h.size != size || h.plan_off % 8 != 0 ||
	    h.filter_off % 8 != 0 || (uint64_t)h.plan_off + h.plan_len > size ||
	    h.plan_len < plan_min || (uint64_t)h.filter_off + (uint64_t)h.filter_n * 8 > size ||
	    h.filter_n == 0 || h.filter_n > 4096 || plan->n < 0 || plan->n > SBX_MNT_MAX ||
	    h.plan_len != plan_min + (size_t)plan->n * sizeof(sbx_mnt_t)) {
		errno = EPROTO;
		s_fail("bad init data");
	}
	filter.len = (unsigned short)h.filter_n;
	filter.filter = (struct sock_filter *)(uintptr_t)(d + h.filter_off);
	args.ctl = SBX_INIT_FD_CTL;
	args.errfd = 2;
	args.plan = plan;
	args.filter = &filter;
	memcpy(args.workspace, sp.workspace, sizeof(args.workspace));
	memcpy(args.root_dir, sp.root_dir, sizeof(args.root_dir));
	args.env_none = sbx_env_none;
	args.env_proxy = sbx_env_proxy;
	args.argv_area = NULL; /* ours: "sandboxd-init", nothing of sandboxd's */
	args.n_joins = sp.n_joins;
	for (int i = 0; i < sp.n_joins; i++)
		args.joins[i] = SBX_INIT_FD_JOIN0 + i;
	for (;;)
		sbx_init_main(&args);
}

int
sbx_init_parse_done(const uint8_t *p, size_t len, uint32_t cap, sbx_result_view_t *v,
                    const char **why)
{
	if (len < sizeof(v->done)) {
		*why = "protocol error from init";
		return -1;
	}
	memcpy(&v->done, p, sizeof(v->done));
	sbx_ctl_done_t *d = &v->done;
	/* Each size is checked before the sum, so the sum cannot wrap. */
	if (d->out_len > cap || d->err_len > cap || d->cwd_len >= SBX_CWD_MAX ||
	    (size_t)d->out_len + d->err_len + d->cwd_len != len - sizeof(*d)) {
		*why = "bad result sizes from init";
		return -1;
	}
	v->out = p + sizeof(*d);
	v->err = v->out + d->out_len;
	v->cwd = (const char *)(v->err + d->err_len);
	for (uint32_t i = 0; i < d->cwd_len; i++)
		if ((unsigned char)v->cwd[i] < 0x20 || v->cwd[i] == 0x7f ||
		    (i == 0 && v->cwd[0] != '/'))
			d->cwd_len = 0;
	return 0;
}
