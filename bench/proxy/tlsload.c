/* tlsload: a small keep-alive HTTPS load generator for bench/proxy (wrk cannot CONNECT).
 *
 * Opens N connections to ADDR:PORT before the clock starts; on each, optionally sends
 * `CONNECT host:port` and expects a 200 (a forward proxy), then does a TLS handshake with SNI
 * and verifies the peer against --ca (hostname checked against the SNI name). Then, for a fixed
 * duration, every connection sends GETs one after another (no pipelining) and reads each
 * response (http_parser: Content-Length or chunked). One thread, epoll, non-blocking OpenSSL.
 * Latency is measured per request, from the request's write to its response's last byte, into
 * a histogram of 1 us buckets (up to 1 s; slower ones count in the last bucket).
 *
 * Prints one line:
 *   tlsload conns=N seconds=S requests=R non2xx=M errors=E rps=X p50_us=P p99_us=Q
 * and exits 0 only when requests > 0, non2xx == 0 and errors == 0 (a response that is not 2xx
 * means the upstream refused it: in bench/proxy, a missing injected credential).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../stats.h"

#define MAX_CONNS 10000
#define MAX_HEADERS 16
#define HIST_US 1000000 /* histogram range: 1 us buckets up to 1 s */
#define REQ_MAX 8192
#define HEAD_MAX 8192 /* a CONNECT reply's header, at most */
#define IO_TIMEOUT_S 10

typedef enum { ST_SEND, ST_RECV, ST_DEAD } s_state_t;

typedef struct s_conn {
	int fd;
	SSL *ssl; /* NULL with --plain */
	s_state_t state;
	size_t sent; /* bytes of the request written so far */
	double t0;   /* when the request's first byte was written */
	http_parser parser;
	int done;        /* on_message_complete fired for the current response */
	uint32_t events; /* what epoll waits for on fd */
} s_conn_t;

typedef struct {
	const char *addr;       /* host:port to connect to */
	const char *connect_to; /* CONNECT target host:port, or NULL */
	const char *sni;        /* TLS server name, also checked against the certificate */
	const char *ca;         /* CA file the peer must chain to */
	const char *host;       /* Host header */
	const char *path;
	const char *headers[MAX_HEADERS];
	int n_headers;
	int conns;
	double seconds;
	int plain;
} s_opts_t;

static char s_req[REQ_MAX];
static size_t s_req_len;
static uint32_t *s_hist;
static long s_requests, s_non2xx, s_errors;
static double s_deadline;

static void
s_usage(FILE *f)
{
	fprintf(f, "usage: tlsload [-c CONNS] [-d SECONDS] [--connect HOST:PORT] [--sni NAME]\n"
	           "               [--ca FILE] [--host HOST] [--path PATH] [-H 'Name: value']...\n"
	           "               [--plain] ADDR:PORT\n"
	           "Keep-alive GETs over N TLS connections (optionally through a forward proxy's\n"
	           "CONNECT) for a fixed time. Prints: tlsload conns= seconds= requests= non2xx=\n"
	           "errors= rps= p50_us= p99_us=; exits 1 if any response was not 2xx or any\n"
	           "connection failed.\n");
}

static void
s_ssl_errors(const char *what)
{
	unsigned long e;
	char buf[256];
	fprintf(stderr, "tlsload: %s failed", what);
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, ": %s", buf);
	}
	fprintf(stderr, "\n");
}

/* Blocking TCP connect to "host:port" with a send/receive timeout; -1 on failure. */
static int
s_dial(const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
		fprintf(stderr, "tlsload: address '%s' is not host:port\n", addr);
		return -1;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "tlsload: resolve %s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		fprintf(stderr, "tlsload: connect %s: %s\n", addr, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Sends CONNECT target and reads the reply's header (byte by byte, so nothing of the TLS that
 * follows is consumed); 0 when the proxy answered 2xx. */
static int
s_connect_method(int fd, const char *target)
{
	char buf[HEAD_MAX];
	int n =
	    snprintf(buf, sizeof(buf), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
	if (n < 0 || (size_t)n >= sizeof(buf) || write(fd, buf, (size_t)n) != n) {
		fprintf(stderr, "tlsload: CONNECT write: %s\n", strerror(errno));
		return -1;
	}
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + len, 1);
		if (r <= 0) {
			fprintf(stderr, "tlsload: CONNECT %s: connection closed before the reply\n",
			        target);
			return -1;
		}
		len++;
		if (len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	buf[len] = '\0';
	if (strncmp(buf, "HTTP/1.", 7) != 0 || len < 12 || buf[9] != '2') {
		char *eol = strpbrk(buf, "\r\n");
		if (eol != NULL)
			*eol = '\0';
		fprintf(stderr, "tlsload: CONNECT %s refused: %s\n", target, buf);
		return -1;
	}
	return 0;
}

static int
s_on_message_complete(http_parser *p)
{
	s_conn_t *c = p->data;
	c->done = 1;
	return 0;
}

static http_parser_settings s_settings = {.on_message_complete = s_on_message_complete};

static void
s_fail(s_conn_t *c, int epfd, const char *why)
{
	if (c->state == ST_DEAD)
		return;
	if (bench_now() < s_deadline) {
		fprintf(stderr, "tlsload: connection lost: %s\n", why);
		s_errors++;
	}
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->state = ST_DEAD;
}

/* Sets the events the connection waits for, with a syscall only when they change. */
static void
s_watch(s_conn_t *c, int epfd, uint32_t events)
{
	if (c->events == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->events = events;
}

/* Classifies an OpenSSL or plain I/O result: 1 progressed, 0 would block (events set), -1 dead. */
static int
s_io_result(s_conn_t *c, int epfd, int r, int writing, const char *what)
{
	if (r > 0)
		return 1;
	if (c->ssl != NULL) {
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ) {
			s_watch(c, epfd, EPOLLIN);
			return 0;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			s_watch(c, epfd, EPOLLOUT);
			return 0;
		}
		ERR_clear_error();
	} else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		s_watch(c, epfd, writing ? EPOLLOUT : EPOLLIN);
		return 0;
	}
	s_fail(c, epfd, what);
	return -1;
}

/* Records a complete response; 0 to go on with the next request, -1 when the connection ends. */
static int
s_complete(s_conn_t *c, int epfd)
{
	double now = bench_now();
	if (now >= s_deadline) {
		c->state = ST_DEAD;
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		return -1;
	}
	long us = (long)((now - c->t0) * 1e6);
	s_hist[us < HIST_US ? us : HIST_US - 1]++;
	s_requests++;
	if (c->parser.status_code < 200 || c->parser.status_code > 299) {
		if (s_non2xx == 0)
			fprintf(stderr, "tlsload: response status %u\n", c->parser.status_code);
		s_non2xx++;
	}
	if (!http_should_keep_alive(&c->parser)) {
		s_fail(c, epfd, "server closed keep-alive");
		return -1;
	}
	c->state = ST_SEND;
	c->sent = 0;
	return 0;
}

/* Drives one connection as far as it goes without blocking: writes the request, reads the
 * response into the parser, records it and starts the next one while the clock runs. After a
 * request is written it waits for EPOLLIN rather than trying a read that would fail. */
static void
s_drive(s_conn_t *c, int epfd, int readable)
{
	char buf[16384];
	while (c->state != ST_DEAD) {
		if (c->state == ST_SEND) {
			if (c->sent == 0)
				c->t0 = bench_now();
			int r = c->ssl != NULL
			            ? SSL_write(c->ssl, s_req + c->sent, (int)(s_req_len - c->sent))
			            : (int)write(c->fd, s_req + c->sent, s_req_len - c->sent);
			if (s_io_result(c, epfd, r, 1, "write") <= 0)
				return;
			c->sent += (size_t)r;
			if (c->sent < s_req_len)
				continue;
			c->state = ST_RECV;
			c->done = 0;
			s_watch(c, epfd, EPOLLIN);
			if (c->ssl == NULL || SSL_pending(c->ssl) == 0)
				return;
			continue;
		}
		if (!readable && (c->ssl == NULL || SSL_pending(c->ssl) == 0))
			return;
		readable = 0;
		int r = c->ssl != NULL ? SSL_read(c->ssl, buf, sizeof(buf))
		                       : (int)read(c->fd, buf, sizeof(buf));
		if (s_io_result(c, epfd, r, 0, "read (closed by peer)") <= 0)
			return;
		readable = 1; /* more may be buffered: read until it would block */
		size_t used = http_parser_execute(&c->parser, &s_settings, buf, (size_t)r);
		if (c->parser.http_errno != HPE_OK || used != (size_t)r) {
			s_fail(c, epfd, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
			return;
		}
		if (c->done && s_complete(c, epfd) != 0)
			return;
	}
}

static long
s_hist_pct(double p)
{
	if (s_requests == 0)
		return 0;
	long want = (long)(p / 100.0 * (double)s_requests + 0.999999);
	if (want < 1)
		want = 1;
	long seen = 0;
	for (long i = 0; i < HIST_US; i++) {
		seen += s_hist[i];
		if (seen >= want)
			return i;
	}
	return HIST_US - 1;
}

/* Builds the request every connection repeats; -1 when it does not fit. */
static int
s_build_request(const s_opts_t *o)
{
	int n = snprintf(s_req, sizeof(s_req), "GET %s HTTP/1.1\r\nHost: %s\r\n", o->path, o->host);
	if (n < 0 || (size_t)n >= sizeof(s_req))
		return -1;
	s_req_len = (size_t)n;
	for (int i = 0; i < o->n_headers; i++) {
		n = snprintf(s_req + s_req_len, sizeof(s_req) - s_req_len, "%s\r\n", o->headers[i]);
		if (n < 0 || (size_t)n >= sizeof(s_req) - s_req_len)
			return -1;
		s_req_len += (size_t)n;
	}
	if (s_req_len + 2 >= sizeof(s_req))
		return -1;
	memcpy(s_req + s_req_len, "\r\n", 3);
	s_req_len += 2;
	return 0;
}

/* Opens one connection: TCP, optional CONNECT, TLS handshake (blocking, before the clock). */
static int
s_open(s_conn_t *c, const s_opts_t *o, SSL_CTX *ctx)
{
	memset(c, 0, sizeof(*c));
	c->fd = s_dial(o->addr);
	if (c->fd < 0)
		return -1;
	if (o->connect_to != NULL && s_connect_method(c->fd, o->connect_to) != 0)
		return -1;
	if (!o->plain) {
		c->ssl = SSL_new(ctx);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
		    SSL_set_tlsext_host_name(c->ssl, o->sni) != 1 ||
		    SSL_set1_host(c->ssl, o->sni) != 1) {
			s_ssl_errors("SSL setup");
			return -1;
		}
		if (SSL_connect(c->ssl) != 1) {
			long v = SSL_get_verify_result(c->ssl);
			if (v != X509_V_OK)
				fprintf(stderr, "tlsload: certificate of %s: %s\n", o->sni,
				        X509_verify_cert_error_string(v));
			s_ssl_errors("TLS handshake");
			return -1;
		}
	}
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0)
		return -1;
	http_parser_init(&c->parser, HTTP_RESPONSE);
	c->parser.data = c;
	c->state = ST_SEND;
	return 0;
}

int
main(int argc, char **argv)
{
	s_opts_t o = {.conns = 16, .seconds = 3, .path = "/"};
	static const struct option longopts[] = {
	    {"connect", required_argument, NULL, 'C'}, {"sni", required_argument, NULL, 's'},
	    {"ca", required_argument, NULL, 'a'},      {"host", required_argument, NULL, 'h'},
	    {"path", required_argument, NULL, 'p'},    {"plain", no_argument, NULL, 'P'},
	    {"help", no_argument, NULL, '?'},          {NULL, 0, NULL, 0}};
	int opt;
	while ((opt = getopt_long(argc, argv, "c:d:H:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': {
			char *end = NULL;
			long v = strtol(optarg, &end, 10);
			o.conns =
			    (end != optarg && *end == '\0' && v > 0 && v <= 100000) ? (int)v : -1;
		} break;
		case 'd':
			o.seconds = atof(optarg);
			break;
		case 'H':
			if (o.n_headers >= MAX_HEADERS) {
				fprintf(stderr, "tlsload: at most %d -H\n", MAX_HEADERS);
				return 2;
			}
			o.headers[o.n_headers++] = optarg;
			break;
		case 'C':
			o.connect_to = optarg;
			break;
		case 's':
			o.sni = optarg;
			break;
		case 'a':
			o.ca = optarg;
			break;
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.path = optarg;
			break;
		case 'P':
			o.plain = 1;
			break;
		default:
			s_usage(opt == '?' && optopt == 0 ? stdout : stderr);
			return opt == '?' && optopt == 0 ? 0 : 2;
		}
	}
	if (optind != argc - 1 || o.conns < 1 || o.conns > MAX_CONNS || o.seconds <= 0 ||
	    o.seconds > 3600 || (!o.plain && (o.sni == NULL || o.ca == NULL))) {
		s_usage(stderr);
		return 2;
	}
	o.addr = argv[optind];
	if (o.host == NULL)
		o.host = o.connect_to != NULL ? o.connect_to : o.addr;
	if (s_build_request(&o) != 0) {
		fprintf(stderr, "tlsload: request too large\n");
		return 2;
	}

	SSL_CTX *ctx = NULL;
	if (!o.plain) {
		ctx = SSL_CTX_new(TLS_client_method());
		static const unsigned char alpn[] = "\x08http/1.1";
		if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1 ||
		    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
			s_ssl_errors("TLS context (--ca)");
			return 2;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
	}
	s_hist = calloc(HIST_US, sizeof(*s_hist));
	s_conn_t *conns = calloc((size_t)o.conns, sizeof(*conns));
	int epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s_hist == NULL || conns == NULL || epfd < 0) {
		perror("tlsload");
		return 2;
	}
	for (int i = 0; i < o.conns; i++) {
		if (s_open(&conns[i], &o, ctx) != 0) {
			fprintf(stderr, "tlsload: connection %d of %d could not be set up\n", i + 1,
			        o.conns);
			return 1;
		}
		conns[i].events = EPOLLIN;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0) {
			perror("tlsload: epoll_ctl");
			return 2;
		}
	}

	double start = bench_now();
	s_deadline = start + o.seconds;
	for (int i = 0; i < o.conns; i++)
		s_drive(&conns[i], epfd, 0);
	struct epoll_event evs[256];
	for (;;) {
		double now = bench_now();
		if (now >= s_deadline)
			break;
		int ms = (int)((s_deadline - now) * 1e3) + 1;
		int n = epoll_wait(epfd, evs, 256, ms);
		if (n < 0 && errno != EINTR) {
			perror("tlsload: epoll_wait");
			return 2;
		}
		for (int i = 0; i < n; i++) {
			s_conn_t *c = evs[i].data.ptr;
			s_drive(c, epfd, 1);
		}
		int alive = 0;
		for (int i = 0; i < o.conns && !alive; i++)
			alive = conns[i].state != ST_DEAD;
		if (!alive)
			break;
	}
	double elapsed = bench_now() - start;
	if (elapsed > o.seconds)
		elapsed = o.seconds;
	printf("tlsload conns=%d seconds=%.2f requests=%ld non2xx=%ld errors=%ld rps=%.1f "
	       "p50_us=%ld p99_us=%ld\n",
	       o.conns, elapsed, s_requests, s_non2xx, s_errors,
	       elapsed > 0 ? (double)s_requests / elapsed : 0.0, s_hist_pct(50), s_hist_pct(99));
	fflush(stdout);
	for (int i = 0; i < o.conns; i++) {
		if (conns[i].ssl != NULL)
			SSL_free(conns[i].ssl);
		if (conns[i].fd > 0)
			close(conns[i].fd);
	}
	SSL_CTX_free(ctx);
	free(conns);
	free(s_hist);
	return s_requests > 0 && s_non2xx == 0 && s_errors == 0 ? 0 : 1;
}
