/* Small helpers shared by every daemon: time, ids, status strings, files, bounded strings. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"

int64_t
ahp_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
ahp_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t
ahp_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Fills buf with random bytes. A failing getrandom() leaves us without a
 * source of unique ids: a broken invariant, hence fatal. */
void
ahp_random_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fatal("getrandom");
		p += n;
		len -= (size_t)n;
	}
}

void
ahp_random_id(const char *prefix, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t rnd[8];
	char tail[17];

	if (len == 0)
		return;
	ahp_random_bytes(rnd, sizeof rnd);
	for (size_t i = 0; i < sizeof rnd; i++) {
		tail[2 * i] = hex[rnd[i] >> 4];
		tail[2 * i + 1] = hex[rnd[i] & 0xf];
	}
	tail[16] = '\0';
	snprintf(buf, len, "%s%s", prefix ? prefix : "", tail);
}

/* Indexed by ahp.Status; append here whenever common.proto grows (a unit test
 * checks the table against the generated descriptor). */
static const char *const s_status_names[] = {
    [AHP__STATUS__OK] = "ok",
    [AHP__STATUS__ERR_INTERNAL] = "internal",
    [AHP__STATUS__ERR_BAD_REQUEST] = "bad_request",
    [AHP__STATUS__ERR_NOT_FOUND] = "not_found",
    [AHP__STATUS__ERR_TOO_LARGE] = "too_large",
    [AHP__STATUS__ERR_TIMEOUT] = "timeout",
    [AHP__STATUS__ERR_UNAVAILABLE] = "unavailable",
    [AHP__STATUS__ERR_CONFLICT] = "conflict",
    [AHP__STATUS__ERR_PERMISSION] = "permission",
    [AHP__STATUS__ERR_INVALID_STATE] = "invalid_state",
    [AHP__STATUS__ERR_UNKNOWN_METHOD] = "unknown_method",
    [AHP__STATUS__ERR_LIMIT] = "limit",
    [AHP__STATUS__ERR_CANCELLED] = "cancelled",
    [AHP__STATUS__ERR_INTERRUPTED] = "interrupted",
    [AHP__STATUS__ERR_PERMISSION_DENIED] = "permission_denied",
};

#define STATUS_COUNT ((int)(sizeof s_status_names / sizeof s_status_names[0]))

const char *
ahp_status_str(int status)
{
	if (status < 0 || status >= STATUS_COUNT || s_status_names[status] == NULL)
		return "unknown";
	return s_status_names[status];
}

int
ahp_status_from_str(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < STATUS_COUNT; i++)
		if (s_status_names[i] != NULL && strcmp(s_status_names[i], s) == 0)
			return i;
	return -1;
}

int
ahp_parse_long(const char *s, long min, long max, long *out)
{
	char *end = NULL;
	if (s == NULL || out == NULL)
		return -1;
	/* strtol skips leading blanks and accepts "+"; neither is a number here. */
	if (!((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
		return -1;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
ahp_parse_duration(const char *s, long *seconds)
{
	char num[32];
	long mult = 1;
	long v;

	if (s == NULL || seconds == NULL)
		return -1;
	size_t n = strlen(s);
	if (n == 0 || n >= sizeof num)
		return -1;
	memcpy(num, s, n + 1);
	switch (num[n - 1]) {
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		mult = 0;
	}
	if (mult != 0)
		num[--n] = '\0';
	else
		mult = 1;
	if (ahp_parse_long(num, 0, LONG_MAX / mult, &v) < 0)
		return -1;
	*seconds = v * mult;
	return 0;
}

int
ahp_read_file(const char *path, size_t max, char **buf, size_t *len)
{
	struct stat st;
	char *data = NULL;
	size_t cap, used = 0;

	*buf = NULL;
	if (len)
		*len = 0;
	if (max > SIZE_MAX / 4)
		max = SIZE_MAX / 4; /* keeps max + 1 and cap * 2 from overflowing */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		goto fail;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	/* Size from fstat is a hint only (the file may grow, or be a pipe);
	 * the ceiling is checked against what is actually read. */
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
	if (cap > max + 1)
		cap = max + 1;
	data = malloc(cap + 1);
	if (data == NULL)
		goto fail;
	for (;;) {
		if (used == cap) {
			if (cap > max) {
				errno = EFBIG;
				goto fail;
			}
			size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			char *n = realloc(data, ncap + 1);
			if (n == NULL)
				goto fail;
			data = n;
			cap = ncap;
		}
		ssize_t r = read(fd, data + used, cap - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		used += (size_t)r;
	}
	if (used > max) {
		errno = EFBIG;
		goto fail;
	}
	close(fd);
	data[used] = '\0';
	*buf = data;
	if (len)
		*len = used;
	return 0;
fail:;
	int saved = errno;
	free(data);
	close(fd);
	errno = saved;
	return -1;
}

int
ahp_mkdirs(const char *path, int mode)
{
	char tmp[PATH_MAX];
	struct stat st;

	if (ahp_strlcpy(tmp, path, sizeof tmp) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	size_t n = strlen(tmp);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = '\0';
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, (mode_t)mode) < 0) {
		if (errno != EEXIST)
			return -1;
		if (stat(tmp, &st) < 0)
			return -1;
		if (!S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			return -1;
		}
	}
	return 0;
}

int
ahp_strlcpy(char *dst, const char *src, size_t size)
{
	if (size == 0)
		return -1;
	size_t n = strlen(src);
	if (n >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		return -1;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

const char *
ahp_home(const char *flag)
{
	if (flag != NULL && *flag != '\0')
		return flag;
	const char *env = getenv("AHP_HOME");
	if (env != NULL && *env != '\0')
		return env;
	return "/var/lib/ahp";
}

int
ahp_home_path(const char *home, const char *sub, char *buf, size_t len)
{
	int n;
	if (sub == NULL || *sub == '\0')
		n = snprintf(buf, len, "%s", home);
	else
		n = snprintf(buf, len, "%s/%s", home, sub);
	if (n < 0 || (size_t)n >= len)
		return -1;
	return 0;
}

void
ahp_error_set(Ahp__Error *e, int status, const char *message)
{
	ahp__error__init(e);
	e->status = (Ahp__Status)status;
	/* protobuf-c does not write through these; the cast only drops const. */
	e->message = (char *)(message ? message : "");
}

int
ahp_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
ahp_signalfd_daemon(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}
