/* libahp: the one UTF-8 validator/sanitizer (libunistring) and the one terminal-safe escaper. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unictype.h>
#include <unistr.h>

#include "ahp/text.h"

bool
ahp_utf8_valid(const void *s, size_t len, int flags)
{
	if (len == 0)
		return true;
	if (u8_check(s, len) != NULL)
		return false;
	if (!(flags & AHP_UTF8_ALLOW_NUL) && memchr(s, '\0', len) != NULL)
		return false;
	return true;
}

char *
ahp_utf8_sanitize(const void *src, size_t len, int flags, size_t *out_len, bool *changed)
{
	const uint8_t *s = src;
	if (changed != NULL)
		*changed = false;
	if (len > AHP_TEXT_MAX)
		return NULL;
	/* Each replacement (3 bytes) stands for at least one input byte. */
	char *out = malloc(len * 3 + 1);
	if (out == NULL)
		return NULL;
	/* Linear in len: each pass scans only up to the next problem, and the
	 * next NUL is found once, not again after every replacement before it
	 * (u8_check accepts NUL, so it cannot find it for us). */
	int want_nul = !(flags & AHP_UTF8_ALLOW_NUL);
	size_t next_nul = 0; /* offset of the first NUL at or after i (len: none) */
	int have_nul = 0;
	size_t o = 0, i = 0;
	while (i < len) {
		if (want_nul && (!have_nul || next_nul < i)) {
			const uint8_t *z = memchr(s + i, '\0', len - i);
			next_nul = z != NULL ? (size_t)(z - s) : len;
			have_nul = 1;
		}
		size_t limit = want_nul ? next_nul - i : len - i;
		const uint8_t *bad = u8_check(s + i, limit);
		size_t good = bad != NULL ? (size_t)(bad - (s + i)) : limit;
		memcpy(out + o, s + i, good);
		o += good;
		i += good;
		if (i >= len)
			break;
		/* At an ill-formed sequence or at the NUL. */
		ucs4_t uc;
		int n = s[i] == 0 ? 1 : u8_mbtouc(&uc, s + i, len - i);
		if (n < 1)
			n = 1;
		memcpy(out + o, AHP_UTF8_REPLACEMENT, 3);
		o += 3;
		i += (size_t)n;
		if (changed != NULL)
			*changed = true;
	}
	out[o] = '\0';
	if (out_len != NULL)
		*out_len = o;
	return out;
}

size_t
ahp_utf8_prefix(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	if (n < max)
		return n;
	/* Back off continuation bytes, then drop a lead byte whose sequence
	 * does not fit. */
	size_t i = n;
	while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80 && n - i < 3)
		i--;
	if (i == 0)
		return n;
	unsigned char lead = (unsigned char)s[i - 1];
	size_t need = lead < 0x80             ? 1
	              : (lead & 0xe0) == 0xc0 ? 2
	              : (lead & 0xf0) == 0xe0 ? 3
	              : (lead & 0xf8) == 0xf0 ? 4
	                                      : 1;
	if (lead >= 0x80 && (n - (i - 1)) < need)
		return i - 1;
	return n;
}

static size_t
s_put(char *out, size_t o, const char *s, size_t n)
{
	memcpy(out + o, s, n);
	return o + n;
}

static size_t
s_hex(char *out, size_t o, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	out[o++] = '\\';
	out[o++] = 'x';
	out[o++] = hex[c >> 4];
	out[o++] = hex[c & 15];
	return o;
}

/* Characters a terminal does not show but that change what it shows: bidi
 * embeddings, overrides, isolates and marks (reorder a line), the line and
 * paragraph separators (a line break to some terminals), the BOM / zero
 * width no-break space. */
static bool
s_invisible(ucs4_t uc)
{
	return (uc >= 0x202a && uc <= 0x202e) || (uc >= 0x2066 && uc <= 0x2069) || uc == 0x200e ||
	       uc == 0x200f || uc == 0x061c || uc == 0x2028 || uc == 0x2029 || uc == 0xfeff;
}

char *
ahp_term_escape(const char *src, size_t len, int flags)
{
	const uint8_t *s = (const uint8_t *)src;
	if (len > AHP_TEXT_MAX)
		return NULL;
	/* Worst case: every byte becomes "\xHH" (4 bytes); a 3-byte bidi
	 * control becomes "\u{XXXX}" (8 bytes < 12). */
	char *out = malloc(len * 4 + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < len;) {
		uint8_t c = s[i];
		if (c < 0x80) {
			bool keep = c >= 0x20 && c != 0x7f;
			if (c == '\n' || c == '\t')
				keep = !(flags & AHP_TERM_ONE_LINE);
			if (keep)
				out[o++] = (char)c;
			else
				o = s_hex(out, o, c);
			i++;
			continue;
		}
		ucs4_t uc;
		int n = u8_mbtoucr(&uc, s + i, len - i);
		if (n < 1) {
			/* Invalid or truncated: show the byte, never pass it on. */
			o = s_hex(out, o, c);
			i++;
			continue;
		}
		if (uc >= 0x80 && uc <= 0x9f) {
			/* C1 controls (CSI is U+009B): show the code point's bytes. */
			for (int k = 0; k < n; k++)
				o = s_hex(out, o, s[i + k]);
		} else if (s_invisible(uc)) {
			char b[16];
			int m = snprintf(b, sizeof b, "\\u{%04x}", (unsigned)uc);
			o = s_put(out, o, b, (size_t)m);
		} else {
			o = s_put(out, o, (const char *)s + i, (size_t)n);
		}
		i += (size_t)n;
	}
	out[o] = '\0';
	return out;
}

int
ahp_term_fputs(const char *s, int flags, FILE *f)
{
	if (s == NULL)
		return 0;
	char *e = ahp_term_escape(s, strlen(s), flags);
	if (e == NULL)
		return EOF;
	int rc = fputs(e, f);
	free(e);
	return rc;
}

int
ahp_term_printf(FILE *f, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return EOF;
	int rc = ahp_term_fputs(text, 0, f);
	free(text);
	return rc;
}

bool
ahp_text_blank(const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s);
	while (n > 0) {
		ucs4_t uc;
		int k = u8_mbtoucr(&uc, p, n);
		if (k < 1 || !uc_is_property_white_space(uc))
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}
