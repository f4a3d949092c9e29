/* Untrusted text: the one UTF-8 validator/sanitizer and the one terminal-safe escaper of libahp.
 *
 * Every byte string that comes from the model, a sandboxed command, a file or an upstream
 * server passes through here before it is stored, encoded (JSON, protobuf strings) or shown.
 * Validation follows RFC 3629 (via libunistring's u8_check): overlong forms, surrogates
 * (U+D800..U+DFFF) and code points over U+10FFFF are invalid. */
#ifndef AHP_TEXT_H
#define AHP_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* U+FFFD REPLACEMENT CHARACTER, UTF-8 encoded. */
#define AHP_UTF8_REPLACEMENT "\xef\xbf\xbd"

/* Flags for ahp_utf8_valid / ahp_utf8_sanitize. */
#define AHP_UTF8_ALLOW_NUL 0x1 /* U+0000 is valid (default: it is not; C strings end there) */

/* True when s[0..len) is well-formed UTF-8 (RFC 3629) and, unless flags has
 * AHP_UTF8_ALLOW_NUL, contains no NUL byte. s may be NULL when len is 0. */
bool ahp_utf8_valid(const void *s, size_t len, int flags);

/* Copies s[0..len) into a new NUL-terminated string in which every ill-formed
 * subsequence (as libunistring's u8_mbtouc delimits it: a truncated sequence
 * or an encoded surrogate is one unit, a stray byte is one) and, unless
 * AHP_UTF8_ALLOW_NUL, every NUL byte is replaced by U+FFFD. Caller frees the result. *out_len (may
 * be NULL) gets its length; *changed (may be NULL) is set to true when anything was replaced. NULL
 * only when out of memory or when len > AHP_TEXT_MAX. */
#define AHP_TEXT_MAX ((size_t)256 << 20)
char *ahp_utf8_sanitize(const void *s, size_t len, int flags, size_t *out_len, bool *changed);

/* Length of the longest prefix of the NUL-terminated s that is at most max
 * bytes long and does not end inside a UTF-8 sequence (for cutting text that
 * was valid). Never reads past the terminator. */
size_t ahp_utf8_prefix(const char *s, size_t max);
/* The two printf arguments of "%.*s" that quote at most max bytes of s
 * without cutting a character: printf("%.*s", AHP_UTF8_CUT(s, 64)). s is
 * evaluated twice. */
#define AHP_UTF8_CUT(s, max) (int)ahp_utf8_prefix((s), (max)), (s)

/* True when s (NUL-terminated) has no character but Unicode White_Space
 * (U+0020, U+3000, U+00A0, U+2028, ...): a task, prompt or field that says
 * nothing. Invalid UTF-8 is not blank. */
bool ahp_text_blank(const char *s);

/* Terminal safety (invariant 8). Returns a new NUL-terminated string in which
 * every character a terminal would act on is shown as visible text instead:
 * C0 controls except '\n' and '\t' (and '\t' too with AHP_TERM_ONE_LINE, which
 * also escapes '\n'), DEL, C1 controls (U+0080..U+009F), and so every ESC that
 * could introduce a CSI/OSC/DCS sequence, become "\xHH" (ESC is "\x1b").
 * Invalid UTF-8 is shown as "\xHH" per byte, never passed on. Invisible
 * characters that change what a terminal displays become "\u{XXXX}": the
 * bidirectional controls (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F,
 * U+061C), the line and paragraph separators U+2028, U+2029, and U+FEFF. Caller frees; NULL when
 * out of memory. */
#define AHP_TERM_ONE_LINE 0x1
char *ahp_term_escape(const char *s, size_t len, int flags);

/* printf to f for a terminal: the formatted text (which may quote untrusted
 * names: a file, a profile, a server's message) goes through
 * ahp_term_escape(..., 0), so '\n' and '\t' pass and every other control is
 * shown. For CLI messages. Returns what fputs returns (EOF on error). */
int ahp_term_printf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ahp_term_escape(s, strlen(s), flags) written to f. Returns what fputs returns
 * (EOF on error); s NULL prints nothing. */
int ahp_term_fputs(const char *s, int flags, FILE *f);

#endif
