/* bench/sandbox client: times sandboxd Exec/Create round trips over its RPC API, and times any
 * command line (docker, bwrap) with the same clock so the numbers compare side by side. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/util.h"

#include "stats.h"

#include "sandboxd.pb-c.h"
#include "sbx.h" /* sbx_seccomp_build: the filter every sandboxed command runs under */

#define MAX_ITER 100000
#define CALL_TIMEOUT_MS 30000

extern char **environ;

/* One machine-readable line per measurement; bench/sandbox parses these. */
static void
s_report(const char *label, double *v, long n)
{
	double sum = 0;
	for (long i = 0; i < n; i++)
		sum += v[i];
	qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
	printf("RESULT %s n=%ld p50_ms=%.3f p99_ms=%.3f mean_ms=%.3f min_ms=%.3f max_ms=%.3f\n",
	       label, n, bench_pct(v, n, 50) * 1e3, bench_pct(v, n, 99) * 1e3,
	       n > 0 ? sum / (double)n * 1e3 : 0, n > 0 ? v[0] * 1e3 : 0,
	       n > 0 ? v[n - 1] * 1e3 : 0);
	fflush(stdout);
}

static void
s_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sbx_bench sandbox (--home DIR | --endpoint EP) [--exec N] [--create N] "
	    "[--warmup N] [--paired N]\n"
	    "       sbx_bench spawn --label L [--n N] [--warmup N] [--seccomp] -- CMD [ARGS...]\n"
	    "sandbox: N x Exec(\"true\") into one warm sandbox, N x List (the RPC round trip\n"
	    "         alone), then N x (Create + Exec true + Destroy); --paired N: then N pairs\n"
	    "         of one Exec true and one host /bin/sh -c true, alternated (RESULT\n"
	    "         sandbox_exec_paired, host_sh_paired)\n"
	    "spawn:   N x run CMD (stdout/stderr to /dev/null); it must exit 0. --seccomp: CMD\n"
	    "         runs under sandboxd's seccomp filter, loaded once (what the allowlist costs "
	    "a command)\n"
	    "Prints: RESULT <label> n= p50_ms= p99_ms= mean_ms= min_ms= max_ms=\n");
}

/* --- sandboxd client --- */

typedef struct {
	void *zctx;
	ahp_rpc_client_t *client;
} s_sbx_t;

/* Sends req, decodes the reply; NULL (with a message on stderr) on any failure or typed error. */
static Ahp__Sbx__Reply *
s_call(s_sbx_t *s, const Ahp__Sbx__Request *req, const char *what)
{
	size_t len = ahp__sbx__request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		fatal("malloc");
	ahp__sbx__request__pack(req, buf);
	uint8_t *rep = NULL;
	size_t rep_len = 0;
	int status = 0;
	char err[256] = "";
	int rc = ahp_rpc_call(s->client, buf, len, CALL_TIMEOUT_MS, 0, 0, &rep, &rep_len, &status,
	                      err, sizeof(err));
	free(buf);
	if (rc != 0) {
		fprintf(stderr, "sbx_bench: %s: rpc failed (%s): %s\n", what,
		        ahp_status_str(status), err);
		return NULL;
	}
	Ahp__Sbx__Reply *r = ahp__sbx__reply__unpack(NULL, rep_len, rep);
	free(rep);
	if (r == NULL) {
		fprintf(stderr, "sbx_bench: %s: undecodable reply\n", what);
		return NULL;
	}
	if (r->error != NULL && r->error->status != AHP__STATUS__OK) {
		fprintf(stderr, "sbx_bench: %s: %s: %s\n", what, ahp_status_str(r->error->status),
		        r->error->message ? r->error->message : "");
		ahp__sbx__reply__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

static int
s_create(s_sbx_t *s, const char *id)
{
	Ahp__Sbx__Limits lim = AHP__SBX__LIMITS__INIT;
	lim.memory_mb = 256;
	lim.pids_max = 64;
	lim.cpu_seconds = 10;
	lim.timeout_s = 30;
	lim.output_kb = 64;
	Ahp__Sbx__CreateRequest cr = AHP__SBX__CREATE_REQUEST__INIT;
	cr.run_id = (char *)id;
	cr.profile = (char *)"bench";
	cr.limits = &lim;
	cr.network = AHP__SBX__NETWORK_MODE__NET_NONE;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_CREATE;
	req.create = &cr;
	Ahp__Sbx__Reply *r = s_call(s, &req, "create");
	if (r == NULL)
		return -1;
	int ok = r->body_case == AHP__SBX__REPLY__BODY_CREATE;
	ahp__sbx__reply__free_unpacked(r, NULL);
	return ok ? 0 : -1;
}

/* Exec of `true`; a non-zero exit is a failure so a broken sandbox cannot look fast. */
static int
s_exec_true(s_sbx_t *s, const char *id, long n)
{
	char eid[32];
	snprintf(eid, sizeof(eid), "bench-%ld", n);
	Ahp__Sbx__ExecRequest er = AHP__SBX__EXEC_REQUEST__INIT;
	er.sandbox_id = (char *)id;
	er.exec_id = eid;
	er.command = (char *)"true";
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_EXEC;
	req.exec = &er;
	Ahp__Sbx__Reply *r = s_call(s, &req, "exec");
	if (r == NULL)
		return -1;
	int ok = r->body_case == AHP__SBX__REPLY__BODY_EXEC && r->exec != NULL &&
	         r->exec->exit_code == 0 && r->exec->killed_by == AHP__SBX__KILLED_BY__KILLED_NONE;
	if (!ok)
		fprintf(stderr, "sbx_bench: exec true: unexpected result (exit %d)\n",
		        r->exec ? r->exec->exit_code : -1);
	ahp__sbx__reply__free_unpacked(r, NULL);
	return ok ? 0 : -1;
}

static int
s_destroy(s_sbx_t *s, const char *id)
{
	Ahp__Sbx__DestroyRequest dr = AHP__SBX__DESTROY_REQUEST__INIT;
	dr.sandbox_id = (char *)id;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_DESTROY;
	req.destroy = &dr;
	Ahp__Sbx__Reply *r = s_call(s, &req, "destroy");
	if (r == NULL)
		return -1;
	ahp__sbx__reply__free_unpacked(r, NULL);
	return 0;
}

/* List does no sandbox work: its round trip is the RPC transport's share of an exec. */
static int
s_list(s_sbx_t *s)
{
	Ahp__Sbx__ListRequest lr = AHP__SBX__LIST_REQUEST__INIT;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	req.body_case = AHP__SBX__REQUEST__BODY_LIST;
	req.list = &lr;
	Ahp__Sbx__Reply *r = s_call(s, &req, "list");
	if (r == NULL)
		return -1;
	ahp__sbx__reply__free_unpacked(r, NULL);
	return 0;
}

static int s_spawn_once(char **cmd, int devnull, int errfd, double *dt);

/* n pairs of one Exec of `true` into the warm sandbox `id` and one host
 * `/bin/sh -c true` (the command the Exec runs), the order swapped every pair:
 * both sides sampled under the same conditions, so a change of the machine's
 * state during the run (this VM's latency moves between two levels for
 * seconds at a time) moves both, and their ratio stays meaningful. */
static int
s_paired(s_sbx_t *s, const char *id, long *seq, long n, double *ve, double *vh)
{
	char *cmd[] = {(char *)"/bin/sh", (char *)"-c", (char *)"true", NULL};
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int errfd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (devnull < 0 || errfd < 0)
		fatal("open /dev/null or a scratch file in /tmp");
	int rc = 0;
	for (long i = 0; i < n && rc == 0; i++) {
		for (int k = 0; k < 2 && rc == 0; k++) {
			if ((k ^ (int)(i & 1)) == 0) {
				double t0 = bench_now();
				rc = s_exec_true(s, id, (*seq)++) != 0;
				ve[i] = bench_now() - t0;
			} else {
				rc = s_spawn_once(cmd, devnull, errfd, &vh[i]) != 0;
			}
		}
	}
	close(devnull);
	close(errfd);
	return rc;
}

static int
s_cmd_sandbox(int argc, char **argv)
{
	const char *home = NULL, *endpoint = NULL;
	long n_exec = 200, n_create = 50, warmup = 10, n_paired = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL) {
			s_usage(stderr);
			return 2;
		}
		i++;
		if (strcmp(a, "--home") == 0)
			home = v;
		else if (strcmp(a, "--endpoint") == 0)
			endpoint = v;
		else if (strcmp(a, "--exec") == 0 && ahp_parse_long(v, 0, MAX_ITER, &n_exec) == 0)
			;
		else if (strcmp(a, "--create") == 0 &&
		         ahp_parse_long(v, 0, MAX_ITER, &n_create) == 0)
			;
		else if (strcmp(a, "--warmup") == 0 && ahp_parse_long(v, 0, MAX_ITER, &warmup) == 0)
			;
		else if (strcmp(a, "--paired") == 0 &&
		         ahp_parse_long(v, 0, MAX_ITER, &n_paired) == 0)
			;
		else {
			fprintf(stderr, "sbx_bench: bad option or value: %s %s\n", a, v);
			return 2;
		}
	}
	char ep[4200];
	if (endpoint == NULL) {
		char sock[4096];
		if (ahp_home_path(ahp_home(home), "run/sandboxd.sock", sock, sizeof(sock)) != 0)
			fatalx("home path too long");
		snprintf(ep, sizeof(ep), "ipc://%s", sock);
		endpoint = ep;
	}
	s_sbx_t s = {.zctx = zmq_ctx_new(), .client = NULL};
	if (s.zctx == NULL)
		fatal("zmq_ctx_new");
	s.client = ahp_rpc_client_new(s.zctx, endpoint);
	if (s.client == NULL)
		fatalx("cannot connect to %s", endpoint);

	int rc = 0;
	char id[64];
	long n_max = n_exec > n_create ? n_exec : n_create;
	n_max = n_max > n_paired ? n_max : n_paired;
	double *v = calloc((size_t)n_max + 1, sizeof(double));
	double *vh = calloc((size_t)n_paired + 1, sizeof(double));
	if (v == NULL || vh == NULL)
		fatal("calloc");

	/* Warm sandbox: created once, so each sample is only the exec round trip. */
	ahp_random_id("bench-warm-", id, sizeof(id));
	if (s_create(&s, id) != 0) {
		rc = 1;
		goto out;
	}
	long seq = 0;
	for (long i = 0; i < warmup && rc == 0; i++)
		rc = s_exec_true(&s, id, seq++) != 0;
	for (long i = 0; i < n_exec && rc == 0; i++) {
		double t0 = bench_now();
		rc = s_exec_true(&s, id, seq++) != 0;
		v[i] = bench_now() - t0;
	}
	if (rc == 0 && n_exec > 0)
		s_report("sandbox_exec", v, n_exec);
	if (rc == 0 && n_paired > 0) {
		rc = s_paired(&s, id, &seq, n_paired, v, vh);
		if (rc == 0) {
			s_report("sandbox_exec_paired", v, n_paired);
			s_report("host_sh_paired", vh, n_paired);
		}
	}
	if (s_destroy(&s, id) != 0)
		rc = 1;
	if (rc != 0)
		goto out;
	for (long i = 0; i < n_exec && rc == 0; i++) {
		double t0 = bench_now();
		rc = s_list(&s) != 0;
		v[i] = bench_now() - t0;
	}
	if (rc == 0 && n_exec > 0)
		s_report("sandbox_rpc_list", v, n_exec);

	/* Cold path: what the first exec of a run costs, plus tearing the sandbox down. */
	for (long i = 0; i < n_create && rc == 0; i++) {
		ahp_random_id("bench-cold-", id, sizeof(id));
		double t0 = bench_now();
		rc = s_create(&s, id) != 0 || s_exec_true(&s, id, 0) != 0 || s_destroy(&s, id) != 0;
		v[i] = bench_now() - t0;
	}
	if (rc == 0 && n_create > 0)
		s_report("sandbox_create", v, n_create);

	/* The same cycle split in its parts: where a one-shot's time goes on the daemon's side. */
	if (rc == 0 && n_create > 0) {
		double *parts = calloc((size_t)n_create * 4, sizeof(double));
		if (parts == NULL)
			fatal("calloc");
		for (long i = 0; i < n_create && rc == 0; i++) {
			ahp_random_id("bench-part-", id, sizeof(id));
			double t0 = bench_now();
			rc = s_create(&s, id) != 0;
			double t1 = bench_now();
			rc = rc || s_exec_true(&s, id, 0) != 0;
			double t2 = bench_now();
			rc = rc || s_exec_true(&s, id, 1) != 0;
			double t3 = bench_now();
			rc = rc || s_destroy(&s, id) != 0;
			double t4 = bench_now();
			parts[i] = t1 - t0;
			parts[n_create + i] = t2 - t1;
			parts[2 * n_create + i] = t3 - t2;
			parts[3 * n_create + i] = t4 - t3;
		}
		if (rc == 0) {
			s_report("sandbox_part_create", parts, n_create);
			s_report("sandbox_part_exec_first", parts + n_create, n_create);
			s_report("sandbox_part_exec_second", parts + 2 * n_create, n_create);
			s_report("sandbox_part_destroy", parts + 3 * n_create, n_create);
		}
		free(parts);
	}
out:
	free(v);
	free(vh);
	ahp_rpc_client_destroy(&s.client);
	zmq_ctx_term(s.zctx);
	return rc;
}

/* --- timed spawner --- */

/* Runs cmd once with stdin and stdout on /dev/null and stderr into errfd (a
 * scratch file, emptied first), timing it; a failure shows what it printed.
 * Under --seccomp the command inherits the filter this process loaded. The
 * filter's exit_group notification has no listener here, so exit_group fails
 * with ENOSYS and libc's _exit falls back to exit(2), which ends the
 * (single-threaded) command with the same status. */
static int
s_spawn_once(char **cmd, int devnull, int errfd, double *dt)
{
	if (ftruncate(errfd, 0) != 0 || lseek(errfd, 0, SEEK_SET) != 0)
		fatal("scratch file");
	double t0 = bench_now();
	/* vfork, as posix_spawn does: every side is started the same way, and
	 * the child only makes system calls before its execve. */
	pid_t pid = vfork();
	if (pid < 0)
		fatal("vfork");
	if (pid == 0) {
		if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(errfd, 2) < 0)
			_exit(126);
		execvp(cmd[0], cmd);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			fatal("waitpid");
	}
	*dt = bench_now() - t0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char buf[2048];
		ssize_t n = pread(errfd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		fprintf(stderr,
		        "sbx_bench: %s failed (status 0x%x) after %.1f ms; its stderr:\n%s\n",
		        cmd[0], st, *dt * 1e3, buf);
		return -1;
	}
	return 0;
}

static int
s_cmd_spawn(int argc, char **argv)
{
	const char *label = NULL;
	long n = 20, warmup = 2;
	bool seccomp = false;
	int i = 0;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strcmp(argv[i], "--seccomp") == 0) {
			seccomp = true;
			continue;
		}
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL) {
			s_usage(stderr);
			return 2;
		}
		if (strcmp(argv[i], "--label") == 0)
			label = v;
		else if (strcmp(argv[i], "--n") == 0 && ahp_parse_long(v, 1, MAX_ITER, &n) == 0)
			;
		else if (strcmp(argv[i], "--warmup") == 0 &&
		         ahp_parse_long(v, 0, MAX_ITER, &warmup) == 0)
			;
		else {
			fprintf(stderr, "sbx_bench: bad option or value: %s %s\n", argv[i], v);
			return 2;
		}
		i++;
	}
	if (label == NULL || i >= argc) {
		s_usage(stderr);
		return 2;
	}
	char **cmd = argv + i;
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		fatal("open /dev/null");
	int errfd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (errfd < 0)
		fatal("open a scratch file in /tmp");
	struct sock_fprog prog = {0};
	if (seccomp && sbx_seccomp_build(&prog) != 0)
		fatalx("cannot build sandboxd's seccomp filter");
	/* Loaded once, here, and inherited by every command: a sandbox loads it
	 * once at build, so a command pays only its per-system-call cost. (A load
	 * per spawn added the kernel's BPF conversion and JIT, ~0.24 ms, to every
	 * command and overstated what the allowlist costs an exec.) */
	if (seccomp && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	                syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0))
		fatal("load sandboxd's seccomp filter");
	double *v = calloc((size_t)n, sizeof(double));
	if (v == NULL)
		fatal("calloc");
	double dt;
	int rc = 0;
	for (long k = 0; k < warmup && rc == 0; k++)
		rc = s_spawn_once(cmd, devnull, errfd, &dt) != 0;
	for (long k = 0; k < n && rc == 0; k++) {
		rc = s_spawn_once(cmd, devnull, errfd, &dt) != 0;
		v[k] = dt;
	}
	if (rc == 0)
		s_report(label, v, n);
	free(v);
	free(prog.filter);
	close(errfd);
	close(devnull);
	return rc;
}

int
main(int argc, char **argv)
{
	ahp_log_init("bench", AHP_LOG_WARN);
	if (argc >= 2 && strcmp(argv[1], "sandbox") == 0)
		return s_cmd_sandbox(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "spawn") == 0)
		return s_cmd_spawn(argc - 2, argv + 2);
	s_usage(argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
	            ? stdout
	            : stderr);
	return 2;
}
