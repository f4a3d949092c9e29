/* mock-llm: entry point — options, the loopback listener, the port file, signals. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "mock_llm.h"

static void
s_usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: mock-llm --scenarios DIR [options]\n"
	    "\n"
	    "A scripted OpenAI-compatible model server. The request's \"model\" names a\n"
	    "scenario file DIR/<model>.yaml (a \"provider:\" prefix is ignored); the number of\n"
	    "assistant messages in the request picks the step. Listens on 127.0.0.1 unless\n"
	    "--listen names another address (a container's, for docker compose).\n"
	    "\n"
	    "  --scenarios DIR     directory of <name>.yaml scenarios (required)\n"
	    "  --listen ADDR       numeric IPv4 or IPv6 address (default 127.0.0.1)\n"
	    "  --port N            TCP port, 0 = ephemeral (default 0)\n"
	    "  --port-file PATH    write the bound port here (atomically) once listening\n"
	    "  --latency-ms N      delay added to every chat completion (default 0)\n"
	    "  --fail-every N      every Nth valid chat completion fails (default 0 = never)\n"
	    "  --fail-status S     status of injected failures: 429 (with Retry-After: 1) or 500\n"
	    "  --help, --version\n"
	    "\n"
	    "Endpoints: POST */v1/chat/completions, GET */v1/models, GET /healthz,\n"
	    "GET /stats, POST /stats/reset.\n");
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

/* Reports scenarios that would fail at request time, so a typo shows at
 * start-up rather than mid-run. */
static void
s_check_scenarios(const char *dir)
{
	json_t *names = mock_scenario_list(dir);
	size_t i;
	json_t *n;
	char path[4096];
	char err[512];
	int ok = 0, bad = 0;

	json_array_foreach(names, i, n)
	{
		snprintf(path, sizeof path, "%s/%s.yaml", dir, json_string_value(n));
		mock_scenario_t *sc = mock_scenario_load(path, err, sizeof err);
		if (sc == NULL) {
			log_warn("bad scenario: %s", err);
			bad++;
		} else {
			ok++;
		}
		mock_scenario_destroy(&sc);
	}
	json_decref(names);
	log_info("scenarios dir=%s valid=%d invalid=%d", dir, ok, bad);
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
	static const struct option opts[] = {{"scenarios", required_argument, NULL, 's'},
	                                     {"listen", required_argument, NULL, 'a'},
	                                     {"port", required_argument, NULL, 'p'},
	                                     {"port-file", required_argument, NULL, 'f'},
	                                     {"latency-ms", required_argument, NULL, 'l'},
	                                     {"fail-every", required_argument, NULL, 'e'},
	                                     {"fail-status", required_argument, NULL, 'c'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	mock_config_t cfg = {
	    .scenarios = NULL, .latency_ms = 0, .fail_every = 0, .fail_status = 429};
	const char *port_file = NULL;
	const char *addr = "127.0.0.1";
	long port = 0, v = 0;
	int c;

	ahp_log_init("mock-llm", AHP_LOG_INFO);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			cfg.scenarios = optarg;
			break;
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
		case 'l':
			if (ahp_parse_long(optarg, 0, 600000, &cfg.latency_ms) < 0)
				fatalx("--latency-ms: expected 0..600000, got '%s'", optarg);
			break;
		case 'e':
			if (ahp_parse_long(optarg, 0, 1000000000, &cfg.fail_every) < 0)
				fatalx("--fail-every: expected a number >= 0, got '%s'", optarg);
			break;
		case 'c':
			if (ahp_parse_long(optarg, 400, 599, &v) < 0 || (v != 429 && v != 500))
				fatalx("--fail-status: expected 429 or 500, got '%s'", optarg);
			cfg.fail_status = (int)v;
			break;
		case 'h':
			s_usage(stdout);
			return 0;
		case 'V':
			printf("mock-llm %s\n", AHP_VERSION);
			return 0;
		default:
			s_usage(stderr);
			return 2;
		}
	}
	if (optind != argc || cfg.scenarios == NULL) {
		s_usage(stderr);
		return 2;
	}
	struct stat st;
	if (stat(cfg.scenarios, &st) < 0 || !S_ISDIR(st.st_mode))
		fatalx("--scenarios %s: not a directory", cfg.scenarios);

	json_object_seed(0);
	mock_arena_install();
	s_raise_nofile();
	s_check_scenarios(cfg.scenarios);

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
	mock_server_t *srv = mock_server_new(&cfg, fd);
	if (srv == NULL)
		fatalx("cannot start the HTTP server");
	if (port_file != NULL && s_write_port_file(port_file, bound) < 0)
		fatal("write port file %s", port_file);
	log_info("listening addr=%s port=%d latency_ms=%ld fail_every=%ld fail_status=%d", addr,
	         bound, cfg.latency_ms, cfg.fail_every, cfg.fail_status);

	int sig = 0;
	while (sigwait(&set, &sig) != 0)
		;
	log_info("stopping signal=%d", sig);
	mock_server_destroy(&srv);
	/* A stale port file would point the next reader at a dead port. */
	if (port_file != NULL)
		unlink(port_file);
	log_info("stopped");
	return 0;
}
