/* bench/journal: durable step commit latency of the orchestrator journal vs raw write+fsync, and
 * aggregate journaled steps/s with group commit across many concurrent runs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "stats.h"

#include "journal.h"

#define GOAL_COMMIT_RATIO 1.3
#define GOAL_STEPS_PER_S 10000.0
#define MAX_SAMPLES 100000
#define MAX_RUNS 65536
#define MAX_PAYLOAD (1024 * 1024)

typedef struct {
	const char *dir;   /* parent of the temp dir: same disk for both sides */
	long n;            /* measured latency samples per side */
	long warmup;       /* unmeasured commits before sampling */
	long runs;         /* concurrent runs in the group-commit phase */
	long payload;      /* bytes of the step's result JSON */
	double seconds;    /* time budget of the group-commit phase */
	double lat_budget; /* time budget of the latency phase */
	int keep;
} s_opts_t;

/* CPU time of this thread: tells whether a commit's latency is CPU or the disk. */
static double
s_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
s_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: bench_journal [--dir DIR] [--n N] [--warmup N] [--runs N] [--payload BYTES]\n"
	    "                     [--seconds S] [--latency-seconds S] [--keep]\n"
	    "  DIR (default $AHP_BENCH_DIR or /var/tmp) must be on the disk to measure:\n"
	    "  the journal and the raw fsync file share one temp dir under it.\n");
}

static int
s_parse_args(int argc, char **argv, s_opts_t *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		long x;
		if (strcmp(a, "--keep") == 0) {
			o->keep = 1;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			s_usage(stdout);
			exit(0);
		}
		if (v == NULL) {
			s_usage(stderr);
			return -1;
		}
		i++;
		if (strcmp(a, "--dir") == 0)
			o->dir = v;
		else if (strcmp(a, "--n") == 0 && ahp_parse_long(v, 10, MAX_SAMPLES, &x) == 0)
			o->n = x;
		else if (strcmp(a, "--warmup") == 0 && ahp_parse_long(v, 0, 10000, &x) == 0)
			o->warmup = x;
		else if (strcmp(a, "--runs") == 0 && ahp_parse_long(v, 1, MAX_RUNS, &x) == 0)
			o->runs = x;
		else if (strcmp(a, "--payload") == 0 && ahp_parse_long(v, 16, MAX_PAYLOAD, &x) == 0)
			o->payload = x;
		else if (strcmp(a, "--seconds") == 0 && ahp_parse_long(v, 1, 600, &x) == 0)
			o->seconds = (double)x;
		else if (strcmp(a, "--latency-seconds") == 0 && ahp_parse_long(v, 1, 600, &x) == 0)
			o->lat_budget = (double)x;
		else {
			fprintf(stderr, "bench_journal: bad option or value: %s %s\n", a, v);
			s_usage(stderr);
			return -1;
		}
	}
	return 0;
}

/* A tool step's intent and a result of `payload` bytes, shaped like what the agent loop writes. */
static char *
s_make_result(long payload)
{
	const char *head =
	    "{\"path\":\"release-notes/SKILL.md\",\"truncated\":false,\"content\":\"";
	const char *tail = "\"}";
	size_t hl = strlen(head), tl = strlen(tail);
	size_t total = (size_t)payload > hl + tl ? (size_t)payload : hl + tl;
	char *r = malloc(total + 1);
	if (r == NULL)
		fatal("malloc");
	memcpy(r, head, hl);
	for (size_t i = hl; i < total - tl; i++)
		r[i] = "abcdefghijklmnopqrstuvwxyz "[i % 27];
	memcpy(r + total - tl, tail, tl);
	r[total] = '\0';
	return r;
}

static const char *s_intent =
    "{\"tool\":\"skill\",\"call_id\":\"call_0001\",\"arguments\":{\"action\":\"read\","
    "\"path\":\"release-notes/SKILL.md\"}}";

static const char *
s_fs_name(const char *dir)
{
	struct statfs sf;
	if (statfs(dir, &sf) != 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53UL:
		return "ext4";
	case 0x58465342UL:
		return "xfs";
	case 0x9123683EUL:
		return "btrfs";
	case 0x01021994UL:
		return "tmpfs";
	case 0x794c7630UL:
		return "overlayfs";
	default:
		return "other";
	}
}

/* One durable step: intent + completion in one transaction, committed alone. */
static int
s_journal_step(orch_journal_t *j, const char *run, uint32_t seq, const char *result)
{
	if (orch_journal_begin(j) != 0)
		return -1;
	if (orch_journal_step_intent(j, run, seq, "tool", s_intent) != 0 ||
	    orch_journal_step_complete(j, run, seq, 0, result) != 0) {
		orch_journal_rollback(j);
		return -1;
	}
	return orch_journal_commit(j);
}

/* What a hand-rolled durable log would do with the same bytes: append, then fsync. */
static int
s_raw_step(int fd, const char *rec, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, rec + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return fsync(fd);
}

static void
s_target(const char *name, double value, double goal, int ok, const char *fmt)
{
	char v[64], g[64];
	snprintf(v, sizeof(v), fmt, value);
	snprintf(g, sizeof(g), fmt, goal);
	printf("TARGET %s value=%s goal=%s %s\n", name, v, g, ok ? "ok" : "MISS");
}

int
main(int argc, char **argv)
{
	s_opts_t o = {.dir = NULL,
	              .n = 500,
	              .warmup = 20,
	              .runs = 256,
	              .payload = 512,
	              .seconds = 5.0,
	              .lat_budget = 15.0,
	              .keep = 0};
	ahp_log_init("bench", AHP_LOG_WARN);
	if (s_parse_args(argc, argv, &o) != 0)
		return 2;
	if (o.dir == NULL)
		o.dir = getenv("AHP_BENCH_DIR");
	if (o.dir == NULL || o.dir[0] == '\0')
		o.dir = "/var/tmp";

	char tmp[4096], dbpath[4200], rawpath[4200], err[256];
	snprintf(tmp, sizeof(tmp), "%s/ahp-bench-journal-XXXXXX", o.dir);
	if (mkdtemp(tmp) == NULL)
		fatal("mkdtemp %s", tmp);
	snprintf(dbpath, sizeof(dbpath), "%s/journal.db", tmp);
	snprintf(rawpath, sizeof(rawpath), "%s/raw.log", tmp);

	char *result = s_make_result(o.payload);
	const char *run = "bench-latency-0000000000000000";
	/* The raw record carries the same fields as the journal row, tab-separated. */
	size_t reclen = strlen(run) + strlen(s_intent) + strlen(result) + 32;
	char *rec = malloc(reclen);
	if (rec == NULL)
		fatal("malloc");
	int rl = snprintf(rec, reclen, "%s\t%08u\ttool\t%s\t0\t%s\n", run, 0u, s_intent, result);
	if (rl < 0 || (size_t)rl >= reclen)
		fatalx("record too long");
	reclen = (size_t)rl;

	orch_journal_t *j = orch_journal_open(dbpath, err, sizeof(err));
	if (j == NULL)
		fatalx("journal open %s: %s", dbpath, err);
	int fd = open(rawpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		fatal("open %s", rawpath);

	printf("journal: dir=%s fs=%s samples=%ld record_bytes=%zu (intent %zu + result %zu)\n",
	       tmp, s_fs_name(tmp), o.n, reclen, strlen(s_intent), strlen(result));
	fflush(stdout);

	if (orch_journal_run_create(j, run, "bench", "latency", ahp_now_ms()) != 0 ||
	    orch_journal_commit(j) != 0)
		fatalx("run create failed");

	/* (a) latency: alternate which side goes first so disk noise falls on both. */
	double *lj = calloc((size_t)o.n, sizeof(double));
	double *lr = calloc((size_t)o.n, sizeof(double));
	double *cj = calloc((size_t)o.n, sizeof(double));
	double *cr = calloc((size_t)o.n, sizeof(double));
	if (lj == NULL || lr == NULL || cj == NULL || cr == NULL)
		fatal("calloc");
	uint32_t seq = 0;
	for (long i = 0; i < o.warmup; i++) {
		if (s_journal_step(j, run, seq++, result) != 0 || s_raw_step(fd, rec, reclen) != 0)
			fatalx("warm-up step failed");
	}
	long got = 0;
	double lat_start = bench_now();
	for (long i = 0; i < o.n; i++) {
		for (int side = 0; side < 2; side++) {
			int journal_side = (side == 0) == (i % 2 == 0);
			double c0 = s_cpu();
			double t0 = bench_now();
			int rc = journal_side ? s_journal_step(j, run, seq++, result)
			                      : s_raw_step(fd, rec, reclen);
			double dt = bench_now() - t0;
			double dc = s_cpu() - c0;
			if (rc != 0)
				fatalx("%s step failed", journal_side ? "journal" : "raw");
			if (journal_side) {
				lj[i] = dt;
				cj[i] = dc;
			} else {
				lr[i] = dt;
				cr[i] = dc;
			}
		}
		got = i + 1;
		if (bench_now() - lat_start > o.lat_budget)
			break;
	}
	qsort(lj, (size_t)got, sizeof(double), bench_cmp_double);
	qsort(lr, (size_t)got, sizeof(double), bench_cmp_double);
	qsort(cj, (size_t)got, sizeof(double), bench_cmp_double);
	qsort(cr, (size_t)got, sizeof(double), bench_cmp_double);
	double jp50 = bench_pct(lj, got, 50) * 1e3, jp99 = bench_pct(lj, got, 99) * 1e3;
	double rp50 = bench_pct(lr, got, 50) * 1e3, rp99 = bench_pct(lr, got, 99) * 1e3;
	printf("journal step commit (intent+complete, synchronous=FULL, WAL): n=%ld p50=%.3f ms "
	       "p99=%.3f ms\n",
	       got, jp50, jp99);
	printf("raw write()+fsync() of %zu bytes:                           n=%ld p50=%.3f ms "
	       "p99=%.3f ms\n",
	       reclen, got, rp50, rp99);
	double ratio = rp50 > 0 ? jp50 / rp50 : 0.0;
	printf("cpu per commit (this thread, p50): journal %.3f ms, raw %.3f ms\n",
	       bench_pct(cj, got, 50) * 1e3, bench_pct(cr, got, 50) * 1e3);
	printf("info journal_commit_vs_fsync_p99=%.2f one_commit_per_step_steps_per_s=%.0f\n",
	       rp99 > 0 ? jp99 / rp99 : 0.0, jp50 > 0 ? 1e3 / jp50 : 0.0);
	fflush(stdout);

	/* (b) group commit: every turn, each run appends one step, then one commit. */
	char(*ids)[40] = calloc((size_t)o.runs, sizeof(*ids));
	if (ids == NULL)
		fatal("calloc");
	if (orch_journal_begin(j) != 0)
		fatalx("begin failed");
	for (long r = 0; r < o.runs; r++) {
		snprintf(ids[r], sizeof(ids[r]), "bench-run-%06ld", r);
		if (orch_journal_run_create(j, ids[r], "bench", "group commit", ahp_now_ms()) != 0)
			fatalx("run create failed");
	}
	if (orch_journal_commit(j) != 0)
		fatalx("commit failed");
	long max_turns = MAX_SAMPLES;
	double *lt = calloc((size_t)max_turns, sizeof(double));
	if (lt == NULL)
		fatal("calloc");
	long turns = 0;
	double g0 = bench_now();
	while (turns < max_turns && bench_now() - g0 < o.seconds) {
		double t0 = bench_now();
		if (orch_journal_begin(j) != 0)
			fatalx("begin failed");
		for (long r = 0; r < o.runs; r++) {
			if (orch_journal_step_intent(j, ids[r], (uint32_t)turns, "tool",
			                             s_intent) != 0 ||
			    orch_journal_step_complete(j, ids[r], (uint32_t)turns, 0, result) != 0)
				fatalx("step write failed");
		}
		if (orch_journal_commit(j) != 0)
			fatalx("commit failed");
		lt[turns++] = bench_now() - t0;
	}
	double gel = bench_now() - g0;
	double steps = (double)turns * (double)o.runs;
	double sps = gel > 0 ? steps / gel : 0.0;
	qsort(lt, (size_t)turns, sizeof(double), bench_cmp_double);
	printf("group commit: runs=%ld turns=%ld steps=%.0f elapsed=%.2f s steps/s=%.0f "
	       "turn p50=%.2f ms p99=%.2f ms\n",
	       o.runs, turns, steps, gel, sps, bench_pct(lt, turns, 50) * 1e3,
	       bench_pct(lt, turns, 99) * 1e3);
	if (jp50 > 0)
		printf("info group_commit_speedup_vs_one_commit_per_step=%.1fx\n",
		       sps / (1e3 / jp50));

	s_target("journal_commit_vs_fsync", ratio, GOAL_COMMIT_RATIO,
	         got > 0 && ratio <= GOAL_COMMIT_RATIO, "%.2f");
	s_target("journal_steps_per_s", sps, GOAL_STEPS_PER_S, sps >= GOAL_STEPS_PER_S, "%.0f");

	orch_journal_destroy(&j);
	close(fd);
	if (!o.keep) {
		const char *files[] = {"journal.db", "journal.db-wal", "journal.db-shm", "raw.log"};
		char p[4300];
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(p, sizeof(p), "%s/%s", tmp, files[i]);
			unlink(p);
		}
		if (rmdir(tmp) != 0)
			fprintf(stderr, "bench_journal: rmdir %s: %s\n", tmp, strerror(errno));
	}
	free(ids);
	free(lt);
	free(lj);
	free(lr);
	free(cj);
	free(cr);
	free(rec);
	free(result);
	return 0;
}
