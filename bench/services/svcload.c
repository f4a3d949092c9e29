/* bench/services load generator: times GETs straight to an upstream with libcurl (keep-alive,
 * the fair baseline) and typed calls through servicesd over its RPC API (libahp's rpc client,
 * one DEALER connection), sequentially for latency or with many outstanding for throughput. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <zmq.h>

#include "ahp/rpc.h"
#include "servicesd.pb-c.h"

#include "../stats.h"

#define MAX_N 1000000
#define MAX_HEADERS 8
#define MAX_CONNS 1000
#define CALL_TIMEOUT_MS 30000

static void
s_usage(FILE *f)
{
	fprintf(
	    f, "usage: svcload direct URL [-H 'Name: value']... [--n N] [--warmup N]\n"
	       "       svcload direct-conc URL [-H ...]... [--conns C] [--seconds S]\n"
	       "       svcload call ENDPOINT --profile P --service S --args JSON [--n N]\n"
	       "                    [--warmup N] [--replay]\n"
	       "       svcload conc ENDPOINT --profile P --service S --args JSON\n"
	       "                    [--outstanding C] [--seconds S]\n"
	       "direct:      N sequential GETs on one keep-alive libcurl handle; each must be 200\n"
	       "direct-conc: C keep-alive connections (libcurl multi), each re-requesting as soon\n"
	       "             as its answer arrives, for S seconds\n"
	       "call:        N sequential Calls on one connection, each with a new key (step), or\n"
	       "             with --replay N Calls of one key already answered (from the store)\n"
	       "conc:        C Calls outstanding at all times (new keys), for S seconds\n"
	       "Prints RESULT <mode> n= p50_us= p99_us= mean_us= (latency) or\n"
	       "RESULT <mode> n= seconds= per_s= (throughput); exit 1 if any answer failed.\n");
}

typedef struct {
	const char *mode, *target;
	const char *headers[MAX_HEADERS];
	int n_headers;
	long n, warmup, conns, seconds;
	const char *profile, *service, *args;
	int replay;
} opts_t;

static void
s_report(const char *label, double *v, long n)
{
	double sum = 0;
	for (long i = 0; i < n; i++)
		sum += v[i];
	qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
	printf("RESULT %s n=%ld p50_us=%.1f p99_us=%.1f mean_us=%.1f min_us=%.1f\n", label, n,
	       bench_pct(v, n, 50) * 1e6, bench_pct(v, n, 99) * 1e6,
	       n > 0 ? sum / (double)n * 1e6 : 0, n > 0 ? v[0] * 1e6 : 0);
	fflush(stdout);
}

/* --- direct: libcurl --- */

static size_t
s_discard(char *ptr, size_t size, size_t n, void *arg)
{
	(void)ptr;
	*(size_t *)arg += size * n;
	return size * n;
}

static CURL *
s_easy(const opts_t *o, struct curl_slist *hdrs, size_t *bytes)
{
	CURL *h = curl_easy_init();
	if (h == NULL)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, o->target);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_discard);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, bytes);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)CALL_TIMEOUT_MS);
	return h;
}

static int
s_direct(const opts_t *o)
{
	struct curl_slist *hdrs = NULL;
	for (int i = 0; i < o->n_headers; i++)
		hdrs = curl_slist_append(hdrs, o->headers[i]);
	size_t bytes = 0;
	CURL *h = s_easy(o, hdrs, &bytes);
	double *v = calloc((size_t)o->n, sizeof *v);
	if (h == NULL || v == NULL)
		return 1;
	long bad = 0;
	for (long i = 0; i < o->warmup + o->n; i++) {
		double t = bench_now();
		CURLcode rc = curl_easy_perform(h);
		double dt = bench_now() - t;
		long status = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK || status != 200) {
			if (bad++ == 0)
				fprintf(stderr, "svcload: %s: %s, status %ld\n", o->target,
				        curl_easy_strerror(rc), status);
			continue;
		}
		if (i >= o->warmup)
			v[i - o->warmup] = dt;
	}
	long conns = 0;
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	if (bad > 0) {
		printf("RESULT direct errors=%ld\n", bad);
		free(v);
		return 1;
	}
	s_report("direct", v, o->n);
	free(v);
	return 0;
}

static int
s_direct_conc(const opts_t *o)
{
	struct curl_slist *hdrs = NULL;
	for (int i = 0; i < o->n_headers; i++)
		hdrs = curl_slist_append(hdrs, o->headers[i]);
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, o->conns);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, o->conns);
	CURL **hs = calloc((size_t)o->conns, sizeof *hs);
	size_t bytes = 0;
	for (long i = 0; i < o->conns; i++) {
		hs[i] = s_easy(o, hdrs, &bytes);
		curl_multi_add_handle(multi, hs[i]);
	}
	long done = 0, bad = 0;
	double start = 0, end = 0, warm_until = bench_now() + 0.5;
	int running = 1;
	while (running) {
		int still = 0;
		curl_multi_perform(multi, &still);
		CURLMsg *msg;
		int left = 0;
		double now = bench_now();
		while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURL *h = msg->easy_handle;
			long status = 0;
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result != CURLE_OK || status != 200) {
				if (bad++ == 0)
					fprintf(stderr, "svcload: %s: %s, status %ld\n", o->target,
					        curl_easy_strerror(msg->data.result), status);
			}
			curl_multi_remove_handle(multi, h);
			/* A half-second warm-up opens every connection before the clock starts. */
			if (start > 0 && now < end)
				done++;
			if (start == 0 || now < end)
				curl_multi_add_handle(multi, h);
		}
		if (start == 0 && now >= warm_until) {
			start = now;
			end = start + (double)o->seconds;
		}
		if (start > 0 && now >= end && still == 0)
			running = 0;
		if (running)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	for (long i = 0; i < o->conns; i++) {
		curl_multi_remove_handle(multi, hs[i]);
		curl_easy_cleanup(hs[i]);
	}
	free(hs);
	curl_multi_cleanup(multi);
	curl_slist_free_all(hdrs);
	printf("RESULT direct-conc n=%ld seconds=%ld per_s=%.0f errors=%ld\n", done, o->seconds,
	       (double)done / (double)o->seconds, bad);
	return bad > 0 ? 1 : 0;
}

/* --- servicesd: libahp rpc --- */

typedef struct {
	ahp_rpc_client_t *cl;
	char run[48];
	const opts_t *o;
	uint8_t *buf;
	size_t cap;
} svc_t;

/* Packs a Call for step into s->buf. Returns its length. */
static size_t
s_pack_call(svc_t *s, uint32_t step)
{
	Ahp__Svcd__CallRequest c = AHP__SVCD__CALL_REQUEST__INIT;
	c.run_id = s->run;
	c.profile = (char *)s->o->profile;
	c.step = step;
	c.service = (char *)s->o->service;
	c.args_json = (char *)s->o->args;
	Ahp__Svcd__Request r = AHP__SVCD__REQUEST__INIT;
	r.body_case = AHP__SVCD__REQUEST__BODY_CALL;
	r.call = &c;
	size_t len = ahp__svcd__request__get_packed_size(&r);
	if (len > s->cap) {
		free(s->buf);
		s->cap = len * 2;
		s->buf = malloc(s->cap);
		if (s->buf == NULL) {
			fprintf(stderr, "svcload: out of memory\n");
			exit(1);
		}
	}
	return ahp__svcd__request__pack(&r, s->buf);
}

static uint64_t
s_send(svc_t *s, uint32_t step)
{
	size_t len = s_pack_call(s, step);
	double deadline = bench_now() + CALL_TIMEOUT_MS / 1000.0;
	for (;;) {
		uint64_t id = ahp_rpc_client_send(s->cl, s->buf, len);
		if (id != 0)
			return id;
		if ((errno != EAGAIN && errno != EINTR) || bench_now() > deadline)
			return 0;
		zmq_pollitem_t pi = {ahp_rpc_client_socket(s->cl), 0, ZMQ_POLLOUT, 0};
		zmq_poll(&pi, 1, 50);
	}
}

/* Waits for one reply (any id). 1 ok, 0 failed answer, -1 timeout/socket error. */
static int
s_recv(svc_t *s, uint64_t *id, int want_replayed)
{
	double deadline = bench_now() + CALL_TIMEOUT_MS / 1000.0;
	for (;;) {
		uint8_t *body = NULL;
		size_t len = 0;
		int terr = 0;
		int r = ahp_rpc_client_recv(s->cl, id, &body, &len, &terr);
		if (r < 0)
			return -1;
		if (r == 1) {
			int ok = 0;
			Ahp__Svcd__Reply *rep =
			    terr == 0 ? ahp__svcd__reply__unpack(NULL, len, body) : NULL;
			if (rep != NULL && rep->error == NULL &&
			    rep->body_case == AHP__SVCD__REPLY__BODY_CALL && rep->call != NULL &&
			    rep->call->error == NULL && rep->call->result_json[0] != '\0' &&
			    (want_replayed < 0 ||
			     rep->call->replayed == (protobuf_c_boolean)want_replayed))
				ok = 1;
			else {
				static int said;
				if (!said++)
					fprintf(stderr, "svcload: a call failed: %s\n",
					        terr                 ? (char *)body
					        : rep == NULL        ? "undecodable reply"
					        : rep->error != NULL ? rep->error->message
					        : rep->call && rep->call->error
					            ? rep->call->error->message
					        : rep->call && rep->call->replayed
					            ? "replayed"
					            : "not replayed");
			}
			if (rep != NULL)
				ahp__svcd__reply__free_unpacked(rep, NULL);
			free(body);
			return ok;
		}
		double left = deadline - bench_now();
		if (left <= 0)
			return -1;
		zmq_pollitem_t pi = {ahp_rpc_client_socket(s->cl), 0, ZMQ_POLLIN, 0};
		zmq_poll(&pi, 1, (long)(left * 1000) + 1);
	}
}

static int
s_call(const opts_t *o, svc_t *s)
{
	double *v = calloc((size_t)o->n, sizeof *v);
	if (v == NULL)
		return 1;
	long bad = 0;
	uint32_t step = 1;
	if (o->replay) {
		/* The one key, answered once from the upstream. */
		uint64_t id = s_send(s, 1), got = 0;
		if (id == 0 || s_recv(s, &got, 0) != 1) {
			fprintf(stderr, "svcload: the first call of the replayed key failed\n");
			return 1;
		}
	}
	for (long i = 0; i < o->warmup + o->n; i++) {
		uint32_t st = o->replay ? 1 : step++;
		double t = bench_now();
		uint64_t id = s_send(s, st), got = 0;
		int r = id != 0 ? s_recv(s, &got, o->replay ? 1 : 0) : -1;
		double dt = bench_now() - t;
		if (r < 0) {
			fprintf(stderr, "svcload: no answer from %s\n", o->target);
			free(v);
			return 1;
		}
		if (r == 0 || got != id) {
			bad++;
			continue;
		}
		if (i >= o->warmup)
			v[i - o->warmup] = dt;
	}
	if (bad > 0) {
		printf("RESULT %s errors=%ld\n", o->replay ? "replay" : "call", bad);
		free(v);
		return 1;
	}
	s_report(o->replay ? "replay" : "call", v, o->n);
	free(v);
	return 0;
}

static int
s_conc(const opts_t *o, svc_t *s)
{
	uint32_t step = 1;
	long outstanding = 0, done = 0, bad = 0, total = 0;
	for (long i = 0; i < o->conns; i++) {
		if (s_send(s, step++) == 0) {
			fprintf(stderr, "svcload: cannot send to %s\n", o->target);
			return 1;
		}
		outstanding++;
	}
	double warm_until = bench_now() + 0.5, start = 0, end = 0;
	while (outstanding > 0) {
		uint64_t id = 0;
		int r = s_recv(s, &id, 0);
		if (r < 0) {
			fprintf(stderr, "svcload: no answer from %s\n", o->target);
			return 1;
		}
		outstanding--;
		total++;
		double now = bench_now();
		if (start == 0 && now >= warm_until) {
			start = now;
			end = start + (double)o->seconds;
		}
		if (r == 0)
			bad++;
		else if (start > 0 && now < end)
			done++;
		if (start == 0 || now < end) {
			if (s_send(s, step++) == 0) {
				fprintf(stderr, "svcload: cannot send to %s\n", o->target);
				return 1;
			}
			outstanding++;
		}
	}
	/* total: every call answered, warm-up and drain included (for CPU per call). */
	printf("RESULT conc n=%ld seconds=%ld per_s=%.0f errors=%ld outstanding=%ld total=%ld\n",
	       done, o->seconds, (double)done / (double)o->seconds, bad, o->conns, total);
	return bad > 0 ? 1 : 0;
}

static long
s_num(const char *flag, const char *v, long lo, long hi)
{
	char *end = NULL;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi) {
		fprintf(stderr, "svcload: %s: expected %ld..%ld, got '%s'\n", flag, lo, hi, v);
		exit(2);
	}
	return n;
}

int
main(int argc, char **argv)
{
	opts_t o = {.n = 1000, .warmup = 100, .conns = 100, .seconds = 3};
	if (argc < 3) {
		s_usage(stderr);
		return 2;
	}
	o.mode = argv[1];
	o.target = argv[2];
	static const struct option longopts[] = {
	    {"n", required_argument, NULL, 'n'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"conns", required_argument, NULL, 'c'},
	    {"outstanding", required_argument, NULL, 'c'},
	    {"seconds", required_argument, NULL, 's'},
	    {"profile", required_argument, NULL, 'p'},
	    {"service", required_argument, NULL, 'S'},
	    {"args", required_argument, NULL, 'a'},
	    {"replay", no_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	/* MODE and TARGET come first; the options follow them. */
	optind = 3;
	int ch;
	while ((ch = getopt_long(argc, argv, "H:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'H':
			if (o.n_headers == MAX_HEADERS) {
				fprintf(stderr, "svcload: at most %d -H\n", MAX_HEADERS);
				return 2;
			}
			o.headers[o.n_headers++] = optarg;
			break;
		case 'n':
			o.n = s_num("--n", optarg, 1, MAX_N);
			break;
		case 'w':
			o.warmup = s_num("--warmup", optarg, 0, MAX_N);
			break;
		case 'c':
			o.conns = s_num("--conns", optarg, 1, MAX_CONNS);
			break;
		case 's':
			o.seconds = s_num("--seconds", optarg, 1, 600);
			break;
		case 'p':
			o.profile = optarg;
			break;
		case 'S':
			o.service = optarg;
			break;
		case 'a':
			o.args = optarg;
			break;
		case 'r':
			o.replay = 1;
			break;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		s_usage(stderr);
		return 2;
	}
	if (strcmp(o.mode, "direct") == 0 || strcmp(o.mode, "direct-conc") == 0) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return 1;
		int rc = strcmp(o.mode, "direct") == 0 ? s_direct(&o) : s_direct_conc(&o);
		curl_global_cleanup();
		return rc;
	}
	if (strcmp(o.mode, "call") != 0 && strcmp(o.mode, "conc") != 0) {
		s_usage(stderr);
		return 2;
	}
	if (o.profile == NULL || o.service == NULL || o.args == NULL) {
		s_usage(stderr);
		return 2;
	}
	svc_t s = {.o = &o};
	/* A run id of its own: every invocation's keys are new. */
	snprintf(s.run, sizeof s.run, "bench-%ld-%ld", (long)getpid(), (long)(bench_now() * 1e3));
	s.cl = ahp_rpc_client_new(NULL, o.target);
	if (s.cl == NULL) {
		fprintf(stderr, "svcload: cannot connect to %s\n", o.target);
		return 1;
	}
	int rc = strcmp(o.mode, "call") == 0 ? s_call(&o, &s) : s_conc(&o, &s);
	ahp_rpc_client_destroy(&s.cl);
	free(s.buf);
	return rc;
}
