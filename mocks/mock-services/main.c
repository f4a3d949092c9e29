/* mock-services: entry point — options, token files, the listener, the port file, signals. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "mock_services.h"

static void
s_usage(FILE *f)
{
	fprintf(
	    f, "usage: mock-services [options]\n"
	       "\n"
	       "The wiki and webhook upstreams of servicesd's lookup_wiki and publish_summary,\n"
	       "with canned snippets, idempotent posts and request counts.\n"
	       "\n"
	       "  --listen ADDR             numeric IPv4 or IPv6 address (default 127.0.0.1)\n"
	       "  --port N                  TCP port, 0 = ephemeral (default 0)\n"
	       "  --port-file PATH          write the bound port here (atomically) once listening\n"
	       "  --wiki-token-file F       token expected as `Authorization: Bearer T` on\n"
	       "                            /snippets (one trailing newline stripped; default\n"
	       "                            \"wiki-token\")\n"
	       "  --webhook-token-file F    token expected as `Authorization: Bot T` on /webhooks\n"
	       "                            (default \"webhook-token\")\n"
	       "  --latency-ms N            delay added to every snippets/webhooks request\n"
	       "  --hang-ms N               a further delay, for timeout tests (default 0)\n"
	       "  --fail-every N            every Nth snippets/webhooks request fails (0 = never)\n"
	       "  --fail-status S           status of injected failures, 400..599 (default 503)\n"
	       "  --help, --version\n"
	       "\n"
	       "Endpoints: GET /snippets/{topic}, POST /webhooks/{id} (Idempotency-Key honoured),\n"
	       "GET /healthz, GET /stats, POST /stats/reset. Neither delays nor failures touch\n"
	       "the last three.\n");
}

/* Binds addr:port (numeric, IPv4 or IPv6) and listens. The bound port goes to
 * *bound. -1 with errno (EINVAL for an address that is not numeric). */
static int
s_listen(const char *addr, long port, int *bound)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
	struct addrinfo *ai = NULL;
	char service[16];
	snprintf(service, sizeof service, "%ld", port);
	if (getaddrinfo(addr, service, &hints, &ai) != 0 || ai == NULL) {
		errno = EINVAL;
		return -1;
	}
	int one = 1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		int e = errno;
		close(fd);
		freeaddrinfo(ai);
		errno = e;
		return -1;
	}
	freeaddrinfo(ai);
	*bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
	                                  : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* Written under a temporary name and renamed, so a reader never sees a
 * partial port number. */
static int
s_write_port_file(const char *path, int port)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	int ok = fprintf(f, "%d\n", port) > 0;
	ok = (fflush(f) == 0) && ok;
	ok = (fsync(fileno(f)) == 0) && ok;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

/* A token file's contents with one trailing newline stripped. It must be
 * something a client can send in a header: 1..MS_TOKEN_MAX bytes, no control
 * characters. Caller owns the result; fatal otherwise. */
static char *
s_read_token(const char *opt, const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	if (ahp_read_file(path, MS_TOKEN_MAX, &buf, &len) < 0)
		fatal("%s %s", opt, path);
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if (len == 0)
		fatalx("%s %s: empty token", opt, path);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			fatalx("%s %s: the token has a control character (byte %zu)", opt, path, i);
	return buf;
}

/* Thread-per-connection needs one fd per client; raise the soft limit. */
static void
s_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"listen", required_argument, NULL, 'a'},
	                                     {"port", required_argument, NULL, 'p'},
	                                     {"port-file", required_argument, NULL, 'f'},
	                                     {"wiki-token-file", required_argument, NULL, 'w'},
	                                     {"webhook-token-file", required_argument, NULL, 'b'},
	                                     {"latency-ms", required_argument, NULL, 'l'},
	                                     {"hang-ms", required_argument, NULL, 'g'},
	                                     {"fail-every", required_argument, NULL, 'e'},
	                                     {"fail-status", required_argument, NULL, 'c'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	ms_config_t cfg = {.wiki_token = "wiki-token",
	                   .webhook_token = "webhook-token",
	                   .latency_ms = 0,
	                   .hang_ms = 0,
	                   .fail_every = 0,
	                   .fail_status = 503};
	const char *addr = "127.0.0.1";
	const char *port_file = NULL, *wiki_file = NULL, *webhook_file = NULL;
	long port = 0, v = 0;
	int c;

	ahp_log_init("mock-services", AHP_LOG_INFO);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			if (ahp_parse_long(optarg, 0, 65535, &port) < 0)
				fatalx("--port: expected 0..65535, got '%s'", optarg);
			break;
		case 'f':
			port_file = optarg;
			break;
		case 'w':
			wiki_file = optarg;
			break;
		case 'b':
			webhook_file = optarg;
			break;
		case 'l':
			if (ahp_parse_long(optarg, 0, 600000, &cfg.latency_ms) < 0)
				fatalx("--latency-ms: expected 0..600000, got '%s'", optarg);
			break;
		case 'g':
			if (ahp_parse_long(optarg, 0, 600000, &cfg.hang_ms) < 0)
				fatalx("--hang-ms: expected 0..600000, got '%s'", optarg);
			break;
		case 'e':
			if (ahp_parse_long(optarg, 0, 1000000000, &cfg.fail_every) < 0)
				fatalx("--fail-every: expected a number >= 0, got '%s'", optarg);
			break;
		case 'c':
			if (ahp_parse_long(optarg, 400, 599, &v) < 0)
				fatalx("--fail-status: expected 400..599, got '%s'", optarg);
			cfg.fail_status = (int)v;
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		case 'V':
			printf("mock-services %s\n", AHP_VERSION);
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		s_usage(stderr);
		return 2;
	}
	char *wiki = wiki_file != NULL ? s_read_token("--wiki-token-file", wiki_file) : NULL;
	char *webhook =
	    webhook_file != NULL ? s_read_token("--webhook-token-file", webhook_file) : NULL;
	if (wiki != NULL)
		cfg.wiki_token = wiki;
	if (webhook != NULL)
		cfg.webhook_token = webhook;

	json_object_seed(0);
	s_raise_nofile();

	/* Signals are blocked before any thread starts, so every libmicrohttpd
	 * thread inherits the mask and only sigwait() below sees them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	int bound = 0;
	int fd = s_listen(addr, port, &bound);
	if (fd < 0)
		fatal("listen on %s port %ld", addr, port);
	ms_server_t *srv = ms_server_new(&cfg, fd);
	if (srv == NULL)
		fatalx("cannot start the HTTP server");
	if (port_file != NULL && s_write_port_file(port_file, bound) < 0)
		fatal("write port file %s", port_file);
	log_info("listening addr=%s port=%d latency_ms=%ld hang_ms=%ld fail_every=%ld "
	         "fail_status=%d wiki_token=%s webhook_token=%s",
	         addr, bound, cfg.latency_ms, cfg.hang_ms, cfg.fail_every, cfg.fail_status,
	         wiki != NULL ? "file" : "default", webhook != NULL ? "file" : "default");

	int sig = 0;
	while (sigwait(&set, &sig) != 0)
		;
	log_info("stopping signal=%d", sig);
	ms_server_destroy(&srv);
	/* A stale port file would point the next reader at a dead port. */
	if (port_file != NULL)
		unlink(port_file);
	if (wiki != NULL) {
		explicit_bzero(wiki, strlen(wiki));
		free(wiki);
	}
	if (webhook != NULL) {
		explicit_bzero(webhook, strlen(webhook));
		free(webhook);
	}
	log_info("stopped");
	return 0;
}
