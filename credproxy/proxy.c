/*
 * The proxy engine: listeners and one state machine per client connection.
 *
 * A connection is a sequence of exchanges. An exchange is one request head
 * (parsed by http-parser, bounded by max_header_bytes / max_headers and the
 * header timeout), a decision, an upstream connection (reused while the
 * next request goes to the same place), the request body streamed up and
 * the response streamed down. Bodies are never buffered whole: each
 * direction reads only while the other side's output holds less than
 * S_HIGH bytes (libevent watermarks), so a slow reader slows the writer.
 *
 * Framing is always re-done, never copied: a body arrives through the
 * parser (which has already refused conflicting Content-Length /
 * Transfer-Encoding) and leaves with the framing this file writes, so what
 * the upstream sees is exactly what was checked (no request smuggling).
 *
 * CONNECT either becomes a blind tunnel (rule injects nothing) or is
 * intercepted: the client's TLS is terminated with a leaf minted for the
 * CONNECT host, and the connection continues as origin-form exchanges to
 * that host over TLS, each decided on its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>
#include <openssl/err.h>

#include "ahp/log.h"
#include "ahp/proxyv2.h"
#include "ahp/rpc.h"
#include "ahp/util.h"
#include "cp.h"

#define S_HIGH (256 * 1024) /* output bytes above which the other side stops reading */
#define S_URL_MAX 8192      /* request-target bytes */

/* ---- configuration generations ---- */

struct cp_gen {
	int refs;
	uint64_t id; /* unique for the process's life (addresses may be reused) */
	cp_policy_t *policy;
	cp_providers_t *providers;
	ahp_secrets_t *secrets;
};

cp_gen_t *
cp_gen_new(cp_policy_t *policy, cp_providers_t *providers, ahp_secrets_t *secrets)
{
	cp_gen_t *g = calloc(1, sizeof *g);
	if (g == NULL)
		return NULL;
	static uint64_t s_next_id;
	g->refs = 1;
	g->id = ++s_next_id;
	g->policy = policy;
	g->providers = providers;
	g->secrets = secrets;
	return g;
}

void
cp_gen_unref(cp_gen_t *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	cp_policy_destroy(&g->policy);
	cp_providers_destroy(&g->providers);
	ahp_secrets_destroy(&g->secrets);
	free(g);
}

/* ---- types ---- */

enum role { ROLE_RELAY, ROLE_API, ROLE_DEV };

/* A parsed head: header names and values point into buf. */
typedef struct {
	char *buf;
	size_t len, cap;
	struct {
		uint32_t n_off, n_len, v_off, v_len;
	} * h;
	unsigned n;
	bool in_value; /* the last callback was a value */
	size_t url_off, url_len;
	bool url_started;
} s_head_t;

typedef struct s_listener {
	struct cp_proxy *px;
	enum role role;
	struct evconnlistener *lev;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} s_listener_t;

enum cstate {
	CS_PREAMBLE, /* relay: waiting for the PROXY v2 header */
	CS_HEAD,     /* reading a request head */
	CS_UPSTREAM, /* resolving / connecting */
	CS_EXCHANGE, /* request body up, response down */
	CS_TUNNEL,   /* blind CONNECT tunnel */
	CS_CLOSING,  /* flushing a last response, then closed */
};

typedef struct s_conn s_conn_t;

/* A plain socket read by this file instead of its bufferevent (s_rd_cb). */
typedef struct {
	struct event *ev; /* NULL: the bufferevent reads (TLS, connecting) */
	bool on;          /* reading wanted */
	bool has_tv;
	struct timeval tv; /* the read timeout, as bufferevent_set_timeouts set it */
} s_rd_t;

struct cp_proxy {
	struct event_base *base;
	struct evdns_base *dns;
	cp_proxy_cfg_t cfg;
	ahp_rpc_allow_t relay_allow, api_allow;
	char dev_profile[AHP_PP2_VALUE_MAX + 1];
	cp_gen_t *gen;
	cp_tls_t *tls;
	cp_egress_t *egress;
	s_listener_t relay, api, dev;
	unsigned nconns;
	s_conn_t *conns; /* all live connections (for destroy) */
};

struct s_conn {
	cp_proxy_t *px;
	s_conn_t *next, *prev;
	cp_gen_t *gen; /* held for the exchange */
	enum role role;
	enum cstate st;
	struct bufferevent *c;          /* client */
	struct bufferevent *u;          /* upstream or NULL */
	struct event *timer;            /* header / idle timeout */
	struct event *reaper;           /* deferred free */
	struct event *flush;            /* end of turn: write plain sockets' output now */
	struct bufferevent *sock;       /* the client's socket: c, or what c's TLS runs on */
	struct evbuffer_cb_entry *c_cb; /* on sock's output: written at the end of the turn */
	struct evbuffer *tout;          /* intercepted: what the turn adds for the client, in
	                                   TLS records once per turn (NULL while plain) */
	struct evbuffer *uout;          /* the same for an upstream over TLS */
	struct evbuffer *scrubbed;      /* the scrubber's output, emptied at once */
	s_rd_t crd, urd;                /* reading the plain client / upstream socket */
	struct evdns_getaddrinfo_request *dns_req;
	bool closing, dead;
	bool lingering;
	bool draining;       /* answered and shut for writing: discarding input until EOF */
	bool dns_no_servers; /* a query was cancelled: nobody to ask */
	int linger;          /* 10 ms polls left before a TLS close gives up flushing */
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];

	/* inside an intercepted CONNECT */
	bool in_tls;
	char t_host[CP_HOST_MAX + 1];
	uint16_t t_port;
	bool t_wildcard;

	/* the upstream connection u points at */
	char u_host[CP_HOST_MAX + 1];
	uint16_t u_port;
	bool u_tls, u_ok;
	bool u_reused;      /* this exchange reuses a kept-alive upstream connection */
	bool u_dirty;       /* the upstream sent what it must not: never reuse it */
	uintptr_t u_key[2]; /* gen id and secrets of the exchanges u has carried */
	bool sent;          /* the request (with any credential) went upstream */

	/* request */
	http_parser rp;
	s_head_t rh;
	size_t head_bytes;
	bool head_started, head_done, req_done, obs_nl;
	bool req_chunked;
	bool url_too_long;
	uint64_t req_cl;

	/* the current exchange */
	char method[24];
	char host[CP_HOST_MAX + 1];
	uint16_t port;
	bool tls_up;
	char *target; /* origin-form path?query to send upstream */
	char path_log[256];
	const cp_rule_t *rule;
	const cp_provider_t *provider;
	bool special_ok;        /* special addresses allowed (rule names the host exactly) */
	cp_scrub_t *scrub;      /* the response's redactor, or NULL */
	cp_scrub_t *scrub_keep; /* kept for the next exchange with the same secrets */
	uintptr_t scrub_key[3]; /* gen id, secrets, first value: what scrub_keep was built for */
	cp_secret_ref_t provider_secret;
	const cp_secret_ref_t *secrets;
	unsigned n_secrets;
	char injected[256];
	int status;
	uint64_t up_bytes, down_bytes;
	uint64_t t0_ms;
	int redactions;
	bool client_keepalive;
	bool is_connect;

	/* response */
	http_parser sp;
	s_head_t sh;
	bool resp_head_ready, resp_head_sent, resp_chunked, resp_close, resp_done;
};

static void s_conn_close(s_conn_t *c);
static void s_read_on(s_conn_t *c, struct bufferevent *bev);
static void s_read_off(s_conn_t *c, struct bufferevent *bev);
static void s_rd_drop(s_rd_t *r);
static void s_close_when_flushed(s_conn_t *c);
static void s_client_read(struct bufferevent *bev, void *arg);
static void s_client_write(struct bufferevent *bev, void *arg);
static void s_client_event(struct bufferevent *bev, short what, void *arg);
static void s_upstream_read(struct bufferevent *bev, void *arg);
static void s_upstream_write(struct bufferevent *bev, void *arg);
static void s_upstream_event(struct bufferevent *bev, short what, void *arg);
static void s_process(s_conn_t *c);
static void s_exchange_begin(s_conn_t *c);

/* ---- small helpers ---- */

static bool
s_ieq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* Copies reason into out, one line: any control byte becomes '?'. */
static void
s_oneline(char *out, size_t outlen, const char *in)
{
	size_t i = 0;
	for (; in[i] && i + 1 < outlen; i++)
		out[i] = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];
	out[i] = '\0';
}

static void
s_head_reset(s_head_t *h)
{
	free(h->buf);
	free(h->h);
	memset(h, 0, sizeof *h);
}

/* Empties h for the next head of the connection, keeping a small buffer
 * and the field table (two allocations fewer per head); a buffer a large
 * head grew is given back. */
static void
s_head_clear(s_head_t *h)
{
	if (h->cap > 4096) {
		s_head_reset(h);
		return;
	}
	char *buf = h->buf;
	size_t cap = h->cap;
	void *fields = h->h;
	memset(h, 0, sizeof *h);
	h->buf = buf;
	h->cap = cap;
	h->h = fields;
}

static int
s_head_append(s_head_t *h, const char *at, size_t len, size_t max)
{
	if (h->len + len > max)
		return -1;
	if (h->len + len > h->cap) {
		size_t cap = h->cap ? h->cap : 1024;
		while (cap < h->len + len)
			cap *= 2;
		if (cap > max)
			cap = max;
		char *nb = realloc(h->buf, cap);
		if (nb == NULL)
			return -1;
		h->buf = nb;
		h->cap = cap;
	}
	memcpy(h->buf + h->len, at, len);
	h->len += len;
	return 0;
}

/* Finds the only header called name; -1 none, -2 more than one. */
static int
s_head_find(const s_head_t *h, const char *name)
{
	int found = -1;
	for (unsigned i = 0; i < h->n; i++)
		if (s_ieq(h->buf + h->h[i].n_off, h->h[i].n_len, name)) {
			if (found >= 0)
				return -2;
			found = (int)i;
		}
	return found;
}

/* Whether a header must not be forwarded as is: hop-by-hop (RFC 9110 section
 * 7.6.1), framing (re-done here), and anything named in Connection. */
static bool
s_hop_by_hop(const s_head_t *h, const char *name, size_t len)
{
	/* With their lengths: a name is compared only to those of its length
	 * (this runs for every header of every request and response). */
	static const struct {
		const char *s;
		size_t n;
	} hop[] = {
	    {"connection", 10},
	    {"keep-alive", 10},
	    {"proxy-connection", 16},
	    {"proxy-authorization", 19},
	    {"proxy-authenticate", 18},
	    {"te", 2},
	    {"trailer", 7},
	    {"upgrade", 7},
	    {"transfer-encoding", 17},
	    {"content-length", 14},
	};
	for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
		if (len == hop[i].n && strncasecmp(name, hop[i].s, len) == 0)
			return true;
	for (unsigned i = 0; i < h->n; i++) {
		if (!s_ieq(h->buf + h->h[i].n_off, h->h[i].n_len, "connection"))
			continue;
		const char *v = h->buf + h->h[i].v_off, *e = v + h->h[i].v_len;
		while (v < e) {
			while (v < e && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *s = v;
			while (v < e && *v != ',' && *v != ' ' && *v != '\t')
				v++;
			if (v > s && (size_t)(v - s) == len && strncasecmp(s, name, len) == 0)
				return true;
		}
	}
	return false;
}

/* A chunk-size line (RFC 9112 section 7.1): hex digits, CRLF. */
static void
s_add_chunk_size(struct evbuffer *o, size_t v)
{
	char b[24];
	int i = (int)sizeof b;
	b[--i] = '\n';
	b[--i] = '\r';
	do
		b[--i] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) != 0);
	evbuffer_add(o, b + i, sizeof b - (size_t)i);
}

/* A head is built here and added to its evbuffer in one piece: every
 * evbuffer_add runs the buffer's callbacks (and, under TLS without
 * staging, was a record), and a head is some 30 pieces. Bytes of a head
 * may be a credential: what the stack held is wiped. */
typedef struct {
	struct evbuffer *dst;
	size_t n;
	char b[4096];
} s_w_t;

static void
s_wflush(s_w_t *w)
{
	if (w->n > 0) {
		evbuffer_add(w->dst, w->b, w->n);
		explicit_bzero(w->b, w->n);
		w->n = 0;
	}
}

static void
s_w(s_w_t *w, const void *p, size_t len)
{
	if (w->n + len > sizeof w->b) {
		s_wflush(w);
		if (len > sizeof w->b) {
			evbuffer_add(w->dst, p, len);
			return;
		}
	}
	memcpy(w->b + w->n, p, len);
	w->n += len;
}

static void
s_ws(s_w_t *w, const char *str)
{
	s_w(w, str, strlen(str));
}

static void
s_wu(s_w_t *w, uint64_t v)
{
	char b[24];
	int i = (int)sizeof b;
	do
		b[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	s_w(w, b + i, sizeof b - (size_t)i);
}

/* The head is complete: out it goes. */
static void
s_wdone(s_w_t *w)
{
	s_wflush(w);
}

/* The head is dropped (only what was not yet added: heads fit in b). */
static void
s_wdiscard(s_w_t *w)
{
	explicit_bzero(w->b, w->n);
	w->n = 0;
}

static uint64_t
s_ms(void)
{
	return (uint64_t)ahp_mono_ms();
}

/* Where bytes for the client go. Inside an intercepted tunnel every
 * evbuffer_add to the TLS bufferevent's output would be its own SSL_write
 * at once (a TLS record, a copy and a write per piece of a response head):
 * the turn's output is collected in tout instead and handed to TLS once, at
 * the end of the turn (s_flush_cb), as one contiguous piece. */
static struct evbuffer *
s_cout(s_conn_t *c)
{
	return c->tout != NULL ? c->tout : bufferevent_get_output(c->c);
}

/* Where bytes for the upstream go: as s_cout, for an upstream over TLS. */
static struct evbuffer *
s_uout(s_conn_t *c)
{
	return c->u_tls && c->uout != NULL ? c->uout : bufferevent_get_output(c->u);
}

static size_t
s_uout_len(s_conn_t *c)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(c->u));
	if (c->u_tls && c->uout != NULL)
		n += evbuffer_get_length(c->uout);
	return n;
}

/* Frees the upstream bufferevent; what was collected for it goes too. */
static void
s_u_free(s_conn_t *c)
{
	s_rd_drop(&c->urd);
	bufferevent_free(c->u);
	if (c->uout != NULL)
		evbuffer_drain(c->uout, evbuffer_get_length(c->uout));
}

/* Bytes for the client not yet taken by the TLS layer or the socket's own
 * buffer below it... only the bufferevent's output and tout. */
static size_t
s_cout_len(s_conn_t *c)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(c->c));
	if (c->tout != NULL)
		n += evbuffer_get_length(c->tout);
	return n;
}

/* Appends str to dst (size bytes, NUL-terminated) at *off, as much as fits,
 * like snprintf(dst + *off, size - *off, "%s", str) without its cost (this
 * runs for every request). True when all of it fitted. */
static bool
s_put(char *dst, size_t size, size_t *off, const char *str)
{
	size_t n = strlen(str);
	bool fits = *off + n < size;
	if (*off >= size)
		return false;
	if (!fits)
		n = size - *off - 1;
	memcpy(dst + *off, str, n);
	*off += n;
	dst[*off] = '\0';
	return fits;
}

static void
s_put_u(char *dst, size_t size, size_t *off, uint64_t v)
{
	char b[24];
	int i = (int)sizeof b;
	b[--i] = '\0';
	do
		b[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	(void)s_put(dst, size, off, b + i);
}

/* ---- the egress record ---- */

static void
s_record(s_conn_t *c, bool allowed, const char *reason)
{
	if (c->px->egress == NULL)
		return;
	char rule[AHP_PP2_VALUE_MAX + 16] = "";
	size_t rl = 0;
	if (c->rule != NULL) {
		if (s_put(rule, sizeof rule, &rl, c->rule->profile) &&
		    s_put(rule, sizeof rule, &rl, "#"))
			s_put_u(rule, sizeof rule, &rl, c->rule->index);
	} else if (c->provider != NULL) {
		if (s_put(rule, sizeof rule, &rl, "provider:"))
			(void)s_put(rule, sizeof rule, &rl, c->provider->name);
	}
	/* A request that went upstream was allowed, whatever failed after. */
	allowed = allowed || c->sent;
	cp_egress_rec_t r = {
	    .run = c->run,
	    .profile = c->profile,
	    .method = c->method,
	    .host = c->host,
	    .port = c->port,
	    .path = c->path_log,
	    .status = c->status,
	    .bytes_up = c->up_bytes,
	    .bytes_down = c->down_bytes,
	    .duration_ms = (uint32_t)(s_ms() - c->t0_ms),
	    .allowed = allowed,
	    .rule = rule,
	    .reason = reason ? reason : "",
	    .injected = c->injected,
	    .redactions = (unsigned)(c->redactions > 0 ? c->redactions : 0),
	};
	cp_egress_record(c->px->egress, &r);
}

/* ---- responses made here ---- */

/* Sends a complete error response and, with close, closes after it is
 * written. reason is one line shown to the client and logged. */
static void
s_refuse(s_conn_t *c, int status, const char *reason, bool close)
{
	char why[CP_REASON_MAX];
	s_oneline(why, sizeof why, reason);
	c->status = status;
	if (c->method[0] != '\0') {
		s_record(c, false, why);
	} else {
		char st[8];
		snprintf(st, sizeof st, "%d", status);
		ahp_log_kv(AHP_LOG_INFO, c->run[0] ? c->run : NULL, NULL, "refused", "profile",
		           c->profile, "status", st, "reason", why, NULL);
	}
	struct evbuffer *out = s_cout(c);
	const char *text = http_status_str((enum http_status)status);
	evbuffer_add_printf(out,
	                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
	                    "X-Credproxy-Reason: %s\r\nContent-Length: %zu\r\n"
	                    "Connection: %s\r\n\r\ncredproxy: %s\n",
	                    status, text, why, strlen(why) + 12, close ? "close" : "keep-alive",
	                    why);
	if (close) {
		c->st = CS_CLOSING;
		s_read_off(c, c->c);
		if (c->u != NULL) {
			s_u_free(c);
			c->u = NULL;
			c->u_ok = false;
		}
	}
}

/* Lets a paused parser go on. http-parser asserts (aborts the process) when
 * a parser in an error state is paused or resumed, and a parser reaches one
 * on whatever bytes a client sends: this is the only way it is resumed. */
static void
s_parser_resume(http_parser *p)
{
	enum http_errno e = HTTP_PARSER_ERRNO(p);
	if (e == HPE_OK || e == HPE_PAUSED)
		http_parser_pause(p, 0);
}

/* ---- reading plain sockets ----
 *
 * A socket bufferevent asks the kernel how much is readable (an
 * ioctl(FIONREAD)) before every readv, and reads at most 4 KiB a time. The
 * plain client and upstream sockets are read here instead: one readv of up
 * to 16 KiB into the bufferevent's input, then its read callback (or its
 * event callback on EOF, an error or the read timeout) through
 * bufferevent_trigger, exactly as libevent's own read path would call them.
 * The bufferevent's EV_READ stays disabled; s_read_on / s_read_off stand
 * for bufferevent_enable / disable (EV_READ), and s_read_timeout for the
 * read half of bufferevent_set_timeouts. A socket under TLS keeps
 * libevent's reading (the TLS filter drives it). */

static s_rd_t *
s_rd_of(s_conn_t *c, struct bufferevent *bev)
{
	if (bev == NULL)
		return NULL;
	if (c->crd.ev != NULL && bev == c->sock)
		return &c->crd;
	if (c->urd.ev != NULL && bev == c->u)
		return &c->urd;
	return NULL;
}

static void
s_read_on(s_conn_t *c, struct bufferevent *bev)
{
	s_rd_t *r = s_rd_of(c, bev);
	if (r == NULL) {
		bufferevent_enable(bev, EV_READ);
		return;
	}
	/* Like bufferevent_enable: (re)armed, the timeout counted from now. */
	r->on = true;
	event_add(r->ev, r->has_tv ? &r->tv : NULL);
}

static void
s_read_off(s_conn_t *c, struct bufferevent *bev)
{
	s_rd_t *r = s_rd_of(c, bev);
	if (r == NULL) {
		bufferevent_disable(bev, EV_READ);
		return;
	}
	if (r->on) {
		r->on = false;
		event_del(r->ev);
	}
}

static void
s_read_timeout(s_conn_t *c, struct bufferevent *bev, const struct timeval *tv)
{
	bufferevent_set_timeouts(bev, tv, NULL);
	s_rd_t *r = s_rd_of(c, bev);
	if (r == NULL)
		return;
	r->has_tv = tv != NULL && (tv->tv_sec != 0 || tv->tv_usec != 0);
	if (r->has_tv)
		r->tv = *tv;
	if (r->on) {
		event_del(r->ev);
		event_add(r->ev, r->has_tv ? &r->tv : NULL);
	}
}

static void
s_rd_run(s_conn_t *c, struct bufferevent *bev, short what)
{
	if (c->closing || bev == NULL)
		return;
	if (what & EV_TIMEOUT) {
		s_read_off(c, bev);
		bufferevent_trigger_event(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, 0);
		return;
	}
	struct evbuffer *in = bufferevent_get_input(bev);
	/* Read into one buffer of the process and append what came: reserving
	 * 16 KiB in an empty input (the usual case: the parser drained the last
	 * request or response) mallocs a 16 KiB chain that the parser's drain
	 * frees again, a large-chunk malloc/free per read; appending the few
	 * hundred bytes of a head takes a small chain from malloc's cache. The
	 * event loop is single-threaded and nothing keeps a pointer into it. */
	static char s_rdbuf[16384];
	ssize_t n = read(bufferevent_getfd(bev), s_rdbuf, sizeof s_rdbuf);
	int err = errno;
	if (n > 0) {
		/* The bufferevent keeps its input's end frozen but while it reads. */
		evbuffer_unfreeze(in, 0);
		int rc = evbuffer_add(in, s_rdbuf, (size_t)n);
		evbuffer_freeze(in, 0);
		if (rc != 0) {
			n = -1;
			err = ENOMEM;
		}
	}
	if (n > 0) {
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
		return;
	}
	if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
		return;
	s_read_off(c, bev);
	errno = err;
	bufferevent_trigger_event(
	    bev, n == 0 ? BEV_EVENT_EOF | BEV_EVENT_READING : BEV_EVENT_ERROR | BEV_EVENT_READING,
	    0);
}

static void
s_crd_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	s_conn_t *c = arg;
	s_rd_run(c, c->crd.ev != NULL ? c->sock : NULL, what);
}

static void
s_urd_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	s_conn_t *c = arg;
	s_rd_run(c, c->urd.ev != NULL ? c->u : NULL, what);
}

/* Stops reading a socket here (it goes back to its bufferevent, or away). */
static void
s_rd_drop(s_rd_t *r)
{
	if (r->ev != NULL)
		event_free(r->ev);
	memset(r, 0, sizeof *r);
}

/* ---- writing plain sockets ----
 *
 * libevent writes a bufferevent's output when epoll says the socket is
 * writable: an epoll_ctl to add the write event, a wake-up, the write, an
 * epoll_ctl to remove it — for every response. For plain sockets (the
 * client's socket also when its TLS is terminated here: the TLS layer
 * writes its records into that socket's output) the write event stays
 * disabled; whatever a loop turn added to an output is written at the end
 * of that turn with one writev, and only what the socket does not take (a
 * slow reader) falls back to libevent's write event, which is disabled
 * again once the output drains. */

/* The upstream's socket: u itself, or what u's TLS runs on. */
static struct bufferevent *
s_usock(s_conn_t *c)
{
	if (c->u == NULL)
		return NULL;
	struct bufferevent *under = c->u_tls ? bufferevent_get_underlying(c->u) : NULL;
	return under != NULL ? under : c->u;
}

static bool
s_sync_capable(s_conn_t *c, struct bufferevent *bev)
{
	if (bev == NULL || bufferevent_get_underlying(bev) != NULL)
		return false;
	if (bev == c->sock)
		return c->c_cb != NULL;
	return c->u != NULL && bev == s_usock(c) && c->u_ok;
}

/* Hands what the turn collected for an intercepted client to TLS: one
 * contiguous piece, so one SSL_write (records of up to 16 KiB each). */
static void
s_tls_push_1(struct bufferevent *bev, struct evbuffer *staged)
{
	size_t n = evbuffer_get_length(staged);
	if (n == 0)
		return;
	if (n <= 65536 && evbuffer_get_contiguous_space(staged) < n)
		evbuffer_pullup(staged, -1);
	bufferevent_write_buffer(bev, staged);
}

static void
s_tls_push(s_conn_t *c)
{
	if (c->closing)
		return;
	if (c->tout != NULL)
		s_tls_push_1(c->c, c->tout);
	if (c->u != NULL && c->u_tls && c->uout != NULL)
		s_tls_push_1(c->u, c->uout);
}

static void s_client_write(struct bufferevent *bev, void *arg);
static void s_upstream_write(struct bufferevent *bev, void *arg);

/* Writes bev's output now; returns false when c closed meanwhile. */
static void
s_sync_write(s_conn_t *c, struct bufferevent *bev)
{
	if (c->closing || !s_sync_capable(c, bev))
		return;
	struct evbuffer *o = bufferevent_get_output(bev);
	bool ev_write = (bufferevent_get_enabled(bev) & EV_WRITE) != 0;
	if (evbuffer_get_length(o) == 0) {
		/* libevent's write event drained it: writing goes back to the
		 * end of the turn. */
		if (ev_write)
			bufferevent_disable(bev, EV_WRITE);
		return;
	}
	/* A socket bufferevent keeps its output's start frozen except while
	 * its own write callback runs (libevent's bufferevent_writecb does the
	 * same unfreeze/write/freeze): evbuffer_write on a frozen buffer fails
	 * without writing, which sent every response through the write event. */
	evbuffer_unfreeze(o, 1);
	int n = evbuffer_write(o, bufferevent_getfd(bev));
	evbuffer_freeze(o, 1);
	if (n < 0 || evbuffer_get_length(o) > 0) {
		/* A full socket, or an error: libevent's write path takes over
		 * (and reports the error through the event callback). */
		if (!ev_write)
			bufferevent_enable(bev, EV_WRITE);
		return;
	}
	if (ev_write)
		bufferevent_disable(bev, EV_WRITE);
	/* Drained: what libevent's write callback would have been told. */
	if (bev == c->sock && c->sock != c->c) {
		/* Under TLS that callback is the TLS layer's: it moves more of
		 * its output down when it had stopped at the socket's high mark
		 * (and tells s_client_write once its own output drains). */
		if (evbuffer_get_length(bufferevent_get_output(c->c)) > 0)
			bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
	} else if (bev == c->c) {
		s_client_write(bev, c);
	} else if (bev != c->u) {
		/* The socket under the upstream's TLS: as for the client's. */
		if (evbuffer_get_length(bufferevent_get_output(c->u)) > 0)
			bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
	} else {
		s_upstream_write(bev, c);
	}
}

static void
s_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	s_tls_push(c);
	if (!c->closing)
		s_sync_write(c, s_usock(c));
	if (!c->closing)
		s_sync_write(c, c->sock);
}

static void
s_outbuf_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	s_conn_t *c = arg;
	if (info->n_added > 0 && !c->closing)
		event_active(c->flush, EV_TIMEOUT, 0);
}

/* A plain bufferevent whose output libevent has drained goes back to
 * being written at the end of the turn. */
static void
s_sync_resume(s_conn_t *c, struct bufferevent *bev)
{
	if (s_sync_capable(c, bev) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
}

/* ---- timers ---- */

static void
s_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	if (c->draining) {
		s_conn_close(c);
		return;
	}
	if (c->st == CS_HEAD && c->head_started && !c->head_done) {
		s_refuse(c, 408, "the request head did not arrive in time", true);
		return;
	}
	if (c->st == CS_UPSTREAM && c->dns_req != NULL) {
		char why[CP_REASON_MAX];
		snprintf(why, sizeof why, "cannot resolve %s in time", c->host);
		s_refuse(c, 504, why, true);
		return;
	}
	if (c->st == CS_PREAMBLE)
		log_info("relay connection closed: no PROXY header in time");
	if (c->st == CS_CLOSING && c->linger-- > 0) {
		s_close_when_flushed(c);
		return;
	}
	s_conn_close(c);
}

/* Bytes still on their way to the client: in the bufferevent, and below
 * it when TLS is layered on the socket's bufferevent. */
static size_t
s_out_pending(s_conn_t *c)
{
	size_t n = s_cout_len(c);
	if (c->sock != c->c)
		n += evbuffer_get_length(bufferevent_get_output(c->sock));
	return n;
}

/* Closes once the last response has left (the TLS layer's own buffer
 * included, which no callback reports: it is polled every 10 ms, for at
 * most 2 s). */
static void
s_drain_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void
s_drain_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	s_conn_close(arg);
}

static void
s_close_when_flushed(s_conn_t *c)
{
	if (s_out_pending(c) == 0) {
		if (!c->draining && bufferevent_get_underlying(c->c) == NULL) {
			/* A lingering close (RFC 9112 section 9.6): closing with
			 * unread bytes of the client's request in the socket would
			 * send a reset, which can destroy the answer before the
			 * client reads it. Stop writing, read and discard until the
			 * client closes, for 2 s at most. */
			c->draining = true;
			shutdown(bufferevent_getfd(c->c), SHUT_WR);
			s_drain_read(c->c, c);
			bufferevent_setcb(c->c, s_drain_read, NULL, s_drain_event, c);
			s_read_on(c, c->c);
			struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
			evtimer_add(c->timer, &tv);
			return;
		}
		s_conn_close(c);
		return;
	}
	if (bufferevent_get_underlying(c->c) != NULL) {
		if (c->linger == 0 && !c->lingering) {
			c->lingering = true;
			c->linger = 200;
		}
		struct timeval tv = {.tv_sec = 0, .tv_usec = 10000};
		evtimer_add(c->timer, &tv);
	}
}

static void
s_timer_set(s_conn_t *c, unsigned seconds)
{
	struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
	evtimer_add(c->timer, &tv);
}

/* ---- request head parsing (http-parser callbacks) ---- */

static int
s_on_url(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	if (!c->rh.url_started) {
		c->rh.url_started = true;
		c->rh.url_off = c->rh.len;
	}
	if (c->rh.url_len + len > S_URL_MAX) {
		c->url_too_long = true;
		return -1;
	}
	if (s_head_append(&c->rh, at, len, c->px->cfg.max_header_bytes) != 0)
		return -1;
	c->rh.url_len += len;
	return 0;
}

static int
s_on_field(s_head_t *h, const char *at, size_t len, size_t max_bytes, unsigned max_n)
{
	if (h->h == NULL || h->in_value || h->n == 0) {
		if (h->h == NULL) {
			h->h = calloc(max_n, sizeof *h->h);
			if (h->h == NULL)
				return -1;
		}
		if (h->n == 0 || h->in_value) {
			if (h->n == max_n)
				return -2;
			h->n++;
			h->h[h->n - 1].n_off = (uint32_t)h->len;
			h->h[h->n - 1].n_len = 0;
			h->h[h->n - 1].v_off = 0;
			h->h[h->n - 1].v_len = 0;
			h->in_value = false;
		}
	}
	if (s_head_append(h, at, len, max_bytes) != 0)
		return -1;
	h->h[h->n - 1].n_len += (uint32_t)len;
	return 0;
}

static int
s_on_value(s_head_t *h, const char *at, size_t len, size_t max_bytes)
{
	if (h->n == 0)
		return -1;
	if (!h->in_value) {
		h->in_value = true;
		h->h[h->n - 1].v_off = (uint32_t)h->len;
	}
	if (s_head_append(h, at, len, max_bytes) != 0)
		return -1;
	h->h[h->n - 1].v_len += (uint32_t)len;
	return 0;
}

static int s_too_many; /* set by a field callback that hit max_headers */

static int
s_req_field(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	int r = s_on_field(&c->rh, at, len, c->px->cfg.max_header_bytes, c->px->cfg.max_headers);
	if (r == -2)
		s_too_many = 1;
	return r == 0 ? 0 : -1;
}

static int
s_req_value(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	return s_on_value(&c->rh, at, len, c->px->cfg.max_header_bytes);
}

static int
s_req_headers_complete(http_parser *p)
{
	s_conn_t *c = p->data;
	c->head_done = true;
	http_parser_pause(p, 1);
	return 0;
}

/* Request body bytes: forwarded with our own framing. */
static int
s_req_body(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	if (c->u == NULL)
		return 0; /* refused request: the body is read and dropped */
	struct evbuffer *out = s_uout(c);
	if (c->req_chunked)
		s_add_chunk_size(out, len);
	evbuffer_add(out, at, len);
	if (c->req_chunked)
		evbuffer_add(out, "\r\n", 2);
	c->up_bytes += len;
	return 0;
}

static int
s_req_complete(http_parser *p)
{
	s_conn_t *c = p->data;
	if (c->u != NULL && c->req_chunked)
		evbuffer_add(s_uout(c), "0\r\n\r\n", 5);
	c->req_done = true;
	http_parser_pause(p, 1); /* the next request waits for this response */
	return 0;
}

static const http_parser_settings s_req_settings = {
    .on_url = s_on_url,
    .on_header_field = s_req_field,
    .on_header_value = s_req_value,
    .on_headers_complete = s_req_headers_complete,
    .on_body = s_req_body,
    .on_message_complete = s_req_complete,
};

/* ---- response parsing ---- */

static int
s_resp_field(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	return s_on_field(&c->sh, at, len, c->px->cfg.max_header_bytes, c->px->cfg.max_headers) == 0
	           ? 0
	           : -1;
}

static int
s_resp_value(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	return s_on_value(&c->sh, at, len, c->px->cfg.max_header_bytes);
}

static int
s_resp_headers_complete(http_parser *p)
{
	http_parser_pause(p, 1);
	s_conn_t *c = p->data;
	c->resp_head_ready = true;
	/* HEAD: no body whatever the headers say (RFC 9110 section 9.3.2). */
	return strcmp(c->method, "HEAD") == 0 ? 1 : 0;
}

static void s_down(s_conn_t *c, const void *data, size_t len);

/* The connection's buffer for scrubbed bytes (empty between uses; made on
 * first use). NULL when out of memory. */
static struct evbuffer *
s_scrubbed(s_conn_t *c)
{
	if (c->scrubbed == NULL)
		c->scrubbed = evbuffer_new();
	return c->scrubbed;
}

static int
s_resp_body(http_parser *p, const char *at, size_t len)
{
	s_conn_t *c = p->data;
	int st = p->status_code;
	if ((st >= 100 && st < 200) || st == 204 || st == 304 || strcmp(c->method, "HEAD") == 0) {
		/* A body where none may be (RFC 9110 section 6.4.1) is not passed
		 * on — it would bypass the scrubber and the framing — and the
		 * connection that sent it is not reused. */
		(void)at;
		(void)len;
		p->flags |= F_CONNECTION_CLOSE;
		c->u_dirty = true;
		return 0;
	}
	if (c->scrub != NULL) {
		struct evbuffer *tmp = s_scrubbed(c);
		if (tmp == NULL)
			return -1;
		int n = cp_scrub_feed(c->scrub, at, len, tmp, false);
		if (n >= 0) {
			c->redactions += n;
			size_t tl = evbuffer_get_length(tmp);
			if (tl > 0)
				s_down(c, evbuffer_pullup(tmp, -1), tl);
		}
		evbuffer_drain(tmp, evbuffer_get_length(tmp));
		return n < 0 ? -1 : 0;
	}
	s_down(c, at, len);
	return 0;
}

static int
s_resp_complete(http_parser *p)
{
	s_conn_t *c = p->data;
	if (p->status_code >= 100 && p->status_code < 200)
		return 0; /* interim: the parser starts on the final response */
	c->resp_done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings s_resp_settings = {
    .on_header_field = s_resp_field,
    .on_header_value = s_resp_value,
    .on_headers_complete = s_resp_headers_complete,
    .on_body = s_resp_body,
    .on_message_complete = s_resp_complete,
};

/* Body bytes to the client, framed as announced. */
static void
s_down(s_conn_t *c, const void *data, size_t len)
{
	if (len == 0)
		return;
	struct evbuffer *out = s_cout(c);
	if (c->resp_chunked)
		s_add_chunk_size(out, len);
	evbuffer_add(out, data, len);
	if (c->resp_chunked)
		evbuffer_add(out, "\r\n", 2);
	c->down_bytes += len;
}

/* ---- connection lifecycle ---- */

static void
s_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	s_conn_t *c = arg;
	if (c->dns_req != NULL) {
		/* The resolver calls back with EVUTIL_EAI_CANCEL; that frees. */
		struct evdns_getaddrinfo_request *r = c->dns_req;
		c->dns_req = NULL;
		c->dead = true;
		evdns_getaddrinfo_cancel(r);
		return;
	}
	cp_proxy_t *px = c->px;
	if (c->prev)
		c->prev->next = c->next;
	else
		px->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	px->nconns--;
	s_rd_drop(&c->crd);
	s_rd_drop(&c->urd);
	if (c->c)
		bufferevent_free(c->c);
	if (c->u)
		bufferevent_free(c->u);
	event_free(c->timer);
	event_free(c->reaper);
	event_free(c->flush);
	if (c->tout)
		evbuffer_free(c->tout);
	if (c->uout)
		evbuffer_free(c->uout);
	if (c->scrubbed)
		evbuffer_free(c->scrubbed);
	s_head_reset(&c->rh);
	s_head_reset(&c->sh);
	cp_scrub_destroy(&c->scrub_keep);
	free(c->target);
	cp_gen_unref(c->gen);
	free(c);
}

/* Closes at once (pending output is dropped); the free is deferred to the
 * next loop turn so that no caller up the stack touches freed memory. */
static void
s_conn_close(s_conn_t *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->crd.ev != NULL)
		event_del(c->crd.ev);
	if (c->urd.ev != NULL)
		event_del(c->urd.ev);
	if (c->c) {
		bufferevent_setcb(c->c, NULL, NULL, NULL, NULL);
		bufferevent_disable(c->c, EV_READ | EV_WRITE);
	}
	if (c->u) {
		bufferevent_setcb(c->u, NULL, NULL, NULL, NULL);
		bufferevent_disable(c->u, EV_READ | EV_WRITE);
	}
	evtimer_del(c->timer);
	event_active(c->reaper, EV_TIMEOUT, 0);
}

/* Ends the exchange: writes the record, keeps or closes the connection. */
static void
s_exchange_end(s_conn_t *c)
{
	if (c->scrub != NULL) {
		struct evbuffer *tmp = s_scrubbed(c);
		if (tmp != NULL) {
			int n = cp_scrub_feed(c->scrub, NULL, 0, tmp, true);
			if (n > 0)
				c->redactions += n;
			size_t tl = evbuffer_get_length(tmp);
			if (tl > 0)
				s_down(c, evbuffer_pullup(tmp, -1), tl);
			evbuffer_drain(tmp, tl);
		}
	}
	if (c->resp_chunked)
		evbuffer_add(s_cout(c), "0\r\n\r\n", 5);
	s_record(c, true, "");
	bool keep_up = c->u != NULL && http_should_keep_alive(&c->sp) && c->req_done && !c->u_dirty;
	if (!keep_up && c->u != NULL) {
		s_u_free(c);
		c->u = NULL;
		c->u_ok = false;
	}
	if (!c->client_keepalive || c->resp_close || !c->req_done) {
		c->st = CS_CLOSING;
		s_read_off(c, c->c);
		s_close_when_flushed(c);
		return;
	}
	s_exchange_begin(c);
	s_process(c);
}

/* Resets the per-exchange state for the next request head. */
static void
s_exchange_begin(s_conn_t *c)
{
	s_head_clear(&c->rh);
	s_head_clear(&c->sh);
	c->scrub = NULL; /* c->scrub_keep holds it */
	free(c->target);
	c->target = NULL;
	c->head_bytes = 0;
	c->head_started = c->head_done = c->req_done = c->obs_nl = false;
	c->req_chunked = false;
	c->url_too_long = false;
	c->method[0] = c->host[0] = c->path_log[0] = c->injected[0] = '\0';
	c->port = 0;
	c->rule = NULL;
	c->provider = NULL;
	c->secrets = NULL;
	c->n_secrets = 0;
	c->status = 0;
	c->sent = false;
	c->up_bytes = c->down_bytes = 0;
	c->redactions = 0;
	c->resp_head_ready = c->resp_head_sent = c->resp_chunked = c->resp_close = false;
	c->resp_done = false;
	c->is_connect = false;
	if (c->gen != c->px->gen) {
		cp_gen_unref(c->gen);
		c->gen = c->px->gen;
		if (c->gen)
			c->gen->refs++;
	}
	enum http_errno pe = HTTP_PARSER_ERRNO(&c->rp);
	if (pe != HPE_OK && pe != HPE_PAUSED) {
		/* What followed the last request is not HTTP: its answer was
		 * the last one on this connection. */
		c->st = CS_CLOSING;
		s_read_off(c, c->c);
		s_close_when_flushed(c);
		return;
	}
	s_parser_resume(&c->rp);
	c->st = CS_HEAD;
	s_timer_set(c, c->px->cfg.idle_timeout_s);
	s_read_on(c, c->c);
}

/* ---- upstream ---- */

static void s_send_request_head(s_conn_t *c);
static void s_tunnel_connected(s_conn_t *c);
static void s_go_upstream(s_conn_t *c);
static int s_head_bad_name(const s_head_t *h);

static void
s_upstream_connected(s_conn_t *c)
{
	c->u_ok = true;
	/* From here the socket (under TLS too) is written at the end of the
	 * turn; the handshake was libevent's. */
	struct bufferevent *us = s_usock(c);
	evbuffer_add_cb(bufferevent_get_output(us), s_outbuf_cb, c);
	s_sync_resume(c, us);
	if (!c->u_tls && c->urd.ev == NULL) {
		/* Read here from now on (s_rd_run). */
		c->urd.ev = event_new(c->px->base, bufferevent_getfd(c->u), EV_READ | EV_PERSIST,
		                      s_urd_cb, c);
		if (c->urd.ev != NULL) {
			bool reading = (bufferevent_get_enabled(c->u) & EV_READ) != 0;
			bufferevent_disable(c->u, EV_READ);
			if (reading)
				s_read_on(c, c->u);
		}
	}
	if (c->is_connect) {
		s_tunnel_connected(c);
		return;
	}
	struct timeval rt = {.tv_sec = c->px->cfg.response_timeout_s};
	s_read_timeout(c, c->u, &rt);
	s_send_request_head(c);
}

static void
s_upstream_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->st == CS_UPSTREAM)
			s_upstream_connected(c);
		return;
	}
	if (c->st == CS_HEAD || c->st == CS_CLOSING) {
		/* The kept-alive upstream went away between exchanges. */
		s_u_free(c);
		c->u = NULL;
		c->u_ok = false;
		return;
	}
	char why[CP_REASON_MAX];
	/* A kept-alive upstream may close just as a request is sent on it
	 * (RFC 9112 section 9.3.1): a request without a body that got no byte
	 * of answer is sent once more on a new connection. */
	if (c->st == CS_EXCHANGE && c->u_reused && !c->resp_head_sent && c->sp.nread == 0 &&
	    c->sp.status_code == 0 && !c->req_chunked && c->req_cl == 0 &&
	    (strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0 ||
	     strcmp(c->method, "OPTIONS") == 0) &&
	    (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
		s_u_free(c);
		c->u = NULL;
		c->u_ok = false;
		s_go_upstream(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(why, sizeof why, "upstream %s:%u did not answer in time", c->host,
		         c->port);
		if (c->st == CS_UPSTREAM || (c->st == CS_EXCHANGE && !c->resp_head_sent)) {
			s_refuse(c, 504, why, true);
			return;
		}
		s_conn_close(c);
		return;
	}
	if (what & BEV_EVENT_EOF && c->st == CS_TUNNEL) {
		/* Pass the close on once the client has what was sent. */
		c->st = CS_CLOSING;
		s_close_when_flushed(c);
		s_record(c, true, "");
		return;
	}
	if (what & BEV_EVENT_EOF && c->st == CS_EXCHANGE && c->resp_head_sent) {
		/* A close-delimited body ends here; anything else is truncation. */
		s_parser_resume(&c->sp);
		http_parser_execute(&c->sp, &s_resp_settings, NULL, 0);
		if (c->resp_done) {
			c->resp_close = c->resp_close || !c->resp_chunked;
			s_u_free(c);
			c->u = NULL;
			c->u_ok = false;
			s_exchange_end(c);
			return;
		}
		/* What arrived goes to the client, then the close tells it the
		 * body is cut short (the framing it was promised is not met). */
		s_record(c, true, "upstream closed mid-response");
		s_u_free(c);
		c->u = NULL;
		c->u_ok = false;
		c->st = CS_CLOSING;
		s_read_off(c, c->c);
		s_close_when_flushed(c);
		return;
	}
	unsigned long e = 0;
	if (c->u_tls)
		e = bufferevent_get_openssl_error(c->u);
	if (e != 0) {
		char ebuf[120];
		ERR_error_string_n(e, ebuf, sizeof ebuf);
		snprintf(why, sizeof why, "TLS to upstream %s:%u failed: %s", c->host, c->port,
		         ebuf);
	} else if (what & BEV_EVENT_EOF) {
		snprintf(why, sizeof why, "upstream %s:%u closed the connection", c->host, c->port);
	} else {
		int err = EVUTIL_SOCKET_ERROR();
		snprintf(why, sizeof why, "cannot connect to upstream %s:%u: %s", c->host, c->port,
		         err ? evutil_socket_error_to_string(err) : "connection failed");
	}
	if (c->st == CS_UPSTREAM || (c->st == CS_EXCHANGE && !c->resp_head_sent)) {
		s_refuse(c, 502, why, true);
		return;
	}
	if (c->st == CS_TUNNEL)
		s_record(c, true, why);
	s_conn_close(c);
}

/* Opens the upstream connection to sa for the current exchange. */
/* A head and its body go out as separate writes: with Nagle's algorithm the second waits
 * for the peer's delayed ACK (40 ms on Linux) whenever the first is small. A proxy
 * forwards what it has at once. */
static void
s_nodelay(evutil_socket_t fd)
{
	int one = 1;
	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void
s_connect(s_conn_t *c, const struct sockaddr *sa, socklen_t salen)
{
	if (c->u != NULL) {
		s_u_free(c);
		c->u = NULL;
	}
	c->u_ok = false;
	c->u_tls = c->tls_up;
	if (c->tls_up) {
		SSL *ssl = c->px->tls ? cp_tls_client_ssl(c->px->tls, c->host) : NULL;
		if (ssl == NULL) {
			s_refuse(c, 502, "cannot set up TLS to the upstream", true);
			return;
		}
		/* TLS as a filter over a socket bufferevent (not on the fd): the
		 * socket is then written at the end of the turn like a plain one
		 * (s_flush_cb), not through an epoll_ctl pair per request. */
		struct bufferevent *sock =
		    bufferevent_socket_new(c->px->base, -1, BEV_OPT_CLOSE_ON_FREE);
		c->u = sock == NULL ? NULL
		                    : bufferevent_openssl_filter_new(c->px->base, sock, ssl,
		                                                     BUFFEREVENT_SSL_CONNECTING,
		                                                     BEV_OPT_CLOSE_ON_FREE);
		if (c->u != NULL && c->uout == NULL) {
			c->uout = evbuffer_new();
			if (c->uout != NULL && evbuffer_add_cb(c->uout, s_outbuf_cb, c) == NULL) {
				evbuffer_free(c->uout);
				c->uout = NULL;
			}
		}
		if (c->u != NULL) {
			bufferevent_openssl_set_allow_dirty_shutdown(c->u, 1);
		} else {
			SSL_free(ssl);
			if (sock != NULL)
				bufferevent_free(sock);
		}
	} else {
		c->u = bufferevent_socket_new(c->px->base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (c->u == NULL) {
		s_refuse(c, 502, "out of memory connecting upstream", true);
		return;
	}
	size_t hl = 0;
	(void)s_put(c->u_host, sizeof c->u_host, &hl, c->host);
	c->u_port = c->port;
	c->u_dirty = false;
	c->u_key[0] = (uintptr_t)(c->gen ? c->gen->id : 0);
	c->u_key[1] = (uintptr_t)c->secrets;
	bufferevent_setcb(c->u, s_upstream_read, s_upstream_write, s_upstream_event, c);
	struct timeval ct = {.tv_sec = c->px->cfg.connect_timeout_s};
	bufferevent_set_timeouts(c->u, &ct, &ct);
	bufferevent_setwatermark(c->u, EV_WRITE, S_HIGH / 2, 0);
	bufferevent_enable(c->u, EV_READ | EV_WRITE);
	c->st = CS_UPSTREAM;
	if (bufferevent_socket_connect(s_usock(c), sa, (int)salen) != 0) {
		char why[CP_REASON_MAX];
		snprintf(why, sizeof why, "cannot connect to upstream %s:%u", c->host, c->port);
		s_refuse(c, 502, why, true);
		return;
	}
	s_nodelay(bufferevent_getfd(s_usock(c)));
}

static void
s_addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a = sa->sa_family == AF_INET6
	                    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	                    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
}

/* The SSRF guard on every resolved address, then a connect to the first one
 * (the address checked is the address used: no second lookup). */
static void
s_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	s_conn_t *c = arg;
	c->dns_req = NULL;
	if (c->dead) { /* cancelled by the reaper */
		if (res)
			evutil_freeaddrinfo(res);
		c->dns_req = NULL;
		s_reaper_cb(-1, 0, c);
		return;
	}
	if (c->closing) {
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	char why[CP_REASON_MAX];
	evtimer_del(c->timer);
	if (c->dns_no_servers) {
		c->dns_no_servers = false;
		if (res)
			evutil_freeaddrinfo(res);
		snprintf(
		    why, sizeof why,
		    "cannot resolve %s: not in the hosts files, and no nameserver is configured",
		    c->host);
		s_refuse(c, 502, why, true);
		return;
	}
	if (result != 0 || res == NULL) {
		snprintf(why, sizeof why, "cannot resolve %s: %s", c->host,
		         result ? evutil_gai_strerror(result) : "no address");
		if (res)
			evutil_freeaddrinfo(res);
		s_refuse(c, 502, why, true);
		return;
	}
	struct sockaddr_storage pick;
	socklen_t picklen = 0;
	for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		const char *cls = cp_addr_special(ai->ai_addr);
		if (cls != NULL && !c->special_ok) {
			char a[INET6_ADDRSTRLEN];
			s_addr_text(ai->ai_addr, a, sizeof a);
			snprintf(why, sizeof why,
			         "%s resolves to %s (%s); only a rule naming the host exactly may "
			         "reach it (profile %s)",
			         c->host, a, cls, c->profile[0] ? c->profile : "-");
			evutil_freeaddrinfo(res);
			s_refuse(c, 403, why, true);
			return;
		}
		if (picklen == 0 && ai->ai_addrlen <= sizeof pick) {
			memcpy(&pick, ai->ai_addr, ai->ai_addrlen);
			picklen = (socklen_t)ai->ai_addrlen;
		}
	}
	evutil_freeaddrinfo(res);
	if (picklen == 0) {
		snprintf(why, sizeof why, "cannot resolve %s: no usable address", c->host);
		s_refuse(c, 502, why, true);
		return;
	}
	if (pick.ss_family == AF_INET)
		((struct sockaddr_in *)&pick)->sin_port = htons(c->port);
	else
		((struct sockaddr_in6 *)&pick)->sin6_port = htons(c->port);
	s_connect(c, (struct sockaddr *)&pick, picklen);
}

/* Starts the upstream side of an allowed exchange: reuse, or resolve and
 * connect. */
static void
s_go_upstream(s_conn_t *c)
{
	/* A kept-alive upstream is reused only for the same secrets: a late or
	 * extra response on it is then scrubbed for what it may reflect. */
	uintptr_t key[2] = {(uintptr_t)(c->gen ? c->gen->id : 0), (uintptr_t)c->secrets};
	if (c->u != NULL && c->u_ok && !c->u_dirty && c->u_tls == c->tls_up &&
	    c->u_port == c->port && strcmp(c->u_host, c->host) == 0 &&
	    memcmp(key, c->u_key, sizeof key) == 0) {
		c->st = CS_UPSTREAM;
		c->u_reused = true;
		s_send_request_head(c);
		return;
	}
	c->u_reused = false;
	if (c->u != NULL) {
		s_u_free(c);
		c->u = NULL;
		c->u_ok = false;
	}
	c->st = CS_UPSTREAM;
	/* An IP literal is checked as is; a name goes through the resolver. */
	struct sockaddr_storage ss;
	int sl = (int)sizeof ss;
	char lit[CP_HOST_MAX + 8];
	snprintf(lit, sizeof lit, strchr(c->host, ':') ? "[%s]" : "%s", c->host);
	memset(&ss, 0, sizeof ss);
	if (evutil_parse_sockaddr_port(lit, (struct sockaddr *)&ss, &sl) == 0) {
		struct evutil_addrinfo ai = {.ai_family = ss.ss_family,
		                             .ai_addr = (struct sockaddr *)&ss,
		                             .ai_addrlen = (size_t)sl};
		const char *cls = cp_addr_special(ai.ai_addr);
		if (cls != NULL && !c->special_ok) {
			char why[CP_REASON_MAX];
			snprintf(why, sizeof why,
			         "%s is a %s address; only a rule naming it exactly may reach it "
			         "(profile %s)",
			         c->host, cls, c->profile[0] ? c->profile : "-");
			s_refuse(c, 403, why, true);
			return;
		}
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(c->port);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(c->port);
		s_connect(c, (struct sockaddr *)&ss, (socklen_t)sl);
		return;
	}
	struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
	                                .ai_socktype = SOCK_STREAM,
	                                .ai_protocol = IPPROTO_TCP,
	                                .ai_flags = EVUTIL_AI_ADDRCONFIG};
	struct evdns_getaddrinfo_request *r =
	    evdns_getaddrinfo(c->px->dns, c->host, NULL, &hints, s_resolved, c);
	/* The callback may already have run (hosts file, cache): r is then NULL. */
	if (r != NULL && !c->closing && c->st == CS_UPSTREAM && c->u == NULL) {
		c->dns_req = r;
		if (evdns_base_count_nameservers(c->px->dns) == 0) {
			/* Not in the hosts files, and nobody to ask: libevent would
			 * queue the query until a nameserver appears. */
			c->dns_no_servers = true;
			c->dns_req = NULL;
			evdns_getaddrinfo_cancel(r);
			return;
		}
		s_timer_set(c, c->px->cfg.connect_timeout_s);
	}
}

/* Writes the request head upstream and lets the body flow. */
static void
s_send_request_head(s_conn_t *c)
{
	s_head_t *h = &c->rh;
	s_w_t w = {.dst = s_uout(c)};
	c->st = CS_EXCHANGE;
	c->sent = true;
	s_ws(&w, c->method);
	s_w(&w, " ", 1);
	s_ws(&w, c->target);
	s_w(&w, " HTTP/1.1\r\nHost: ", 17);
	bool dflt = c->port == (c->tls_up ? 443 : 80);
	bool v6 = strchr(c->host, ':') != NULL;
	if (v6)
		s_w(&w, "[", 1);
	s_ws(&w, c->host);
	if (v6)
		s_w(&w, "]", 1);
	if (!dflt) {
		s_w(&w, ":", 1);
		s_wu(&w, c->port);
	}
	s_w(&w, "\r\n", 2);
	const cp_inject_t *inj = c->rule ? c->rule->inject : NULL;
	unsigned n_inj = c->rule ? c->rule->n_inject : 0;
	for (unsigned i = 0; i < h->n; i++) {
		const char *n = h->buf + h->h[i].n_off;
		size_t nl = h->h[i].n_len;
		if (s_ieq(n, nl, "host") || s_hop_by_hop(h, n, nl))
			continue;
		bool replaced = false;
		for (unsigned k = 0; k < n_inj && !replaced; k++)
			replaced = s_ieq(n, nl, inj[k].name);
		if (c->provider != NULL && c->provider->auth != CP_AUTH_NONE) {
			const char *an = c->provider->auth == CP_AUTH_BEARER ? "authorization"
			                 : c->provider->auth == CP_AUTH_X_API_KEY
			                     ? "x-api-key"
			                     : c->provider->header;
			replaced = replaced || s_ieq(n, nl, an);
		}
		/* An encoded body could hide a reflected secret from the scrubber:
		 * ask for identity when anything is injected. */
		if (replaced || (c->n_secrets > 0 && s_ieq(n, nl, "accept-encoding")))
			continue;
		s_w(&w, n, nl);
		s_w(&w, ": ", 2);
		s_w(&w, h->buf + h->h[i].v_off, h->h[i].v_len);
		s_w(&w, "\r\n", 2);
	}
	for (unsigned k = 0; k < n_inj; k++) {
		s_ws(&w, inj[k].name);
		s_w(&w, ": ", 2);
		s_w(&w, inj[k].value, inj[k].value_len);
		s_w(&w, "\r\n", 2);
	}
	if (c->provider != NULL && c->provider->auth != CP_AUTH_NONE) {
		size_t sl = 0;
		const char *sv = ahp_secrets_get(c->gen->secrets, c->provider->secret, &sl);
		if (sv != NULL) {
			if (c->provider->auth == CP_AUTH_BEARER)
				s_ws(&w, "Authorization: Bearer ");
			else {
				s_ws(&w, c->provider->auth == CP_AUTH_X_API_KEY
				             ? "x-api-key"
				             : c->provider->header);
				s_w(&w, ": ", 2);
			}
			s_w(&w, sv, strnlen(sv, sl)); /* as "%.*s" did */
			s_w(&w, "\r\n", 2);
		}
	}
	if (c->req_chunked)
		s_w(&w, "Transfer-Encoding: chunked\r\n", 28);
	else if (c->req_cl > 0 || strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
	         strcmp(c->method, "PATCH") == 0) {
		s_w(&w, "Content-Length: ", 16);
		s_wu(&w, c->req_cl);
		s_w(&w, "\r\n", 2);
	}
	s_w(&w, "\r\n", 2);
	s_wdone(&w);
	/* The response parser for this exchange. */
	http_parser_init(&c->sp, HTTP_RESPONSE);
	c->sp.data = c;
	s_head_clear(&c->sh);
	c->resp_head_ready = c->resp_head_sent = c->resp_done = false;
	s_parser_resume(&c->rp);
	evtimer_del(c->timer); /* the upstream's read timeout guards the exchange */
	s_read_on(c, c->c);
	s_process(c); /* body bytes already read */
	if (!c->closing && c->u != NULL && evbuffer_get_length(bufferevent_get_input(c->u)) > 0)
		s_upstream_read(c->u, c);
}

/* ---- the response head ---- */

static void
s_send_response_head(s_conn_t *c)
{
	s_head_t *h = &c->sh;
	int status = c->sp.status_code;
	c->status = status;
	bool no_body = strcmp(c->method, "HEAD") == 0 || (status >= 100 && status < 200) ||
	               status == 204 || status == 304;
	bool up_cl = (c->sp.flags & F_CONTENTLENGTH) != 0;
	bool client11 = c->rp.http_major == 1 && c->rp.http_minor >= 1;
	int rte = s_head_find(h, "transfer-encoding");
	if (rte == -2 ||
	    (rte >= 0 && !s_ieq(h->buf + h->h[rte].v_off, h->h[rte].v_len, "chunked"))) {
		/* A transfer coding other than chunked (gzip, chunked ...) would
		 * reach the client decoded of its chunks only: wrong bytes, and
		 * bytes the scrubber cannot read. */
		char why[CP_REASON_MAX];
		snprintf(why, sizeof why, "upstream %s used a transfer coding other than chunked",
		         c->host);
		s_refuse(c, 502, why, true);
		return;
	}
	if (s_head_bad_name(h) >= 0) {
		char why[CP_REASON_MAX];
		snprintf(why, sizeof why,
		         "upstream %s sent a header field name that is not a token", c->host);
		s_refuse(c, 502, why, true);
		return;
	}
	if (c->n_secrets > 0 && !no_body) {
		int ce = s_head_find(h, "content-encoding");
		if (ce == -2 ||
		    (ce >= 0 && !s_ieq(h->buf + h->h[ce].v_off, h->h[ce].v_len, "identity"))) {
			char why[CP_REASON_MAX];
			snprintf(why, sizeof why,
			         "upstream %s sent an encoded body that cannot be checked for "
			         "reflected credentials",
			         c->host);
			s_refuse(c, 502, why, true);
			return;
		}
	}
	if (c->n_secrets > 0) {
		/* The patterns are built once per connection and secrets. */
		uintptr_t key[3] = {(uintptr_t)c->gen->id, (uintptr_t)c->secrets,
		                    (uintptr_t)c->secrets[0].value};
		if (c->scrub_keep == NULL || memcmp(key, c->scrub_key, sizeof key) != 0) {
			cp_scrub_destroy(&c->scrub_keep);
			c->scrub_keep = cp_scrub_new(c->secrets, c->n_secrets);
			memcpy(c->scrub_key, key, sizeof key);
		} else {
			cp_scrub_reset(c->scrub_keep);
		}
		if (c->scrub_keep == NULL) {
			s_refuse(c, 502, "out of memory", true);
			return;
		}
		c->scrub = no_body ? NULL : c->scrub_keep;
	}
	s_w_t w = {.dst = s_cout(c)};
	const char *text = http_status_str((enum http_status)status);
	s_w(&w, "HTTP/1.1 ", 9);
	s_wu(&w, (uint64_t)status);
	s_w(&w, " ", 1);
	s_ws(&w, text);
	s_w(&w, "\r\n", 2);
	for (unsigned i = 0; i < h->n; i++) {
		const char *n = h->buf + h->h[i].n_off;
		size_t nl = h->h[i].n_len;
		bool framing = s_ieq(n, nl, "content-length");
		if (framing && no_body) {
			/* HEAD / 304 keep the length of what they describe. */
		} else if (s_hop_by_hop(h, n, nl)) {
			continue;
		}
		if (c->n_secrets > 0) {
			/* A field whose name holds a secret is dropped (a redacted
			 * name would not be a token). */
			char nb[512];
			int rn = cp_scrub_apply(c->scrub_keep, n, nl, nb, sizeof nb);
			if (rn > 0 || nl >= sizeof nb) {
				c->redactions += rn > 0 ? rn : 0;
				continue;
			}
		}
		s_w(&w, n, nl);
		s_w(&w, ": ", 2);
		if (c->n_secrets > 0) {
			/* Room for the worst case: every 8 bytes (the shortest secret
			 * searched) become one label. */
			size_t vl = h->h[i].v_len, cap = vl + (vl / 8 + 1) * (CP_LABEL_MAX + 1) + 1;
			char vb[1024];
			char *v = cap <= sizeof vb ? vb : malloc(cap);
			if (v == NULL) {
				s_wdiscard(&w); /* a head cut short is not sent */
				s_refuse(c, 502, "out of memory", true);
				return;
			}
			int r = cp_scrub_apply(c->scrub_keep, h->buf + h->h[i].v_off, vl, v, cap);
			if (r > 0)
				c->redactions += r;
			s_w(&w, v, strlen(v));
			if (v != vb)
				free(v);
		} else {
			s_w(&w, h->buf + h->h[i].v_off, h->h[i].v_len);
		}
		s_w(&w, "\r\n", 2);
	}
	if (status >= 100 && status < 200) {
		s_w(&w, "\r\n", 2);
		s_wdone(&w);
		return;
	}
	c->resp_chunked = false;
	if (!no_body) {
		if (up_cl && c->scrub == NULL) {
			s_w(&w, "Content-Length: ", 16);
			s_wu(&w, c->sp.content_length);
			s_w(&w, "\r\n", 2);
		} else if (client11) {
			c->resp_chunked = true;
			s_w(&w, "Transfer-Encoding: chunked\r\n", 28);
		} else {
			c->resp_close = true;
		}
	}
	if (!c->client_keepalive || c->resp_close)
		s_w(&w, "Connection: close\r\n", 19);
	s_w(&w, "\r\n", 2);
	s_wdone(&w);
	c->resp_head_sent = true;
}

static void s_upstream_read_1(struct bufferevent *bev, s_conn_t *c);

/* Upstream bytes: parse the response; stream the body down. */
static void
s_upstream_read(struct bufferevent *bev, void *arg)
{
	s_conn_t *c = arg;
	if (c->closing)
		return;
	s_upstream_read_1(bev, c);
}

static void
s_upstream_read_1(struct bufferevent *bev, s_conn_t *c)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->st == CS_TUNNEL) {
		size_t n = evbuffer_get_length(in);
		c->down_bytes += n;
		bufferevent_write_buffer(c->c, in);
		if (evbuffer_get_length(bufferevent_get_output(c->c)) >= S_HIGH)
			s_read_off(c, bev);
		return;
	}
	if (c->st != CS_EXCHANGE) {
		/* Bytes from an idle upstream: it is not reusable. */
		if (c->st != CS_UPSTREAM) {
			s_u_free(c);
			c->u = NULL;
			c->u_ok = false;
		}
		return;
	}
	while (evbuffer_get_length(in) > 0 && !c->closing) {
		size_t len = evbuffer_get_contiguous_space(in);
		const char *data = (const char *)evbuffer_pullup(in, (ssize_t)len);
		s_parser_resume(&c->sp);
		size_t done = http_parser_execute(&c->sp, &s_resp_settings, data, len);
		enum http_errno e = HTTP_PARSER_ERRNO(&c->sp);
		evbuffer_drain(in, done);
		if (e != HPE_OK && e != HPE_PAUSED) {
			char why[CP_REASON_MAX];
			snprintf(why, sizeof why, "upstream %s sent a malformed response: %s",
			         c->host, http_errno_description(e));
			if (!c->resp_head_sent)
				s_refuse(c, 502, why, true);
			else {
				s_record(c, true, why);
				s_conn_close(c);
			}
			return;
		}
		if (c->resp_head_ready && !c->resp_head_sent) {
			int status = c->sp.status_code;
			if (status == 101) {
				s_refuse(c, 502, "protocol upgrades are not supported", true);
				return;
			}
			s_send_response_head(c);
			if (c->closing || c->st == CS_CLOSING)
				return;
			if (status >= 100 && status < 200) {
				/* An interim response: the final one follows. */
				c->resp_head_ready = false;
				s_head_clear(&c->sh);
			}
			continue;
		}
		if (c->resp_done) {
			if (evbuffer_get_length(in) > 0)
				c->sp.flags |= F_CONNECTION_CLOSE; /* not reusable */
			s_exchange_end(c);
			return;
		}
		if (done == 0 && e != HPE_PAUSED)
			break;
	}
	if (!c->closing && c->c != NULL && s_cout_len(c) >= S_HIGH)
		s_read_off(c, bev);
}

static void
s_upstream_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	s_sync_resume(c, s_usock(c));
	/* The upstream drained below the low mark: the client may send again,
	 * starting with what is already buffered. */
	if (c->st == CS_TUNNEL || c->st == CS_EXCHANGE) {
		s_read_on(c, c->c);
		if (evbuffer_get_length(bufferevent_get_input(c->c)) > 0)
			s_process(c);
	}
}

/* ---- deciding a request ---- */

/* Parses an absolute-form http URL; fills host/port/target. 0 / -1 with why. */
static int
s_absolute(s_conn_t *c, const char *url, size_t len, const char **why)
{
	const char *p = memchr(url, ':', len);
	if (p == NULL || (size_t)(p - url) + 3 > len || p[1] != '/' || p[2] != '/') {
		*why = "the request target must be an absolute http:// URL (this is a proxy)";
		return -1;
	}
	size_t sl = (size_t)(p - url);
	if (s_ieq(url, sl, "https")) {
		*why = "https URLs go through CONNECT, not a plain request";
		return -1;
	}
	if (!s_ieq(url, sl, "http")) {
		*why = "only http:// and CONNECT are proxied";
		return -1;
	}
	const char *a = p + 3, *end = url + len;
	const char *ae = a;
	while (ae < end && *ae != '/' && *ae != '?' && *ae != '#')
		ae++;
	if (memchr(a, '@', (size_t)(ae - a)) != NULL) {
		*why = "userinfo in the request target is refused";
		return -1;
	}
	if (cp_authority_parse(a, (size_t)(ae - a), c->host, sizeof c->host, &c->port, why) != 0)
		return -1;
	if (c->port == 0)
		c->port = 80;
	const char *t = ae;
	const char *hash = memchr(t, '#', (size_t)(end - t));
	size_t tl = (size_t)((hash ? hash : end) - t);
	c->target = malloc(tl + 2);
	if (c->target == NULL) {
		*why = "out of memory";
		return -1;
	}
	if (tl == 0 || t[0] == '?') {
		c->target[0] = '/';
		memcpy(c->target + 1, t, tl);
		c->target[tl + 1] = '\0';
	} else {
		memcpy(c->target, t, tl);
		c->target[tl] = '\0';
	}
	return 0;
}

static int
s_origin(s_conn_t *c, const char *url, size_t len, const char **why)
{
	if (len == 0 || url[0] != '/') {
		*why = "the request target must be a path here";
		return -1;
	}
	const char *hash = memchr(url, '#', len);
	size_t tl = (size_t)((hash ? hash : url + len) - url);
	c->target = malloc(tl + 1);
	if (c->target == NULL) {
		*why = "out of memory";
		return -1;
	}
	memcpy(c->target, url, tl);
	c->target[tl] = '\0';
	return 0;
}

/* The Host header must name what the target names (RFC 9112 section 3.2.2
 * lets a proxy replace it; we refuse a disagreement instead, as a sign of
 * a confused or hostile client). */
static int
s_host_agrees(s_conn_t *c, const char **why)
{
	int i = s_head_find(&c->rh, "host");
	if (i == -2) {
		*why = "more than one Host header";
		return -1;
	}
	if (i < 0)
		return 0;
	char hh[CP_HOST_MAX + 1];
	uint16_t hp = 0;
	const char *hw = NULL;
	if (cp_authority_parse(c->rh.buf + c->rh.h[i].v_off, c->rh.h[i].v_len, hh, sizeof hh, &hp,
	                       &hw) != 0) {
		*why = "the Host header is not a valid host";
		return -1;
	}
	if (hp == 0)
		hp = c->tls_up ? 443 : 80;
	if (strcmp(hh, c->host) != 0 || hp != c->port) {
		*why = "the Host header does not match the request target";
		return -1;
	}
	return 0;
}

/* RFC 9110 section 5.6.2: a field name is a token. http-parser lets some
 * other bytes through (a space before the colon); a name we would forward
 * differently from how the next hop reads it is refused (RFC 9112 section
 * 5.1 requires a 400 for whitespace before the colon). -1 when all are good,
 * else the index of the first bad one. */
static int
s_head_bad_name(const s_head_t *h)
{
	for (unsigned i = 0; i < h->n; i++)
		if (!ahp_http_token(h->buf + h->h[i].n_off, h->h[i].n_len))
			return (int)i;
	return -1;
}

static void
s_injected_names(s_conn_t *c)
{
	c->injected[0] = '\0';
	size_t off = 0;
	if (c->rule != NULL)
		for (unsigned k = 0; k < c->rule->n_inject; k++) {
			/* A name that does not fit is cut, and the list ends there. */
			size_t o = off;
			if ((off > 0 && !s_put(c->injected, sizeof c->injected, &o, ",")) ||
			    !s_put(c->injected, sizeof c->injected, &o, c->rule->inject[k].name))
				break;
			off = o;
		}
	if (c->provider != NULL && c->provider->auth != CP_AUTH_NONE) {
		off = 0;
		(void)s_put(c->injected, sizeof c->injected, &off,
		            c->provider->auth == CP_AUTH_BEARER      ? "Authorization"
		            : c->provider->auth == CP_AUTH_X_API_KEY ? "x-api-key"
		                                                     : c->provider->header);
	}
}

static void
s_path_for_log(s_conn_t *c)
{
	if (c->target == NULL) {
		c->path_log[0] = '\0';
		return;
	}
	size_t q = strcspn(c->target, "?");
	if (q >= sizeof c->path_log)
		q = sizeof c->path_log - 1;
	memcpy(c->path_log, c->target, q);
	c->path_log[q] = '\0';
}

static void s_tunnel_or_intercept(s_conn_t *c);

/* The parser stops at a head's last LF (paused in on_headers_complete);
 * for a message without a body, feeding that LF completes it. Used before
 * a bodiless exchange is answered here or a CONNECT turns into a tunnel, so
 * that no byte of the head is left behind. */
static void
s_finish_head(s_conn_t *c)
{
	struct evbuffer *in = bufferevent_get_input(c->c);
	size_t len = evbuffer_get_contiguous_space(in);
	if (len == 0)
		return;
	const char *data = (const char *)evbuffer_pullup(in, (ssize_t)len);
	s_parser_resume(&c->rp);
	size_t done = http_parser_execute(&c->rp, &s_req_settings, data, len);
	evbuffer_drain(in, done);
}

/* A whole request head is in: decide and start the exchange. */
static void
s_request(s_conn_t *c)
{
	const char *why = NULL;
	evtimer_del(c->timer);
	c->t0_ms = s_ms();
	size_t ml = 0;
	(void)s_put(c->method, sizeof c->method, &ml,
	            http_method_str((enum http_method)c->rp.method));
	const char *url = c->rh.buf + c->rh.url_off;
	size_t ul = c->rh.url_len;
	c->client_keepalive = http_should_keep_alive(&c->rp) != 0;
	c->req_chunked = (c->rp.flags & F_CHUNKED) != 0;
	c->req_cl = (c->rp.flags & F_CONTENTLENGTH) ? c->rp.content_length : 0;
	bool has_body = c->req_chunked || c->req_cl > 0;
	/* Each request uses the configuration in force when its head arrived
	 * (a kept-alive connection must not keep pre-SIGHUP rules). */
	if (c->gen != c->px->gen) {
		cp_gen_unref(c->gen);
		c->gen = c->px->gen;
		if (c->gen)
			c->gen->refs++;
	}
	if (c->gen == NULL || c->gen->policy == NULL) {
		s_refuse(c, 503, "credproxy has no policy loaded", true);
		return;
	}
	if (c->rp.http_major != 1 || c->rp.http_minor > 1) {
		if (c->rp.http_major == 0)
			s_refuse(c, 400, "the request line has no HTTP/1.x version", true);
		else
			s_refuse(c, 505, "only HTTP/1.0 and HTTP/1.1 are spoken here", true);
		return;
	}
	if (s_head_bad_name(&c->rh) >= 0) {
		s_refuse(c, 400, "a header field name is not a token (whitespace before ':'?)",
		         true);
		return;
	}
	if (c->role == ROLE_API && c->in_tls) {
		s_refuse(c, 400, "no CONNECT on this socket", true);
		return;
	}
	int te = s_head_find(&c->rh, "transfer-encoding");
	if (te == -2 ||
	    (te >= 0 && !s_ieq(c->rh.buf + c->rh.h[te].v_off, c->rh.h[te].v_len, "chunked"))) {
		s_refuse(c, 400, "only Transfer-Encoding: chunked is accepted", true);
		return;
	}
	if (te >= 0 && (c->rp.flags & F_CONTENTLENGTH)) {
		s_refuse(c, 400, "both Content-Length and Transfer-Encoding", true);
		return;
	}
	if (c->rp.upgrade && c->rp.method != HTTP_CONNECT) {
		s_refuse(c, 501, "protocol upgrades are not supported", true);
		return;
	}

	if (c->rp.method == HTTP_CONNECT) {
		c->is_connect = true;
		s_finish_head(c); /* what follows the head is the tunnel's */
		if (c->role == ROLE_API || c->in_tls) {
			s_refuse(c, 405, "CONNECT is not allowed here", true);
			return;
		}
		if (cp_authority_parse(url, ul, c->host, sizeof c->host, &c->port, &why) != 0 ||
		    c->port == 0) {
			s_refuse(c, 400, why ? why : "CONNECT needs host:port", true);
			return;
		}
		snprintf(c->path_log, sizeof c->path_log, "%s", "");
		cp_decision_t d;
		cp_policy_decide(c->gen->policy, c->profile, NULL, c->host, c->port, NULL, &d);
		if (d.verdict != CP_ALLOW) {
			s_refuse(c, 403, d.reason, true);
			return;
		}
		c->rule = d.rule;
		c->special_ok = !d.rule->wildcard;
		s_tunnel_or_intercept(c);
		return;
	}

	if (c->role == ROLE_API) {
		c->provider = NULL;
		if (s_origin(c, url, ul, &why) != 0) {
			s_refuse(c, 400, why, true);
			return;
		}
		if (strcmp(c->target, "/healthz") == 0) {
			struct evbuffer *out = s_cout(c);
			evbuffer_add_printf(out,
			                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			                    "Content-Length: 12\r\n\r\n{\"ok\":true}\n");
			c->status = 200;
			if (has_body) {
				s_refuse(c, 400, "unexpected body", true);
				return;
			}
			s_finish_head(c);
			s_exchange_begin(c);
			return;
		}
		const char *pfx = "/providers/";
		size_t pl = strlen(pfx);
		if (strncmp(c->target, pfx, pl) != 0) {
			s_refuse(c, 404, "not found: this socket serves /providers/<name>/...",
			         true);
			return;
		}
		const char *name = c->target + pl;
		size_t nl = strcspn(name, "/?");
		char pname[65];
		if (nl == 0 || nl >= sizeof pname) {
			s_refuse(c, 404, "unknown provider", true);
			return;
		}
		memcpy(pname, name, nl);
		pname[nl] = '\0';
		c->provider = cp_providers_find(c->gen->providers, pname);
		if (c->provider == NULL) {
			char m[CP_REASON_MAX];
			snprintf(m, sizeof m, "unknown provider %s (see providers.conf)", pname);
			s_refuse(c, 404, m, has_body || !c->client_keepalive);
			if (c->st != CS_CLOSING) {
				s_finish_head(c);
				s_exchange_begin(c);
			}
			return;
		}
		const char *rest = name + nl;
		/* The caller must not climb out of the provider's base path with
		 * its key attached. */
		if (rest[0] != '\0' && rest[0] != '?' &&
		    cp_path_check(rest, strcspn(rest, "?"), &why) != 0) {
			s_refuse(c, 400, why, true);
			return;
		}
		char *t = NULL;
		if (asprintf(&t, "%s%s%s", c->provider->base_path, rest[0] == '/' ? "" : "/",
		             rest) < 0) {
			s_refuse(c, 500, "out of memory", true);
			return;
		}
		free(c->target);
		c->target = t;
		snprintf(c->host, sizeof c->host, "%s", c->provider->host);
		c->port = c->provider->port;
		c->tls_up = strcmp(c->provider->scheme, "https") == 0;
		c->special_ok = true; /* the operator configured this upstream */
		if (c->provider->auth != CP_AUTH_NONE) {
			size_t sl = 0;
			const char *sv = ahp_secrets_get(c->gen->secrets, c->provider->secret, &sl);
			if (sv != NULL) {
				c->provider_secret.name = c->provider->secret;
				c->provider_secret.value = (const uint8_t *)sv;
				c->provider_secret.len = sl;
				c->secrets = &c->provider_secret;
				c->n_secrets = 1;
			}
		}
		s_path_for_log(c);
		s_injected_names(c);
		s_go_upstream(c);
		return;
	}

	/* A request through the proxy: absolute-form, or origin-form inside an
	 * intercepted tunnel. */
	if (c->in_tls) {
		snprintf(c->host, sizeof c->host, "%s", c->t_host);
		c->port = c->t_port;
		c->tls_up = true;
		if (s_origin(c, url, ul, &why) != 0) {
			s_refuse(c, 400, why, true);
			return;
		}
	} else {
		c->tls_up = false;
		if (s_absolute(c, url, ul, &why) != 0) {
			s_refuse(c, 400, why, true);
			return;
		}
	}
	s_path_for_log(c);
	if (s_host_agrees(c, &why) != 0) {
		s_refuse(c, 400, why, true);
		return;
	}
	size_t pathlen = strcspn(c->target, "?");
	if (cp_path_check(c->target, pathlen, &why) != 0) {
		s_refuse(c, 400, why, true);
		return;
	}
	cp_decision_t d;
	cp_policy_decide(c->gen->policy, c->profile, c->method, c->host, c->port, c->path_log, &d);
	if (d.verdict != CP_ALLOW) {
		s_refuse(c, 403, d.reason, has_body || !c->client_keepalive);
		if (c->st != CS_CLOSING) {
			s_finish_head(c);
			s_exchange_begin(c);
		}
		return;
	}
	if (!c->tls_up && d.rule->n_inject > 0 && d.rule->port == 0) {
		/* A rule without a port covers 80 and 443; its credential goes
		 * over TLS only. Plain http with a credential must be asked for
		 * by naming the port (host: wiki.local:80). */
		char why[CP_REASON_MAX];
		snprintf(why, sizeof why,
		         "the credentials of rule %s#%u go over https only (use https://%s/, or "
		         "name port 80 in the rule to allow plain http)",
		         d.rule->profile, d.rule->index, c->host);
		s_refuse(c, 403, why, has_body || !c->client_keepalive);
		if (c->st != CS_CLOSING) {
			s_finish_head(c);
			s_exchange_begin(c);
		}
		return;
	}
	c->rule = d.rule;
	c->special_ok = !d.rule->wildcard;
	c->secrets = d.rule->secrets;
	c->n_secrets = d.rule->n_secrets;
	s_injected_names(c);
	s_go_upstream(c);
}

/* ---- CONNECT ---- */

static void
s_tunnel_connected(s_conn_t *c)
{
	c->st = CS_TUNNEL;
	c->status = 200;
	struct timeval idle = {.tv_sec = c->px->cfg.idle_timeout_s};
	s_read_timeout(c, c->u, &idle);
	s_read_timeout(c, c->c, &idle);
	evbuffer_add_printf(bufferevent_get_output(c->c),
	                    "HTTP/1.1 200 Connection established\r\n\r\n");
	/* Bytes the client sent after the CONNECT head belong to the tunnel. */
	struct evbuffer *in = bufferevent_get_input(c->c);
	c->up_bytes += evbuffer_get_length(in);
	bufferevent_write_buffer(c->u, in);
	s_read_on(c, c->c);
}

static void s_intercept(s_conn_t *c);

static void
s_tunnel_or_intercept(s_conn_t *c)
{
	c->tls_up = false;
	snprintf(c->injected, sizeof c->injected, "%s", "");
	if (c->rule->n_inject > 0) {
		s_intercept(c);
		return;
	}
	s_go_upstream(c);
}

/* Terminates the client's TLS with a leaf for the CONNECT host; the
 * connection then carries origin-form requests to that host. */
static void
s_intercept(s_conn_t *c)
{
	if (c->px->tls == NULL) {
		s_refuse(c, 502, "TLS interception is not available", true);
		return;
	}
	SSL *ssl = cp_tls_server_ssl(c->px->tls, c->host);
	if (ssl == NULL) {
		s_refuse(c, 502, "cannot make a certificate for this host", true);
		return;
	}
	c->status = 200;
	s_record(c, true, "intercepted");
	evbuffer_add_printf(bufferevent_get_output(c->c),
	                    "HTTP/1.1 200 Connection established\r\n\r\n");
	/* The TLS layer stops writing into the socket's buffer above S_HIGH, so
	 * its own output backs up and the upstream stops being read (memory
	 * stays bounded for a client that reads slowly). */
	bufferevent_setwatermark(c->c, EV_WRITE, S_HIGH / 2, S_HIGH);
	/* The TLS filter reads the socket through its bufferevent. */
	s_rd_drop(&c->crd);
	c->tout = evbuffer_new();
	if (c->tout == NULL || evbuffer_add_cb(c->tout, s_outbuf_cb, c) == NULL) {
		SSL_free(ssl);
		s_conn_close(c);
		return;
	}
	struct bufferevent *tls = bufferevent_openssl_filter_new(
	    c->px->base, c->c, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		SSL_free(ssl);
		s_conn_close(c);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	/* The filter enables the socket's write event; the socket stays written
	 * at the end of each turn (s_flush_cb) like a plain one, libevent's
	 * write event only for what a slow reader leaves. */
	if (c->c_cb != NULL)
		bufferevent_disable(c->sock, EV_WRITE);
	c->c = tls;
	bufferevent_setcb(c->c, s_client_read, s_client_write, s_client_event, c);
	bufferevent_setwatermark(c->c, EV_WRITE, S_HIGH / 2, 0);
	c->in_tls = true;
	snprintf(c->t_host, sizeof c->t_host, "%s", c->host);
	c->t_port = c->port;
	http_parser_init(&c->rp, HTTP_REQUEST);
	c->rp.data = c;
	s_exchange_begin(c);
}

/* ---- client side ---- */

static void
s_preamble(s_conn_t *c)
{
	struct evbuffer *in = bufferevent_get_input(c->c);
	size_t have = evbuffer_get_length(in);
	size_t want = have < AHP_PP2_HEADER_MAX ? have : AHP_PP2_HEADER_MAX;
	const uint8_t *p = evbuffer_pullup(in, (ssize_t)want);
	const char *why = NULL;
	ssize_t n = ahp_proxyv2_decode(p, want, c->run, c->profile, &why);
	if (n == 0 && have < AHP_PP2_HEADER_MAX)
		return;
	if (n <= 0) {
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "relay connection refused", "reason",
		           why ? why : "PROXY header too long", NULL);
		s_conn_close(c);
		return;
	}
	evbuffer_drain(in, (size_t)n);
	/* An unknown profile is refused per request, by the policy (403 naming
	 * it): refusing here, before the client has sent its request, would
	 * reset a connection the client is still writing to. */
	c->st = CS_HEAD;
	s_timer_set(c, c->px->cfg.idle_timeout_s);
}

/* Feeds client bytes to the request parser. */
static void
s_process(s_conn_t *c)
{
	struct evbuffer *in = bufferevent_get_input(c->c);
	while (!c->closing && evbuffer_get_length(in) > 0) {
		if (c->st == CS_PREAMBLE) {
			s_preamble(c);
			if (c->st == CS_PREAMBLE)
				return;
			continue;
		}
		if (c->st == CS_TUNNEL) {
			c->up_bytes += evbuffer_get_length(in);
			bufferevent_write_buffer(c->u, in);
			if (evbuffer_get_length(bufferevent_get_output(c->u)) >= S_HIGH)
				s_read_off(c, c->c);
			return;
		}
		if (c->st == CS_CLOSING || c->st == CS_UPSTREAM)
			return;
		if (c->st == CS_HEAD && c->head_done)
			return;
		if (c->st == CS_EXCHANGE && c->req_done)
			return;
		if (c->st == CS_EXCHANGE && c->u != NULL && s_uout_len(c) >= S_HIGH) {
			s_read_off(c, c->c);
			return;
		}
		size_t len = evbuffer_get_contiguous_space(in);
		if (c->st == CS_HEAD && len > c->px->cfg.max_header_bytes + 1)
			len = c->px->cfg.max_header_bytes + 1;
		const char *data = (const char *)evbuffer_pullup(in, (ssize_t)len);
		if (c->st == CS_HEAD && !c->head_started) {
			c->head_started = true;
			s_timer_set(c, c->px->cfg.header_timeout_s);
		}
		s_too_many = 0;
		size_t done = http_parser_execute(&c->rp, &s_req_settings, data, len);
		enum http_errno e = HTTP_PARSER_ERRNO(&c->rp);
		if (c->st == CS_HEAD) {
			/* Obsolete line folding (RFC 9112 section 5.2): refused. */
			for (size_t i = 0; i < done; i++) {
				if (c->obs_nl && (data[i] == ' ' || data[i] == '\t')) {
					evbuffer_drain(in, done);
					s_refuse(c, 400,
					         "obsolete line folding in the request head", true);
					return;
				}
				c->obs_nl = data[i] == '\n';
			}
			c->head_bytes += done;
		}
		evbuffer_drain(in, done);
		if (e != HPE_OK && e != HPE_PAUSED) {
			if (c->st == CS_HEAD) {
				if (c->url_too_long)
					s_refuse(c, 414, "request target longer than 8 KiB", true);
				else if (s_too_many)
					s_refuse(c, 431, "too many header fields", true);
				else if (c->rh.len >= c->px->cfg.max_header_bytes ||
				         c->head_bytes > c->px->cfg.max_header_bytes ||
				         e == HPE_HEADER_OVERFLOW)
					s_refuse(c, 431, "request head too large", true);
				else if (e == HPE_UNEXPECTED_CONTENT_LENGTH)
					s_refuse(c, 400,
					         "conflicting Content-Length / Transfer-Encoding "
					         "headers",
					         true);
				else {
					char m[CP_REASON_MAX];
					snprintf(m, sizeof m, "malformed request: %s",
					         http_errno_description(e));
					s_refuse(c, 400, m, true);
				}
			} else {
				s_record(c, true, "malformed request body");
				s_conn_close(c);
			}
			return;
		}
		if (c->st == CS_HEAD && !c->head_done &&
		    c->head_bytes > c->px->cfg.max_header_bytes) {
			s_refuse(c, 431, "request head too large", true);
			return;
		}
		if (c->st == CS_HEAD && c->head_done) {
			s_request(c);
			continue;
		}
		if (c->st == CS_EXCHANGE && c->req_done)
			return;
		if (done == 0)
			return;
	}
}

static void
s_client_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	s_process(c);
	/* Bound what sits unread while an exchange is in progress. */
	if (!c->closing && (c->st == CS_UPSTREAM || (c->st == CS_EXCHANGE && c->req_done)) &&
	    evbuffer_get_length(bufferevent_get_input(c->c)) > c->px->cfg.max_header_bytes)
		s_read_off(c, c->c);
}

static void
s_client_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	s_sync_resume(c, c->sock);
	if (c->st == CS_CLOSING) {
		s_close_when_flushed(c);
		return;
	}
	if (c->u != NULL && (c->st == CS_EXCHANGE || c->st == CS_TUNNEL)) {
		s_read_on(c, c->u);
		if (evbuffer_get_length(bufferevent_get_input(c->u)) > 0)
			s_upstream_read(c->u, c);
	}
}

static void
s_client_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	s_conn_t *c = arg;
	if (c->closing)
		return;
	if (what & BEV_EVENT_CONNECTED)
		return; /* the intercepted client's TLS handshake is done */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->head_done &&
	    (c->req_done || (!c->req_chunked && c->req_cl == 0)) &&
	    (c->st == CS_UPSTREAM || c->st == CS_EXCHANGE)) {
		/* The client half-closed after its request (shutdown(SHUT_WR)):
		 * it still reads the answer, and the connection ends after it. */
		c->client_keepalive = false;
		s_read_off(c, c->c);
		return;
	}
	if (c->st == CS_TUNNEL && (what & BEV_EVENT_EOF) && c->u != NULL) {
		/* Half-close: pass the client's EOF on, keep reading the upstream. */
		s_record(c, true, "");
		c->st = CS_CLOSING;
		s_conn_close(c);
		return;
	}
	if ((what & BEV_EVENT_ERROR) && c->in_tls && c->st == CS_HEAD && !c->head_started) {
		unsigned long e = bufferevent_get_openssl_error(c->c);
		char ebuf[120] = "connection error";
		if (e)
			ERR_error_string_n(e, ebuf, sizeof ebuf);
		ahp_log_kv(AHP_LOG_INFO, c->run[0] ? c->run : NULL, NULL,
		           "intercepted TLS handshake failed", "host", c->t_host, "error", ebuf,
		           NULL);
	}
	if (c->st == CS_EXCHANGE && c->method[0])
		s_record(c, true, "client closed the connection");
	s_conn_close(c);
}

/* ---- listeners ---- */

static bool
s_peer_allowed(int fd, const ahp_rpc_allow_t *allow, struct ucred *cred)
{
	socklen_t cl = sizeof *cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &cl) != 0)
		return false;
	for (size_t i = 0; i < allow->n_uids; i++)
		if (allow->uids[i] == cred->uid)
			return true;
	for (size_t i = 0; i < allow->n_gids; i++)
		if (allow->gids[i] == cred->gid)
			return true;
	return false;
}

static void s_adopt(cp_proxy_t *px, evutil_socket_t fd, enum role role);

static void
s_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)lev;
	(void)sa;
	(void)salen;
	s_listener_t *l = arg;
	cp_proxy_t *px = l->px;
	if (l->role != ROLE_DEV) {
		struct ucred cred = {0};
		const ahp_rpc_allow_t *allow =
		    l->role == ROLE_RELAY ? &px->relay_allow : &px->api_allow;
		if (!s_peer_allowed(fd, allow, &cred)) {
			char uid[16], pid[16];
			snprintf(uid, sizeof uid, "%u", (unsigned)cred.uid);
			snprintf(pid, sizeof pid, "%d", (int)cred.pid);
			ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "peer refused", "socket", l->path,
			           "uid", uid, "pid", pid, NULL);
			evutil_closesocket(fd);
			return;
		}
	}
	s_adopt(px, fd, l->role);
}

/* Takes a connected client socket (owned from here) and serves it in role. */
static void
s_adopt(cp_proxy_t *px, evutil_socket_t fd, enum role role)
{
	if (px->nconns >= px->cfg.max_conns) {
		static const char busy[] =
		    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
		    "X-Credproxy-Reason: too many connections\r\n"
		    "Connection: close\r\n\r\n";
		(void)!write(fd, busy, sizeof busy - 1);
		log_warn("connection refused: max_conns=%u reached", px->cfg.max_conns);
		evutil_closesocket(fd);
		return;
	}
	s_conn_t *c = calloc(1, sizeof *c);
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->px = px;
	c->role = role;
	evutil_make_socket_nonblocking(fd);
	if (role == ROLE_DEV)
		s_nodelay(fd);
	c->c = c->sock = bufferevent_socket_new(px->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(px->base, s_timer_cb, c);
	c->reaper = event_new(px->base, -1, 0, s_reaper_cb, c);
	c->flush = event_new(px->base, -1, 0, s_flush_cb, c);
	if (c->c == NULL || c->timer == NULL || c->reaper == NULL || c->flush == NULL) {
		if (c->c)
			bufferevent_free(c->c);
		else
			evutil_closesocket(fd);
		if (c->timer)
			event_free(c->timer);
		if (c->reaper)
			event_free(c->reaper);
		if (c->flush)
			event_free(c->flush);
		free(c);
		return;
	}
	c->crd.ev = event_new(px->base, fd, EV_READ | EV_PERSIST, s_crd_cb, c);
	c->c_cb = evbuffer_add_cb(bufferevent_get_output(c->c), s_outbuf_cb, c);
	if (c->c_cb != NULL)
		bufferevent_disable(c->c, EV_WRITE);
	c->next = px->conns;
	if (px->conns)
		px->conns->prev = c;
	px->conns = c;
	px->nconns++;
	c->gen = px->gen;
	if (c->gen)
		c->gen->refs++;
	http_parser_init(&c->rp, HTTP_REQUEST);
	c->rp.data = c;
	bufferevent_setcb(c->c, s_client_read, s_client_write, s_client_event, c);
	bufferevent_setwatermark(c->c, EV_WRITE, S_HIGH / 2, 0);
	if (role == ROLE_RELAY) {
		c->st = CS_PREAMBLE;
		s_timer_set(c, px->cfg.header_timeout_s);
		s_read_on(c, c->c);
	} else {
		if (role == ROLE_DEV) {
			snprintf(c->run, sizeof c->run, "dev");
			snprintf(c->profile, sizeof c->profile, "%s", px->dev_profile);
		}
		s_exchange_begin(c);
	}
}

static int
s_listen_unix(cp_proxy_t *px, s_listener_t *l, const char *path, enum role role, char *err,
              size_t errlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sun.sun_path) {
		snprintf(err, errlen, "%s: path too long for a unix socket", path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	snprintf(l->path, sizeof l->path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* A live credproxy already answering here must not be displaced. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0) {
		close(fd);
		snprintf(err, errlen, "%s: another credproxy is serving this socket", path);
		return -1;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	/* Anyone may connect; SO_PEERCRED decides who is served (s_accept). */
	if (chmod(path, 0666) != 0) {
		snprintf(err, errlen, "chmod %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	l->px = px;
	l->role = role;
	l->lev = evconnlistener_new(px->base, s_accept, l, LEV_OPT_CLOSE_ON_FREE, 1024, fd);
	if (l->lev == NULL) {
		snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return 0;
}

static int
s_listen_tcp(cp_proxy_t *px, s_listener_t *l, const char *hostport, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int sl = (int)sizeof ss;
	memset(&ss, 0, sizeof ss);
	if (evutil_parse_sockaddr_port(hostport, (struct sockaddr *)&ss, &sl) != 0) {
		snprintf(err, errlen, "dev_listen: \"%s\" is not host:port", hostport);
		return -1;
	}
	/* Anyone on the machine can use this listener as the dev profile: never
	 * off loopback. */
	if (cp_addr_special((struct sockaddr *)&ss) == NULL ||
	    strcmp(cp_addr_special((struct sockaddr *)&ss), "loopback") != 0) {
		snprintf(err, errlen, "dev_listen: %s is not a loopback address", hostport);
		return -1;
	}
	l->px = px;
	l->role = ROLE_DEV;
	snprintf(l->path, sizeof l->path, "%s", hostport);
	l->lev = evconnlistener_new_bind(px->base, s_accept, l,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
	                                 (struct sockaddr *)&ss, sl);
	if (l->lev == NULL) {
		snprintf(err, errlen, "dev_listen %s: %s", hostport, strerror(errno));
		return -1;
	}
	log_warn("dev_listen %s: every connection there is profile %s (for benchmarks and local "
	         "tries only)",
	         hostport, px->dev_profile);
	return 0;
}

cp_proxy_t *
cp_proxy_new(struct event_base *base, const cp_proxy_cfg_t *cfg, char *err, size_t errlen)
{
	cp_proxy_t *px = calloc(1, sizeof *px);
	if (px == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	px->base = base;
	px->cfg = *cfg;
	if (cfg->relay_allow)
		px->relay_allow = *(const ahp_rpc_allow_t *)cfg->relay_allow;
	if (cfg->api_allow)
		px->api_allow = *(const ahp_rpc_allow_t *)cfg->api_allow;
	snprintf(px->dev_profile, sizeof px->dev_profile, "%s",
	         cfg->dev_profile ? cfg->dev_profile : "");
	px->dns = evdns_base_new(base, 0);
	if (px->dns == NULL) {
		snprintf(err, errlen, "cannot set up the DNS resolver");
		free(px);
		return NULL;
	}
	/* Nameservers from resolv_conf; none at all when it is "" (then only
	 * /etc/hosts and hosts_file answer: tests, fuzzing, air-gapped hosts). */
	if (cfg->resolv_conf && cfg->resolv_conf[0]) {
		int r = evdns_base_resolv_conf_parse(px->dns, DNS_OPTIONS_ALL, cfg->resolv_conf);
		if (r != 0 && r != 6 /* no nameservers listed */)
			log_warn(
			    "resolv_conf %s: cannot be read (error %d); only hosts files answer",
			    cfg->resolv_conf, r);
	}

	evdns_base_load_hosts(px->dns, NULL);
	if (cfg->hosts_file && cfg->hosts_file[0] &&
	    evdns_base_load_hosts(px->dns, cfg->hosts_file) != 0) {
		snprintf(err, errlen, "hosts_file %s: cannot be read", cfg->hosts_file);
		evdns_base_free(px->dns, 0);
		free(px);
		return NULL;
	}
	px->cfg.hosts_file = px->cfg.resolv_conf = NULL;
	px->cfg.relay_socket = px->cfg.api_socket = px->cfg.dev_listen = NULL;
	px->cfg.dev_profile = NULL;
	if ((cfg->relay_socket && cfg->relay_socket[0] &&
	     s_listen_unix(px, &px->relay, cfg->relay_socket, ROLE_RELAY, err, errlen) != 0) ||
	    (cfg->api_socket && cfg->api_socket[0] &&
	     s_listen_unix(px, &px->api, cfg->api_socket, ROLE_API, err, errlen) != 0) ||
	    (cfg->dev_listen && cfg->dev_listen[0] &&
	     s_listen_tcp(px, &px->dev, cfg->dev_listen, err, errlen) != 0)) {
		cp_proxy_destroy(&px);
		return NULL;
	}
	return px;
}

void
cp_proxy_adopt(cp_proxy_t *self, int fd, int role)
{
	s_adopt(self, fd, role == 0 ? ROLE_RELAY : role == 1 ? ROLE_API : ROLE_DEV);
}

unsigned
cp_proxy_conns(const cp_proxy_t *self)
{
	return self->nconns;
}

void
cp_proxy_set_tls(cp_proxy_t *self, cp_tls_t *tls)
{
	self->tls = tls;
}

void
cp_proxy_set_egress(cp_proxy_t *self, cp_egress_t *egress)
{
	self->egress = egress;
}

void
cp_proxy_set_gen(cp_proxy_t *self, cp_gen_t *gen)
{
	cp_gen_unref(self->gen);
	self->gen = gen;
}

void
cp_proxy_destroy(cp_proxy_t **self_p)
{
	cp_proxy_t *px = *self_p;
	if (px == NULL)
		return;
	*self_p = NULL;
	s_listener_t *ls[] = {&px->relay, &px->api, &px->dev};
	for (int i = 0; i < 3; i++)
		if (ls[i]->lev) {
			evconnlistener_free(ls[i]->lev);
			if (ls[i]->role != ROLE_DEV)
				unlink(ls[i]->path);
		}
	while (px->conns) {
		s_conn_t *c = px->conns;
		if (c->dns_req) {
			evdns_getaddrinfo_cancel(c->dns_req);
			c->dns_req = NULL;
		}
		c->closing = true;
		s_reaper_cb(-1, 0, c);
	}
	if (px->dns)
		evdns_base_free(px->dns, 0);
	cp_gen_unref(px->gen);
	free(px);
}
