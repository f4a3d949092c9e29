/* `sandboxd exec`: a one-shot sandbox with a profile's limits, for people and security tests.
 *
 * Linked into the lean front (front.c): this file uses libc, protobuf-c and
 * common's util/cfg/text only, never libzmq or a daemon library, because
 * process start is most of a one-shot's cost. It sends one Run request on
 * sandboxd's exec socket (a unix SOCK_SEQPACKET socket, loop.c) and waits
 * for its one reply; sandboxd resolves the profile, creates the sandbox,
 * runs the command, answers, then destroys it. Closing the connection (an
 * interrupted or killed client) makes sandboxd destroy the sandbox. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ahp/limit_table.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "sbx.h"

/* musl's <stdio.h> defines stdout and stderr as (stdout) and (stderr), which cannot
 * follow "->": the ExecResult's fields of those names are read with the macros
 * undefined (the FILE objects keep their names: both libcs declare them). */
#undef stdout
#undef stderr

#define S_EXIT_USAGE 2
#define S_EXIT_UNREACHABLE 125
#define S_EXIT_INTERRUPTED 130
/* Longest wait for room in the exec socket's listen backlog. */
#define S_CONNECT_WAIT_MS 30000
/* Longest wait for the reply beyond the command's timeout (--timeout S, or
 * the longest there is when the profile's applies: only sandboxd knows it):
 * sandboxd's own bound on a sandbox that does not come (15 s, loop.c), the
 * collection, and slack. sandboxd enforces both; this only bounds a daemon
 * that is alive but stuck (stopped, hung): without --timeout that is an
 * hour, with --timeout 1 it is 46 s. */
#define S_REPLY_SLACK_S 45

/* The usage, to f: stderr after a usage error, stdout for --help. */
static void
s_cli_usage(FILE *f)
{
	ahp_term_printf(
	    f, "usage: sandboxd [--home DIR] exec --profile P [--keep] [--timeout S] -- "
	       "CMD [ARG...]\n"
	       "  CMD and its ARGs run exactly as given (each word is quoted for the\n"
	       "  sandbox's /bin/sh -c); for a shell line use: -- sh -c 'LINE'\n"
	       "  --profile P  the profile whose sandbox settings apply (etc/profiles)\n"
	       "  --timeout S  the command's wall clock in seconds, in place of the\n"
	       "               profile's sandbox.timeout_s (longer too: an operator's call)\n"
	       "  --keep       keep the workspace after the run; stderr says where\n");
}

/* Connects to the exec socket. A socket file without a listener (a daemon
 * that is just starting binds a moment before it listens) gets a short grace
 * (500 ms); ECONNREFUSED / ENOENT after it means nobody serves there. A full
 * listen backlog (a daemon that does not accept: busy, stopped, flooded by
 * other peers) is waited for at most S_CONNECT_WAIT_MS, and SIGINT / SIGTERM /
 * SIGHUP (sigfd) end the wait: a blocking connect() there sleeps without a
 * bound and with those signals blocked. The fd (blocking again), or -1 with
 * errno (ETIMEDOUT: the backlog stayed full; EINTR: a signal came). */
static int
s_connect(const char *path, int sigfd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t n = strlen(path);
	if (n >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, n + 1);
	int64_t deadline = ahp_mono_ms() + S_CONNECT_WAIT_MS;
	for (int attempt = 0;;) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			int fl = fcntl(fd, F_GETFL);
			if (fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0)
				return fd;
		}
		int err = errno;
		close(fd);
		int wait_ms;
		if (err == EAGAIN) { /* the backlog is full: poll again soon */
			int64_t left = deadline - ahp_mono_ms();
			if (left <= 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			wait_ms = left < 20 ? (int)left : 20;
		} else if ((err == ECONNREFUSED || err == ENOENT) && ++attempt < 10) {
			wait_ms = 50;
		} else {
			errno = err;
			return -1;
		}
		struct pollfd pf = {sigfd, POLLIN, 0};
		if (poll(&pf, 1, wait_ms) > 0) {
			errno = EINTR;
			return -1;
		}
	}
}

/* Appends word to cmd (at *off, capacity cap) quoted for /bin/sh -c, so that
 * the shell sees exactly this one word: words of only safe characters go
 * as they are (readable in logs), anything else inside single quotes, each
 * ' written as '\''. -1 when it does not fit. */
static int
s_shell_quote(char *cmd, size_t cap, size_t *off, const char *word)
{
	static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                           "0123456789@%+=:,./_-";
	size_t n = strlen(word);
	bool plain = n > 0 && strspn(word, safe) == n;
	size_t need = plain ? n : 2 + n;
	if (!plain)
		for (size_t i = 0; i < n; i++)
			if (word[i] == '\'')
				need += 3;
	if (*off + need + 2 > cap)
		return -1;
	if (plain) {
		memcpy(cmd + *off, word, n);
		*off += n;
		return 0;
	}
	cmd[(*off)++] = '\'';
	for (size_t i = 0; i < n; i++) {
		if (word[i] == '\'') {
			memcpy(cmd + *off, "'\\''", 4);
			*off += 4;
		} else {
			cmd[(*off)++] = word[i];
		}
	}
	cmd[(*off)++] = '\'';
	return 0;
}

/* Writes a stream of the command's output. To a terminal, control
 * characters are shown escaped (ahp_term_escape: ESC as \x1b ...), as `cat -v`
 * does: a sandboxed command is untrusted and must not retitle the window,
 * write the clipboard (OSC 52) or overwrite what was printed before. To a
 * pipe or a file the bytes pass exactly, as `cat` does: scripts and the
 * security tests need the command's real output, and no terminal reads it. */
static void
s_write_output(int fd, const uint8_t *p, size_t len)
{
	if (len == 0)
		return;
	if (!isatty(fd)) {
		(void)ahp_write_all(fd, p, len);
		return;
	}
	char *e = ahp_term_escape((const char *)p, len, 0);
	if (e != NULL)
		(void)ahp_write_all(fd, (const uint8_t *)e, strlen(e));
	free(e);
}

/* The reply is decoded into a static arena: the front exits right after it,
 * and each of malloc's small groups freed would be unmapped, a TLB shoot-down
 * to every CPU the process ran on (~0.1 ms in a VM, where an IPI traps to the
 * hypervisor). What does not fit (a reply that came in a memfd) is malloc'd. */
static _Alignas(max_align_t) uint8_t s_arena[2 * SBX_RUN_INLINE_MAX];
static size_t s_arena_used;

static void *
s_arena_alloc(void *data, size_t size)
{
	(void)data;
	size_t a = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
	if (a >= size && a <= sizeof(s_arena) - s_arena_used) {
		void *p = s_arena + s_arena_used;
		s_arena_used += a;
		return p;
	}
	return malloc(size);
}

static void
s_arena_free(void *data, void *p)
{
	(void)data;
	uintptr_t u = (uintptr_t)p, lo = (uintptr_t)s_arena;
	if (u < lo || u >= lo + sizeof(s_arena))
		free(p);
}

static ProtobufCAllocator s_reply_alloc = {s_arena_alloc, s_arena_free, NULL};

/* Reads a reply that came in a memfd (at most SBX_RUN_REPLY_MAX bytes) into
 * *buf (caller frees). Its length, or -1. */
static ssize_t
s_read_memfd(int fd, uint8_t **buf)
{
	struct stat st;
	*buf = NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > SBX_RUN_REPLY_MAX)
		return -1;
	size_t len = (size_t)st.st_size;
	uint8_t *b = malloc(len);
	if (b == NULL)
		return -1;
	for (size_t off = 0; off < len;) {
		ssize_t r = pread(fd, b + off, len - off, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(b);
			return -1;
		}
		off += (size_t)r;
	}
	*buf = b;
	return (ssize_t)len;
}

/* Waits for the one reply packet (and the memfd it may carry), giving up on
 * SIGINT / SIGTERM / SIGHUP (sigfd: *exit_code 130) or when the daemon closes
 * the connection (125). The decoded reply, or NULL with a message printed. */
static Ahp__Sbx__Reply *
s_wait_reply(int fd, int sigfd, int wait_s, int *exit_code)
{
	static uint8_t pkt[SBX_RUN_INLINE_MAX];
	*exit_code = S_EXIT_UNREACHABLE;
	int64_t deadline = ahp_mono_ms() + (int64_t)wait_s * 1000;
	for (;;) {
		int64_t left = deadline - ahp_mono_ms();
		if (left <= 0) {
			ahp_term_printf(stderr, "sandboxd: no answer from the daemon within %d s\n",
			                wait_s);
			return NULL;
		}
		struct pollfd pf[2] = {{fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
		int n = poll(pf, 2, (int)(left > 1000000 ? 1000000 : left));
		if (n < 0 && errno != EINTR)
			return NULL;
		if (n <= 0)
			continue;
		if (pf[1].revents) {
			*exit_code = S_EXIT_INTERRUPTED;
			return NULL;
		}
		if (pf[0].revents)
			break;
	}
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov = {pkt, sizeof(pkt)};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = cm.buf,
	                    .msg_controllen = sizeof(cm.buf)};
	ssize_t r;
	/* ECONNRESET: sandboxd answered and closed before reading our request
	 * (a peer it refuses); the error comes first, the answer after it */
	int resets = 0;
	do
		r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (r < 0 && (errno == EINTR || (errno == ECONNRESET && resets++ == 0)));
	int memfd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&memfd, CMSG_DATA(c), sizeof(int));
	Ahp__Sbx__Reply *rep = NULL;
	if (r <= 0) {
		ahp_term_printf(stderr, "sandboxd: the daemon closed the connection without an "
		                        "answer (see its log)\n");
	} else if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		ahp_term_printf(stderr, "sandboxd: a reply larger than a packet\n");
	} else if ((rep = ahp__sbx__reply__unpack(&s_reply_alloc, (size_t)r, pkt)) == NULL) {
		ahp_term_printf(stderr, "sandboxd: undecodable reply\n");
	} else if (rep->run != NULL && rep->run->in_fd) {
		ahp__sbx__reply__free_unpacked(rep, &s_reply_alloc);
		rep = NULL;
		uint8_t *big = NULL;
		ssize_t len = memfd >= 0 ? s_read_memfd(memfd, &big) : -1;
		if (len > 0)
			rep = ahp__sbx__reply__unpack(&s_reply_alloc, (size_t)len, big);
		free(big);
		if (rep == NULL || (rep->run != NULL && rep->run->in_fd)) {
			ahp_term_printf(stderr, "sandboxd: undecodable reply\n");
			if (rep != NULL)
				ahp__sbx__reply__free_unpacked(rep, &s_reply_alloc);
			rep = NULL;
		}
	}
	if (memfd >= 0)
		close(memfd);
	return rep;
}

/* After a --keep run's error at create or exec (sandboxd stopping, the
 * command interrupted): sandboxd names the workspace in the error reply when
 * the Destroy after it keeps it, and names none when nothing is kept (no
 * sandbox was made; with retain_failed_max 0 sandboxd refuses --keep up front). */
static void
s_say_kept(const Ahp__Sbx__RunReply *run, const char *run_id)
{
	const char *id = run->sandbox_id != NULL && run->sandbox_id[0] ? run->sandbox_id : run_id;
	if (run->workspace != NULL && run->workspace[0] != '\0')
		ahp_term_printf(stderr,
		                "sandboxd: the command did not finish; workspace kept at %s "
		                "(sandbox %s)\n",
		                run->workspace, id);
	else
		ahp_term_printf(stderr,
		                "sandboxd: the command did not finish; no workspace was kept "
		                "(sandbox %s is gone)\n",
		                id);
}

int
sbx_cli_exec(const char *home, const char *sock_path, int argc, char **argv)
{
	const char *profile = NULL;
	bool keep = false;
	long timeout = 0;
	int i = 0;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_cli_usage(stdout);
			return 0;
		}
		if (strcmp(a, "--profile") == 0 && i + 1 < argc) {
			profile = argv[++i];
		} else if (strcmp(a, "--keep") == 0) {
			keep = true;
		} else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
			if (ahp_parse_long(argv[++i], 1, AHP_LIM_EXEC_TIMEOUT_S_MAX, &timeout) !=
			    0) {
				ahp_term_printf(stderr,
				                "sandboxd: --timeout takes seconds in [1, %d]\n",
				                AHP_LIM_EXEC_TIMEOUT_S_MAX);
				return S_EXIT_USAGE;
			}
		} else if (strcmp(a, "--profile") == 0 || strcmp(a, "--timeout") == 0) {
			ahp_term_printf(stderr, "sandboxd: exec: %s needs a value\n", a);
			s_cli_usage(stderr);
			return S_EXIT_USAGE;
		} else if (a[0] == '-') {
			ahp_term_printf(stderr, "sandboxd: exec: unknown option %s\n", a);
			s_cli_usage(stderr);
			return S_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (profile == NULL || i >= argc) {
		ahp_term_printf(stderr, "sandboxd: exec: %s\n",
		                profile == NULL ? "--profile P is required"
		                                : "no command (give it after --)");
		s_cli_usage(stderr);
		return S_EXIT_USAGE;
	}
	if (!sbx_profile_name_ok(profile)) {
		ahp_term_printf(
		    stderr,
		    "sandboxd: exec: --profile takes a profile's name ([a-z0-9-], 1 to %d "
		    "characters): '%.80s'\n",
		    SBX_PROFILE_MAX, profile);
		return S_EXIT_USAGE;
	}
	/* The words are the command's argv: each is quoted for the sandbox's
	 * /bin/sh -c, so `-- sh -c 'echo one; echo two'` runs exactly that.
	 * (Joining them with spaces, as ssh does, silently changed what ran.)
	 * The exec protocol keeps one command string. */
	if (argv[i][0] == '\0') {
		ahp_term_printf(stderr, "sandboxd: exec: the command name is empty\n");
		s_cli_usage(stderr);
		return S_EXIT_USAGE;
	}
	/* Static, as the request buffer below: a 64 KiB malloc is an mmap, and
	 * its munmap after the reply came costs a TLB shoot-down to every CPU
	 * the process ran on (~0.1 ms in a VM, where an IPI traps). */
	static char cmd[SBX_CMD_MAX + 1];
	size_t off = 0;
	for (int k = i; k < argc; k++) {
		if (k > i)
			cmd[off++] = ' ';
		if (s_shell_quote(cmd, SBX_CMD_MAX, &off, argv[k]) != 0) {
			ahp_term_printf(
			    stderr, "sandboxd: the command is longer than %d bytes once quoted\n",
			    SBX_CMD_MAX);
			return S_EXIT_USAGE;
		}
	}
	cmd[off] = '\0';

	int ec = S_EXIT_UNREACHABLE, fd = -1, sigfd = -1;
	static uint8_t body[SBX_RUN_REQ_MAX];
	Ahp__Sbx__Reply *rep = NULL;
	char run_id[40];
	ahp_random_id(SBX_ONESHOT_PREFIX, run_id, sizeof(run_id));

	/* Signals first: an interrupt from here on closes the connection,
	 * which makes sandboxd destroy whatever it built for us. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		ahp_term_printf(stderr, "sandboxd: signalfd: %s\n", strerror(errno));
		goto out;
	}
	fd = s_connect(sock_path, sigfd);
	if (fd < 0) {
		if (errno == EINTR) {
			ec = S_EXIT_INTERRUPTED;
			ahp_term_printf(stderr, "sandboxd: interrupted; nothing was started\n");
		} else if (errno == ETIMEDOUT)
			ahp_term_printf(
			    stderr,
			    "sandboxd: the daemon accepts no connection on %s (busy for "
			    "%d s)\n",
			    sock_path, S_CONNECT_WAIT_MS / 1000);
		else if (errno == ECONNREFUSED || errno == ENOENT)
			ahp_term_printf(stderr,
			                "sandboxd: the daemon is not running (nothing listens on "
			                "%s)\n",
			                sock_path);
		else
			ahp_term_printf(stderr, "sandboxd: cannot connect to %s: %s\n", sock_path,
			                strerror(errno));
		goto out;
	}

	Ahp__Sbx__RunRequest rr = AHP__SBX__RUN_REQUEST__INIT;
	rr.run_id = run_id;
	rr.profile = (char *)profile;
	rr.command = cmd;
	rr.timeout_s = (uint32_t)timeout;
	rr.keep_workspace = keep;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_RUN;
	req.run = &rr;
	size_t len = ahp__sbx__request__get_packed_size(&req);
	if (len > sizeof(body)) {
		ahp_term_printf(stderr, "sandboxd: the request is larger than %zu bytes\n",
		                sizeof(body));
		goto out;
	}
	ahp__sbx__request__pack(&req, body);
	ssize_t w;
	do
		w = send(fd, body, len, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	/* EPIPE: sandboxd refused the connection at once (a peer it does not
	 * admit) and closed it; its answer is in our receive queue */
	if (w != (ssize_t)len && !(w < 0 && (errno == EPIPE || errno == ECONNRESET))) {
		ahp_term_printf(stderr, "sandboxd: sending the request to %s: %s\n", sock_path,
		                w < 0 ? strerror(errno) : "short write");
		goto out;
	}

	rep = s_wait_reply(
	    fd, sigfd, (timeout > 0 ? (int)timeout : AHP_LIM_EXEC_TIMEOUT_S_MAX) + S_REPLY_SLACK_S,
	    &ec);
	if (rep == NULL) {
		if (ec == S_EXIT_INTERRUPTED && !keep)
			ahp_term_printf(stderr,
			                "sandboxd: interrupted; the sandbox is destroyed\n");
		else if (ec == S_EXIT_INTERRUPTED && keep)
			ahp_term_printf(
			    stderr,
			    "sandboxd: interrupted; the workspace is kept if the command had "
			    "started (sandbox %s)\n",
			    run_id);
		else if (keep) /* no answer: only sandboxd's log can tell */
			ahp_term_printf(
			    stderr,
			    "sandboxd: sandbox %s: its workspace may be kept (no answer "
			    "said; see sandboxd's log)\n",
			    run_id);
		goto out;
	}
	const Ahp__Sbx__RunReply *run = rep->run;
	if (rep->error != NULL && rep->error->status != AHP__STATUS__OK) {
		/* no stage: refused before any request was read (the peer check) */
		const char *stage = run != NULL && run->stage != NULL ? run->stage : "";
		if (strcmp(stage, "profile") == 0 &&
		    rep->error->status == AHP__STATUS__ERR_NOT_FOUND) {
			/* the message: what loading the profiles reported, one per line */
			char dir[PATH_MAX];
			if (ahp_home_path(home, "etc/profiles", dir, sizeof(dir)) != 0)
				dir[0] = '\0';
			ahp_term_printf(
			    stderr, "sandboxd: unknown profile '%s' (profiles are read from %s)\n",
			    profile, dir);
			ahp_term_fputs(rep->error->message, 0, stderr);
			ec = S_EXIT_USAGE;
			goto out;
		}
		if (stage[0] != '\0')
			ahp_term_printf(stderr, "sandboxd: %s: %s: ", stage,
			                ahp_status_str(rep->error->status));
		else
			ahp_term_printf(stderr,
			                "sandboxd: %s: ", ahp_status_str(rep->error->status));
		ahp_term_fputs(rep->error->message, AHP_TERM_ONE_LINE, stderr);
		fputc('\n', stderr);
		if (keep && (strcmp(stage, "create") == 0 || strcmp(stage, "exec") == 0))
			s_say_kept(run, run_id);
		ec = S_EXIT_UNREACHABLE;
		goto out;
	}
	if (run == NULL || run->result == NULL) {
		ahp_term_printf(stderr, "sandboxd: a reply without a result\n");
		goto out;
	}
	const Ahp__Sbx__ExecResult *r = run->result;
	s_write_output(1, r->stdout.data, r->stdout.len);
	s_write_output(2, r->stderr.data, r->stderr.len);
	/* our notices start on a line of their own */
	if ((r->truncated || r->killed_by > 0 || keep) && r->stderr.len > 0 &&
	    r->stderr.data[r->stderr.len - 1] != '\n')
		fputc('\n', stderr);
	if (r->truncated)
		ahp_term_printf(stderr, "sandboxd: output truncated at %u KiB per stream\n",
		                run->output_kb);
	static const char *const kb[] = {"none", "timeout", "memory", "pids", "cpu"};
	if (r->killed_by > 0 && (unsigned)r->killed_by < 5)
		ahp_term_printf(stderr, "sandboxd: limit reached: %s\n", kb[r->killed_by]);
	if (keep)
		ahp_term_printf(stderr, "sandboxd: workspace kept at %s (sandbox %s)\n",
		                run->workspace != NULL && run->workspace[0] ? run->workspace : "?",
		                run->sandbox_id != NULL ? run->sandbox_id : run_id);
	ec = r->exit_code >= 0 && r->exit_code <= 255 ? r->exit_code : S_EXIT_UNREACHABLE;
out:
	if (rep != NULL)
		ahp__sbx__reply__free_unpacked(rep, &s_reply_alloc);
	if (fd >= 0)
		close(fd);
	if (sigfd >= 0)
		close(sigfd);
	return ec;
}
