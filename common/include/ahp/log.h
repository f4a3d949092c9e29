/* logfmt logging to stderr: one line per event, untrusted text escaped. */
#ifndef AHP_LOG_H
#define AHP_LOG_H

#include <stdarg.h>

enum ahp_log_level { AHP_LOG_DEBUG = 0, AHP_LOG_INFO, AHP_LOG_WARN, AHP_LOG_ERROR };

/* Sets the daemon= field and the minimum level. Level also read from
 * AHP_LOG_LEVEL (debug|info|warn|error) when set. */
void ahp_log_init(const char *daemon, int level);

/* The level named by s: "debug", "info", "warn" (or "warning") or "error",
 * any case; the names of the log_level config key and AHP_LOG_LEVEL.
 * Returns the AHP_LOG_* value, or -1 when s is NULL or none of them. */
int ahp_log_level_parse(const char *s);

/* Writes `ts=... level=... daemon=... [run=...] [step=...] msg="..."` then any
 * extra pairs. run/step may be NULL. The formatted message is escaped. */
void ahp_log(int level, const char *run, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void ahp_vlog(int level, const char *run, const char *step, const char *fmt, va_list ap);

/* Structured variant: msg is used as is (escaped), followed by key/value
 * pairs given as const char * arguments and ended by NULL:
 *   ahp_log_kv(AHP_LOG_INFO, run, NULL, "model call", "status", "ok", NULL);
 * Values are escaped; keys must be plain identifiers. */
void ahp_log_kv(int level, const char *run, const char *step, const char *msg, ...)
    __attribute__((sentinel));

/* With on, info and debug lines are held in memory (64 KiB at most) until
 * ahp_log_flush, a warning or an error, or ahp_log_hold(0): for a daemon
 * that logs a line per request and flushes on a timer, one write instead of
 * one per line. Off by default. */
void ahp_log_hold(int on);
void ahp_log_flush(void);

/* True when a line at level would be written (skip costly formatting). */
int ahp_log_enabled(int level);

/* Escapes s for a logfmt value into buf (always NUL-terminated, quoted when
 * needed, control bytes as \xNN). Returns buf. */
char *ahp_log_escape(const char *s, char *buf, size_t len);

#define log_debug(...) ahp_log(AHP_LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define log_info(...) ahp_log(AHP_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_warn(...) ahp_log(AHP_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define log_error(...) ahp_log(AHP_LOG_ERROR, NULL, NULL, __VA_ARGS__)

/* Setup failures and broken invariants only. fatal() appends strerror(errno). */
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fatalx(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
