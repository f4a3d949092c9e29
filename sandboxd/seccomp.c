/* The seccomp policy for sandboxed commands: built once with libseccomp, loaded per exec as BPF. */
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
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>

#include "ahp/log.h"
#include "sbx.h"

/*
 * Default allow, with a deny list: the sandbox already runs as an unprivileged
 * uid with no capabilities in a user namespace, so the filter's job is to shut
 * kernel attack surface and namespace/tracing tricks that do not need
 * privilege. Every entry says why; docs/security.md is generated from the
 * same table (`sandboxd policy`).
 */
typedef struct {
	const char *name;
	int err;
	const char *why;
} s_deny_t;

static const s_deny_t s_deny[] = {
    /* mount namespace: the root is built by init; nothing inside may change it */
    {"mount", EPERM, "filesystem tree changes (the root is built by init)"},
    {"umount2", EPERM, "could reveal what the sandbox root hides"},
    {"pivot_root", EPERM, "root changes"},
    {"chroot", EPERM, "root changes"},
    {"fsopen", EPERM, "new mount API"},
    {"fsconfig", EPERM, "new mount API"},
    {"fsmount", EPERM, "new mount API"},
    {"fspick", EPERM, "new mount API"},
    {"move_mount", EPERM, "new mount API"},
    {"open_tree", EPERM, "new mount API (clones mounts)"},
    {"mount_setattr", EPERM, "new mount API"},
    /* namespaces: nested user namespaces give back capabilities over new objects */
    {"unshare", EPERM, "new namespaces (nested userns = fresh capabilities)"},
    {"setns", EPERM, "joining other namespaces"},
    /* tracing and cross-process memory */
    {"ptrace", EPERM, "tracing other processes"},
    {"process_vm_readv", EPERM, "reading another process's memory"},
    {"process_vm_writev", EPERM, "writing another process's memory"},
    {"process_madvise", EPERM, "acting on another process's memory"},
    {"kcmp", EPERM, "probing other processes' kernel objects"},
    {"pidfd_getfd", EPERM, "stealing file descriptors from other processes"},
    /* large kernel attack surface with a history of privilege escalations */
    {"bpf", EPERM, "eBPF programs and maps"},
    {"perf_event_open", EPERM, "perf events (kernel pointers, side channels)"},
    {"userfaultfd", EPERM, "used to win kernel races"},
    {"io_uring_setup", EPERM, "io_uring bypasses seccomp for its operations"},
    {"io_uring_enter", EPERM, "io_uring"},
    {"io_uring_register", EPERM, "io_uring"},
    {"keyctl", EPERM, "kernel keyrings are not namespaced"},
    {"add_key", EPERM, "kernel keyrings are not namespaced"},
    {"request_key", EPERM, "kernel keyrings are not namespaced"},
    {"fanotify_init", EPERM, "filesystem-wide monitoring"},
    {"open_by_handle_at", EPERM, "opens files by handle, bypassing the mount tree"},
    {"name_to_handle_at", EPERM, "leaks file handles for open_by_handle_at"},
    /* the machine itself */
    {"kexec_load", EPERM, "loading a new kernel"},
    {"kexec_file_load", EPERM, "loading a new kernel"},
    {"init_module", EPERM, "kernel modules"},
    {"finit_module", EPERM, "kernel modules"},
    {"delete_module", EPERM, "kernel modules"},
    {"reboot", EPERM, "machine power state"},
    {"swapon", EPERM, "swap configuration"},
    {"swapoff", EPERM, "swap configuration"},
    {"iopl", EPERM, "raw I/O port access"},
    {"ioperm", EPERM, "raw I/O port access"},
    {"settimeofday", EPERM, "the clock is not namespaced"},
    {"clock_settime", EPERM, "the clock is not namespaced"},
    {"clock_adjtime", EPERM, "the clock is not namespaced"},
    {"adjtimex", EPERM, "the clock is not namespaced"},
    {"sethostname", EPERM, "the sandbox's identity is fixed"},
    {"setdomainname", EPERM, "the sandbox's identity is fixed"},
    {"acct", EPERM, "process accounting"},
    {"quotactl", EPERM, "disk quotas"},
    {"quotactl_fd", EPERM, "disk quotas"},
    {"lookup_dcookie", EPERM, "kernel profiling internals"},
    {"syslog", EPERM, "kernel log (kernel addresses)"},
    {"uselib", EPERM, "obsolete loader entry point"},
    {"vhangup", EPERM, "terminal hangup"},
    {"migrate_pages", EPERM, "NUMA placement of other processes"},
    {"move_pages", EPERM, "NUMA placement of other processes"},
    {"clone3", ENOSYS,
     "flags are in memory where seccomp cannot see them; ENOSYS makes libc "
     "fall back to clone(), whose flags are checked"},
};

/* Namespace flags refused in clone(2) (each its own rule: libseccomp ANDs conditions). */
static const unsigned long s_clone_ns[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                           CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                           CLONE_NEWNET};

/* Address families other than these are refused with EAFNOSUPPORT. */
static const int s_bad_af_low[] = {AF_UNSPEC, 3, 4, 5, 6, 7, 8, 9}; /* AF_UNIX=1 INET=2 INET6=10 */

static int
s_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
       const struct scmp_arg_cmp *cmp)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0; /* not on this architecture / libseccomp: nothing to deny */
	int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	if (rc != 0) {
		log_error("seccomp: rule for %s: %s", name, strerror(-rc));
		return -1;
	}
	return 0;
}

static int
s_add_rules(scmp_filter_ctx ctx)
{
	for (size_t i = 0; i < sizeof(s_deny) / sizeof(s_deny[0]); i++)
		if (s_rule(ctx, SCMP_ACT_ERRNO((uint32_t)s_deny[i].err), s_deny[i].name, 0, NULL) !=
		    0)
			return -1;

	for (size_t i = 0; i < sizeof(s_clone_ns) / sizeof(s_clone_ns[0]); i++) {
		struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, s_clone_ns[i], s_clone_ns[i]);
		if (s_rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, &c) != 0)
			return -1;
	}

	/* socket(2) and socketpair(2): only unix, IPv4 and IPv6; the kernel reads the
	 * family as an int, so compare the low 32 bits only (high bits cannot smuggle
	 * a family past an equality test). */
	const char *sock_calls[] = {"socket", "socketpair"};
	for (size_t s = 0; s < 2; s++) {
		for (size_t i = 0; i < sizeof(s_bad_af_low) / sizeof(s_bad_af_low[0]); i++) {
			struct scmp_arg_cmp c =
			    SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)s_bad_af_low[i]);
			if (s_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), sock_calls[s], 1, &c) != 0)
				return -1;
		}
		struct scmp_arg_cmp hi = SCMP_A0(SCMP_CMP_GE, 11);
		if (s_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), sock_calls[s], 1, &hi) != 0)
			return -1;
		/* raw and packet sockets (the type's low nibble; flags live above it) */
		struct scmp_arg_cmp raw = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW);
		struct scmp_arg_cmp pkt = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_PACKET);
		if (s_rule(ctx, SCMP_ACT_ERRNO(EPERM), sock_calls[s], 1, &raw) != 0 ||
		    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), sock_calls[s], 1, &pkt) != 0)
			return -1;
	}

	/* device nodes: mknod of FIFOs and sockets stays allowed */
	const mode_t devs[] = {S_IFCHR, S_IFBLK};
	for (size_t i = 0; i < 2; i++) {
		struct scmp_arg_cmp m1 = SCMP_A1(SCMP_CMP_MASKED_EQ, S_IFMT, devs[i]);
		struct scmp_arg_cmp m2 = SCMP_A2(SCMP_CMP_MASKED_EQ, S_IFMT, devs[i]);
		if (s_rule(ctx, SCMP_ACT_ERRNO(EPERM), "mknod", 1, &m1) != 0 ||
		    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), "mknodat", 1, &m2) != 0)
			return -1;
	}

	/* exit_group(2) is reported to init, which reads the exiting shell's
	 * cwd and lets the call continue: the cwd side channel. */
	if (s_rule(ctx, SCMP_ACT_NOTIFY, "exit_group", 0, NULL) != 0)
		return -1;

	/* terminal input injection (ioctl cmd is an unsigned int) */
	const unsigned long ioc[] = {TIOCSTI, TIOCLINUX};
	for (size_t i = 0; i < 2; i++) {
		struct scmp_arg_cmp c = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, ioc[i]);
		if (s_rule(ctx, SCMP_ACT_ERRNO(EPERM), "ioctl", 1, &c) != 0)
			return -1;
	}
	return 0;
}

/*
 * personality(2) needs "one of these exact values" (PER_LINUX, PER_LINUX32,
 * UNAME26 variants, and the 0xffffffff query), which libseccomp cannot express
 * with a default-allow filter (it refuses several comparisons of one argument
 * and rules that repeat the default action). So this small prefix runs before
 * libseccomp's program; anything that is not personality() on x86-64 falls
 * through to it unchanged.
 */
#define S_ARG0_LO offsetof(struct seccomp_data, args[0])
#define S_ARG0_HI (offsetof(struct seccomp_data, args[0]) + 4)
#define S_RET_ERRNO(e) (SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

#if defined(__x86_64__)
static const struct sock_filter s_personality_prefix[] = {
    /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 12),
    /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 0, 10),
    /* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, S_ARG0_HI),
    /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 6),
    /* 6 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, S_ARG0_LO),
    /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 5, 0),
    /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0000, 4, 0),
    /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0008, 3, 0),
    /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x20000, 2, 0),
    /* 11 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x20008, 1, 0),
    /* 12 */ BPF_STMT(BPF_RET | BPF_K, S_RET_ERRNO(EPERM)),
    /* 13 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    /* 14: libseccomp's program follows */
};
#else
/* Other architectures: personality() stays allowed (no prefix). */
static const struct sock_filter s_personality_prefix[] = {};
#endif

int
sbx_seccomp_build(struct sock_fprog *prog)
{
	memset(prog, 0, sizeof(*prog));
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL) {
		log_error("seccomp: init failed");
		return -1;
	}
	int rc = -1, mfd = -1;
	uint8_t *buf = NULL;
	/* Other ABIs (i386 int 0x80, x32) would dodge every rule above: kill the process. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0)
		goto out;
	/* init sets no_new_privs itself, before any command runs. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) != 0)
		goto out;
	if (s_add_rules(ctx) != 0)
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
	size_t pre = sizeof(s_personality_prefix);
	buf = malloc(pre + (size_t)size);
	if (buf == NULL)
		goto out;
	memcpy(buf, s_personality_prefix, pre);
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

void
sbx_seccomp_describe(void *file)
{
	FILE *f = file;
	fprintf(f, "default: allow (other ABIs: kill process)\n");
	for (size_t i = 0; i < sizeof(s_deny) / sizeof(s_deny[0]); i++)
		fprintf(f, "%-20s %-8s %s\n", s_deny[i].name,
		        s_deny[i].err == ENOSYS ? "ENOSYS" : "EPERM", s_deny[i].why);
	fprintf(f, "%-20s %-8s %s\n", "clone", "EPERM",
	        "with any CLONE_NEW* namespace flag (plain fork/threads allowed)");
	fprintf(f, "%-20s %-8s %s\n", "socket/socketpair", "EAFNOSUPPORT",
	        "families other than AF_UNIX, AF_INET, AF_INET6 (netlink, packet, ...)");
	fprintf(f, "%-20s %-8s %s\n", "socket/socketpair", "EPERM", "SOCK_RAW and SOCK_PACKET");
	fprintf(f, "%-20s %-8s %s\n", "mknod/mknodat", "EPERM",
	        "character and block devices (FIFOs allowed)");
	fprintf(f, "%-20s %-8s %s\n", "ioctl", "EPERM", "TIOCSTI, TIOCLINUX (terminal injection)");
	fprintf(f, "%-20s %-8s %s\n", "exit_group", "NOTIFY",
	        "held while init reads the shell's cwd, then continues (never denied)");
	fprintf(f, "%-20s %-8s %s\n", "personality", "EPERM",
	        "anything but PER_LINUX, PER_LINUX32, UNAME26 and the query");
}
