/* The seccomp policy for sandboxed commands: one table, built into BPF once, printed by `sandboxd
 * policy`. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <jansson.h>
#include <seccomp.h>

#include "ahp/log.h"
#include "sbx.h"

/*
 * Default deny: a syscall the table does not name fails with ENOSYS, so a
 * syscall a future kernel adds stays closed until someone reads it and adds a
 * row, and libc's "not implemented, use the older call" fallbacks work. The
 * sandbox already runs as an unprivileged uid with no capabilities in a user
 * namespace; the allowlist is what ordinary programs need (shells, coreutils,
 * Python, Node, git, curl, gcc, make, pip, npm: tests/integration/sandboxd/
 * test_tools.py runs each), in the spirit of Docker's default profile (moby
 * profiles/seccomp/default.json) without what needs a capability there. The
 * EPERM rows are calls where a clear "not permitted" helps the caller and the
 * reader: namespaces, mounts, tracing, kernel attack surface. Every row says
 * why. `sandboxd policy` prints this table and docs/security.md is generated
 * from that output (scripts/gen-security-doc), so the three cannot drift.
 *
 * Names are resolved by libseccomp. A name it cannot resolve, or one that is
 * not a real syscall of an architecture its row is marked for, fails the
 * build of the policy (sandboxd refuses to start) with the name in the error.
 * Rows are checked for every supported architecture on every build, whichever
 * one runs.
 */

/* Architectures a row applies to. */
#define S_X86_64 1u
#define S_AARCH64 2u
#define S_ALL (S_X86_64 | S_AARCH64)

#if defined(__x86_64__)
#define S_ARCH_THIS S_X86_64
#define S_AUDIT_ARCH AUDIT_ARCH_X86_64
#define S_ARCH_NAME "x86_64"
#elif defined(__aarch64__)
#define S_ARCH_THIS S_AARCH64
#define S_AUDIT_ARCH AUDIT_ARCH_AARCH64
#define S_ARCH_NAME "aarch64"
#else
#error "sandboxd/seccomp.c: add this architecture's rows (S_* masks) and its AUDIT_ARCH"
#endif

static const struct {
	unsigned mask;
	uint32_t scmp;
	const char *name;
} s_arches[] = {
    {S_X86_64, SCMP_ARCH_X86_64, "x86_64"},
    {S_AARCH64, SCMP_ARCH_AARCH64, "aarch64"},
};

/* Actions: an errno value (> 0), or one of these. */
#define S_ACT_ALLOW 0
#define S_ACT_NOTIFY (-1)
/* What every syscall the table does not name gets. */
#define S_DEFAULT_ERRNO ENOSYS

/* Longest syscall name we accept in the table (libseccomp's are < 32). */
#define S_NAME_MAX 48
/* Syscall numbers are below this on every supported architecture (x86_64 < 512, aarch64 < 512). */
#define S_NR_MAX 1024

typedef struct {
	const char *names; /* space-separated syscall names */
	int act;           /* S_ACT_ALLOW, S_ACT_NOTIFY or an errno */
	unsigned arch;     /* S_ALL, S_X86_64, ... */
	const char *why;
} s_row_t;

/* clang-format off */
static const s_row_t s_rows[] = {
    /* ---- allowed ---- */
    {"read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek sendfile "
     "splice tee vmsplice copy_file_range", S_ACT_ALLOW, S_ALL,
     "I/O on descriptors the process already holds"},
    {"openat openat2 close close_range dup dup3 fcntl flock pipe2 fstat newfstatat statx statfs "
     "fstatfs faccessat faccessat2 readlinkat getcwd chdir fchdir getdents64 truncate ftruncate "
     "fsync fdatasync syncfs sync_file_range fallocate fadvise64 readahead umask",
     S_ACT_ALLOW, S_ALL,
     "files and directories; what a path reaches is decided by the mount tree init built"},
    {"mkdirat unlinkat renameat renameat2 linkat symlinkat fchmod fchmodat fchown fchownat "
     "utimensat", S_ACT_ALLOW, S_ALL,
     "changing files: only /workspace and /tmp are writable"},
    {"getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr fsetxattr "
     "removexattr lremovexattr fremovexattr", S_ACT_ALLOW, S_ALL,
     "extended attributes (cp -a, tar, git); trusted.* and security.* need capabilities"},
    {"open creat stat lstat access readlink mkdir rmdir unlink rename link symlink chmod chown "
     "lchown utime utimes futimesat getdents dup2 pipe", S_ACT_ALLOW, S_X86_64,
     "the older x86-64 path and descriptor calls (aarch64 has only the *at forms)"},
    {"poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait "
     "epoll_pwait2 eventfd eventfd2 inotify_init inotify_init1 inotify_add_watch "
     "inotify_rm_watch", S_ACT_ALLOW, S_X86_64,
     "waiting for descriptors (event loops: Node, Python asyncio, curl)"},
    {"ppoll pselect6 epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 eventfd2 inotify_init1 "
     "inotify_add_watch inotify_rm_watch", S_ACT_ALLOW, S_AARCH64,
     "waiting for descriptors (event loops: Node, Python asyncio, curl)"},
    {"io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents", S_ACT_ALLOW, S_ALL,
     "Linux AIO (databases, some build tools); unlike io_uring every operation is its own "
     "syscall, checked here"},
    {"brk mmap munmap mremap mprotect madvise mincore msync mlock mlock2 munlock mlockall "
     "munlockall memfd_create membarrier pkey_alloc pkey_free pkey_mprotect remap_file_pages",
     S_ACT_ALLOW, S_ALL,
     "the process's own memory (JITs, allocators); locked memory is bounded by RLIMIT_MEMLOCK "
     "and the memory cgroup"},
    {"execve execveat wait4 waitid exit set_tid_address set_robust_list get_robust_list futex "
     "futex_waitv rseq gettid getpid getppid restart_syscall sched_yield pidfd_open "
     "pidfd_send_signal", S_ACT_ALLOW, S_ALL,
     "processes and threads (creating them is clone below, with its namespace flags refused)"},
    {"fork vfork arch_prctl set_thread_area get_thread_area", S_ACT_ALLOW, S_X86_64,
     "x86-64 process and thread-local-storage setup"},
    {"rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait "
     "rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack kill tkill tgkill signalfd4", S_ACT_ALLOW,
     S_ALL, "signals; the pid namespace keeps them inside the sandbox"},
    {"signalfd pause alarm", S_ACT_ALLOW, S_X86_64, "signals (older x86-64 forms)"},
    {"clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday getitimer setitimer "
     "timer_create timer_settime timer_gettime timer_getoverrun timer_delete timerfd_create "
     "timerfd_settime timerfd_gettime", S_ACT_ALLOW, S_ALL, "reading clocks, sleeping, timers"},
    {"time", S_ACT_ALLOW, S_X86_64, "reading the clock (older x86-64 form)"},
    {"getuid geteuid getgid getegid getresuid getresgid getgroups setuid setgid setreuid setregid "
     "setresuid setresgid setgroups setfsuid setfsgid capget capset", S_ACT_ALLOW, S_ALL,
     "identity: one mapped uid and no capabilities, so the kernel refuses any real change"},
    {"getpgid setpgid getsid setsid", S_ACT_ALLOW, S_ALL, "process groups and sessions (shells)"},
    {"getpgrp", S_ACT_ALLOW, S_X86_64, "process groups (older x86-64 form)"},
    {"prctl prlimit64 getrlimit setrlimit getrusage times getpriority setpriority ioprio_get "
     "ioprio_set sched_getaffinity sched_setaffinity sched_getparam sched_setparam "
     "sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min "
     "sched_rr_get_interval sched_getattr sched_setattr getcpu", S_ACT_ALLOW, S_ALL,
     "the process's own limits, priority and CPU placement (raising needs privilege; the cgroup "
     "bounds the rest)"},
    {"uname sysinfo getrandom", S_ACT_ALLOW, S_ALL, "system information and randomness"},
    {"bind listen accept accept4 connect getsockname getpeername getsockopt setsockopt sendto "
     "recvfrom sendmsg recvmsg sendmmsg recvmmsg shutdown", S_ACT_ALLOW, S_ALL,
     "sockets the process made (socket() itself is checked below); the network namespace has "
     "only lo"},
    {"shmget shmat shmdt shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop semctl "
     "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr", S_ACT_ALLOW,
     S_ALL, "System V and POSIX IPC; the IPC namespace is the sandbox's own"},
    {"seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self", S_ACT_ALLOW,
     S_ALL, "a process may restrict itself further (browsers, test runners)"},
    /* ---- the cwd side channel ---- */
    {"exit_group", S_ACT_NOTIFY, S_ALL,
     "reported to init, which reads the exiting shell's cwd while the call is held, then lets "
     "it continue (never denied)"},
    /* ---- refused with EPERM ---- */
    {"mount umount2 pivot_root chroot", EPERM, S_ALL,
     "the root is built once by init; nothing inside may change or reveal what it hides"},
    {"fsopen fsconfig fsmount fspick move_mount open_tree mount_setattr", EPERM, S_ALL,
     "the new mount API (open_tree also clones mounts)"},
    {"unshare setns", EPERM, S_ALL,
     "new or other namespaces (a nested user namespace hands out fresh capabilities)"},
    {"ptrace process_vm_readv process_vm_writev process_madvise kcmp pidfd_getfd", EPERM, S_ALL,
     "tracing, reading or changing other processes (init shares the agent's uid)"},
    {"bpf perf_event_open userfaultfd", EPERM, S_ALL,
     "large kernel attack surface with a history of exploits; userfaultfd is used to win races"},
    {"io_uring_setup io_uring_enter io_uring_register", EPERM, S_ALL,
     "io_uring operations are not syscalls, so this filter could not see them"},
    {"keyctl add_key request_key", EPERM, S_ALL, "kernel keyrings are not namespaced"},
    {"open_by_handle_at name_to_handle_at", EPERM, S_ALL,
     "file handles bypass the mount tree (the \"shocker\" escape)"},
    {"fanotify_init", EPERM, S_ALL, "filesystem-wide monitoring"},
    {"kexec_load kexec_file_load init_module finit_module delete_module reboot swapon swapoff",
     EPERM, S_ALL, "the machine itself: kernels, modules, power, swap"},
    {"iopl ioperm", EPERM, S_X86_64, "raw I/O port access"},
    {"settimeofday clock_settime clock_adjtime adjtimex", EPERM, S_ALL,
     "the clock is not namespaced"},
    {"sethostname setdomainname", EPERM, S_ALL, "the sandbox's identity is fixed"},
    {"acct quotactl quotactl_fd lookup_dcookie syslog vhangup migrate_pages move_pages", EPERM,
     S_ALL, "host-wide state, kernel addresses, other processes' memory placement"},
    {"uselib", EPERM, S_X86_64, "obsolete loader entry point"},
    {"sync", EPERM, S_ALL,
     "writes back every filesystem of the host, whatever the mount namespace, and flushes its "
     "disks; libc's sync() returns nothing, so `sync` still succeeds. syncfs and fsync stay: "
     "on the sandbox's own disk they reach no device; on a read-only host mount (/usr) they "
     "still make that filesystem write back and flush (docs/security.md \"No barriers\")"},
    /* ---- refused with ENOSYS (the default, named because it matters) ---- */
    {"clone3", ENOSYS, S_ALL,
     "its flags are in memory where seccomp cannot look; ENOSYS makes libc fall back to "
     "clone(), whose flags are checked"},
#ifdef SBX_SECCOMP_TEST_ROW
    /* tests/security/seccomp_table_test.c: a wrong row must fail the build */
    SBX_SECCOMP_TEST_ROW,
#endif
};

/*
 * Argument rules. libseccomp compares 64-bit values, refuses a rule whose
 * action is the default one and has no "otherwise" per syscall, so these few
 * syscalls are decided by a small BPF prefix built from this table and run
 * before libseccomp's program: per syscall the rules are tried in order and
 * the first that matches decides; the last rule of a syscall is S_OP_ALWAYS.
 * Every comparison looks at the LOW 32 BITS of the argument only: the kernel
 * reads all of these as 32-bit values (socket family and type, the ioctl
 * request, mknod's mode, personality, and clone's flags via lower_32_bits()),
 * so garbage in the upper half can neither slip past a rule nor be refused
 * for a value the kernel would never see.
 */
enum { S_OP_EQ, S_OP_ANY, S_OP_ALWAYS };

typedef struct {
	const char *id;      /* names this rule in `sandboxd policy` and the probes */
	const char *syscall; /* one name */
	unsigned arch;
	int op;         /* EQ: (arg & mask) == value; ANY: (arg & mask) != 0; ALWAYS */
	unsigned argno; /* 0..5 */
	uint32_t mask, value;
	int act; /* S_ACT_ALLOW or an errno */
	const char *match;
	const char *why;
} s_argrule_t;

#define S_NS_FLAGS                                                                                 \
	(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |             \
	 CLONE_NEWPID | CLONE_NEWNET)

static const s_argrule_t s_argrules[] = {
    {"clone_ns", "clone", S_ALL, S_OP_ANY, 0, S_NS_FLAGS, 0, EPERM,
     "flags with any CLONE_NEW* namespace flag",
     "a nested user namespace hands out fresh capabilities"},
    {"clone", "clone", S_ALL, S_OP_ALWAYS, 0, 0, 0, S_ACT_ALLOW, "any other flags",
     "threads and fork"},

#define S_SOCKET_RULES(call)                                                                       \
	{call "_raw", call, S_ALL, S_OP_EQ, 1, 0xf, SOCK_RAW, EPERM, "type SOCK_RAW",             \
	 "raw IP (CAP_NET_RAW is missing anyway)"},                                                \
	{call "_packet", call, S_ALL, S_OP_EQ, 1, 0xf, SOCK_PACKET, EPERM, "type SOCK_PACKET",    \
	 "link-layer packets"},                                                                    \
	{call "_unix", call, S_ALL, S_OP_EQ, 0, 0xffffffffu, AF_UNIX, S_ACT_ALLOW,                 \
	 "family AF_UNIX", "reaches only sockets inside the sandbox"},                             \
	{call "_inet", call, S_ALL, S_OP_EQ, 0, 0xffffffffu, AF_INET, S_ACT_ALLOW,                 \
	 "family AF_INET", "the network namespace has only lo (and the proxy listener)"},          \
	{call "_inet6", call, S_ALL, S_OP_EQ, 0, 0xffffffffu, AF_INET6, S_ACT_ALLOW,               \
	 "family AF_INET6", "as AF_INET"},                                                         \
	{call "_family", call, S_ALL, S_OP_ALWAYS, 0, 0, 0, EAFNOSUPPORT, "any other family",      \
	 "netlink (the kernel's configuration interface), packet sockets and the long tail of "    \
	 "rarely used protocols"}
    S_SOCKET_RULES("socket"),
    S_SOCKET_RULES("socketpair"),
#undef S_SOCKET_RULES

    {"ioctl_tiocsti", "ioctl", S_ALL, S_OP_EQ, 1, 0xffffffffu, TIOCSTI, EPERM, "request TIOCSTI",
     "injecting input into a terminal"},
    {"ioctl_tioclinux", "ioctl", S_ALL, S_OP_EQ, 1, 0xffffffffu, TIOCLINUX, EPERM,
     "request TIOCLINUX", "console selection and input injection"},
    {"ioctl", "ioctl", S_ALL, S_OP_ALWAYS, 0, 0, 0, S_ACT_ALLOW, "any other request",
     "terminals, sockets, files: each driver checks its own permissions"},

    {"mknod_chr", "mknod", S_X86_64, S_OP_EQ, 1, S_IFMT, S_IFCHR, EPERM, "a character device",
     "device nodes"},
    {"mknod_blk", "mknod", S_X86_64, S_OP_EQ, 1, S_IFMT, S_IFBLK, EPERM, "a block device",
     "device nodes"},
    {"mknod", "mknod", S_X86_64, S_OP_ALWAYS, 0, 0, 0, S_ACT_ALLOW, "FIFOs, sockets, files",
     "mkfifo"},
    {"mknodat_chr", "mknodat", S_ALL, S_OP_EQ, 2, S_IFMT, S_IFCHR, EPERM, "a character device",
     "device nodes"},
    {"mknodat_blk", "mknodat", S_ALL, S_OP_EQ, 2, S_IFMT, S_IFBLK, EPERM, "a block device",
     "device nodes"},
    {"mknodat", "mknodat", S_ALL, S_OP_ALWAYS, 0, 0, 0, S_ACT_ALLOW, "FIFOs, sockets, files",
     "mkfifo"},

    {"personality_linux", "personality", S_ALL, S_OP_EQ, 0, 0xffffffffu, 0x0000, S_ACT_ALLOW,
     "PER_LINUX", "the normal persona"},
    {"personality_linux32", "personality", S_ALL, S_OP_EQ, 0, 0xffffffffu, 0x0008,
     S_ACT_ALLOW, "PER_LINUX32", "setarch linux32"},
    {"personality_uname26", "personality", S_ALL, S_OP_EQ, 0, 0xffffffffu, 0x20000,
     S_ACT_ALLOW, "UNAME26", "old programs that parse the kernel version"},
    {"personality_linux32_uname26", "personality", S_ALL, S_OP_EQ, 0, 0xffffffffu, 0x20008,
     S_ACT_ALLOW, "PER_LINUX32|UNAME26", "both"},
    {"personality_query", "personality", S_ALL, S_OP_EQ, 0, 0xffffffffu, 0xffffffffu,
     S_ACT_ALLOW, "0xffffffff", "the query"},
    {"personality_other", "personality", S_ALL, S_OP_ALWAYS, 0, 0, 0, EPERM, "anything else",
     "READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE and MMAP_PAGE_ZERO help exploits"},
};
/* clang-format on */

#define S_NROWS (sizeof(s_rows) / sizeof(s_rows[0]))
#define S_NARGRULES (sizeof(s_argrules) / sizeof(s_argrules[0]))

/* Copies the next space-separated name of *p into name; 1 when one was found. */
static int
s_next_name(const char **p, char name[S_NAME_MAX])
{
	const char *s = *p;
	while (*s == ' ')
		s++;
	size_t n = strcspn(s, " ");
	if (n == 0)
		return 0;
	if (n >= S_NAME_MAX)
		n = S_NAME_MAX - 1; /* resolves to nothing: reported as unknown */
	memcpy(name, s, n);
	name[n] = '\0';
	*p = s + strcspn(s, " ");
	return 1;
}

/* The syscall number of name on one architecture: -1 with a log line naming
 * it when libseccomp does not know it, or it is not a syscall there. */
static int
s_resolve(uint32_t scmp_arch, const char *arch_name, const char *name)
{
	int nr = seccomp_syscall_resolve_name_arch(scmp_arch, name);
	if (nr == __NR_SCMP_ERROR) {
		log_error(
		    "seccomp: unknown syscall \"%s\" (libseccomp %u.%u.%u cannot resolve it on "
		    "%s)",
		    name, seccomp_version()->major, seccomp_version()->minor,
		    seccomp_version()->micro, arch_name);
		return -1;
	}
	if (nr < 0 || nr >= S_NR_MAX) {
		log_error("seccomp: \"%s\" is not a syscall on %s (mark its row for the "
		          "architectures that have it)",
		          name, arch_name);
		return -1;
	}
	return nr;
}

/* Every name of every row, for every architecture it is marked for: resolves,
 * and appears once per architecture (in the rows or as an argument-rule
 * syscall, never both). Each argument-rule syscall's rules are consecutive and
 * end with S_OP_ALWAYS. 0 / -1 (logged). */
static int
s_check_tables(void)
{
	int rc = 0;
	for (size_t a = 0; a < sizeof(s_arches) / sizeof(s_arches[0]); a++) {
		unsigned char seen[S_NR_MAX] = {0};
		char name[S_NAME_MAX];
		for (size_t i = 0; i < S_NROWS; i++) {
			if (!(s_rows[i].arch & s_arches[a].mask))
				continue;
			const char *p = s_rows[i].names;
			while (s_next_name(&p, name)) {
				int nr = s_resolve(s_arches[a].scmp, s_arches[a].name, name);
				if (nr < 0) {
					rc = -1;
				} else if (seen[nr]++) {
					log_error("seccomp: \"%s\" appears twice for %s", name,
					          s_arches[a].name);
					rc = -1;
				}
			}
		}
		for (size_t i = 0; i < S_NARGRULES; i++) {
			const s_argrule_t *r = &s_argrules[i];
			if (!(r->arch & s_arches[a].mask))
				continue;
			int nr = s_resolve(s_arches[a].scmp, s_arches[a].name, r->syscall);
			if (nr < 0) {
				rc = -1;
				continue;
			}
			/* the first rule of a syscall's run claims the number */
			if ((i == 0 || strcmp(s_argrules[i - 1].syscall, r->syscall) != 0) &&
			    seen[nr]++) {
				log_error(
				    "seccomp: \"%s\" has argument rules twice, or also a row, "
				    "for %s",
				    r->syscall, s_arches[a].name);
				rc = -1;
			}
			int last = i + 1 == S_NARGRULES ||
			           strcmp(s_argrules[i + 1].syscall, r->syscall) != 0;
			if (last != (r->op == S_OP_ALWAYS) || r->argno > 5) {
				log_error("seccomp: the argument rules of \"%s\" must end with one "
				          "ALWAYS rule",
				          r->syscall);
				rc = -1;
			}
		}
	}
	return rc;
}

static uint32_t
s_scmp_action(int act)
{
	if (act == S_ACT_ALLOW)
		return SCMP_ACT_ALLOW;
	if (act == S_ACT_NOTIFY)
		return SCMP_ACT_NOTIFY;
	return SCMP_ACT_ERRNO((uint32_t)act);
}

static uint32_t
s_ret(int act)
{
	if (act == S_ACT_ALLOW)
		return SECCOMP_RET_ALLOW;
	return SECCOMP_RET_ERRNO | ((uint32_t)act & SECCOMP_RET_DATA);
}

/* The rows of this architecture into libseccomp's context. 0 / -1. */
static int
s_add_rows(scmp_filter_ctx ctx)
{
	char name[S_NAME_MAX];
	for (size_t i = 0; i < S_NROWS; i++) {
		if (!(s_rows[i].arch & S_ARCH_THIS))
			continue;
		const char *p = s_rows[i].names;
		while (s_next_name(&p, name)) {
			int nr = seccomp_syscall_resolve_name(name);
			if (nr < 0) {
				log_error("seccomp: unknown syscall \"%s\"", name);
				return -1;
			}
			/* libseccomp refuses rules equal to the default: the default covers them */
			if (s_rows[i].act == S_DEFAULT_ERRNO)
				continue;
			int rc = seccomp_rule_add(ctx, s_scmp_action(s_rows[i].act), nr, 0);
			if (rc != 0) {
				log_error("seccomp: rule for %s: %s", name, strerror(-rc));
				return -1;
			}
		}
	}
	return 0;
}

/* Offset of the low 32 bits of argument n in struct seccomp_data. */
static uint32_t
s_arg_lo(unsigned n)
{
	uint32_t off = (uint32_t)offsetof(struct seccomp_data, args[0]) + 8u * n;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	off += 4;
#endif
	return off;
}

/* Instructions one argument rule takes in the prefix. */
static size_t
s_rule_len(const s_argrule_t *r)
{
	if (r->op == S_OP_ALWAYS)
		return 1; /* ret */
	if (r->op == S_OP_EQ && r->mask != 0xffffffffu)
		return 4; /* ld, and, jeq, ret */
	return 3;         /* ld, jeq|jset, ret */
}

/*
 * The prefix for the argument rules of this architecture, before libseccomp's
 * program (see s_argrules). Anything that is not a native-ABI syscall with
 * argument rules jumps to the end, i.e. to libseccomp's program, which kills
 * other ABIs and decides the rest. Returns the instruction count written to
 * out (when out is not NULL).
 */
static size_t
s_prefix(struct sock_filter *out, const int *nrs)
{
	size_t n = 0;
#define S_EMIT(insn)                                                                               \
	do {                                                                                       \
		if (out)                                                                           \
			out[n] = (struct sock_filter)insn;                                         \
		n++;                                                                               \
	} while (0)
	/* total length first, for the jumps to the end */
	size_t total = 4; /* ld arch, jeq, ja, ld nr */
#if defined(__x86_64__)
	total += 2;
#endif
	for (size_t i = 0; i < S_NARGRULES; i++) {
		if (!(s_argrules[i].arch & S_ARCH_THIS))
			continue;
		if (i == 0 || strcmp(s_argrules[i - 1].syscall, s_argrules[i].syscall) != 0)
			total += 2;
		total += s_rule_len(&s_argrules[i]);
	}

	S_EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
	S_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_AUDIT_ARCH, 1, 0));
	S_EMIT(BPF_STMT(BPF_JMP | BPF_JA, (uint32_t)(total - n - 1)));
	S_EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
	/* x32 numbers (bit 30) are left to libseccomp, which kills them */
	S_EMIT(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
	S_EMIT(BPF_STMT(BPF_JMP | BPF_JA, (uint32_t)(total - n - 1)));
#endif
	for (size_t i = 0; i < S_NARGRULES;) {
		const char *sc = s_argrules[i].syscall;
		size_t j = i, block = 0;
		for (; j < S_NARGRULES && strcmp(s_argrules[j].syscall, sc) == 0; j++)
			if (s_argrules[j].arch & S_ARCH_THIS)
				block += s_rule_len(&s_argrules[j]);
		if (!(s_argrules[i].arch & S_ARCH_THIS)) {
			i = j;
			continue;
		}
		/* A holds nr here: skip the block unless it is this syscall */
		S_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nrs[i], 1, 0));
		S_EMIT(BPF_STMT(BPF_JMP | BPF_JA, (uint32_t)block));
		for (; i < j; i++) {
			const s_argrule_t *r = &s_argrules[i];
			if (!(r->arch & S_ARCH_THIS))
				continue;
			if (r->op != S_OP_ALWAYS)
				S_EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, s_arg_lo(r->argno)));
			if (r->op == S_OP_EQ && r->mask != 0xffffffffu)
				S_EMIT(BPF_STMT(BPF_ALU | BPF_AND | BPF_K, r->mask));
			if (r->op == S_OP_EQ)
				S_EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, r->value, 0, 1));
			else if (r->op == S_OP_ANY)
				S_EMIT(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, r->mask, 0, 1));
			S_EMIT(BPF_STMT(BPF_RET | BPF_K, s_ret(r->act)));
		}
	}
#undef S_EMIT
	if (n != total) {
		log_error("seccomp: prefix length %zu, expected %zu", n, total);
		return 0;
	}
	return n;
}

int
sbx_seccomp_build(struct sock_fprog *prog)
{
	memset(prog, 0, sizeof(*prog));
	if (s_check_tables() != 0) {
		log_error("seccomp: the policy table is wrong (see above); refusing to build it");
		return -1;
	}
	int nrs[S_NARGRULES];
	for (size_t i = 0; i < S_NARGRULES; i++)
		nrs[i] = (s_argrules[i].arch & S_ARCH_THIS)
		             ? seccomp_syscall_resolve_name(s_argrules[i].syscall)
		             : -1;

	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(S_DEFAULT_ERRNO));
	if (ctx == NULL) {
		log_error("seccomp: init failed");
		return -1;
	}
	int rc = -1, mfd = -1;
	uint8_t *buf = NULL;
	/* Other ABIs (i386 int 0x80, x32 numbers) would dodge every rule: kill the process. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0)
		goto out;
	/* init sets no_new_privs itself, before any command runs. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) != 0)
		goto out;
	/* A binary search over ~300 syscalls instead of a linear scan. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) != 0)
		goto out;
	if (s_add_rows(ctx) != 0)
		goto out;

	mfd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
	if (mfd < 0 || seccomp_export_bpf(ctx, mfd) != 0) {
		log_error("seccomp: export: %s", strerror(errno));
		goto out;
	}
	off_t size = lseek(mfd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0 || size > 65536) {
		log_error("seccomp: exported program has a bad size %lld", (long long)size);
		goto out;
	}
	size_t pre = s_prefix(NULL, nrs) * sizeof(struct sock_filter);
	if (pre == 0)
		goto out;
	buf = malloc(pre + (size_t)size);
	if (buf == NULL)
		goto out;
	(void)s_prefix((struct sock_filter *)buf, nrs);
	if (pread(mfd, buf + pre, (size_t)size, 0) != size) {
		log_error("seccomp: reading the exported program failed");
		goto out;
	}
	size_t n = (pre + (size_t)size) / sizeof(struct sock_filter);
	if (n > BPF_MAXINSNS) {
		log_error("seccomp: program too long (%zu instructions)", n);
		goto out;
	}
	prog->len = (unsigned short)n;
	prog->filter = (struct sock_filter *)buf;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	if (mfd >= 0)
		close(mfd);
	seccomp_release(ctx);
	return rc;
}

/* "EPERM", "allow", "notify" */
static const char *
s_act_name(int act)
{
	if (act == S_ACT_ALLOW)
		return "allow";
	if (act == S_ACT_NOTIFY)
		return "notify";
	const char *n = strerrorname_np(act);
	return n != NULL ? n : "E?";
}

static size_t
s_count(int want_allow)
{
	size_t c = 0;
	char name[S_NAME_MAX];
	for (size_t i = 0; i < S_NROWS; i++) {
		if (!(s_rows[i].arch & S_ARCH_THIS))
			continue;
		if ((s_rows[i].act == S_ACT_ALLOW) != want_allow)
			continue;
		const char *p = s_rows[i].names;
		while (s_next_name(&p, name))
			c++;
	}
	return c;
}

/* The argument rule's condition as text: "arg1 & 0xf == 3". */
static void
s_cond(const s_argrule_t *r, char *buf, size_t len)
{
	if (r->op == S_OP_ALWAYS)
		snprintf(buf, len, "otherwise");
	else if (r->op == S_OP_ANY)
		snprintf(buf, len, "arg%u & 0x%x != 0", r->argno, r->mask);
	else if (r->mask == 0xffffffffu)
		snprintf(buf, len, "arg%u == 0x%x", r->argno, r->value);
	else
		snprintf(buf, len, "arg%u & 0x%x == 0x%x", r->argno, r->mask, r->value);
}

static json_t *
s_json(void)
{
	json_t *root = json_object(), *rows = json_array(), *rules = json_array();
	char name[S_NAME_MAX], cond[96];
	json_object_set_new(root, "arch", json_string(S_ARCH_NAME));
	json_object_set_new(root, "default", json_string(s_act_name(S_DEFAULT_ERRNO)));
	json_object_set_new(root, "default_why",
	                    json_string("any syscall not named here; libc falls back to an older "
	                                "call where one exists"));
	json_object_set_new(root, "other_abi", json_string("kill_process"));
	json_object_set_new(
	    root, "other_abi_why",
	    json_string(
	        "syscalls through the i386 entry (int 0x80) or with x32 numbers would dodge every "
	        "rule: the process is killed (SIGSYS)"));
	json_object_set_new(root, "allowed", json_integer((json_int_t)s_count(1)));
	for (size_t i = 0; i < S_NROWS; i++) {
		if (!(s_rows[i].arch & S_ARCH_THIS))
			continue;
		json_t *names = json_array();
		const char *p = s_rows[i].names;
		while (s_next_name(&p, name))
			json_array_append_new(names, json_string(name));
		json_t *o = json_object();
		json_object_set_new(o, "action", json_string(s_act_name(s_rows[i].act)));
		json_object_set_new(o, "names", names);
		json_object_set_new(o, "why", json_string(s_rows[i].why));
		json_array_append_new(rows, o);
	}
	for (size_t i = 0; i < S_NARGRULES; i++) {
		const s_argrule_t *r = &s_argrules[i];
		if (!(r->arch & S_ARCH_THIS))
			continue;
		s_cond(r, cond, sizeof(cond));
		json_t *o = json_object();
		json_object_set_new(o, "id", json_string(r->id));
		json_object_set_new(o, "syscall", json_string(r->syscall));
		json_object_set_new(o, "condition", json_string(cond));
		json_object_set_new(o, "match", json_string(r->match));
		json_object_set_new(o, "action", json_string(s_act_name(r->act)));
		json_object_set_new(o, "why", json_string(r->why));
		json_array_append_new(rules, o);
	}
	json_object_set_new(root, "rows", rows);
	json_object_set_new(root, "argument_rules", rules);
	return root;
}

int
sbx_seccomp_describe(void *file, int as_json)
{
	FILE *f = file;
	struct sock_fprog prog;
	/* what is printed must also build: an unknown name fails here too */
	if (sbx_seccomp_build(&prog) != 0)
		return -1;
	unsigned insns = prog.len;
	free(prog.filter);
	if (as_json) {
		json_t *j = s_json();
		json_object_set_new(j, "bpf_instructions", json_integer(insns));
		int rc = json_dumpf(j, f, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
		json_decref(j);
		fputc('\n', f);
		return rc == 0 ? 0 : -1;
	}
	char name[S_NAME_MAX], cond[96];
	fprintf(f,
	        "seccomp policy for %s: %zu syscalls allowed, %zu named with another action, "
	        "%zu argument rules, %u BPF instructions\n",
	        S_ARCH_NAME, s_count(1), s_count(0), S_NARGRULES, insns);
	fprintf(f, "default: %s  (any syscall not named below; libc falls back)\n",
	        s_act_name(S_DEFAULT_ERRNO));
	fprintf(f, "other ABIs: kill process  (i386 int 0x80, x32 syscall numbers)\n");
	for (size_t i = 0; i < S_NROWS; i++) {
		if (!(s_rows[i].arch & S_ARCH_THIS))
			continue;
		fprintf(f, "\n%s: %s\n ", s_act_name(s_rows[i].act), s_rows[i].why);
		const char *p = s_rows[i].names;
		size_t col = 1;
		while (s_next_name(&p, name)) {
			if (col + strlen(name) + 1 > 78) {
				fprintf(f, "\n ");
				col = 1;
			}
			col += (size_t)fprintf(f, " %s", name);
		}
		fputc('\n', f);
	}
	fprintf(f, "\nargument rules (low 32 bits of each argument; first match wins):\n");
	for (size_t i = 0; i < S_NARGRULES; i++) {
		const s_argrule_t *r = &s_argrules[i];
		if (!(r->arch & S_ARCH_THIS))
			continue;
		s_cond(r, cond, sizeof(cond));
		fprintf(f, "  %-12s %-22s %-13s %s (%s): %s\n", r->syscall, cond,
		        s_act_name(r->act), r->match, r->id, r->why);
	}
	return 0;
}
