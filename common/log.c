/* logfmt logging to stderr: one line per event, untrusted text escaped. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <unistr.h>

#include "ahp/log.h"

/* A line is written with one write(2) so that lines from several processes
 * sharing a log file do not interleave. The message is capped: a log line is
 * for humans, not a transport. */
#define LOG_MSG_MAX 4096
#define LOG_LINE_MAX (LOG_MSG_MAX * 4 + 1024)

static char s_daemon[64] = "";
static int s_level = AHP_LOG_INFO;

static const char *const s_level_names[] = {"debug", "info", "warn", "error"};

int
ahp_log_level_parse(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, s_level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return AHP_LOG_WARN;
	return -1;
}

static int
s_level_from_env(int fallback)
{
	const char *v = getenv("AHP_LOG_LEVEL");
	int l = v != NULL && *v != '\0' ? ahp_log_level_parse(v) : -1;
	return l < 0 ? fallback : l;
}

void
ahp_log_init(const char *daemon, int level)
{
	snprintf(s_daemon, sizeof s_daemon, "%s", daemon ? daemon : "ahp");
	if (level < AHP_LOG_DEBUG)
		level = AHP_LOG_DEBUG;
	if (level > AHP_LOG_ERROR)
		level = AHP_LOG_ERROR;
	s_level = s_level_from_env(level);
}

static const char *
s_daemon_name(void)
{
	if (s_daemon[0] == '\0')
		snprintf(s_daemon, sizeof s_daemon, "%s", program_invocation_short_name);
	return s_daemon;
}

/* True when a logfmt value must be quoted. */
static int
s_needs_quote(const char *s)
{
	if (*s == '\0')
		return 1;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			return 1;
	return 0;
}

char *
ahp_log_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (len == 0)
		return buf;
	if (s == NULL)
		s = "";
	int quote = s_needs_quote(s);
	/* Room kept at the end for the closing quote and the NUL. */
	size_t limit = len - 1 - (quote ? 1 : 0);
	if (quote) {
		if (len < 3) {
			buf[0] = '\0';
			return buf;
		}
		buf[o++] = '"';
	}
	const unsigned char *end = (const unsigned char *)s + strlen(s);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[16];
		size_t n = 0;
		if (*p >= 0x80) {
			/* Valid UTF-8 passes (C1 controls excepted); anything else is
			 * shown byte by byte, so a log line is always valid UTF-8. */
			ucs4_t uc;
			int k = u8_mbtoucr(&uc, p, (size_t)(end - p));
			if (k > 0 && uc > 0x9f) {
				memcpy(esc, p, (size_t)k);
				n = (size_t)k;
			} else {
				k = k > 0 ? k : 1;
				for (int j = 0; j < k; j++) {
					esc[n++] = '\\';
					esc[n++] = 'x';
					esc[n++] = hex[p[j] >> 4];
					esc[n++] = hex[p[j] & 0xf];
				}
			}
			if (o + n > limit)
				break;
			memcpy(buf + o, esc, n);
			o += n;
			p += k - 1;
			continue;
		}
		switch (*p) {
		case '"':
			esc[n++] = '\\';
			esc[n++] = '"';
			break;
		case '\\':
			esc[n++] = '\\';
			esc[n++] = '\\';
			break;
		case '\n':
			esc[n++] = '\\';
			esc[n++] = 'n';
			break;
		case '\r':
			esc[n++] = '\\';
			esc[n++] = 'r';
			break;
		case '\t':
			esc[n++] = '\\';
			esc[n++] = 't';
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				esc[n++] = '\\';
				esc[n++] = 'x';
				esc[n++] = hex[*p >> 4];
				esc[n++] = hex[*p & 0xf];
			} else {
				esc[n++] = (char)*p;
			}
		}
		if (o + n > limit)
			break; /* truncated, but never in the middle of an escape */
		memcpy(buf + o, esc, n);
		o += n;
	}
	if (quote)
		buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static void
s_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	/* The seconds' text is made once per second (lines come by the
	 * thousand per second from credproxy). Per thread: no lock. */
	static _Thread_local time_t last = (time_t)-1;
	static _Thread_local char sec[32];
	static _Thread_local size_t sec_len;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		gmtime_r(&ts.tv_sec, &tm);
		sec_len = strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &tm);
		last = ts.tv_sec;
	}
	int ms = (int)(ts.tv_nsec / 1000000) % 1000;
	char tail[6] = {
	    '.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z',
	    '\0'};
	if (len == 0)
		return;
	size_t n = sec_len < len - 1 ? sec_len : len - 1;
	memcpy(buf, sec, n);
	size_t t = sizeof tail < len - n ? sizeof tail : len - n;
	memcpy(buf + n, tail, t);
	buf[n + t - 1] = '\0';
}

/* Appends " key=value" (value escaped) to line at *off; stops silently at
 * the end of the buffer. */
static void
s_append_pair(char *line, size_t size, size_t *off, const char *key, const char *value)
{
	char esc[LOG_MSG_MAX * 4 + 3];
	if (*off >= size)
		return;
	ahp_log_escape(value, esc, sizeof esc);
	/* What snprintf(line + *off, size - *off, " %s=%s", key, esc) wrote,
	 * without its cost (credproxy writes a line per request). */
	const char *parts[4] = {" ", key, "=", esc};
	size_t room = size - *off - 1, o = *off;
	for (int i = 0; i < 4 && room > 0; i++) {
		size_t n = strlen(parts[i]);
		if (n > room)
			n = room;
		memcpy(line + o, parts[i], n);
		o += n;
		room -= n;
	}
	line[o] = '\0';
	*off = o;
}

static void
s_write_all(const char *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(STDERR_FILENO, buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += (size_t)w;
	}
}

/* Held lines (ahp_log_hold): info and debug lines wait here for
 * ahp_log_flush; a warning or an error flushes them first, so order holds. */
static char s_held[64 * 1024];
static size_t s_held_len;
static int s_holding;

void
ahp_log_hold(int on)
{
	if (!on)
		ahp_log_flush();
	s_holding = on;
}

void
ahp_log_flush(void)
{
	int saved = errno;
	if (s_held_len > 0)
		s_write_all(s_held, s_held_len);
	s_held_len = 0;
	errno = saved;
}

static void
s_write_line(char *line, size_t off, size_t size, int level)
{
	if (off >= size - 1)
		off = size - 2;
	line[off++] = '\n';
	if (s_holding && level <= AHP_LOG_INFO) {
		if (s_held_len + off > sizeof s_held)
			ahp_log_flush();
		if (off <= sizeof s_held) {
			memcpy(s_held + s_held_len, line, off);
			s_held_len += off;
			return;
		}
	}
	ahp_log_flush();
	s_write_all(line, off);
}

static size_t
s_head(char *line, size_t size, const char *level, const char *run, const char *step)
{
	char ts[40];
	size_t off = 0;
	s_timestamp(ts, sizeof ts);
	int n = snprintf(line, size, "ts=%s level=%s", ts, level);
	off = n > 0 ? (size_t)n : 0;
	s_append_pair(line, size, &off, "daemon", s_daemon_name());
	if (run != NULL)
		s_append_pair(line, size, &off, "run", run);
	if (step != NULL)
		s_append_pair(line, size, &off, "step", step);
	return off;
}

static void
s_emit(int lv, const char *level, const char *run, const char *step, const char *msg)
{
	char line[LOG_LINE_MAX];
	int saved = errno;
	size_t off = s_head(line, sizeof line, level, run, step);
	s_append_pair(line, sizeof line, &off, "msg", msg);
	s_write_line(line, off, sizeof line, lv);
	errno = saved;
}

void
ahp_vlog(int level, const char *run, const char *step, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	if (level < s_level)
		return;
	if (level < AHP_LOG_DEBUG || level > AHP_LOG_ERROR)
		level = AHP_LOG_ERROR;
	vsnprintf(msg, sizeof msg, fmt, ap);
	s_emit(level, s_level_names[level], run, step, msg);
}

void
ahp_log(int level, const char *run, const char *step, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ahp_vlog(level, run, step, fmt, ap);
	va_end(ap);
}

void
ahp_log_kv(int level, const char *run, const char *step, const char *msg, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	if (level < s_level)
		return;
	if (level < AHP_LOG_DEBUG || level > AHP_LOG_ERROR)
		level = AHP_LOG_ERROR;
	int saved = errno;
	size_t off = s_head(line, sizeof line, s_level_names[level], run, step);
	s_append_pair(line, sizeof line, &off, "msg", msg);
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (k == NULL)
			break;
		const char *v = va_arg(ap, const char *);
		/* Keys come from our own code, but keep the line parseable anyway. */
		if (s_needs_quote(k))
			k = "bad_key";
		s_append_pair(line, sizeof line, &off, k, v ? v : "");
	}
	va_end(ap);
	s_write_line(line, off, sizeof line, level);
	errno = saved;
}

int
ahp_log_enabled(int level)
{
	return level >= s_level;
}

static void __attribute__((noreturn)) s_vfatal(int with_errno, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	int saved = errno;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (with_errno) {
		size_t n = strlen(msg);
		snprintf(msg + n, sizeof msg - n, ": %s", strerror(saved));
	}
	s_emit(AHP_LOG_ERROR, "fatal", NULL, NULL, msg);
	exit(1);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_vfatal(1, fmt, ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_vfatal(0, fmt, ap);
}
