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
/* " daemon=NAME", escaped once (made again when the name changes). */
static char s_daemon_pair[sizeof s_daemon * 4 + 16];
static size_t s_daemon_pair_len;
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
	s_daemon_pair_len = 0;
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

/* True for a byte that a logfmt value may hold unquoted and unescaped:
 * printable ASCII but for '"', '=' and '\\'. */
static inline int
s_plain(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
}

/* Length of the plain run at the start of s, at most max; the value is
 * plain as a whole when s[result] is its NUL. */
static size_t
s_plain_len(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;
	while (n < max && s_plain(p[n]))
		n++;
	return n;
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
	/* The usual value (an identifier, a number, a path without spaces)
	 * is copied as it is. */
	size_t plain = s_plain_len(s, len - 1);
	if (plain > 0 && s[plain] == '\0') {
		memcpy(buf, s, plain);
		buf[plain] = '\0';
		return buf;
	}
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

/* The line being built: at most size - 1 bytes in b, always NUL-terminated
 * (size > 0); what does not fit is cut. */
typedef struct {
	char *b;
	size_t size, off;
} s_line_t;

static void
s_put(s_line_t *l, const char *s, size_t n)
{
	size_t room = l->size - 1 - l->off;
	if (n > room)
		n = room;
	memcpy(l->b + l->off, s, n);
	l->off += n;
	l->b[l->off] = '\0';
}

/* The longest escaped value (what ahp_log_escape may write, NUL excluded). */
#define LOG_VALUE_MAX (LOG_MSG_MAX * 4 + 2)

/* Appends " key=value" (value escaped) to the line; stops silently at its
 * end. A key that is not plain (empty, a space, '=' ...) is written as
 * bad_key. A value that needs neither quotes nor escapes (most of them) is
 * copied straight into the line as it is checked, without the escaper. */
static void
s_append_pair(s_line_t *l, const char *key, const char *value)
{
	size_t start = l->off, room = l->size - 1 - l->off;
	char *out = l->b + start;
	size_t n = 0;
	if (room > 0)
		out[n++] = ' ';
	const unsigned char *k = (const unsigned char *)key;
	for (; n < room && s_plain(*k); k++)
		out[n++] = (char)*k;
	/* Not plain, or empty: bad_key. */
	if ((*k != '\0' || *key == '\0') && n < room) {
		l->off = start;
		s_put(l, " bad_key", 8);
		n = l->off - start;
	}
	if (n >= room) { /* no room for the whole key and its '=': the pair is left out */
		l->off = start;
		l->b[start] = '\0';
		return;
	}
	out[n++] = '=';
	l->off = start + n;
	l->b[l->off] = '\0';
	start = l->off;
	room = l->size - 1 - l->off;
	if (room > LOG_VALUE_MAX)
		room = LOG_VALUE_MAX;
	const unsigned char *v = (const unsigned char *)value;
	out = l->b + start;
	n = 0;
	while (n < room && s_plain(v[n])) {
		out[n] = (char)v[n];
		n++;
	}
	if (n > 0 && (v[n] == '\0' || n == room)) {
		/* Plain (cut at the end of the line, like an escaped value). */
		l->off = start + n;
		l->b[l->off] = '\0';
		return;
	}
	/* Escaped into the room left, not cut after: the escaper ends a value
	 * it shortens with its closing quote and never inside an escape or a
	 * UTF-8 sequence (a cut of the escaped text left the last value of a
	 * full line unterminated). */
	char esc[LOG_VALUE_MAX + 1];
	ahp_log_escape(value, esc, room + 1);
	s_put(l, esc, strlen(esc));
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
s_write_line(s_line_t *l, int level)
{
	/* l->size is one short of the buffer (s_emit, ahp_log_kv): the newline
	 * always fits after what was put, never over its last byte */
	char *line = l->b;
	size_t off = l->off;
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

static void
s_head(s_line_t *l, const char *level, const char *run, const char *step)
{
	char ts[40];
	s_timestamp(ts, sizeof ts);
	s_put(l, "ts=", 3);
	s_put(l, ts, strlen(ts));
	s_put(l, " level=", 7);
	s_put(l, level, strlen(level));
	if (s_daemon_pair_len == 0) {
		s_line_t d = {s_daemon_pair, sizeof s_daemon_pair, 0};
		s_append_pair(&d, "daemon", s_daemon_name());
		s_daemon_pair_len = d.off;
	}
	s_put(l, s_daemon_pair, s_daemon_pair_len);
	if (run != NULL)
		s_append_pair(l, "run", run);
	if (step != NULL)
		s_append_pair(l, "step", step);
}

static void
s_emit(int lv, const char *level, const char *run, const char *step, const char *msg)
{
	char line[LOG_LINE_MAX];
	int saved = errno;
	s_line_t l = {line, sizeof line - 1, 0};
	s_head(&l, level, run, step);
	s_append_pair(&l, "msg", msg);
	s_write_line(&l, lv);
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
	s_line_t l = {line, sizeof line - 1, 0};
	s_head(&l, s_level_names[level], run, step);
	s_append_pair(&l, "msg", msg);
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (k == NULL)
			break;
		const char *v = va_arg(ap, const char *);
		/* Keys come from our own code, but keep the line parseable anyway
		 * (s_append_pair writes bad_key for a key that is not plain). */
		s_append_pair(&l, k, v ? v : "");
	}
	va_end(ap);
	s_write_line(&l, level);
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
