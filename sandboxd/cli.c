/* `sandboxd exec`: a one-shot sandbox with a profile's limits, for people and security tests. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "ahp/log.h"
#include "ahp/profile.h"
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "sbx.h"

#define S_EXIT_USAGE 2
#define S_EXIT_UNREACHABLE 125
#define S_CALL_MS 15000 /* Create / Destroy */

typedef struct {
	char *buf;
	size_t len, cap;
} s_errs_t;

static void
s_on_profile_error(void *arg, const char *message)
{
	s_errs_t *e = arg;
	size_t l = strlen(message);
	if (e->len + l + 2 > e->cap) {
		size_t cap = e->cap * 2 + l + 64;
		if (cap > 65536)
			return;
		char *n = realloc(e->buf, cap);
		if (n == NULL)
			return;
		e->buf = n;
		e->cap = cap;
	}
	memcpy(e->buf + e->len, message, l);
	e->len += l;
	e->buf[e->len++] = '\n';
	e->buf[e->len] = '\0';
}

/* A stale socket file would make ZeroMQ wait for the whole call timeout:
 * ask the kernel whether anything listens there. The file appears at bind(),
 * a moment before listen(), so a daemon that is just starting gets a short
 * grace (500 ms) before it is called unreachable. */
static bool
s_listening(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return true; /* let ZeroMQ report it */
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (int attempt = 0; attempt < 10; attempt++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return true;
		int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		int err = errno;
		close(fd);
		if (rc == 0)
			return true;
		if (err != ECONNREFUSED && err != ENOENT)
			return false;
		usleep(50 * 1000);
	}
	return false;
}

static void
s_cli_usage(void)
{
	ahp_term_printf(stderr,
	                "usage: sandboxd [--home DIR] exec --profile P [--keep] [--timeout S] -- "
	                "CMD [ARG...]\n"
	                "  CMD and its ARGs run exactly as given (each word is quoted for the\n"
	                "  sandbox's /bin/sh -c); for a shell line use: -- sh -c 'LINE'\n");
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

/* Packs and queues a request; returns its id, or 0 when it cannot be packed
 * or queued. Until the connection is up (ZMQ_IMMEDIATE refuses to queue) it
 * waits for it with zmq_poll, never a fixed sleep: the connection is up in
 * well under a millisecond, and a 10 ms sleep here once cost every one-shot
 * more than the rest of its work. SIGINT / SIGTERM / SIGHUP on sigfd give up
 * (*exit_code 130); a dead daemon gives up at deadline (125). */
static uint64_t
s_send(ahp_rpc_client_t *cl, int sigfd, const Ahp__Sbx__Request *req, int64_t deadline,
       int *exit_code)
{
	size_t len = ahp__sbx__request__get_packed_size(req);
	uint8_t *body = malloc(len ? len : 1);
	*exit_code = S_EXIT_UNREACHABLE;
	if (body == NULL)
		return 0;
	ahp__sbx__request__pack(req, body);
	uint64_t id = 0;
	for (;;) {
		id = ahp_rpc_client_send(cl, body, len);
		if (id != 0)
			break;
		int64_t left = deadline - ahp_mono_ms();
		if (left <= 0) {
			ahp_term_printf(stderr, "sandboxd: the daemon accepts no requests\n");
			break;
		}
		zmq_pollitem_t it[2] = {{ahp_rpc_client_socket(cl), 0, ZMQ_POLLOUT, 0},
		                        {NULL, sigfd, ZMQ_POLLIN, 0}};
		if (zmq_poll(it, 2, (long)left) < 0 && zmq_errno() != EINTR)
			break;
		if (it[1].revents) {
			*exit_code = 130;
			break;
		}
	}
	free(body);
	return id;
}

/* Waits for the reply to request id (replies to other ids are dropped),
 * giving up early on SIGINT / SIGTERM / SIGHUP (sigfd). Returns the decoded
 * reply, or NULL with *exit_code set (125 unreachable / failing, 130
 * interrupted) and a message on stderr. */
static Ahp__Sbx__Reply *
s_wait(ahp_rpc_client_t *cl, int sigfd, uint64_t id, int timeout_ms, int *exit_code)
{
	int64_t deadline = ahp_mono_ms() + timeout_ms;
	Ahp__Sbx__Reply *rep = NULL;
	*exit_code = S_EXIT_UNREACHABLE;
	while (rep == NULL) {
		int64_t left = deadline - ahp_mono_ms();
		if (left <= 0) {
			ahp_term_printf(stderr, "sandboxd: no answer from the daemon within %d s\n",
			                timeout_ms / 1000);
			break;
		}
		zmq_pollitem_t it[2] = {{ahp_rpc_client_socket(cl), 0, ZMQ_POLLIN, 0},
		                        {NULL, sigfd, ZMQ_POLLIN, 0}};
		if (zmq_poll(it, 2, (long)left) < 0 && zmq_errno() != EINTR)
			break;
		if (it[1].revents) {
			*exit_code = 130;
			break;
		}
		uint64_t rid;
		uint8_t *b = NULL;
		size_t n = 0;
		int terr = 0;
		int r = ahp_rpc_client_recv(cl, &rid, &b, &n, &terr);
		if (r < 0)
			break;
		if (r == 0 || rid != id) {
			free(b);
			continue;
		}
		if (terr != 0) {
			ahp_term_printf(stderr, "sandboxd: %s: ", ahp_status_str(terr));
			ahp_term_fputs((char *)b, AHP_TERM_ONE_LINE, stderr);
			fputc('\n', stderr);
			free(b);
			break;
		}
		rep = ahp__sbx__reply__unpack(NULL, n, b);
		free(b);
		if (rep == NULL) {
			ahp_term_printf(stderr, "sandboxd: undecodable reply\n");
			break;
		}
	}
	return rep;
}

/* One request, one reply (s_send + s_wait). */
static Ahp__Sbx__Reply *
s_call(ahp_rpc_client_t *cl, int sigfd, const Ahp__Sbx__Request *req, int timeout_ms,
       int *exit_code)
{
	uint64_t id = s_send(cl, sigfd, req, ahp_mono_ms() + timeout_ms, exit_code);
	return id != 0 ? s_wait(cl, sigfd, id, timeout_ms, exit_code) : NULL;
}

/* Prints a typed error reply; true when rep carries one. */
static bool
s_reply_failed(const Ahp__Sbx__Reply *rep, const char *what)
{
	if (rep->error == NULL || rep->error->status == AHP__STATUS__OK)
		return false;
	ahp_term_printf(stderr, "sandboxd: %s: %s: ", what, ahp_status_str(rep->error->status));
	ahp_term_fputs(rep->error->message, AHP_TERM_ONE_LINE, stderr);
	fputc('\n', stderr);
	return true;
}

static void
s_destroy(ahp_rpc_client_t *cl, int sigfd, const char *id, bool keep)
{
	Ahp__Sbx__DestroyRequest dr = AHP__SBX__DESTROY_REQUEST__INIT;
	dr.sandbox_id = (char *)id;
	dr.keep_workspace = keep;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_DESTROY;
	req.destroy = &dr;
	int ec;
	/* a second ^C should not abandon the cleanup: -1 = no signal fd */
	Ahp__Sbx__Reply *rep = s_call(cl, sigfd, &req, S_CALL_MS, &ec);
	if (rep != NULL) {
		s_reply_failed(rep, "destroy");
		ahp__sbx__reply__free_unpacked(rep, NULL);
	}
}

int
sbx_cli_exec(const char *home, const sbx_config_t *cfg, int argc, char **argv)
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
		} else if (a[0] == '-') {
			ahp_term_printf(stderr, "sandboxd: exec: unknown option %s\n", a);
			s_cli_usage();
			return S_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (profile == NULL || i >= argc) {
		s_cli_usage();
		return S_EXIT_USAGE;
	}
	/* The words are the command's argv: each is quoted for the sandbox's
	 * /bin/sh -c, so `-- sh -c 'echo one; echo two'` runs exactly that.
	 * (Joining them with spaces, as ssh does, silently changed what ran.)
	 * The exec protocol keeps one command string. */
	if (argv[i][0] == '\0') {
		ahp_term_printf(stderr, "sandboxd: exec: the command name is empty\n");
		s_cli_usage();
		return S_EXIT_USAGE;
	}
	char *cmd = malloc(SBX_CMD_MAX + 1);
	if (cmd == NULL)
		return S_EXIT_UNREACHABLE;
	size_t off = 0;
	for (int k = i; k < argc; k++) {
		if (k > i)
			cmd[off++] = ' ';
		if (s_shell_quote(cmd, SBX_CMD_MAX, &off, argv[k]) != 0) {
			ahp_term_printf(
			    stderr, "sandboxd: the command is longer than %d bytes once quoted\n",
			    SBX_CMD_MAX);
			free(cmd);
			return S_EXIT_USAGE;
		}
	}
	cmd[off] = '\0';

	int ec = S_EXIT_UNREACHABLE;
	char dir[PATH_MAX];
	s_errs_t errs = {0};
	ahp_profiles_t *set = NULL;
	void *zctx = NULL;
	ahp_rpc_client_t *cl = NULL;
	int sigfd = -1;
	char run_id[40];
	char workspace[PATH_MAX] = "";
	bool created = false;

	if (ahp_home_path(home, "etc/profiles", dir, sizeof(dir)) != 0) {
		ec = S_EXIT_USAGE;
		goto out;
	}
	set = ahp_profiles_load_dir(dir, NULL, s_on_profile_error, &errs);
	const ahp_profile_t *p = set ? ahp_profiles_get(set, profile) : NULL;
	if (p == NULL) {
		ahp_term_printf(stderr,
		                "sandboxd: unknown profile '%s' (profiles are read from %s)\n%s",
		                profile, dir, errs.buf ? errs.buf : "");
		ec = S_EXIT_USAGE;
		goto out;
	}
	if (strncmp(cfg->endpoint, "ipc://", 6) == 0 && !s_listening(cfg->endpoint + 6)) {
		ahp_term_printf(stderr,
		                "sandboxd: the daemon is not running (nothing listens on %s)\n",
		                cfg->endpoint + 6);
		goto out;
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	zctx = zmq_ctx_new();
	cl = zctx ? ahp_rpc_client_new(zctx, cfg->endpoint) : NULL;
	if (cl == NULL || sigfd < 0) {
		ahp_term_printf(stderr, "sandboxd: cannot connect to %s\n", cfg->endpoint);
		goto out;
	}

	ahp_random_id("cli-", run_id, sizeof(run_id));
	Ahp__Sbx__Limits lim = AHP__SBX__LIMITS__INIT;
	lim.memory_mb = p->sandbox.memory_mb;
	lim.pids_max = p->sandbox.pids_max;
	lim.cpu_seconds = p->sandbox.cpu_seconds;
	lim.timeout_s = p->sandbox.timeout_s;
	lim.output_kb = p->sandbox.output_kb;
	lim.disk_mb = p->sandbox.disk_mb;
	lim.cpus_milli = p->sandbox.cpus_milli;
	Ahp__Sbx__CreateRequest cr = AHP__SBX__CREATE_REQUEST__INIT;
	cr.run_id = run_id;
	cr.profile = p->name;
	cr.limits = &lim;
	cr.network = p->sandbox.network == AHP_NET_PROXY ? AHP__SBX__NETWORK_MODE__NET_PROXY
	                                                 : AHP__SBX__NETWORK_MODE__NET_NONE;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_CREATE;
	req.create = &cr;

	uint32_t t = timeout > 0 ? (uint32_t)timeout : p->sandbox.timeout_s;
	Ahp__Sbx__ExecRequest er = AHP__SBX__EXEC_REQUEST__INIT;
	er.sandbox_id = run_id;
	er.exec_id = (char *)"cli-1";
	er.command = cmd;
	er.timeout_s = t;
	Ahp__Sbx__Request ereq = AHP__SBX__REQUEST__INIT;
	ereq.body_case = AHP__SBX__REQUEST__BODY_EXEC;
	ereq.exec = &er;

	/* Create and Exec go out together: sandboxd handles one connection's
	 * requests in order and queues an exec until its sandbox is ready, so
	 * the command starts the moment the claim completes instead of one
	 * round trip later. Should the Create fail, the Exec is refused
	 * (unknown sandbox) and its reply is never read. */
	int64_t t_start = ahp_mono_ms();
	uint64_t create_id = s_send(cl, sigfd, &req, t_start + S_CALL_MS, &ec);
	uint64_t exec_id = create_id != 0 ? s_send(cl, sigfd, &ereq, t_start + S_CALL_MS, &ec) : 0;
	if (create_id == 0)
		goto out;
	created = true; /* even an unanswered Create may leave state to clean */
	Ahp__Sbx__Reply *rep = s_wait(cl, sigfd, create_id, S_CALL_MS, &ec);
	if (rep == NULL)
		goto out;
	if (s_reply_failed(rep, "create")) {
		ahp__sbx__reply__free_unpacked(rep, NULL);
		ec = S_EXIT_UNREACHABLE;
		goto out;
	}
	if (rep->create != NULL && rep->create->workspace != NULL)
		ahp_strlcpy(workspace, rep->create->workspace, sizeof(workspace));
	ahp__sbx__reply__free_unpacked(rep, NULL);
	if (exec_id == 0)
		goto out;
	/* the command's own timeout, plus time to start and to collect */
	rep = s_wait(cl, sigfd, exec_id, (int)(t + 30) * 1000, &ec);
	if (rep == NULL)
		goto out;
	if (s_reply_failed(rep, "exec") || rep->exec == NULL) {
		ahp__sbx__reply__free_unpacked(rep, NULL);
		ec = S_EXIT_UNREACHABLE;
		goto out;
	}
	Ahp__Sbx__ExecResult *r = rep->exec;
	fflush(stdout);
	s_write_output(1, r->stdout.data, r->stdout.len);
	s_write_output(2, r->stderr.data, r->stderr.len);
	if (r->truncated)
		ahp_term_printf(stderr, "sandboxd: output truncated at %u KiB per stream\n",
		                p->sandbox.output_kb);
	static const char *const kb[] = {"none", "timeout", "memory", "pids", "cpu"};
	if (r->killed_by > 0 && (unsigned)r->killed_by < 5)
		ahp_term_printf(stderr, "sandboxd: limit reached: %s\n", kb[r->killed_by]);
	ec = r->exit_code >= 0 && r->exit_code <= 255 ? r->exit_code : 125;
	ahp__sbx__reply__free_unpacked(rep, NULL);
out:
	if (created && cl != NULL) {
		s_destroy(cl, -1, run_id, keep);
		if (keep)
			ahp_term_printf(stderr, "sandboxd: workspace kept at %s (sandbox %s)\n",
			                workspace[0] ? workspace : "?", run_id);
	}
	ahp_rpc_client_destroy(&cl);
	if (zctx != NULL)
		zmq_ctx_term(zctx);
	if (sigfd >= 0)
		close(sigfd);
	ahp_profiles_destroy(&set);
	free(errs.buf);
	free(cmd);
	return ec;
}
