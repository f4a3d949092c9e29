/* Small helpers shared by every daemon: time, ids, files, bounded strings. */
#ifndef AHP_UTIL_H
#define AHP_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "common.pb-c.h"

int64_t ahp_now_ms(void);  /* CLOCK_REALTIME, ms */
int64_t ahp_mono_ms(void); /* CLOCK_MONOTONIC, ms */
uint64_t ahp_mono_us(void);

/* Random id: `prefix` + 16 lowercase hex chars from getrandom(). buf >= strlen(prefix)+17. */
void ahp_random_id(const char *prefix, char *buf, size_t len);

/* Fills buf with len bytes from getrandom() (fatal if the kernel refuses). */
void ahp_random_bytes(void *buf, size_t len);

/* String for an ahp.Status value ("ERR_NOT_FOUND" -> "not_found"). Never NULL;
 * "unknown" for values outside the enum. */
const char *ahp_status_str(int status);
/* Inverse of ahp_status_str: the status value, -1 when s is not a status name. */
int ahp_status_from_str(const char *s);

/* Parses a decimal integer in [min,max]; whole string must be consumed. 0 / -1. */
int ahp_parse_long(const char *s, long min, long max, long *out);

/* Parses "30s", "15m", "24h", "7d" or a bare number of seconds. 0 / -1. */
int ahp_parse_duration(const char *s, long *seconds);

/* Reads a whole file, at most max bytes (-1 with errno=EFBIG when larger).
 * Caller owns *buf (NUL-terminated). */
int ahp_read_file(const char *path, size_t max, char **buf, size_t *len);

/* Writes all len bytes of buf to fd, retrying short writes and EINTR.
 * 0, or -1 with errno when a write fails or writes nothing. */
int ahp_write_all(int fd, const void *buf, size_t len);

/* mkdir -p with mode. 0 / -1. */
int ahp_mkdirs(const char *path, int mode);

/* Bounded copy, always terminates; returns -1 if truncated. */
int ahp_strlcpy(char *dst, const char *src, size_t size);

/* AHP_HOME resolution for CLIs: --home value if non-NULL, else $AHP_HOME,
 * else /var/lib/ahp. Writes "<home>/<sub>" into buf. */
const char *ahp_home(const char *flag);
int ahp_home_path(const char *home, const char *sub, char *buf, size_t len);

/* A daemon's signals as one fd for its event loop: blocks SIGTERM, SIGINT and
 * SIGHUP in the calling thread (call it before any thread starts, so every
 * thread inherits the mask), ignores SIGPIPE (a peer's close is an EPIPE, not
 * a death), and returns a signalfd(2) (SFD_NONBLOCK | SFD_CLOEXEC) that
 * reads struct signalfd_siginfo records for them. -1 with errno. */
int ahp_signalfd_daemon(void);

/* ahp.Error helpers: fills a stack Error (message copied into a static
 * per-thread buffer is NOT done: caller keeps the strings alive). */
void ahp_error_set(Ahp__Error *e, int status, const char *message);

#endif
