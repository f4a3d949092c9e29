/* Sandbox escape probe: `probe ATTACK [args]` tries one kind of access and prints one RESULT line.
 *
 * Exit 0 = the attempt was BLOCKED (containment held), 1 = it SUCCEEDED (escape), 2 = usage error.
 * The output line is
 *   RESULT attack=NAME ok=0|1 errno=ENAME detail="..."
 * where ok=1 means the attack worked. Tests in tests/security/ run this inside a sandbox built by
 * sandboxd and assert ok=0; some checks (host file untouched, host process alive) are completed by
 * the runner on the host side.
 *
 * Syscall attempts the seccomp policy decides also print, before RESULT, one line each
 *   OUTCOME key=KEY got=ENAME|0|SIGSYS what="..."
 * where KEY names the policy entry that must decide it: a syscall name or an argument-rule id
 * of `sandboxd policy --json`, "other_abi" (i386/x32 entry: killed), or "unlisted:NAME" (a
 * syscall the policy does not name: its default). run_attack.py asserts each got= is exactly
 * what the policy says (the errno, 0 for allowed, SIGSYS for a kill), so a refusal by the
 * kernel for some unrelated reason, or a filter that vanished, fails the test.
 *
 * Network safety: before any packet is sent to a non-loopback address the probe reads
 * /proc/net/{dev,route,ipv6_route,if_inet6} and refuses to send (reporting an escape) unless
 * loopback is the only interface and no route uses another device, so a broken sandbox can never
 * make a test send traffic off this machine.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PROBE_DETAIL_MAX 3000
#define PROBE_SCAN_MAX_FILE (256 * 1024)
#define PROBE_MAX_PROCS 32

/* The single result of this run, filled by the attack and printed by main(). */
static struct {
	const char *attack;
	int escaped; /* 1 as soon as any attempt succeeded */
	int err;     /* errno of the first failed attempt (the reason it was blocked) */
	char detail[PROBE_DETAIL_MAX];
	size_t len;
} s_res;

static void s_note_ids(void);

/* Outcomes of syscall attempts, printed by s_print_result (not at once: a fork would copy an
 * unflushed stdout buffer). */
#define PROBE_MAX_OUTCOMES 64
static struct {
	char key[48];
	char got[24];
	char what[64];
} s_out[PROBE_MAX_OUTCOMES];
static int s_nout;

/* A value a sibling process holds, read by the process_vm_readv attack. */
static volatile uint64_t s_sibling_secret = 0x5eC2e7c0ffee1234ULL;

static void
s_note(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (s_res.len >= sizeof(s_res.detail) - 1)
		return;
	if (s_res.len > 0)
		s_res.detail[s_res.len++] = ';';
	va_start(ap, fmt);
	n = vsnprintf(s_res.detail + s_res.len, sizeof(s_res.detail) - s_res.len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	s_res.len += (size_t)n;
	if (s_res.len >= sizeof(s_res.detail))
		s_res.len = sizeof(s_res.detail) - 1;
}

/* Records that an attempt worked. */
#define s_escape(...)                                                                              \
	do {                                                                                       \
		s_res.escaped = 1;                                                                 \
		s_note("ESCAPE " __VA_ARGS__);                                                     \
	} while (0)

/* Records that an attempt failed with errno e (the first one is reported in errno=). */
static void
s_blocked(int e, const char *what)
{
	if (s_res.err == 0)
		s_res.err = e;
	s_note("%s:%s", what, strerrorname_np(e) ? strerrorname_np(e) : "E?");
}

static const char *s_errname(int e);

/* Records what a syscall attempt returned (0: it worked; an errno; or a name like "SIGSYS")
 * under the policy key that must decide it. */
static void
s_outcome_str(const char *key, const char *got, const char *what)
{
	if (s_nout == PROBE_MAX_OUTCOMES)
		return;
	snprintf(s_out[s_nout].key, sizeof(s_out[0].key), "%s", key);
	snprintf(s_out[s_nout].got, sizeof(s_out[0].got), "%s", got);
	snprintf(s_out[s_nout].what, sizeof(s_out[0].what), "%s", what);
	s_nout++;
}

static void
s_outcome(const char *key, int e, const char *what)
{
	s_outcome_str(key, s_errname(e), what);
}

/* A refused attempt: noted as blocked and recorded as an outcome of key. */
static void
s_sys(const char *key, int e, const char *what)
{
	s_blocked(e, what);
	s_outcome(key, e, what);
}

static const char *
s_errname(int e)
{
	const char *n;

	if (e == 0)
		return "0";
	n = strerrorname_np(e);
	return n ? n : "EUNKNOWN";
}

static void
s_print_result(void)
{
	char out[PROBE_DETAIL_MAX * 4 + 1];
	size_t o = 0;

	for (size_t i = 0; i < s_res.len && o + 5 < sizeof(out); i++) {
		unsigned char c = (unsigned char)s_res.detail[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	for (int i = 0; i < s_nout; i++)
		printf("OUTCOME key=%s got=%s what=\"%s\"\n", s_out[i].key, s_out[i].got,
		       s_out[i].what);
	printf("RESULT attack=%s ok=%d errno=%s detail=\"%s\"\n", s_res.attack, s_res.escaped,
	       s_errname(s_res.err), out);
	fflush(stdout);
}

/* Reads a whole small file into buf (NUL-terminated). Returns bytes read or -1 with errno. */
static ssize_t
s_read_small(const char *path, char *buf, size_t cap)
{
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -1;
	while (got < cap - 1) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);
		if (n < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	return (ssize_t)got;
}

static int
s_parse_int(const char *s, long min, long max, long *out)
{
	char *end = NULL;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Forks; the child runs fn and exits with what it returns. Returns the child's exit code, or
 * -1 if the fork failed (errno kept). */
static int
s_in_child(int (*fn)(void *), void *arg)
{
	int st = 0;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(fn(arg) & 0xff);
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 255;
}

/* Forks a child that just sleeps (a "sibling" to attack). Returns its pid or -1. */
static pid_t
s_spawn_sleeper(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

static void
s_reap(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Network isolation check (the safety rule) */

/* Returns 1 if the device name field is loopback. */
static int
s_is_lo(const char *dev)
{
	return strcmp(dev, "lo") == 0;
}

/* Copies the last whitespace-separated field of line into out. */
static void
s_last_field(const char *line, char *out, size_t cap)
{
	const char *end = line + strlen(line);
	const char *start;
	size_t n;

	while (end > line && isspace((unsigned char)end[-1]))
		end--;
	start = end;
	while (start > line && !isspace((unsigned char)start[-1]))
		start--;
	n = (size_t)(end - start);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, start, n);
	out[n] = '\0';
}

/* 1 when this network namespace has only a loopback interface and no route through anything
 * else; 0 otherwise with the reason in why. Unreadable /proc/net/dev or route counts as unsafe. */
static int
s_net_isolated(char *why, size_t whylen)
{
	char buf[65536];
	char dev[64];
	char *line, *save = NULL;
	int lineno = 0;

	if (s_read_small("/proc/net/dev", buf, sizeof(buf)) < 0) {
		snprintf(why, whylen, "cannot read /proc/net/dev (%s)", s_errname(errno));
		return 0;
	}
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *colon;
		const char *p = line;
		size_t n;

		if (++lineno <= 2)
			continue;
		colon = strchr(line, ':');
		if (!colon)
			continue;
		while (*p == ' ')
			p++;
		n = (size_t)(colon - p);
		if (n >= sizeof(dev))
			n = sizeof(dev) - 1;
		memcpy(dev, p, n);
		dev[n] = '\0';
		if (!s_is_lo(dev)) {
			snprintf(why, whylen, "non-loopback interface present: %s", dev);
			return 0;
		}
	}
	if (s_read_small("/proc/net/route", buf, sizeof(buf)) < 0) {
		snprintf(why, whylen, "cannot read /proc/net/route (%s)", s_errname(errno));
		return 0;
	}
	lineno = 0;
	save = NULL;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strcspn(line, " \t");

		if (++lineno == 1)
			continue;
		if (n >= sizeof(dev))
			n = sizeof(dev) - 1;
		memcpy(dev, line, n);
		dev[n] = '\0';
		if (!s_is_lo(dev)) {
			snprintf(why, whylen, "IPv4 route via non-loopback device %s", dev);
			return 0;
		}
	}
	/* Both IPv6 files are absent when IPv6 is disabled, which is safe. */
	if (s_read_small("/proc/net/ipv6_route", buf, sizeof(buf)) >= 0) {
		save = NULL;
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			s_last_field(line, dev, sizeof(dev));
			if (dev[0] && !s_is_lo(dev)) {
				snprintf(why, whylen, "IPv6 route via non-loopback device %s", dev);
				return 0;
			}
		}
	}
	if (s_read_small("/proc/net/if_inet6", buf, sizeof(buf)) >= 0) {
		save = NULL;
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			s_last_field(line, dev, sizeof(dev));
			if (dev[0] && !s_is_lo(dev)) {
				snprintf(why, whylen, "IPv6 address on non-loopback device %s",
				         dev);
				return 0;
			}
		}
	}
	return 1;
}

/* Parses "A.B.C.D:PORT" or "[v6]:PORT". 0 / -1. */
static int
s_parse_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon;
	long port;
	size_t n;

	memset(ss, 0, sizeof(*ss));
	if (spec[0] == '[') {
		const char *rb = strchr(spec, ']');
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		if (!rb || rb[1] != ':')
			return -1;
		n = (size_t)(rb - spec - 1);
		if (n >= sizeof(host))
			return -1;
		memcpy(host, spec + 1, n);
		host[n] = '\0';
		if (s_parse_int(rb + 2, 1, 65535, &port) < 0)
			return -1;
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -1;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*s6);
		return 0;
	}
	colon = strrchr(spec, ':');
	if (!colon)
		return -1;
	n = (size_t)(colon - spec);
	if (n >= sizeof(host))
		return -1;
	memcpy(host, spec, n);
	host[n] = '\0';
	if (s_parse_int(colon + 1, 1, 65535, &port) < 0)
		return -1;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		return -1;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	*len = sizeof(*s4);
	return 0;
}

static int
s_is_loopback_addr(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
		return 1;
	if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return s6->sin6_addr.s6_addr[12] == 127;
	return 0;
}

/* Checks every target in argv; for any non-loopback one the namespace must be loopback-only.
 * Returns 1 if sending is allowed, 0 after recording an escape (nothing sent), -1 usage. */
static int
s_net_guard(int argc, char **argv)
{
	int need = 0;
	char why[256];

	for (int i = 0; i < argc; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		if (s_parse_addr(argv[i], &ss, &len) < 0) {
			fprintf(stderr, "probe: bad address %s (want A.B.C.D:PORT or [v6]:PORT)\n",
			        argv[i]);
			return -1;
		}
		if (!s_is_loopback_addr(&ss))
			need = 1;
	}
	if (!need)
		return 1;
	if (!s_net_isolated(why, sizeof(why))) {
		s_escape("escape: %s (refused to send anything)", why);
		return 0;
	}
	s_note("netns loopback-only: verified");
	return 1;
}

/* ---------------------------------------------------------------------------------------------
 * File system attacks */

/* Opening any listed path for reading succeeds => escape. */
static int
a_read(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
		if (fd < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		char c;
		struct stat st;
		/* Masking a path with a bind of /dev/null (as sandboxd does for /proc/kmsg) is
		 * containment: what opened is not the file. */
		if (fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
			s_blocked(EPERM, argv[i]);
			s_note("%s is masked by /dev/null", argv[i]);
			close(fd);
			continue;
		}
		ssize_t n = read(fd, &c, 1);
		s_escape("opened %s (read returned %zd)", argv[i], n);
		close(fd);
	}
	return 0;
}

/* A host-only path must not even be visible: lstat success, or EACCES outside /proc (the path
 * exists but is protected only by permissions), => escape. */
static int
a_absent(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		struct stat st;
		if (lstat(argv[i], &st) == 0) {
			s_escape("visible %s (mode %o)", argv[i], (unsigned)st.st_mode);
			continue;
		}
		if ((errno == EACCES || errno == EPERM) && strncmp(argv[i], "/proc/", 6) != 0) {
			s_escape("exists but permission-protected only %s (%s)", argv[i],
			         s_errname(errno));
			continue;
		}
		s_blocked(errno, argv[i]);
	}
	return 0;
}

/* Creating a new file anywhere listed => escape (removed again). */
static int
a_create(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		int fd = open(argv[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		close(fd);
		unlink(argv[i]);
		s_escape("created %s", argv[i]);
	}
	return 0;
}

/* Opening an existing file for writing => escape. Nothing is ever written. */
static int
a_openw(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		int fd = open(argv[i], O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
		if (fd < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		close(fd);
		s_escape("opened for writing %s (nothing written)", argv[i]);
	}
	return 0;
}

static int
a_mkdir(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (mkdir(argv[i], 0700) < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		rmdir(argv[i]);
		s_escape("mkdir %s", argv[i]);
	}
	return 0;
}

/* Opens every release_agent / notify_on_release / cgroup.procs of the cgroup trees for writing,
 * tries to create a cgroup and to mount a cgroup hierarchy (the classic release_agent escape). */
static int
a_cgroup(int argc, char **argv)
{
	static const char *const globs[] = {"/sys/fs/cgroup/release_agent",
	                                    "/sys/fs/cgroup/cgroup.procs",
	                                    "/sys/fs/cgroup/notify_on_release", NULL};
	DIR *d;

	(void)argc;
	(void)argv;
	for (int i = 0; globs[i]; i++) {
		char *p[1] = {(char *)globs[i]};
		a_openw(1, p);
	}
	d = opendir("/sys/fs/cgroup");
	if (!d) {
		s_blocked(errno, "opendir /sys/fs/cgroup");
	} else {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			char path[PATH_MAX];
			char *p[1] = {path};
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/release_agent", de->d_name);
			if (access(path, F_OK) == 0)
				a_openw(1, p);
			snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/cgroup.procs", de->d_name);
			if (access(path, F_OK) == 0)
				a_openw(1, p);
			snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/ahp-probe", de->d_name);
			a_mkdir(1, p);
		}
		closedir(d);
	}
	if (mount("cgroup", "/tmp", "cgroup", 0, "memory") == 0) {
		umount2("/tmp", MNT_DETACH);
		s_escape("mounted cgroup v1 memory hierarchy");
	} else {
		s_blocked(errno, "mount cgroup");
	}
	if (mount("cgroup2", "/tmp", "cgroup2", 0, NULL) == 0) {
		umount2("/tmp", MNT_DETACH);
		s_escape("mounted cgroup2");
	} else {
		s_blocked(errno, "mount cgroup2");
	}
	return 0;
}

/* /sys must be absent or read-only; sensitive writable knobs must not open for writing. */
static int
a_sysfs(int argc, char **argv)
{
	static const char *const knobs[] = {"/sys/kernel/uevent_helper",
	                                    "/sys/power/state",
	                                    "/sys/kernel/mm/transparent_hugepage/enabled",
	                                    "/sys/class/net/lo/mtu",
	                                    "/sys/kernel/profiling",
	                                    "/sys/module/kernel/parameters/panic",
	                                    NULL};
	struct statvfs sv;

	(void)argc;
	(void)argv;
	if (statvfs("/sys", &sv) == 0 && access("/sys/kernel", F_OK) == 0) {
		if (!(sv.f_flag & ST_RDONLY))
			s_escape("sysfs mounted read-write");
		else
			s_note("sysfs present read-only");
	} else {
		s_note("sysfs not mounted");
	}
	for (int i = 0; knobs[i]; i++) {
		char *p[1] = {(char *)knobs[i]};
		a_openw(1, p);
	}
	return 0;
}

/* Walks the visible tree (not /proc, /sys) for a file with one of the given names. */
static char **s_find_names;
static int s_find_n;
static long s_walked;

static int
s_find_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	s_walked++;
	if (strcmp(path, "/proc") == 0 || strcmp(path, "/sys") == 0)
		return FTW_SKIP_SUBTREE;
	for (int i = 0; i < s_find_n; i++) {
		if (strcmp(path + ftw->base, s_find_names[i]) == 0)
			s_escape("found %s", path);
	}
	return FTW_CONTINUE;
}

static int
a_find_name(int argc, char **argv)
{
	s_find_names = argv;
	s_find_n = argc;
	if (nftw("/", s_find_cb, 32, FTW_PHYS | FTW_ACTIONRETVAL) < 0)
		s_blocked(errno, "nftw");
	s_note("walked %ld entries", s_walked);
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = ENOENT;
	return 0;
}

/* Greps file contents of the visible tree (and every process environment) for a needle. */
static const char *s_needle;
static long s_scanned;

static void
s_scan_file(const char *path)
{
	static char buf[PROBE_SCAN_MAX_FILE + 1];
	ssize_t n = s_read_small(path, buf, sizeof(buf));

	if (n <= 0)
		return;
	s_scanned++;
	if (memmem(buf, (size_t)n, s_needle, strlen(s_needle)))
		s_escape("needle found in %s", path);
}

static int
s_scan_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (strcmp(path, "/proc") == 0 || strcmp(path, "/sys") == 0 || strcmp(path, "/dev") == 0)
		return FTW_SKIP_SUBTREE;
	if (type == FTW_F && S_ISREG(st->st_mode) && st->st_size <= PROBE_SCAN_MAX_FILE)
		s_scan_file(path);
	return FTW_CONTINUE;
}

static int
a_scan(int argc, char **argv)
{
	DIR *d;

	if (argc != 1 || strlen(argv[0]) < 6) {
		fprintf(stderr, "probe: scan needs one needle of >= 6 bytes\n");
		return -1;
	}
	s_needle = argv[0];
	if (nftw("/", s_scan_cb, 32, FTW_PHYS | FTW_ACTIONRETVAL) < 0)
		s_blocked(errno, "nftw");
	/* Environments of every visible process (command lines hold the needle itself). */
	d = opendir("/proc");
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			char path[300];
			if (!isdigit((unsigned char)de->d_name[0]))
				continue;
			snprintf(path, sizeof(path), "/proc/%s/environ", de->d_name);
			s_scan_file(path);
		}
		closedir(d);
	}
	s_note("scanned %ld files", s_scanned);
	return 0;
}

/* Leaves symlinks (absolute, and relative ones climbing UP to the test's home), a FIFO, an
 * unwritable directory and deep nesting in /workspace, plus the marker file MARKER, so the runner
 * can check that sandboxd's cleanup of the workspace touches nothing outside it. UP is the
 * relative path from the workspace to the home on the host. Reports planted=N/M. */
static int
a_symlinks(int argc, char **argv)
{
	int planted = 0, want = 0;
	char path[PATH_MAX], up_etc[PATH_MAX], up_secrets[PATH_MAX], up_probe[PATH_MAX];
	size_t off;
	int fd;

	if (argc != 4)
		return -1;
	snprintf(up_etc, sizeof(up_etc), "../%s/etc", argv[2]);
	snprintf(up_secrets, sizeof(up_secrets), "../../%s/etc/secrets", argv[2]);
	snprintf(up_probe, sizeof(up_probe), "%s/probe", argv[2]);
	struct {
		const char *target;
		const char *link;
	} links[] = {
	    {argv[0], "/workspace/l-hostdir"},
	    {argv[1], "/workspace/l-hostfile"},
	    {argv[2], "/workspace/l-up"},
	    {up_probe, "/workspace/l-up-probe"},
	    {up_etc, "/workspace/sub/l-up-etc"},
	    {up_secrets, "/workspace/sub/deeper/l-up-secrets"},
	    {argv[0], "/workspace/sub/deeper/l-hostdir"},
	    {argv[1], "/workspace/sub/l-hostfile"},
	};

	want += 2;
	if (mkdir("/workspace/sub", 0755) == 0)
		planted++;
	if (mkdir("/workspace/sub/deeper", 0755) == 0)
		planted++;
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		want++;
		if (symlink(links[i].target, links[i].link) == 0)
			planted++;
		else
			s_blocked(errno, links[i].link);
	}
	want++;
	if (mkfifo("/workspace/fifo", 0600) == 0)
		planted++;
	/* A read-only directory holding a link: cleanup must cope without chmod-ing through it. */
	want++;
	if (mkdir("/workspace/ro", 0755) == 0 && symlink(argv[0], "/workspace/ro/l-hostdir") == 0 &&
	    chmod("/workspace/ro", 0500) == 0)
		planted++;
	/* Deep nesting, each level with a link back to the host dir. */
	want++;
	off = (size_t)snprintf(path, sizeof(path), "/workspace/deep");
	for (int i = 0; i < 40 && off + 8 < sizeof(path); i++) {
		char l[PATH_MAX + 8];
		if (mkdir(path, 0755) < 0)
			break;
		snprintf(l, sizeof(l), "%s/l", path);
		if (symlink(argv[0], l) < 0)
			break;
		off += (size_t)snprintf(path + off, sizeof(path) - off, "/d");
		if (i == 39)
			planted++;
	}
	want++;
	snprintf(path, sizeof(path), "/workspace/%s", argv[3]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd >= 0) {
		close(fd);
		planted++;
	}
	s_note("planted=%d/%d", planted, want);
	return 0;
}

/* Writes a marker into this run's /workspace (the "other run" for the isolation check). */
static int
a_plant(int argc, char **argv)
{
	char path[PATH_MAX];
	int fd;

	if (argc != 2)
		return -1;
	snprintf(path, sizeof(path), "/workspace/%s", argv[0]);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, argv[1], strlen(argv[1])) != (ssize_t)strlen(argv[1])) {
		s_blocked(errno, path);
		s_note("planted=0");
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	s_note("planted=1");
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Mount namespace attacks */

static int
a_mount(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (mount("none", "/tmp", "tmpfs", 0, "size=64k") == 0) {
		umount2("/tmp", MNT_DETACH);
		s_escape("mounted tmpfs on /tmp");
	} else {
		s_sys("mount", errno, "mount tmpfs");
	}
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
		s_escape("remounted / read-write");
	else
		s_sys("mount", errno, "remount / rw");
	if (mount(NULL, "/usr", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
		s_escape("remounted /usr read-write");
	else
		s_sys("mount", errno, "remount /usr rw");
	if (mount("proc", "/tmp", "proc", 0, NULL) == 0) {
		umount2("/tmp", MNT_DETACH);
		s_escape("mounted a new proc");
	} else {
		s_sys("mount", errno, "mount proc");
	}
	if (mount("/", "/tmp", NULL, MS_BIND | MS_REC, NULL) == 0) {
		umount2("/tmp", MNT_DETACH);
		s_escape("bind-mounted /");
	} else {
		s_sys("mount", errno, "bind /");
	}
	/* The new mount API must be closed too. */
	long fd = syscall(SYS_fsopen, "tmpfs", 0);
	if (fd >= 0) {
		close((int)fd);
		s_escape("fsopen(tmpfs) returned a context");
	} else {
		s_sys("fsopen", errno, "fsopen");
	}
	fd = syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */);
	if (fd >= 0) {
		close((int)fd);
		s_escape("open_tree(/, CLONE) worked");
	} else {
		s_sys("open_tree", errno, "open_tree");
	}
	return 0;
}

/* Unmounting anything could uncover what lies below (e.g. a not-detached old root). */
static int
a_umount(int argc, char **argv)
{
	static const char *const targets[] = {"/workspace", "/proc", "/tmp", "/opt/ahp-test",
	                                      "/dev",       "/usr",  "/",    NULL};

	(void)argc;
	(void)argv;
	for (int i = 0; targets[i]; i++) {
		if (umount2(targets[i], MNT_DETACH) == 0)
			s_escape("umount2 %s", targets[i]);
		else
			s_sys("umount2", errno, targets[i]);
	}
	return 0;
}

static int
a_pivot_root(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (syscall(SYS_pivot_root, "/tmp", "/tmp") == 0)
		s_escape("pivot_root(/tmp, /tmp)");
	else
		s_sys("pivot_root", errno, "pivot_root");
	return 0;
}

static int
a_chroot(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (chroot("/tmp") == 0)
		s_escape("chroot(/tmp)");
	else
		s_sys("chroot", errno, "chroot");
	return 0;
}

/* The host's root mount (MAJ:MIN and root path, from the runner) must not be mounted anywhere
 * in the sandbox, and no disk-backed mount may be writable but the sandbox's own disk: the
 * device of /workspace, which also holds /tmp (sandbox.disk_mb). */
static int
a_mounts(int argc, char **argv)
{
	static char buf[256 * 1024];
	char *line, *save = NULL;
	int n = 0;

	if (argc != 1)
		return -1;
	if (s_read_small("/proc/self/mountinfo", buf, sizeof(buf)) < 0) {
		s_blocked(errno, "mountinfo");
		return 0;
	}
	char own[64] = "";
	for (char *l = strstr(buf, " /workspace "); l != NULL && l > buf;) {
		char *start = l;
		while (start > buf && start[-1] != '\n')
			start--;
		if (sscanf(start, "%*d %*d %63s", own) != 1)
			own[0] = '\0';
		break;
	}
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char devno[64], root[1024], mnt[1024], opts[512];
		char key[1200];
		unsigned maj = 0, min = 0;
		if (sscanf(line, "%*d %*d %63s %1023s %1023s %511s", devno, root, mnt, opts) != 4)
			continue;
		n++;
		snprintf(key, sizeof(key), "%s:%s", devno, root);
		if (strcmp(key, argv[0]) == 0)
			s_escape("host root fs mounted at %s", mnt);
		if (sscanf(devno, "%u:%u", &maj, &min) != 2)
			continue;
		/* major 0 = virtual (tmpfs, proc, ...); anything disk-backed must be read-only
		 * except the run's workspace. */
		if (maj != 0 && strcmp(mnt, "/workspace") != 0 && strcmp(devno, own) != 0 &&
		    (strncmp(opts, "rw,", 3) == 0 || strcmp(opts, "rw") == 0))
			s_escape("writable disk mount %s (%s from %s)", mnt, devno, root);
	}
	s_note("%d mounts", n);
	if (!s_res.escaped)
		s_res.err = EPERM;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Namespace and process attacks */

static int
s_child_unshare(void *arg)
{
	if (unshare((int)(intptr_t)arg) == 0)
		return 0;
	return errno ? errno : 254;
}

static const struct {
	int flag;
	const char *name;
} s_ns_flags[] = {
    {CLONE_NEWUSER, "NEWUSER"},     {CLONE_NEWNS, "NEWNS"},
    {CLONE_NEWNET, "NEWNET"},       {CLONE_NEWPID, "NEWPID"},
    {CLONE_NEWUTS, "NEWUTS"},       {CLONE_NEWIPC, "NEWIPC"},
    {CLONE_NEWCGROUP, "NEWCGROUP"}, {CLONE_NEWUSER | CLONE_NEWNS, "NEWUSER|NEWNS"},
};

static int
a_unshare(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(s_ns_flags) / sizeof(s_ns_flags[0]); i++) {
		int rc = s_in_child(s_child_unshare, (void *)(intptr_t)s_ns_flags[i].flag);
		if (rc == 0)
			s_escape("unshare(%s)", s_ns_flags[i].name);
		else if (rc < 0)
			s_blocked(errno, "fork");
		else
			s_sys("unshare", rc, s_ns_flags[i].name);
	}
	return 0;
}

/* Raw clone() with namespace flags (a filter on unshare alone would miss it). */
static int
a_clone_ns(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(s_ns_flags) / sizeof(s_ns_flags[0]); i++) {
		long pid =
		    syscall(SYS_clone, (unsigned long)s_ns_flags[i].flag | SIGCHLD, 0, 0, 0, 0);
		if (pid == 0)
			syscall(SYS_exit_group, 0);
		if (pid > 0) {
			waitpid((pid_t)pid, NULL, 0);
			s_escape("clone(%s)", s_ns_flags[i].name);
		} else {
			s_sys("clone_ns", errno, s_ns_flags[i].name);
		}
	}
	return 0;
}

/* clone3 passes its flags in memory where a BPF filter cannot see them: it must be refused
 * wholesale (ENOSYS makes libc fall back to clone). */
static int
a_clone3(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(s_ns_flags) / sizeof(s_ns_flags[0]); i++) {
		struct clone_args ca;
		memset(&ca, 0, sizeof(ca));
		ca.flags = (uint64_t)s_ns_flags[i].flag;
		ca.exit_signal = SIGCHLD;
		long pid = syscall(SYS_clone3, &ca, sizeof(ca));
		if (pid == 0)
			syscall(SYS_exit_group, 0);
		if (pid > 0) {
			waitpid((pid_t)pid, NULL, 0);
			s_escape("clone3(%s)", s_ns_flags[i].name);
		} else {
			s_sys("clone3", errno, s_ns_flags[i].name);
		}
	}
	return 0;
}

static int
a_setns(int argc, char **argv)
{
	static const char *const ns[] = {"mnt", "net",    "pid",  "user", "uts",
	                                 "ipc", "cgroup", "time", NULL};
	static char *const def[] = {"1", "self"};

	if (argc == 0) {
		argc = 2;
		argv = (char **)def;
	}
	/* Own namespaces too: re-entering one needs CAP_SYS_ADMIN, so success means the
	 * sandbox kept capabilities or setns is not filtered. */
	for (int a = 0; a < argc; a++) {
		for (int i = 0; ns[i]; i++) {
			char path[128];
			int fd;
			snprintf(path, sizeof(path), "/proc/%s/ns/%s", argv[a], ns[i]);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				s_blocked(errno, path);
				continue;
			}
			if (setns(fd, 0) == 0)
				s_escape("setns(%s)", path);
			else
				s_sys("setns", errno, path);
			close(fd);
		}
	}
	return 0;
}

static void
s_describe_pid1(void)
{
	char comm[64];

	if (s_read_small("/proc/1/comm", comm, sizeof(comm)) > 0) {
		comm[strcspn(comm, "\n")] = '\0';
		s_note("pid1=%s self=%d", comm, (int)getpid());
	}
}

static int
a_ptrace_init(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	s_describe_pid1();
	if (ptrace(PTRACE_ATTACH, 1, NULL, NULL) == 0) {
		waitpid(1, NULL, __WALL);
		ptrace(PTRACE_DETACH, 1, NULL, NULL);
		s_escape("PTRACE_ATTACH pid 1");
	} else {
		s_sys("ptrace", errno, "ATTACH 1");
	}
	if (ptrace(PTRACE_SEIZE, 1, NULL, NULL) == 0) {
		ptrace(PTRACE_DETACH, 1, NULL, NULL);
		s_escape("PTRACE_SEIZE pid 1");
	} else {
		s_sys("ptrace", errno, "SEIZE 1");
	}
	/* /proc/1/mem is ptrace by another name (checked by ptrace_may_access, not seccomp). */
	if (getpid() == 1) {
		s_note("probe is pid 1: /proc/1/mem not meaningful");
	} else {
		int fd = open("/proc/1/mem", O_RDWR | O_CLOEXEC);
		if (fd < 0)
			fd = open("/proc/1/mem", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			close(fd);
			s_escape("opened /proc/1/mem");
		} else {
			s_blocked(errno, "/proc/1/mem");
		}
	}
	return 0;
}

static int
s_child_traceme(void *arg)
{
	(void)arg;
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0)
		return 0;
	return errno ? errno : 254;
}

static int
a_ptrace_sibling(int argc, char **argv)
{
	pid_t kid = s_spawn_sleeper();
	int rc;

	(void)argc;
	(void)argv;
	if (kid < 0) {
		s_blocked(errno, "fork");
		return 0;
	}
	if (ptrace(PTRACE_ATTACH, kid, NULL, NULL) == 0) {
		s_escape("PTRACE_ATTACH sibling %d", (int)kid);
		waitpid(kid, NULL, __WALL);
		ptrace(PTRACE_DETACH, kid, NULL, NULL);
	} else {
		s_sys("ptrace", errno, "ATTACH sibling");
	}
	s_reap(kid);
	rc = s_in_child(s_child_traceme, NULL);
	if (rc == 0)
		s_escape("PTRACE_TRACEME");
	else if (rc > 0)
		s_sys("ptrace", rc, "TRACEME");
	return 0;
}

static int
a_process_vm(int argc, char **argv)
{
	pid_t kid = s_spawn_sleeper();
	pid_t targets[2] = {kid, 1};

	(void)argc;
	(void)argv;
	for (int i = 0; i < 2; i++) {
		uint64_t got = 0;
		struct iovec local = {&got, sizeof(got)};
		struct iovec remote = {(void *)&s_sibling_secret, sizeof(got)};
		if (targets[i] <= 0)
			continue;
		if (process_vm_readv(targets[i], &local, 1, &remote, 1, 0) > 0)
			s_escape("process_vm_readv pid %d", (int)targets[i]);
		else
			s_sys("process_vm_readv", errno, i == 0 ? "sibling" : "pid1");
		if (process_vm_writev(targets[i], &local, 1, &remote, 1, 0) > 0)
			s_escape("process_vm_writev pid %d", (int)targets[i]);
		else
			s_sys("process_vm_writev", errno,
			      i == 0 ? "writev sibling" : "writev pid1");
	}
	s_reap(kid);
	return 0;
}

/* Host pids given as PID:NEEDLE must not be visible (a visible one whose command line holds
 * NEEDLE is the host process itself), and the namespace must hold only a handful of processes. */
static int
a_proc_pids(int argc, char **argv)
{
	DIR *d = opendir("/proc");
	int count = 0;
	char list[512] = "";
	size_t ll = 0;

	if (!d) {
		s_blocked(errno, "/proc");
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[300], comm[64];
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		count++;
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		if (s_read_small(path, comm, sizeof(comm)) > 0 && ll + 80 < sizeof(list)) {
			comm[strcspn(comm, "\n")] = '\0';
			ll += (size_t)snprintf(list + ll, sizeof(list) - ll, "%s%s:%s",
			                       ll ? "," : "", de->d_name, comm);
		}
	}
	closedir(d);
	s_note("%d processes visible [%s]", count, list);
	if (count > PROBE_MAX_PROCS)
		s_escape("%d processes visible: host pid namespace?", count);
	for (int i = 0; i < argc; i++) {
		char pid[32], path[300], cmd[4096];
		const char *colon = strchr(argv[i], ':');
		ssize_t n;
		if (!colon || (size_t)(colon - argv[i]) >= sizeof(pid))
			return -1;
		memcpy(pid, argv[i], (size_t)(colon - argv[i]));
		pid[colon - argv[i]] = '\0';
		snprintf(path, sizeof(path), "/proc/%s/cmdline", pid);
		n = s_read_small(path, cmd, sizeof(cmd));
		if (n < 0) {
			s_blocked(errno, path);
			continue;
		}
		for (ssize_t j = 0; j < n; j++)
			if (cmd[j] == '\0')
				cmd[j] = ' ';
		if (strstr(cmd, colon + 1))
			s_escape("host process %s visible (%s)", pid, colon + 1);
		else
			s_note("pid %s is a different process", pid);
	}
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = ESRCH;
	return 0;
}

/* Every visible process's root must be our own root (pid 1 created before pivot_root would
 * expose the host tree through /proc/1/root). */
static int
a_proc_root(int argc, char **argv)
{
	struct stat me;
	DIR *d;

	(void)argc;
	(void)argv;
	if (stat("/", &me) < 0 || !(d = opendir("/proc"))) {
		s_blocked(errno, "stat / or /proc");
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[300], link[PATH_MAX];
		struct stat st;
		ssize_t n;
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/root/", de->d_name);
		if (stat(path, &st) < 0) {
			s_blocked(errno, path);
			continue;
		}
		snprintf(path, sizeof(path), "/proc/%s/root", de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		if (st.st_dev != me.st_dev || st.st_ino != me.st_ino)
			s_escape("%s is a different tree (-> %s)", path, link);
	}
	closedir(d);
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = EPERM;
	s_note("all visible roots are the sandbox root");
	return 0;
}

/* kill(PID, SIGKILL) for each host pid given, then kill(-1, SIGWINCH) (harmless by default;
 * the runner's victim logs it). The runner checks the host processes are alive afterwards. */
static int
a_kill(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		long pid;
		if (s_parse_int(argv[i], 2, INT_MAX, &pid) < 0)
			return -1;
		if (kill((pid_t)pid, SIGKILL) == 0)
			s_escape("kill(%ld, SIGKILL) delivered", pid);
		else
			s_blocked(errno, argv[i]);
	}
	if (kill(-1, SIGWINCH) == 0)
		s_note("kill(-1, SIGWINCH) reached some process (runner checks the host victim)");
	else
		s_blocked(errno, "kill(-1)");
	s_note_ids();
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Kernel attack surface that the seccomp filter must close */

static int
a_bpf(int argc, char **argv)
{
	union bpf_attr attr;
	struct bpf_insn prog[] = {
	    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
	    {.code = BPF_JMP | BPF_EXIT},
	};
	char log[256];
	long fd;

	(void)argc;
	(void)argv;
	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 4;
	attr.max_entries = 1;
	fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	if (fd >= 0) {
		close((int)fd);
		s_escape("BPF_MAP_CREATE");
	} else {
		s_sys("bpf", errno, "MAP_CREATE");
	}
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (uint64_t)(uintptr_t)prog;
	attr.insn_cnt = 2;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.log_size = sizeof(log);
	attr.log_level = 0;
	fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (fd >= 0) {
		close((int)fd);
		s_escape("BPF_PROG_LOAD socket filter");
	} else {
		s_sys("bpf", errno, "PROG_LOAD");
	}
	return 0;
}

static int
a_keyctl(int argc, char **argv)
{
	long r;

	(void)argc;
	(void)argv;
	r = syscall(SYS_add_key, "user", "ahp-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING);
	if (r >= 0)
		s_escape("add_key user key %ld", r);
	else
		s_sys("add_key", errno, "add_key");
	r = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
	if (r >= 0)
		s_escape("session keyring id %ld reachable", r);
	else
		s_sys("keyctl", errno, "GET_KEYRING_ID session");
	r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL);
	if (r >= 0)
		s_escape("joined a new session keyring %ld", r);
	else
		s_sys("keyctl", errno, "JOIN_SESSION_KEYRING");
	r = syscall(SYS_request_key, "user", "ahp-probe", NULL, 0);
	if (r >= 0)
		s_escape("request_key %ld", r);
	else
		s_sys("request_key", errno, "request_key");
	return 0;
}

static int
a_kexec(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	/* Zero segments: even if it were allowed this only unloads, never boots anything. */
	if (syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL) == 0)
		s_escape("kexec_load");
	else
		s_sys("kexec_load", errno, "kexec_load");
	if (syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0UL) == 0)
		s_escape("kexec_file_load");
	else
		s_sys("kexec_file_load", errno, "kexec_file_load");
	return 0;
}

static int
a_module(int argc, char **argv)
{
	static char image[64];
	int fd;

	(void)argc;
	(void)argv;
	if (syscall(SYS_init_module, image, sizeof(image), "") == 0)
		s_escape("init_module");
	else
		s_sys("init_module", errno, "init_module");
	fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (syscall(SYS_finit_module, fd, "", 0) == 0)
		s_escape("finit_module");
	else
		s_sys("finit_module", errno, "finit_module");
	if (fd >= 0)
		close(fd);
	if (syscall(SYS_delete_module, "ahp_probe_none", O_NONBLOCK) == 0)
		s_escape("delete_module");
	else
		s_sys("delete_module", errno, "delete_module");
	return 0;
}

static int
a_perf(int argc, char **argv)
{
	struct perf_event_attr pa;
	long fd;

	(void)argc;
	(void)argv;
	memset(&pa, 0, sizeof(pa));
	pa.type = PERF_TYPE_SOFTWARE;
	pa.size = sizeof(pa);
	pa.config = PERF_COUNT_SW_CPU_CLOCK;
	pa.disabled = 1;
	pa.exclude_kernel = 1;
	pa.exclude_hv = 1;
	fd = syscall(SYS_perf_event_open, &pa, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd >= 0) {
		close((int)fd);
		s_escape("perf_event_open(self, sw cpu clock)");
	} else {
		s_sys("perf_event_open", errno, "perf_event_open");
	}
	return 0;
}

static int
a_userfaultfd(int argc, char **argv)
{
	long fd;

	(void)argc;
	(void)argv;
	fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd >= 0) {
		close((int)fd);
		s_escape("userfaultfd(USER_MODE_ONLY)");
	} else {
		s_sys("userfaultfd", errno, "userfaultfd user-mode");
	}
	fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		close((int)fd);
		s_escape("userfaultfd()");
	} else {
		s_sys("userfaultfd", errno, "userfaultfd");
	}
	fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		close((int)fd);
		s_escape("opened /dev/userfaultfd");
	} else {
		s_blocked(errno, "/dev/userfaultfd");
	}
	return 0;
}

static int
a_io_uring(int argc, char **argv)
{
	struct io_uring_params p;
	long fd;

	(void)argc;
	(void)argv;
	memset(&p, 0, sizeof(p));
	fd = syscall(SYS_io_uring_setup, 2, &p);
	if (fd >= 0) {
		close((int)fd);
		s_escape("io_uring_setup");
	} else {
		s_sys("io_uring_setup", errno, "io_uring_setup");
	}
	return 0;
}

/* name_to_handle_at + open_by_handle_at, and the "shocker" guess of the file system's root
 * inode (2 on ext*) relative to a host-backed mount: opening it would bypass the bind mount. */
static int
a_open_by_handle(int argc, char **argv)
{
	static const char *const mounts[] = {"/workspace", "/opt/ahp-test", "/usr", NULL};

	(void)argc;
	(void)argv;
	for (int i = 0; mounts[i]; i++) {
		union {
			struct file_handle fh;
			unsigned char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ];
		} h;
		int mnt_id = 0, mfd, fd;
		mfd = open(mounts[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (mfd < 0)
			continue;
		memset(&h, 0, sizeof(h));
		h.fh.handle_bytes = MAX_HANDLE_SZ;
		if (name_to_handle_at(AT_FDCWD, mounts[i], &h.fh, &mnt_id, 0) == 0) {
			fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				close(fd);
				s_escape("open_by_handle_at(%s)", mounts[i]);
			} else {
				s_sys("open_by_handle_at", errno, mounts[i]);
			}
		} else {
			s_sys("name_to_handle_at", errno, "name_to_handle_at");
		}
		/* FILEID_INO32_GEN: ino 2, generation 0 = the ext4 root directory. */
		memset(&h, 0, sizeof(h));
		h.fh.handle_bytes = 8;
		h.fh.handle_type = 1;
		h.raw[sizeof(struct file_handle)] = 2;
		fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			close(fd);
			s_escape("shocker: opened inode 2 via %s", mounts[i]);
		} else {
			s_sys("open_by_handle_at", errno, "shocker");
		}
		close(mfd);
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Sockets and network */

/* key: the argument rule that must refuse it. */
static void
s_try_socket(const char *key, int domain, int type, int proto, const char *name)
{
	int fd = socket(domain, type | SOCK_CLOEXEC, proto);

	if (fd >= 0) {
		close(fd);
		s_escape("socket(%s)", name);
		s_outcome(key, 0, name);
	} else {
		s_sys(key, errno, name);
	}
}

static int
a_raw_socket(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	s_try_socket("socket_raw", AF_INET, SOCK_RAW, IPPROTO_RAW, "INET/RAW/RAW");
	s_try_socket("socket_raw", AF_INET, SOCK_RAW, IPPROTO_ICMP, "INET/RAW/ICMP");
	s_try_socket("socket_raw", AF_INET, SOCK_RAW, IPPROTO_TCP, "INET/RAW/TCP");
	s_try_socket("socket_raw", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6, "INET6/RAW/ICMPV6");
	return 0;
}

static int
a_packet_socket(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	/* the type rules come first: a raw packet socket is refused as SOCK_RAW */
	s_try_socket("socket_raw", AF_PACKET, SOCK_RAW, htons(ETH_P_ALL), "PACKET/RAW");
	s_try_socket("socket_family", AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL), "PACKET/DGRAM");
	s_try_socket("socket_packet", AF_INET, SOCK_PACKET, htons(ETH_P_ALL), "INET/SOCK_PACKET");
	return 0;
}

static int
a_netlink_socket(int argc, char **argv)
{
	static const struct {
		int proto;
		const char *name;
	} p[] = {{NETLINK_ROUTE, "ROUTE"},     {NETLINK_KOBJECT_UEVENT, "KOBJECT_UEVENT"},
	         {NETLINK_AUDIT, "AUDIT"},     {NETLINK_NETFILTER, "NETFILTER"},
	         {NETLINK_GENERIC, "GENERIC"}, {NETLINK_SOCK_DIAG, "SOCK_DIAG"},
	         {NETLINK_XFRM, "XFRM"},       {NETLINK_CONNECTOR, "CONNECTOR"}};

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
		s_try_socket("socket_raw", AF_NETLINK, SOCK_RAW, p[i].proto, p[i].name);
		s_try_socket("socket_family", AF_NETLINK, SOCK_DGRAM, p[i].proto, p[i].name);
	}
	/* the family is an int: garbage above it changes nothing */
	long fd = syscall(SYS_socket, 0xdead000000000000UL | AF_NETLINK, SOCK_DGRAM, 0);
	if (fd >= 0) {
		close((int)fd);
		s_escape("socket(AF_NETLINK with high bits)");
		s_outcome("socket_family", 0, "NETLINK high bits");
	} else {
		s_sys("socket_family", errno, "NETLINK high bits");
	}
	return 0;
}

/* Non-blocking connect with a 500 ms budget to each IP:PORT. Connected => escape; a connect
 * still pending after 500 ms means a SYN left on some interface => escape too. */
static int
a_connect(int argc, char **argv)
{
	int g = s_net_guard(argc, argv);

	if (g <= 0)
		return g;
	for (int i = 0; i < argc; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		struct pollfd pfd;
		int fd, rc, soerr = 0;
		socklen_t sl = sizeof(soerr);

		s_parse_addr(argv[i], &ss, &len);
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		rc = connect(fd, (struct sockaddr *)&ss, len);
		if (rc == 0) {
			s_escape("connected to %s", argv[i]);
			close(fd);
			continue;
		}
		if (errno != EINPROGRESS) {
			s_blocked(errno, argv[i]);
			close(fd);
			continue;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		rc = poll(&pfd, 1, 500);
		if (rc == 0) {
			s_escape("connect to %s still pending after 500ms (packets left)", argv[i]);
		} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
			s_escape("connected to %s", argv[i]);
		} else {
			s_blocked(soerr ? soerr : errno, argv[i]);
		}
		close(fd);
	}
	return 0;
}

/* A DNS query for example.com/A, built by hand (no resolver library inside the probe). */
static size_t
s_dns_query(unsigned char *q, size_t cap)
{
	static const unsigned char msg[] = {
	    0xa4, 0x71, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 7,    'e', 'x',
	    'a',  'm',  'p',  'l',  'e',  3,    'c',  'o',  'm',  0,    0x00, 0x01, 0x00, 0x01};

	if (cap < sizeof(msg))
		return 0;
	memcpy(q, msg, sizeof(msg));
	return sizeof(msg);
}

/* Sends one DNS query to each IP:PORT. A datagram accepted for a non-loopback destination =>
 * escape; for loopback ones only an answer counts (the runner also checks its host listener). */
static int
a_dns(int argc, char **argv)
{
	int g = s_net_guard(argc, argv);
	unsigned char q[512];
	size_t qlen = s_dns_query(q, sizeof(q));

	if (g <= 0)
		return g;
	for (int i = 0; i < argc; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		struct pollfd pfd;
		int fd;

		s_parse_addr(argv[i], &ss, &len);
		fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			s_blocked(errno, argv[i]);
			continue;
		}
		if (sendto(fd, q, qlen, 0, (struct sockaddr *)&ss, len) < 0) {
			s_blocked(errno, argv[i]);
			close(fd);
			continue;
		}
		if (!s_is_loopback_addr(&ss)) {
			s_escape("DNS query to %s was sent", argv[i]);
			close(fd);
			continue;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 500) > 0 && recv(fd, q, sizeof(q), 0) > 0)
			s_escape("DNS answer from %s", argv[i]);
		else
			s_blocked(ETIMEDOUT, argv[i]);
		close(fd);
	}
	return 0;
}

/* Connects to unix sockets. A path starting with '@' is abstract (per network namespace).
 * For file-system paths, ECONNREFUSED / EACCES mean the socket file is visible => escape
 * (except EACCES under /proc/: that is the ptrace check on /proc/PID/root). */
static int
a_connect_unix(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		struct sockaddr_un sun;
		socklen_t len;
		size_t n = strlen(argv[i]);
		int fd, types[2] = {SOCK_STREAM, SOCK_SEQPACKET};

		if (n >= sizeof(sun.sun_path))
			return -1;
		for (int t = 0; t < 2; t++) {
			memset(&sun, 0, sizeof(sun));
			sun.sun_family = AF_UNIX;
			memcpy(sun.sun_path, argv[i], n);
			if (argv[i][0] == '@')
				sun.sun_path[0] = '\0';
			len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
			                  (argv[i][0] == '@' ? 0 : 1));
			fd = socket(AF_UNIX, types[t] | SOCK_CLOEXEC, 0);
			if (fd < 0) {
				s_blocked(errno, "socket(AF_UNIX)");
				continue;
			}
			if (connect(fd, (struct sockaddr *)&sun, len) == 0) {
				s_escape("connected to unix socket %s", argv[i]);
			} else if (argv[i][0] != '@' &&
			           (errno == ECONNREFUSED || errno == EPROTOTYPE ||
			            (errno == EACCES && strncmp(argv[i], "/proc/", 6) != 0))) {
				s_escape("socket file visible %s (%s)", argv[i], s_errname(errno));
			} else {
				s_blocked(errno, argv[i]);
			}
			close(fd);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * /proc, /dev and privilege */

/* /dev may only hold the harmless character devices; any block device or other char device
 * (mem, kmsg, disks, ...) => escape. */
static int s_dev_count;

static int
s_dev_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	unsigned ma, mi;

	(void)type;
	(void)ftw;
	if (S_ISBLK(st->st_mode)) {
		s_escape("block device %s", path);
		return FTW_CONTINUE;
	}
	if (!S_ISCHR(st->st_mode))
		return FTW_CONTINUE;
	s_dev_count++;
	ma = major(st->st_rdev);
	mi = minor(st->st_rdev);
	if (ma == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 8 || mi == 9))
		return FTW_CONTINUE; /* null zero full random urandom */
	if (ma == 5 && (mi == 0 || mi == 2))
		return FTW_CONTINUE; /* tty ptmx */
	if (ma >= 136 && ma <= 143)
		return FTW_CONTINUE; /* pts */
	s_escape("char device %s (%u:%u)", path, ma, mi);
	return FTW_CONTINUE;
}

static int
a_dev(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (nftw("/dev", s_dev_cb, 16, FTW_PHYS | FTW_ACTIONRETVAL) < 0)
		s_blocked(errno, "/dev");
	s_note("%d allowed char devices", s_dev_count);
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = EPERM;
	return 0;
}

static int
a_mknod(int argc, char **argv)
{
	static const struct {
		const char *path;
		mode_t mode;
		unsigned ma, mi;
	} n[] = {{"/tmp/ahp-probe-mem", S_IFCHR | 0666, 1, 1},
	         {"/workspace/ahp-probe-null", S_IFCHR | 0666, 1, 3},
	         {"/workspace/ahp-probe-disk", S_IFBLK | 0600, 253, 0},
	         {"/tmp/ahp-probe-sda", S_IFBLK | 0600, 8, 0}};

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
		int chr = S_ISCHR(n[i].mode);
		if (syscall(SYS_mknodat, AT_FDCWD, n[i].path, n[i].mode,
		            makedev(n[i].ma, n[i].mi)) == 0) {
			unlink(n[i].path);
			s_escape("mknodat %s %u:%u", n[i].path, n[i].ma, n[i].mi);
		} else {
			s_sys(chr ? "mknodat_chr" : "mknodat_blk", errno, n[i].path);
		}
#ifdef SYS_mknod
		if (syscall(SYS_mknod, n[i].path, n[i].mode, makedev(n[i].ma, n[i].mi)) == 0) {
			unlink(n[i].path);
			s_escape("mknod %s %u:%u", n[i].path, n[i].ma, n[i].mi);
		} else {
			s_sys(chr ? "mknod_chr" : "mknod_blk", errno, n[i].path);
		}
#endif
	}
	/* garbage above the 32-bit mode changes nothing */
	if (syscall(SYS_mknodat, AT_FDCWD, "/tmp/ahp-probe-hi",
	            0xdead000000000000UL | S_IFCHR | 0666, makedev(1, 1)) == 0) {
		unlink("/tmp/ahp-probe-hi");
		s_escape("mknodat with high bits");
	} else {
		s_sys("mknodat_chr", errno, "high bits");
	}
	return 0;
}

/* Reads "Name:\tvalue" from /proc/PID/status into out. 0 / -1. */
static int
s_status_field(const char *status_path, const char *name, char *out, size_t cap)
{
	char buf[8192];
	char *p;
	size_t nl = strlen(name);

	if (s_read_small(status_path, buf, sizeof(buf)) < 0)
		return -1;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t n;
			while (*v == '\t' || *v == ' ')
				v++;
			n = strcspn(v, "\n");
			if (n >= cap)
				n = cap - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return 0;
		}
	}
	return -1;
}

static int
a_caps(int argc, char **argv)
{
	static const char *const f[] = {"CapInh", "CapPrm", "CapEff", "CapAmb", NULL};

	(void)argc;
	(void)argv;
	for (int i = 0; f[i]; i++) {
		char v[64];
		if (s_status_field("/proc/self/status", f[i], v, sizeof(v)) < 0) {
			s_blocked(errno ? errno : ENOENT, f[i]);
			continue;
		}
		if (strspn(v, "0") != strlen(v))
			s_escape("%s=%s", f[i], v);
		else
			s_note("%s=0", f[i]);
	}
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = EPERM;
	return 0;
}

static int
a_no_new_privs(int argc, char **argv)
{
	int v = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);

	(void)argc;
	(void)argv;
	if (v != 1)
		s_escape("PR_SET_NO_NEW_PRIVS not set (%d)", v);
	else
		s_blocked(EPERM, "no_new_privs=1");
	return 0;
}

static int
a_seccomp(int argc, char **argv)
{
	char v[32];

	(void)argc;
	(void)argv;
	if (s_status_field("/proc/self/status", "Seccomp", v, sizeof(v)) < 0)
		s_escape("no Seccomp field in /proc/self/status");
	else if (strcmp(v, "2") != 0)
		s_escape("seccomp mode %s (want 2 = filter)", v);
	else
		s_blocked(EPERM, "seccomp=2");
	return 0;
}

static char **s_suid;
static int s_suid_n;

static int
s_suid_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type == FTW_F && S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
	    (st->st_mode & 0111) && s_suid_n < 32) {
		char **grown = realloc(s_suid, (size_t)(s_suid_n + 1) * sizeof(*s_suid));
		if (grown) {
			s_suid = grown;
			s_suid[s_suid_n] = strdup(path);
			if (s_suid[s_suid_n])
				s_suid_n++;
		}
	}
	return FTW_CONTINUE;
}

/* Executes every visible setuid/setgid binary with stdin on a pipe we hold open (so password
 * prompts wait) and watches /proc/PID/status: any change of effective uid/gid or any effective
 * capability after exec => escape. */
static int
a_setuid(int argc, char **argv)
{
	static const char *const roots[] = {"/usr/bin", "/usr/sbin", "/usr/lib",
	                                    "/bin",     "/sbin",     NULL};
	char self_comm[64];
	int observed = 0;

	(void)argc;
	(void)argv;
	if (s_status_field("/proc/self/status", "Name", self_comm, sizeof(self_comm)) < 0)
		self_comm[0] = '\0';
	for (int i = 0; roots[i]; i++)
		nftw(roots[i], s_suid_cb, 16, FTW_PHYS | FTW_MOUNT);
	s_note("%d setuid/setgid binaries visible", s_suid_n);
	for (int i = 0; i < s_suid_n; i++) {
		int in[2];
		pid_t pid;
		if (pipe2(in, O_CLOEXEC) < 0) {
			s_blocked(errno, "pipe");
			break;
		}
		pid = fork();
		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY);
			dup2(in[0], 0);
			if (null >= 0) {
				dup2(null, 1);
				dup2(null, 2);
			}
			execl(s_suid[i], s_suid[i], (char *)NULL);
			_exit(127);
		}
		close(in[0]);
		if (pid < 0) {
			close(in[1]);
			s_blocked(errno, "fork");
			break;
		}
		for (int t = 0; t < 50; t++) {
			char path[64], name[64], uid[128], gid[128], cap[64];
			unsigned r, e, rg, eg;
			/* Name: changes at exec; status stays readable even when the new image is
			 * privileged (exe would not be: non-dumpable). */
			snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
			if (s_status_field(path, "Name", name, sizeof(name)) == 0 &&
			    strcmp(name, self_comm) != 0 &&
			    s_status_field(path, "Uid", uid, sizeof(uid)) == 0 &&
			    s_status_field(path, "Gid", gid, sizeof(gid)) == 0 &&
			    s_status_field(path, "CapEff", cap, sizeof(cap)) == 0 &&
			    sscanf(uid, "%u %u", &r, &e) == 2 &&
			    sscanf(gid, "%u %u", &rg, &eg) == 2) {
				observed++;
				if (e != r || eg != rg || strspn(cap, "0") != strlen(cap))
					s_escape("%s runs with uid %u->%u gid %u->%u CapEff=%s",
					         s_suid[i], r, e, rg, eg, cap);
				break;
			}
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				pid = -1;
				break;
			}
			usleep(10000);
		}
		close(in[1]);
		s_reap(pid);
	}
	s_note("%d observed after exec", observed);
	for (int i = 0; i < s_suid_n; i++)
		free(s_suid[i]);
	free(s_suid);
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = EPERM;
	return 0;
}

static int
a_sethostname(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (sethostname("ahp-pwned", 9) == 0)
		s_escape("sethostname");
	else
		s_sys("sethostname", errno, "sethostname");
	if (setdomainname("ahp-pwned", 9) == 0)
		s_escape("setdomainname");
	else
		s_sys("setdomainname", errno, "setdomainname");
	char *p[1] = {"/proc/sys/kernel/hostname"};
	a_openw(1, p);
	return 0;
}

/* Sets the clocks to the value they already have: harmless even if it were allowed. */
static int
a_settime(int argc, char **argv)
{
	struct timespec ts;
	struct timeval tv;

	(void)argc;
	(void)argv;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (clock_settime(CLOCK_REALTIME, &ts) == 0)
		s_escape("clock_settime(REALTIME)");
	else
		s_sys("clock_settime", errno, "clock_settime");
	gettimeofday(&tv, NULL);
	/* the syscall itself: glibc's settimeofday() may be clock_settime() underneath */
	if (syscall(SYS_settimeofday, &tv, NULL) == 0)
		s_escape("settimeofday");
	else
		s_sys("settimeofday", errno, "settimeofday");
	return 0;
}

/* The runner created a SysV shm segment and message queue with this key on the host. */
static int
a_sysv_ipc(int argc, char **argv)
{
	long key;

	if (argc != 1 || s_parse_int(argv[0], 1, INT_MAX, &key) < 0)
		return -1;
	if (shmget((key_t)key, 0, 0) >= 0)
		s_escape("host shm segment %ld visible", key);
	else
		s_blocked(errno, "shmget");
	if (msgget((key_t)key, 0) >= 0)
		s_escape("host message queue %ld visible", key);
	else
		s_blocked(errno, "msgget");
	return 0;
}

static int
a_tty(int argc, char **argv)
{
	int fd;

	(void)argc;
	(void)argv;
	for (int i = 0; i < 3; i++) {
		char c = 0;
		if (isatty(i))
			s_escape("fd %d is a terminal", i);
		if (ioctl(i, TIOCSTI, &c) == 0)
			s_escape("TIOCSTI on fd %d", i);
		else
			s_sys("ioctl_tiocsti", errno, i == 0 ? "fd 0" : i == 1 ? "fd 1" : "fd 2");
	}
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		s_escape("opened /dev/tty");
	} else {
		s_blocked(errno, "/dev/tty");
	}
	fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		s_escape("opened /dev/console");
	} else {
		s_blocked(errno, "/dev/console");
	}
	return 0;
}

/* Inherited descriptors: stdin must be /dev/null; no directory, regular-file or socket
 * descriptor may leak in beyond 0-2 (a directory fd from outside is a way out via openat). */
static int
a_fds(int argc, char **argv)
{
	DIR *d = opendir("/proc/self/fd");
	struct stat st;

	(void)argc;
	(void)argv;
	if (fstat(0, &st) == 0 && !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))
		s_escape("stdin is not /dev/null (mode %o)", (unsigned)st.st_mode);
	if (!d) {
		s_blocked(errno, "/proc/self/fd");
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[300], link[PATH_MAX];
		long fd;
		ssize_t n;
		if (s_parse_int(de->d_name, 0, INT_MAX, &fd) < 0 || fd <= 2 || fd == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%ld", fd);
		n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		if (fstat((int)fd, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode))
			s_escape("inherited fd %ld -> %s", fd, link);
		else
			s_note("fd %ld -> %s", fd, link);
	}
	closedir(d);
	if (!s_res.escaped && s_res.err == 0)
		s_res.err = EBADF;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Exact seccomp outcomes: other ABIs, argument filters on the low 32 bits, the default action */

/* Runs fn in a child and records how it ended: "SIGSYS" (or another signal's name) when it
 * was killed, else the errno it exited with ("0" = the syscall worked). */
static void
s_child_outcome(const char *key, int (*fn)(void *), const char *what)
{
	int st = 0;
	pid_t pid = fork();

	if (pid < 0) {
		s_blocked(errno, "fork");
		return;
	}
	if (pid == 0)
		_exit(fn(NULL));
	if (waitpid(pid, &st, 0) != pid) {
		s_blocked(errno, "waitpid");
		return;
	}
	if (WIFSIGNALED(st)) {
		const char *sig = sigabbrev_np(WTERMSIG(st));
		char name[24];
		snprintf(name, sizeof(name), "SIG%s", sig ? sig : "?");
		s_blocked(EPERM, what);
		s_note("killed by %s", name);
		s_outcome_str(key, name, what);
	} else if (WEXITSTATUS(st) == 0) {
		s_escape("%s returned normally", what);
		s_outcome(key, 0, what);
	} else {
		s_sys(key, WEXITSTATUS(st), what);
	}
}

static int
s_child_x32(void *arg)
{
	(void)arg;
#if defined(__x86_64__)
	/* getpid with the x32 bit (0x40000000): a different syscall table */
	if (syscall(0x40000000L | SYS_getpid) >= 0)
		return 0;
	return errno ? errno : 254;
#else
	return ENOSYS;
#endif
}

static int
s_child_int80(void *arg)
{
	(void)arg;
#if defined(__x86_64__)
	long r;
	/* the 32-bit entry: eax 20 is getpid in the i386 table */
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
	if (r >= 0)
		return 0;
	return (int)-r;
#else
	return ENOSYS;
#endif
}

/* Syscalls through another ABI must kill the process (SIGSYS), never run unfiltered. A host
 * kernel that cannot take int 0x80 at all (a PVM guest) kills it with SIGSEGV before any filter:
 * run_attack.py holds the sandbox to what the host does then. */
static int
a_other_abi(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	s_child_outcome("other_abi", s_child_x32, "x32 getpid");
	s_child_outcome("other_abi", s_child_int80, "int 0x80 getpid");
	return 0;
}

/* ioctl's request is an unsigned int: TIOCSTI/TIOCLINUX with garbage in the upper 32 bits of
 * the register are the same request to the kernel and must get the same EPERM. */
static int
a_ioctl_highbits(int argc, char **argv)
{
	static const struct {
		const char *key;
		unsigned long req;
		const char *what;
	} r[] = {
	    {"ioctl_tiocsti", TIOCSTI, "TIOCSTI"},
	    {"ioctl_tiocsti", 0xdeadbeef00000000UL | TIOCSTI, "TIOCSTI high bits"},
	    {"ioctl_tiocsti", 0xffffffff00000000UL | TIOCSTI, "TIOCSTI all high bits"},
	    {"ioctl_tioclinux", TIOCLINUX, "TIOCLINUX"},
	    {"ioctl_tioclinux", 0xdeadbeef00000000UL | TIOCLINUX, "TIOCLINUX high bits"},
	    {"ioctl_tioclinux", 0x100000000UL | TIOCLINUX, "TIOCLINUX bit 32"},
	};
	char c = 'x';

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		if (syscall(SYS_ioctl, 0, r[i].req, &c) == 0)
			s_escape("%s accepted", r[i].what);
		else
			s_sys(r[i].key, errno, r[i].what);
	}
	/* an ordinary request still reaches the driver (stdin is /dev/null: ENOTTY) */
	struct winsize ws;
	if (syscall(SYS_ioctl, 0, 0xdeadbeef00000000UL | TIOCGWINSZ, &ws) == 0)
		s_outcome("ioctl", 0, "TIOCGWINSZ");
	else
		s_outcome("ioctl", errno == ENOTTY ? 0 : errno,
		          "TIOCGWINSZ (ENOTTY from the driver)");
	return 0;
}

static int
s_child_clone3(void *arg)
{
	struct clone_args ca;

	(void)arg;
	memset(&ca, 0, sizeof(ca));
	ca.exit_signal = SIGCHLD;
	long pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid == 0)
		syscall(SYS_exit, 0);
	if (pid > 0) {
		waitpid((pid_t)pid, NULL, 0);
		return 0;
	}
	return errno ? errno : 254;
}

/* The default action: syscalls the policy does not name get ENOSYS, whether the kernel has
 * them (sysfs, ustat) or not (a number past any table). clone3 without any flag too. */
static int
a_unlisted(int argc, char **argv)
{
	long r;

	(void)argc;
	(void)argv;
	s_child_outcome("clone3", s_child_clone3, "clone3 no flags");
#ifdef SYS_sysfs
	r = syscall(SYS_sysfs, 3);
	if (r >= 0)
		s_outcome("unlisted:sysfs", 0, "sysfs(3) worked");
	else
		s_sys("unlisted:sysfs", errno, "sysfs(3)");
#endif
#ifdef SYS_ustat
	struct ustat_buf {
		long f_tfree;
		unsigned long f_tinode;
		char f_fname[6];
		char f_fpack[6];
	} ub;
	struct stat st;
	if (stat("/", &st) == 0) {
		r = syscall(SYS_ustat, (unsigned)st.st_dev, &ub);
		if (r >= 0)
			s_outcome("unlisted:ustat", 0, "ustat(/) worked");
		else
			s_sys("unlisted:ustat", errno, "ustat(/)");
	}
#endif
	r = syscall(1000L, 0, 0, 0);
	if (r >= 0)
		s_outcome("unlisted:nr1000", 0, "syscall 1000 worked");
	else
		s_sys("unlisted:nr1000", errno, "syscall 1000");
	r = syscall(0xdead000000000000L | SYS_getpid);
	if (r >= 0)
		s_note("getpid with high bits of nr set returned %ld (nr is 32-bit)", r);
	return 0;
}

/* personality(): only the listed personas, compared on the low 32 bits. */
static int
a_personality(int argc, char **argv)
{
	static const struct {
		const char *key;
		unsigned long v;
		const char *what;
	} p[] = {
	    {"personality_query", 0xffffffffUL, "query"},
	    {"personality_other", 0x0400000UL, "READ_IMPLIES_EXEC"},
	    {"personality_other", 0x0040000UL, "ADDR_NO_RANDOMIZE"},
	    {"personality_other", 0x0100000UL, "MMAP_PAGE_ZERO"},
	    {"personality_other", 0xdead000000400000UL, "READ_IMPLIES_EXEC high bits"},
	    {"personality_linux", 0x0UL, "PER_LINUX"},
	};

	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
		long r = syscall(SYS_personality, p[i].v);
		if (r >= 0) {
			if (strcmp(p[i].key, "personality_other") == 0)
				s_escape("personality(%s)", p[i].what);
			s_outcome(p[i].key, 0, p[i].what);
		} else {
			s_sys(p[i].key, errno, p[i].what);
		}
	}
	return 0;
}

/* Notes our ids and the user namespace maps (so the runner learns the host uid). */
static void
s_note_ids(void)
{
	static const char *const maps[] = {"uid_map", "gid_map", NULL};
	char map[256], path[64];

	s_note("uid=%d gid=%d pid=%d", (int)getuid(), (int)getgid(), (int)getpid());
	for (int i = 0; maps[i]; i++) {
		snprintf(path, sizeof(path), "/proc/self/%s", maps[i]);
		if (s_read_small(path, map, sizeof(map)) <= 0)
			continue;
		for (char *p = map; *p; p++)
			if (*p == '\n' || *p == '\t')
				*p = ' ';
		s_note("%s=%s", maps[i], map);
	}
}

/* Informational: who we are inside, for the runner (never an escape by itself). */
static int
a_whoami(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	s_note_ids();
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Dispatch */

static const struct {
	const char *name;
	int min_args;
	int (*fn)(int argc, char **argv);
	const char *usage;
} s_attacks[] = {
    {"read", 1, a_read, "PATH...  open for reading succeeds => escape"},
    {"absent", 1, a_absent, "PATH...  host-only path visible => escape"},
    {"create", 1, a_create, "PATH...  new file created => escape"},
    {"openw", 1, a_openw, "PATH...  existing file opens for writing => escape"},
    {"mkdir", 1, a_mkdir, "PATH...  directory created => escape"},
    {"find_name", 1, a_find_name, "NAME...  file with that name anywhere => escape"},
    {"scan", 1, a_scan, "NEEDLE  needle in any visible file or environment => escape"},
    {"symlinks", 4, a_symlinks, "HOSTDIR HOSTFILE UP MARKER  plant traps in /workspace"},
    {"plant", 2, a_plant, "NAME CONTENT  write /workspace/NAME"},
    {"mount", 0, a_mount, " mount/remount/bind/fsopen/open_tree"},
    {"umount", 0, a_umount, " umount2 of sandbox mounts"},
    {"pivot_root", 0, a_pivot_root, ""},
    {"chroot", 0, a_chroot, ""},
    {"mounts", 1, a_mounts, "MAJ:MIN:ROOT  host root mount visible or rw disk mount => escape"},
    {"cgroup", 0, a_cgroup, " release_agent, cgroup.procs, mkdir, mount cgroup"},
    {"sysfs", 0, a_sysfs, " sysfs writable"},
    {"unshare", 0, a_unshare, " unshare(CLONE_NEW*)"},
    {"clone_ns", 0, a_clone_ns, " clone(CLONE_NEW*)"},
    {"clone3", 0, a_clone3, " clone3(CLONE_NEW*)"},
    {"setns", 0, a_setns, "[PID|self...]  setns into /proc/PID/ns/* (default 1 self)"},
    {"ptrace_init", 0, a_ptrace_init, " PTRACE_ATTACH/SEIZE pid 1, open /proc/1/mem"},
    {"ptrace_sibling", 0, a_ptrace_sibling, " PTRACE_ATTACH a child, PTRACE_TRACEME"},
    {"process_vm", 0, a_process_vm, " process_vm_readv/writev child and pid 1"},
    {"proc_pids", 0, a_proc_pids, "[PID:NEEDLE...]  host processes visible => escape"},
    {"proc_root", 0, a_proc_root, " /proc/PID/root of another tree => escape"},
    {"kill", 0, a_kill, "[HOSTPID...]  kill host pids, kill(-1, SIGWINCH)"},
    {"bpf", 0, a_bpf, ""},
    {"keyctl", 0, a_keyctl, ""},
    {"kexec", 0, a_kexec, ""},
    {"module", 0, a_module, " init/finit/delete_module"},
    {"perf", 0, a_perf, " perf_event_open"},
    {"userfaultfd", 0, a_userfaultfd, ""},
    {"io_uring", 0, a_io_uring, ""},
    {"open_by_handle", 0, a_open_by_handle, " open_by_handle_at (shocker)"},
    {"raw_socket", 0, a_raw_socket, ""},
    {"packet_socket", 0, a_packet_socket, ""},
    {"netlink_socket", 0, a_netlink_socket, ""},
    {"connect", 1, a_connect, "IP:PORT|[IP6]:PORT...  TCP connect succeeds => escape"},
    {"dns", 1, a_dns, "IP:PORT...  UDP DNS query sent/answered => escape"},
    {"connect_unix", 1, a_connect_unix, "PATH|@ABSTRACT...  unix connect => escape"},
    {"dev", 0, a_dev, " unexpected device nodes in /dev"},
    {"mknod", 0, a_mknod, " char/block device nodes"},
    {"caps", 0, a_caps, " any capability in /proc/self/status"},
    {"no_new_privs", 0, a_no_new_privs, ""},
    {"seccomp", 0, a_seccomp, " seccomp filter mode"},
    {"setuid", 0, a_setuid, " setuid binaries gain privilege"},
    {"sethostname", 0, a_sethostname, ""},
    {"settime", 0, a_settime, ""},
    {"sysv_ipc", 1, a_sysv_ipc, "KEY  host SysV shm/msg visible"},
    {"tty", 0, a_tty, " terminal access / TIOCSTI"},
    {"fds", 0, a_fds, " leaked descriptors, stdin not /dev/null"},
    {"whoami", 0, a_whoami, " ids and maps (information only)"},
    {"other_abi", 0, a_other_abi,
     " x32 syscall numbers and int 0x80 (must die: SIGSYS, or the host kernel's own signal)"},
    {"ioctl_highbits", 0, a_ioctl_highbits, " TIOCSTI/TIOCLINUX with garbage in the upper bits"},
    {"unlisted", 0, a_unlisted, " syscalls the policy does not name (default action), clone3"},
    {"personality", 0, a_personality, " personality() personas"},
};

static void
s_usage(FILE *out)
{
	fprintf(out, "usage: probe ATTACK [ARGS]\n"
	             "Prints RESULT attack=.. ok=0|1 errno=.. detail=\"..\"; exit 0 blocked, "
	             "1 escaped, 2 usage.\n");
	for (size_t i = 0; i < sizeof(s_attacks) / sizeof(s_attacks[0]); i++)
		fprintf(out, "  %s %s\n", s_attacks[i].name, s_attacks[i].usage);
}

int
main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		s_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	/* A sibling killed by us must not take the probe down through SIGPIPE etc. */
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(s_attacks) / sizeof(s_attacks[0]); i++) {
		if (strcmp(argv[1], s_attacks[i].name) != 0)
			continue;
		if (argc - 2 < s_attacks[i].min_args) {
			fprintf(stderr, "usage: probe %s %s\n", s_attacks[i].name,
			        s_attacks[i].usage);
			return 2;
		}
		s_res.attack = s_attacks[i].name;
		if (s_attacks[i].fn(argc - 2, argv + 2) < 0) {
			fprintf(stderr, "usage: probe %s %s\n", s_attacks[i].name,
			        s_attacks[i].usage);
			return 2;
		}
		s_print_result();
		return s_res.escaped ? 1 : 0;
	}
	fprintf(stderr, "probe: unknown attack '%s'\n", argv[1]);
	s_usage(stderr);
	return 2;
}
