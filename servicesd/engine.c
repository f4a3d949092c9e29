/* servicesd: the one event loop — the RPC socket, libcurl multi for the handlers' upstream
 * calls, the idempotency store's group commit, and the duplicates waiting on a call.
 *
 * A loop turn: read every request and every finished transfer, write their intents and
 * outcomes in one transaction, commit, and only then start the new upstream calls and
 * send the replies. So no side effect starts before its intent is on disk (fsync'd), and
 * no caller hears of an outcome that a crash of the process could still lose (store.c
 * says why outcomes need no fsync). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <zmq.h>

#include "ahp/jsonpb.h"
#include "ahp/log.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "servicesd.pb-c.h"
#include "svc.h"

#define POLL_MAX_MS 1000
#define PRUNE_EVERY_MS (3600 * 1000L)
#define RECV_BATCH 256 /* requests read per turn before the turn's commit */
/* The RPC body cap: a Call carries at most SVC_ARGS_MAX of arguments plus small fields. */
#define SVC_RPC_MAX_MSG (SVC_ARGS_MAX + 64 * 1024)
/* A credential this long or longer is looked for in what an upstream answers (shorter
 * ones would match ordinary text). */
#define S_REDACT_MIN 8

typedef struct waiter {
	struct waiter *next;
	ahp_rpc_req_t *req;
	int replayed; /* a duplicate that joined the call in flight */
} waiter_t;

/* One key's upstream call, from admission to its outcome. */
typedef struct call {
	struct call *next; /* self->calls */
	struct call *queue_next;
	char key[SVC_KEY_MAX];
	char digest[SVC_DIGEST_LEN + 1];
	char run[72];
	char profile[72];
	uint32_t step;
	const svc_service_t *svc;
	ProtobufCMessage *args;
	svc_http_t http;
	long timeout_ms;
	CURL *easy;
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	uint8_t *body;
	size_t body_len, body_cap;
	int body_over;
	int64_t started_ms; /* monotonic */
	waiter_t *waiters;
	int queued;   /* on self->queue: admitted, waiting for the commit or a free slot */
	char *secret; /* owned copy of the credential sent (wiped on free), to keep an upstream
	               * that echoes it from passing it on to the model; NULL without one */
} call_t;

/* A reply to send after the turn's commit. */
typedef struct pending {
	struct pending *next;
	ahp_rpc_req_t *req;
	uint8_t *buf;
	size_t len;
} pending_t;

struct svc_engine {
	void *zctx;
	ahp_rpc_server_t *server;
	CURLM *multi;
	svc_store_t *store;
	ahp_profiles_t *profiles;
	ahp_secrets_t *secrets;
	svc_conf_t conf;
	unsigned max_inflight, running;
	/* Upstream calls running per service (svc_registry order), each capped at
	 * max_inflight less one slot for every other service: a service whose upstream
	 * hangs can fill its own slots but never the last one another service needs. */
	unsigned *running_by;
	unsigned n_services;
	call_t *calls;                    /* every call not finished */
	call_t *queue_head, **queue_tail; /* admitted, not started */
	pending_t *replies, **replies_tail;
	long retain_days;
	int64_t next_prune;
	int stop;
};

/* --- small helpers --- */

static int
s_run_id_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return 0;
	}
	return 1;
}

/* Hex SHA-256 of "service\\n" + canonical JSON of the parsed arguments (sorted keys,
 * compact, defaults written): the same call spelled differently has one digest. */
static int
s_digest(const svc_service_t *svc, const ProtobufCMessage *args, char out[SVC_DIGEST_LEN + 1])
{
	json_t *j = ahp_proto_to_json(args);
	char *canon = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (canon == NULL)
		return -1;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	         EVP_DigestUpdate(ctx, svc->name, strlen(svc->name)) == 1 &&
	         EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
	         EVP_DigestUpdate(ctx, canon, strlen(canon)) == 1 &&
	         EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
	EVP_MD_CTX_free(ctx);
	free(canon);
	if (!ok)
		return -1;
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void
s_queue_reply(svc_engine_t *self, ahp_rpc_req_t **req_p, const Ahp__Svcd__Reply *r)
{
	size_t len = ahp__svcd__reply__get_packed_size(r);
	uint8_t *buf = malloc(len ? len : 1);
	pending_t *p = calloc(1, sizeof *p);
	if (buf == NULL || p == NULL) {
		free(buf);
		free(p);
		log_error("out of memory: a reply is dropped (the caller times out and retries)");
		ahp_rpc_req_free(req_p);
		return;
	}
	ahp__svcd__reply__pack(r, buf);
	p->req = *req_p;
	*req_p = NULL;
	p->buf = buf;
	p->len = len;
	*self->replies_tail = p;
	self->replies_tail = &p->next;
}

/* Queues a copy of a packed CallReply for req, with replayed set when asked. */
static void
s_queue_call_reply(svc_engine_t *self, ahp_rpc_req_t **req_p, const uint8_t *packed, size_t len,
                   int replayed)
{
	Ahp__Svcd__CallReply *cr = ahp__svcd__call_reply__unpack(NULL, len, packed);
	if (cr == NULL) {
		/* Only a store written by another version could hold this. */
		ahp_rpc_server_reply_error(self->server, req_p, AHP__STATUS__ERR_INTERNAL,
		                           "the recorded outcome cannot be decoded");
		return;
	}
	if (replayed)
		cr->replayed = 1;
	Ahp__Svcd__Reply r = AHP__SVCD__REPLY__INIT;
	r.body_case = AHP__SVCD__REPLY__BODY_CALL;
	r.call = cr;
	s_queue_reply(self, req_p, &r);
	ahp__svcd__call_reply__free_unpacked(cr, NULL);
}

static void
s_error_to_pb(const svc_error_t *err, Ahp__Svcd__ServiceError *pe)
{
	pe->code = (char *)err->code;
	pe->message = (char *)err->message;
	pe->retryable = err->retryable != 0;
	pe->field = (char *)err->field;
	pe->http_status = err->http_status;
}

/* Answers req at once with a typed service error (not recorded: nothing happened). */
static void
s_reply_typed(svc_engine_t *self, ahp_rpc_req_t **req_p, const char *service,
              const svc_error_t *err)
{
	Ahp__Svcd__ServiceError pe = AHP__SVCD__SERVICE_ERROR__INIT;
	s_error_to_pb(err, &pe);
	Ahp__Svcd__CallReply cr = AHP__SVCD__CALL_REPLY__INIT;
	cr.service = (char *)(service != NULL ? service : "");
	cr.error = &pe;
	Ahp__Svcd__Reply r = AHP__SVCD__REPLY__INIT;
	r.body_case = AHP__SVCD__REPLY__BODY_CALL;
	r.call = &cr;
	s_queue_reply(self, req_p, &r);
}

static void
s_reply_status(svc_engine_t *self, ahp_rpc_req_t **req_p, int status, const char *message)
{
	Ahp__Error e = AHP__ERROR__INIT;
	ahp_error_set(&e, status, message);
	Ahp__Svcd__Reply r = AHP__SVCD__REPLY__INIT;
	r.error = &e;
	s_queue_reply(self, req_p, &r);
}

static void
s_call_free(call_t *c)
{
	if (c == NULL)
		return;
	if (c->args != NULL)
		protobuf_c_message_free_unpacked(c->args, NULL);
	svc_http_free(&c->http);
	if (c->headers != NULL) {
		/* The lines may hold a credential. */
		for (struct curl_slist *l = c->headers; l != NULL; l = l->next)
			explicit_bzero(l->data, strlen(l->data));
		curl_slist_free_all(c->headers);
	}
	if (c->easy != NULL)
		curl_easy_cleanup(c->easy);
	free(c->body);
	if (c->secret != NULL) {
		explicit_bzero(c->secret, strlen(c->secret));
		free(c->secret);
	}
	while (c->waiters != NULL) {
		waiter_t *w = c->waiters;
		c->waiters = w->next;
		ahp_rpc_req_free(&w->req);
		free(w);
	}
	free(c);
}

static call_t *
s_call_find(svc_engine_t *self, const char *key)
{
	for (call_t *c = self->calls; c != NULL; c = c->next)
		if (strcmp(c->key, key) == 0)
			return c;
	return NULL;
}

static int
s_add_waiter(call_t *c, ahp_rpc_req_t **req_p, int replayed)
{
	waiter_t *w = calloc(1, sizeof *w);
	if (w == NULL)
		return -1;
	w->req = *req_p;
	*req_p = NULL;
	w->replayed = replayed;
	w->next = c->waiters;
	c->waiters = w;
	return 0;
}

/* --- finishing a call --- */

static void
s_unlink(svc_engine_t *self, call_t *c)
{
	for (call_t **pp = &self->calls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			return;
		}
}

/* Records the outcome (in the turn's batch) and queues it for every waiter. */
static void
s_finish(svc_engine_t *self, call_t *c, Ahp__Svcd__CallReply *cr)
{
	size_t len = ahp__svcd__call_reply__get_packed_size(cr);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		fatalx("out of memory recording the outcome of %s", c->key);
	ahp__svcd__call_reply__pack(cr, buf);
	svc_store_call_t sc = {.key = c->key,
	                       .run = c->run,
	                       .profile = c->profile,
	                       .service = c->svc->name,
	                       .digest = c->digest,
	                       .step = c->step};
	if (svc_store_done(self->store, &sc, buf, len) != 0)
		fatalx("cannot record the outcome of %s; stopping so that a restart answers from "
		       "the store",
		       c->key);
	const char *status = cr->error != NULL ? cr->error->code : "ok";
	char step[16], dur[16];
	snprintf(step, sizeof step, "%u", c->step);
	snprintf(dur, sizeof dur, "%u", cr->duration_ms);
	ahp_log_kv(cr->error != NULL ? AHP_LOG_WARN : AHP_LOG_INFO, c->run, step, "service call",
	           "service", c->svc->name, "status", status, "duration_ms", dur, "summary",
	           cr->error != NULL ? cr->error->message : cr->summary, NULL);
	while (c->waiters != NULL) {
		waiter_t *w = c->waiters;
		c->waiters = w->next;
		s_queue_call_reply(self, &w->req, buf, len, w->replayed);
		free(w);
	}
	free(buf);
	s_unlink(self, c);
	s_call_free(c);
}

/* Replaces every occurrence of the call's credential in msg (NUL-terminated) with
 * "[secret]": an upstream's error body is quoted to the model and the log, and an upstream
 * may echo the Authorization header it got (or quote it in a field that fails validation). */
static void
s_redact(const call_t *c, char *msg)
{
	static const char mark[] = "[secret]";
	if (c->secret == NULL)
		return;
	size_t slen = strlen(c->secret);
	char *at = msg;
	/* slen >= S_REDACT_MIN == sizeof mark - 1: the text never grows. */
	while ((at = strstr(at, c->secret)) != NULL) {
		memmove(at + sizeof mark - 1, at + slen, strlen(at + slen) + 1);
		memcpy(at, mark, sizeof mark - 1);
		at += sizeof mark - 1;
	}
}

static void
s_finish_error(svc_engine_t *self, call_t *c, const svc_error_t *err, uint32_t duration_ms)
{
	svc_error_t e = *err;
	s_redact(c, e.message);
	s_redact(c, e.field);
	Ahp__Svcd__ServiceError pe = AHP__SVCD__SERVICE_ERROR__INIT;
	s_error_to_pb(&e, &pe);
	Ahp__Svcd__CallReply cr = AHP__SVCD__CALL_REPLY__INIT;
	cr.service = (char *)c->svc->name;
	cr.error = &pe;
	cr.duration_ms = duration_ms;
	s_finish(self, c, &cr);
}

/* A transfer ended: map it to a result or a typed error. */
static void
s_transfer_done(svc_engine_t *self, call_t *c, CURLcode code)
{
	svc_error_t err = {0};
	int64_t ms = ahp_mono_ms() - c->started_ms;
	uint32_t dur = ms > 0 ? (uint32_t)ms : 0;
	long status = 0;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
	if (code != CURLE_OK && c->body_over && status >= 100 && (status < 200 || status > 299)) {
		/* An error status with a body over the cap: the status decides (a 503 stays
		 * retryable, a 401 unauthorized); the body is only quoted, and its start is
		 * here. */
		code = CURLE_OK;
	}
	if (code != CURLE_OK) {
		if (c->body_over)
			svc_error(&err, "bad_response", 0, NULL,
			          "the upstream's answer is over %d bytes", SVC_BODY_MAX);
		else
			svc_curl_error((int)code, c->errbuf, &err);
		long sent = 0;
		if (err.retryable && c->svc->retry != SVC_RETRY_SAFE &&
		    curl_easy_getinfo(c->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK &&
		    sent > 0) {
			/* The request went out and no answer came back (a timeout, a lost
			 * connection): the side effect may have happened. A retry by the model
			 * is a new step, hence a new Idempotency-Key the upstream cannot match
			 * with this one: telling it "retryable" invites a second post. */
			char why[SVC_MESSAGE_MAX], code[sizeof err.code];
			snprintf(why, sizeof why, "%s", err.message);
			snprintf(code, sizeof code, "%s", err.code);
			svc_error(&err, code, 0, NULL,
			          "%s; the request was sent, so %s may have taken effect: check "
			          "before calling it again",
			          why, c->svc->name);
		}
		s_finish_error(self, c, &err, dur);
		return;
	}
	if (status < 200 || status > 299) {
		svc_http_status_error(status, c->body, c->body_len, &err);
		s_finish_error(self, c, &err, dur);
		return;
	}
	ProtobufCMessage *res =
	    c->svc->handler->response(c->args, status, c->body, c->body_len, &err);
	if (res == NULL) {
		if (err.code[0] == '\0')
			svc_error(&err, "bad_response", 0, NULL,
			          "the upstream's answer is not a %s", c->svc->result->name);
		err.http_status = (int)status;
		s_finish_error(self, c, &err, dur);
		return;
	}
	char *text = NULL;
	if (svc_message_check(res, &err) != 0) {
		/* What the upstream sent breaks the result's contract: the model gets a
		 * typed error, never an invalid result. */
		char why[SVC_MESSAGE_MAX];
		snprintf(why, sizeof why, "%s", err.message);
		svc_error(&err, "bad_response", 0, err.field,
		          "the upstream's result is invalid: %s", why);
	} else {
		text = svc_result_json(res, &err);
	}
	if (text == NULL) {
		err.http_status = (int)status;
		protobuf_c_message_free_unpacked(res, NULL);
		s_finish_error(self, c, &err, dur);
		return;
	}
	if (c->secret != NULL && strstr(text, c->secret) != NULL) {
		/* The upstream echoed the credential it was sent: never the model's. */
		free(text);
		protobuf_c_message_free_unpacked(res, NULL);
		svc_error(&err, "bad_response", 0, NULL,
		          "the upstream's answer contains the service's credential; it is not "
		          "passed on");
		err.http_status = (int)status;
		s_finish_error(self, c, &err, dur);
		return;
	}
	char summary[SVC_SUMMARY_MAX] = "";
	if (c->svc->handler->summarize != NULL)
		c->svc->handler->summarize(res, summary, sizeof summary);
	protobuf_c_message_free_unpacked(res, NULL);
	Ahp__Svcd__CallReply cr = AHP__SVCD__CALL_REPLY__INIT;
	cr.service = (char *)c->svc->name;
	cr.result_json = text;
	cr.summary = summary;
	cr.duration_ms = dur;
	s_finish(self, c, &cr);
	free(text);
}

/* c's position in svc_registry (every call's service comes from svc_find). */
static unsigned
s_svc_index(const svc_engine_t *self, const svc_service_t *svc)
{
	for (unsigned i = 0; i < self->n_services; i++)
		if (svc_registry[i] == svc)
			return i;
	fatalx("service %s is not in the registry", svc->name);
}

static void
s_reap(svc_engine_t *self)
{
	CURLMsg *msg;
	int left = 0;
	while ((msg = curl_multi_info_read(self->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		call_t *c = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
		CURLcode code = msg->data.result;
		curl_multi_remove_handle(self->multi, msg->easy_handle);
		if (c == NULL) {
			curl_easy_cleanup(msg->easy_handle);
			continue;
		}
		self->running--;
		self->running_by[s_svc_index(self, c->svc)]--;
		s_transfer_done(self, c, code);
	}
}

/* --- starting a call --- */

static size_t
s_write_cb(char *ptr, size_t size, size_t n, void *arg)
{
	call_t *c = arg;
	size_t len = size * n;
	/* Bounded before it is allocated: an upstream cannot make us hold more. */
	if (len > SVC_BODY_MAX - c->body_len) {
		c->body_over = 1;
		return 0;
	}
	if (c->body_len + len > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 4096;
		while (cap < c->body_len + len)
			cap *= 2;
		if (cap > SVC_BODY_MAX)
			cap = SVC_BODY_MAX;
		uint8_t *b = realloc(c->body, cap);
		if (b == NULL)
			return 0;
		c->body = b;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, ptr, len);
	c->body_len += len;
	return len;
}

static int
s_easy_setup(call_t *c)
{
	CURL *h = curl_easy_init();
	if (h == NULL)
		return -1;
	c->easy = h;
	for (int i = 0; i < c->http.n_headers; i++) {
		struct curl_slist *l = curl_slist_append(c->headers, c->http.headers[i]);
		if (l == NULL)
			return -1;
		c->headers = l;
	}
	/* No "Expect: 100-continue" round trip on POST bodies. */
	struct curl_slist *l = curl_slist_append(c->headers, "Expect:");
	if (l == NULL)
		return -1;
	c->headers = l;
	long connect_ms = c->timeout_ms < 10000 ? c->timeout_ms : 10000;
	int bad = 0;
	bad |= curl_easy_setopt(h, CURLOPT_URL, c->http.url) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PRIVATE, c) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_write_cb) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, c) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) != CURLE_OK;
	/* Security: a handler's credential goes to the URL services.conf names and
	 * nowhere else — no redirects followed, no other protocol, and no proxy taken
	 * from the environment (http_proxy would see the token). */
	bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "servicesd/" AHP_VERSION) != CURLE_OK;
	if (strcmp(c->http.method, "GET") == 0) {
		bad |= curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK;
	} else {
		bad |= curl_easy_setopt(
		           h, CURLOPT_POSTFIELDSIZE_LARGE,
		           (curl_off_t)(c->http.body != NULL ? c->http.body_len : 0)) != CURLE_OK;
		bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS,
		                        c->http.body != NULL ? c->http.body : "") != CURLE_OK;
		if (strcmp(c->http.method, "POST") != 0)
			bad |=
			    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->http.method) != CURLE_OK;
	}
	return bad ? -1 : 0;
}

/* After the commit: starts queued calls, in order, while slots are free; a call whose
 * service has used its share waits, and the calls behind it may start. */
static void
s_start_queued(svc_engine_t *self)
{
	unsigned others = self->n_services > 0 ? self->n_services - 1 : 0;
	unsigned cap = self->max_inflight > others ? self->max_inflight - others : 1;
	call_t **pp = &self->queue_head;
	while (*pp != NULL && self->running < self->max_inflight) {
		call_t *c = *pp;
		unsigned idx = s_svc_index(self, c->svc);
		if (self->running_by[idx] >= cap) {
			pp = &c->queue_next;
			continue;
		}
		*pp = c->queue_next;
		if (self->queue_tail == &c->queue_next)
			self->queue_tail = pp;
		c->queue_next = NULL;
		c->queued = 0;
		c->started_ms = ahp_mono_ms();
		if (s_easy_setup(c) != 0 ||
		    curl_multi_add_handle(self->multi, c->easy) != CURLM_OK) {
			svc_error_t err;
			svc_error(&err, "internal", 1, NULL, "cannot start the upstream request");
			/* The outcome is recorded in the next turn's batch. */
			s_finish_error(self, c, &err, 0);
			continue;
		}
		self->running++;
		self->running_by[idx]++;
	}
}

/* Builds the upstream request for a call about to be admitted. 0, or -1 with err. */
static int
s_prepare(svc_engine_t *self, call_t *c, svc_error_t *err)
{
	const svc_conf_entry_t *ce = svc_conf_find(&self->conf, c->svc);
	if (ce == NULL)
		return svc_error(err, "unavailable", 0, NULL,
		                 "service %s is not configured on this platform (services.conf)",
		                 c->svc->name);
	const char *token = NULL;
	if (ce->secret != NULL && ce->secret[0] != '\0') {
		size_t tlen = 0;
		token = ahp_secrets_get(self->secrets, ce->secret, &tlen);
		/* An empty secret would send "Bearer ", one with a NUL a cut token, one with
		 * a CR or LF (after the one trailing newline the reader strips) a broken
		 * header: each is a missing credential, not the call's fault. */
		if (token == NULL || tlen == 0 || strlen(token) != tlen ||
		    strpbrk(token, "\r\n") != NULL) {
			log_error(
			    "service %s: secret %s is missing from the secrets dir, empty, or "
			    "holds a NUL, CR or LF byte",
			    c->svc->name, ce->secret);
			return svc_error(err, "unavailable", 1, NULL,
			                 "service %s has no credential configured", c->svc->name);
		}
		if (tlen >= S_REDACT_MIN && (c->secret = strdup(token)) == NULL)
			return svc_error(err, "internal", 1, NULL, "out of memory");
	}
	c->timeout_ms = ce->timeout_ms > 0 ? ce->timeout_ms : c->svc->handler->timeout_ms;
	if (c->timeout_ms <= 0 || c->timeout_ms > SVC_TIMEOUT_MAX_MS)
		c->timeout_ms = SVC_TIMEOUT_MAX_MS;
	return c->svc->handler->request(c->args, ce->url, token, c->key, &c->http, err);
}

static void
s_admit(svc_engine_t *self, call_t *c)
{
	c->queued = 1;
	*self->queue_tail = c;
	self->queue_tail = &c->queue_next;
	c->next = self->calls;
	self->calls = c;
}

/* --- requests --- */

static void
s_handle_call(svc_engine_t *self, ahp_rpc_req_t **req_p, const Ahp__Svcd__CallRequest *in)
{
	svc_error_t err = {0};
	char esc[160];
	if (!s_run_id_ok(in->run_id) || in->step == 0 || in->service == NULL ||
	    in->service[0] == '\0' || strlen(in->service) > SVC_NAME_MAX || in->profile == NULL ||
	    in->profile[0] == '\0' || strlen(in->profile) > 64) {
		s_reply_status(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		               "call needs run_id [A-Za-z0-9-]{1,64}, step >= 1, a service name of "
		               "at most 64 bytes and a profile name");
		return;
	}
	const svc_service_t *svc = svc_find(in->service, strlen(in->service));
	if (svc == NULL) {
		/* The name is the caller's bytes: echoed escaped (valid UTF-8, one line). */
		const char *name = ahp_log_escape(in->service, esc, sizeof esc);
		svc_error(&err, "unknown_service", 0, "service_name",
		          "there is no service named %s", name);
		s_reply_typed(self, req_p, name, &err);
		return;
	}
	const ahp_profile_t *p =
	    self->profiles != NULL ? ahp_profiles_get(self->profiles, in->profile) : NULL;
	const char *why = NULL;
	if (p == NULL)
		why = "is not a profile servicesd has loaded";
	else if (!ahp_profile_has_tool(p, "exec_service"))
		why = "does not list the exec_service tool";
	else if (!ahp_profile_has_service(p, svc->name))
		why = "does not allow this service";
	if (why != NULL) {
		char step[16];
		snprintf(step, sizeof step, "%u", in->step);
		/* The orchestrator asked for something the profile does not grant:
		 * refused here whatever it says, and logged for the operator. */
		ahp_log_kv(AHP_LOG_WARN, in->run_id, step, "service refused", "profile",
		           in->profile, "service", svc->name, "why", why, NULL);
		svc_error(&err, "not_allowed", 0, "service_name", "profile %s %s (%s)",
		          ahp_log_escape(in->profile, esc, sizeof esc), why, svc->name);
		s_reply_typed(self, req_p, svc->name, &err);
		return;
	}
	const char *aj = in->args_json != NULL ? in->args_json : "";
	size_t alen = strlen(aj);
	if (alen > SVC_ARGS_MAX) {
		svc_error(&err, "too_large", 0, "args", "the arguments are over %d bytes",
		          SVC_ARGS_MAX);
		s_reply_typed(self, req_p, svc->name, &err);
		return;
	}
	/* Absent arguments are an empty object: required fields then say what is missing. */
	ProtobufCMessage *args =
	    svc_args_parse(svc, alen > 0 ? aj : "{}", alen > 0 ? alen : 2, &err);
	if (args == NULL) {
		s_reply_typed(self, req_p, svc->name, &err);
		return;
	}
	char digest[SVC_DIGEST_LEN + 1];
	if (s_digest(svc, args, digest) != 0) {
		protobuf_c_message_free_unpacked(args, NULL);
		svc_error(&err, "internal", 1, NULL, "cannot digest the arguments");
		s_reply_typed(self, req_p, svc->name, &err);
		return;
	}
	char key[SVC_KEY_MAX];
	snprintf(key, sizeof key, "%s:%u", in->run_id, in->step);

	/* The same key in flight: wait for its outcome. */
	call_t *live = s_call_find(self, key);
	if (live != NULL) {
		protobuf_c_message_free_unpacked(args, NULL);
		if (strcmp(live->digest, digest) != 0 || live->svc != svc) {
			svc_error(&err, "conflict", 0, NULL,
			          "step %u of run %s is already a different call", in->step,
			          in->run_id);
			s_reply_typed(self, req_p, svc->name, &err);
			return;
		}
		if (s_add_waiter(live, req_p, 1) != 0)
			s_reply_status(self, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}

	char rec_digest[SVC_DIGEST_LEN + 1];
	uint8_t *rec = NULL;
	size_t rec_len = 0;
	int state = svc_store_get(self->store, key, rec_digest, &rec, &rec_len);
	if (state < 0) {
		protobuf_c_message_free_unpacked(args, NULL);
		s_reply_status(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		               "the idempotency store cannot be read; try again");
		return;
	}
	if (state != SVC_STORE_NONE && strcmp(rec_digest, digest) != 0) {
		free(rec);
		protobuf_c_message_free_unpacked(args, NULL);
		svc_error(&err, "conflict", 0, NULL,
		          "step %u of run %s was already a different call (other service or "
		          "arguments)",
		          in->step, in->run_id);
		s_reply_typed(self, req_p, svc->name, &err);
		return;
	}
	if (state == SVC_STORE_DONE) {
		/* Answered from the store: the upstream never sees this key again. */
		protobuf_c_message_free_unpacked(args, NULL);
		s_queue_call_reply(self, req_p, rec, rec_len, 1);
		free(rec);
		return;
	}

	call_t *c = calloc(1, sizeof *c);
	if (c == NULL) {
		protobuf_c_message_free_unpacked(args, NULL);
		s_reply_status(self, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}
	snprintf(c->key, sizeof c->key, "%s", key);
	snprintf(c->digest, sizeof c->digest, "%s", digest);
	snprintf(c->run, sizeof c->run, "%s", in->run_id);
	snprintf(c->profile, sizeof c->profile, "%s", in->profile);
	c->step = in->step;
	c->svc = svc;
	c->args = args;
	if (s_add_waiter(c, req_p, 0) != 0) {
		s_call_free(c);
		s_reply_status(self, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}

	if (state == SVC_STORE_INTENT && svc->retry == SVC_RETRY_NEVER) {
		/* A crash came between the intent and the outcome, and this service
		 * cannot be repeated safely: say so, and record it, rather than risk
		 * doing it twice. */
		c->next = self->calls;
		self->calls = c;
		svc_error(
		    &err, "outcome_unknown", 0, NULL,
		    "servicesd stopped while this call was in progress; whether %s took effect "
		    "is unknown, and it is not repeated automatically",
		    svc->name);
		s_finish_error(self, c, &err, 0);
		return;
	}
	if (s_prepare(self, c, &err) != 0) {
		/* Nothing was sent: not recorded, so a later attempt may succeed. */
		waiter_t *w = c->waiters;
		c->waiters = NULL;
		s_reply_typed(self, &w->req, svc->name, &err);
		free(w);
		s_call_free(c);
		return;
	}
	/* A read has no side effect to protect: its outcome is its only row (and
	 * a crash before it simply runs it again, as its policy says). */
	svc_store_call_t sc = {.key = key,
	                       .run = in->run_id,
	                       .profile = in->profile,
	                       .service = svc->name,
	                       .digest = digest,
	                       .step = in->step};
	if (state == SVC_STORE_NONE && svc->retry != SVC_RETRY_SAFE &&
	    svc_store_intent(self->store, &sc) != 0)
		fatalx("cannot record the intent of %s; stopping before any side effect", key);
	if (state == SVC_STORE_INTENT) {
		char step[16];
		snprintf(step, sizeof step, "%u", in->step);
		ahp_log_kv(AHP_LOG_INFO, in->run_id, step, "service call resumed after a restart",
		           "service", svc->name, "retry", svc_retry_str(svc->retry), NULL);
	}
	s_admit(self, c);
}

static void
s_handle_describe(svc_engine_t *self, ahp_rpc_req_t **req_p, const Ahp__Svcd__DescribeRequest *in)
{
	const ahp_profile_t *p = self->profiles != NULL && in->profile != NULL
	                             ? ahp_profiles_get(self->profiles, in->profile)
	                             : NULL;
	if (p == NULL) {
		char esc[160], msg[256];
		snprintf(msg, sizeof msg, "no profile named %s is loaded by servicesd",
		         ahp_log_escape(in->profile != NULL ? in->profile : "", esc, sizeof esc));
		s_reply_status(self, req_p, AHP__STATUS__ERR_NOT_FOUND, msg);
		return;
	}
	json_t *def = svc_tool_definition(p->services, p->n_services);
	char *text = def != NULL ? json_dumps(def, JSON_COMPACT) : NULL;
	json_decref(def);
	if (text == NULL) {
		s_reply_status(self, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}
	char **names = calloc(p->n_services + 1, sizeof *names);
	size_t n = 0;
	for (unsigned i = 0; names != NULL && i < p->n_services; i++)
		if (svc_find(p->services[i], strlen(p->services[i])) != NULL)
			names[n++] = p->services[i];
	Ahp__Svcd__DescribeReply dr = AHP__SVCD__DESCRIBE_REPLY__INIT;
	dr.tool_json = text;
	dr.n_services = n;
	dr.services = names;
	Ahp__Svcd__Reply r = AHP__SVCD__REPLY__INIT;
	r.body_case = AHP__SVCD__REPLY__BODY_DESCRIBE;
	r.describe = &dr;
	s_queue_reply(self, req_p, &r);
	free(names);
	free(text);
}

static void
s_handle(svc_engine_t *self, ahp_rpc_req_t **req_p)
{
	ahp_rpc_req_t *req = *req_p;
	Ahp__Svcd__Request *in = ahp__svcd__request__unpack(NULL, req->body_len, req->body);
	if (in == NULL) {
		s_reply_status(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		               "the request is not an ahp.svcd.Request");
		return;
	}
	switch (in->body_case) {
	case AHP__SVCD__REQUEST__BODY_CALL:
		s_handle_call(self, req_p, in->call);
		break;
	case AHP__SVCD__REQUEST__BODY_DESCRIBE:
		s_handle_describe(self, req_p, in->describe);
		break;
	case AHP__SVCD__REQUEST__BODY__NOT_SET:
		/* A body this version does not know arrives as an unknown field. */
		if (in->base.n_unknown_fields > 0)
			s_reply_status(self, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD,
			               "this servicesd does not know that request");
		else
			s_reply_status(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
			               "the request has no body");
		break;
	default:
		s_reply_status(self, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD,
		               "this servicesd does not know that request");
		break;
	}
	ahp__svcd__request__free_unpacked(in, NULL);
}

/* --- the loop --- */

/* Commits the turn's writes, then starts what they admitted and sends the replies. */
static void
s_end_turn(svc_engine_t *self)
{
	if (svc_store_commit(self->store) != 0)
		fatalx("idempotency store commit failed; stopping so that a restart answers from "
		       "what reached the disk");
	s_start_queued(self);
	/* A call that failed to start finished inside s_start_queued: its outcome
	 * is in a new batch, which must be on disk before its reply goes out. */
	if (svc_store_commit(self->store) != 0)
		fatalx("idempotency store commit failed");
	pending_t *p = self->replies;
	self->replies = NULL;
	self->replies_tail = &self->replies;
	while (p != NULL) {
		pending_t *next = p->next;
		if (ahp_rpc_server_reply(self->server, &p->req, p->buf, p->len) != 0)
			log_warn("could not send a reply (the caller retries with the same key)");
		ahp_rpc_req_free(&p->req);
		free(p->buf);
		free(p);
		p = next;
	}
}

static void
s_prune(svc_engine_t *self)
{
	int64_t now = ahp_mono_ms();
	if (now < self->next_prune)
		return;
	self->next_prune = now + PRUNE_EVERY_MS;
	if (self->retain_days <= 0)
		return;
	int n = svc_store_prune(self->store, ahp_now_ms() - self->retain_days * 86400000L);
	if (n > 0)
		log_info("pruned %d recorded outcome(s) older than %ld days", n, self->retain_days);
}

void
svc_engine_run(svc_engine_t *self, int sigfd, int (*on_signal)(void *arg, int signo), void *arg)
{
	void *srv = ahp_rpc_server_socket(self->server);
	int zfd = ahp_zmq_fd(srv);
	while (!self->stop) {
		long timeout = POLL_MAX_MS;
		long ct = -1;
		if (curl_multi_timeout(self->multi, &ct) == CURLM_OK && ct >= 0 && ct < timeout)
			timeout = ct;
		struct curl_waitfd extra[2];
		unsigned n = 0;
		if (zfd >= 0)
			extra[n++] = (struct curl_waitfd){.fd = zfd, .events = CURL_WAIT_POLLIN};
		extra[n++] = (struct curl_waitfd){.fd = sigfd, .events = CURL_WAIT_POLLIN};
		/* ZMQ_FD is edge-triggered and replies may have consumed an edge. */
		if (ahp_zmq_readable(srv))
			timeout = 0;
		CURLMcode mc = curl_multi_poll(self->multi, extra, n, (int)timeout, NULL);
		if (mc != CURLM_OK)
			log_warn("curl_multi_poll: %s", curl_multi_strerror(mc));

		struct signalfd_siginfo si;
		while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si)
			if (on_signal(arg, (int)si.ssi_signo) != 0)
				self->stop = 1;
		if (self->stop)
			break;

		int running = 0;
		curl_multi_perform(self->multi, &running);
		s_reap(self);
		for (int i = 0; i < RECV_BATCH; i++) {
			ahp_rpc_req_t *req = NULL;
			int r = ahp_rpc_server_recv(self->server, &req);
			if (r <= 0)
				break;
			s_handle(self, &req);
			ahp_rpc_req_free(&req);
		}
		s_prune(self);
		s_end_turn(self);
	}
	/* Replies already decided still go out; calls in flight stay intents. */
	s_end_turn(self);
}

svc_engine_t *
svc_engine_new(const char *endpoint, const ahp_rpc_allow_t *allow, unsigned max_inflight, char *err,
               size_t errlen)
{
	svc_engine_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	self->queue_tail = &self->queue_head;
	self->replies_tail = &self->replies;
	self->max_inflight = max_inflight > 0 ? max_inflight : 1;
	while (svc_registry[self->n_services] != NULL)
		self->n_services++;
	self->running_by = calloc(self->n_services + 1, sizeof *self->running_by);
	if (self->running_by == NULL) {
		snprintf(err, errlen, "out of memory");
		svc_engine_destroy(&self);
		return NULL;
	}
	self->zctx = zmq_ctx_new();
	if (self->zctx == NULL) {
		snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
		svc_engine_destroy(&self);
		return NULL;
	}
	/* the allow-list at bind: peers it does not name are closed at accept */
	self->server = ahp_rpc_server_new(self->zctx, endpoint, SVC_RPC_MAX_MSG, allow);
	if (self->server == NULL) {
		snprintf(err, errlen, "cannot serve on %s (see above)", endpoint);
		svc_engine_destroy(&self);
		return NULL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    (self->multi = curl_multi_init()) == NULL) {
		snprintf(err, errlen, "cannot set up libcurl");
		svc_engine_destroy(&self);
		return NULL;
	}
	/* Connections to an upstream are reused across calls. */
	curl_multi_setopt(self->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)self->max_inflight);
	return self;
}

int
svc_engine_open_store(svc_engine_t *self, const char *db_path, char *err, size_t errlen)
{
	self->store = svc_store_open(db_path, err, errlen);
	return self->store != NULL ? 0 : -1;
}

void
svc_engine_set_gen(svc_engine_t *self, ahp_profiles_t *profiles, ahp_secrets_t *secrets,
                   svc_conf_t *conf)
{
	ahp_profiles_destroy(&self->profiles);
	ahp_secrets_destroy(&self->secrets);
	svc_conf_free(&self->conf);
	self->profiles = profiles;
	self->secrets = secrets;
	if (conf != NULL) {
		self->conf = *conf;
		conf->entries = NULL;
		conf->n = 0;
	}
}

int
svc_engine_set_allow(svc_engine_t *self, const ahp_rpc_allow_t *allow)
{
	return ahp_rpc_server_allow(self->server, allow);
}

void
svc_engine_set_retention(svc_engine_t *self, long days)
{
	self->retain_days = days;
}

void
svc_engine_destroy(svc_engine_t **self_p)
{
	svc_engine_t *self = *self_p;
	if (self == NULL)
		return;
	while (self->calls != NULL) {
		call_t *c = self->calls;
		self->calls = c->next;
		if (c->easy != NULL && self->multi != NULL && !c->queued)
			curl_multi_remove_handle(self->multi, c->easy);
		s_call_free(c);
	}
	while (self->replies != NULL) {
		pending_t *p = self->replies;
		self->replies = p->next;
		ahp_rpc_req_free(&p->req);
		free(p->buf);
		free(p);
	}
	if (self->multi != NULL)
		curl_multi_cleanup(self->multi);
	if (self->server != NULL) {
		int zero = 0;
		zmq_setsockopt(ahp_rpc_server_socket(self->server), ZMQ_LINGER, &zero, sizeof zero);
	}
	ahp_rpc_server_destroy(&self->server);
	if (self->zctx != NULL)
		zmq_ctx_term(self->zctx);
	svc_store_close(&self->store);
	ahp_profiles_destroy(&self->profiles);
	ahp_secrets_destroy(&self->secrets);
	svc_conf_free(&self->conf);
	free(self->running_by);
	free(self);
	*self_p = NULL;
}
