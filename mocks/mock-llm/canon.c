/* mock-llm: canonical JSON and the SHA-256 fingerprint of a place in a conversation. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "mock_llm.h"

/* jansson's json_dumps(JSON_COMPACT|JSON_SORT_KEYS) differs from Python's
 * json.dumps(sort_keys=True, separators=(',',':'), ensure_ascii=False) in two
 * places: control characters are \u001B (Python: \u001b) and reals are
 * printed with 17 digits (Python: shortest repr). Tests compute fingerprints
 * in Python, so this serializer follows Python byte for byte. */

typedef struct {
	const char *key;
	size_t len;
	json_t *value;
} s_member_t;

/* Where canonical bytes go: a buffer (mock_canon_dump), or straight into a
 * SHA-256 context through a small staging buffer (mock_fingerprint), so a
 * fingerprint never holds a copy of the conversation. */
typedef struct {
	mock_buf_t *buf; /* or */
	EVP_MD_CTX *md;  /* ... this */
	size_t total;    /* bytes so far, at most max */
	size_t max;
	size_t n; /* staged bytes */
	char stage[8192];
} s_sink_t;

static int
s_flush(s_sink_t *k)
{
	if (k->n > 0 && EVP_DigestUpdate(k->md, k->stage, k->n) != 1)
		return -1;
	k->n = 0;
	return 0;
}

static int
s_put(s_sink_t *k, const void *p, size_t len)
{
	if (k->buf != NULL)
		return mock_buf_put(k->buf, p, len);
	if (len > k->max - k->total)
		return -1;
	k->total += len;
	if (len > sizeof k->stage - k->n) {
		if (s_flush(k) < 0)
			return -1;
		if (len > sizeof k->stage)
			return EVP_DigestUpdate(k->md, p, len) == 1 ? 0 : -1;
	}
	memcpy(k->stage + k->n, p, len);
	k->n += len;
	return 0;
}

static int
s_puts(s_sink_t *k, const char *str)
{
	return s_put(k, str, strlen(str));
}

static int
s_member_cmp(const void *a, const void *b)
{
	const s_member_t *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key, y->key, n);
	if (c != 0)
		return c;
	return (x->len > y->len) - (x->len < y->len);
}

static int
s_put_string(s_sink_t *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0; /* start of the pending unescaped run */

	if (s_put(out, "\"", 1) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t n = 0;
		if (c == '"' || c == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)c;
		} else if (c < 0x20) {
			esc[n++] = '\\';
			switch (c) {
			case '\b':
				esc[n++] = 'b';
				break;
			case '\f':
				esc[n++] = 'f';
				break;
			case '\n':
				esc[n++] = 'n';
				break;
			case '\r':
				esc[n++] = 'r';
				break;
			case '\t':
				esc[n++] = 't';
				break;
			default:
				esc[n++] = 'u';
				esc[n++] = '0';
				esc[n++] = '0';
				esc[n++] = hex[c >> 4];
				esc[n++] = hex[c & 0xf];
			}
		} else {
			continue;
		}
		if (s_put(out, s + run, i - run) < 0 || s_put(out, esc, n) < 0)
			return -1;
		run = i + 1;
	}
	if (s_put(out, s + run, len - run) < 0)
		return -1;
	return s_put(out, "\"", 1);
}

/* Enough for the longest padding repr() uses: up to 16 integer digits. */
static const char s_zeros[] = "0000000000000000";

void
mock_format_real(double d, char *buf, size_t len)
{
	char tmp[40];
	char digits[24];
	size_t nd = 0;
	int exp10 = 0;
	const char *sign = signbit(d) ? "-" : "";

	if (!isfinite(d)) {
		/* jansson never decodes these; Python would print Infinity/NaN. */
		snprintf(buf, len, "%s", isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
		return;
	}
	if (d == 0) {
		snprintf(buf, len, "%s0.0", sign);
		return;
	}
	/* Shortest digit string that reads back as the same double, like
	 * Python's repr(). */
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*e", prec - 1, fabs(d));
		if (strtod(tmp, NULL) == fabs(d))
			break;
	}
	char *e = strchr(tmp, 'e');
	if (e == NULL) {
		snprintf(buf, len, "%.17g", d);
		return;
	}
	exp10 = (int)strtol(e + 1, NULL, 10);
	for (const char *p = tmp; p < e && nd < sizeof digits - 1; p++)
		if (*p >= '0' && *p <= '9')
			digits[nd++] = *p;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';
	int decpt = exp10 + 1; /* value = 0.DIGITS x 10^decpt */

	if (decpt <= -4 || decpt > 16) {
		int x = decpt - 1;
		snprintf(buf, len, "%s%c%s%se%c%02d", sign, digits[0], nd > 1 ? "." : "",
		         digits + 1, x < 0 ? '-' : '+', x < 0 ? -x : x);
	} else if (decpt <= 0) {
		snprintf(buf, len, "%s0.%.*s%s", sign, -decpt, s_zeros, digits);
	} else if ((size_t)decpt >= nd) {
		snprintf(buf, len, "%s%s%.*s.0", sign, digits, decpt - (int)nd, s_zeros);
	} else {
		snprintf(buf, len, "%s%.*s.%s", sign, decpt, digits, digits + decpt);
	}
}

/* Members sorted by key, as Python's sort_keys (code point order is byte
 * order in UTF-8). Most objects are small: sorted on the stack. */
#define S_SMALL_OBJECT 16

static int
s_dump(const json_t *v, s_sink_t *out)
{
	char num[48];

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v);
		s_member_t small[S_SMALL_OBJECT];
		s_member_t *m = n <= S_SMALL_OBJECT ? small : calloc(n, sizeof *m);
		size_t i = 0;
		int rc = 0;
		if (m == NULL)
			return -1;
		for (void *it = json_object_iter((json_t *)v); it != NULL && i < n;
		     it = json_object_iter_next((json_t *)v, it)) {
			m[i].key = json_object_iter_key(it);
			m[i].len = json_object_iter_key_len(it);
			m[i].value = json_object_iter_value(it);
			i++;
		}
		qsort(m, i, sizeof *m, s_member_cmp);
		rc = s_put(out, "{", 1);
		for (size_t k = 0; rc == 0 && k < i; k++) {
			if (k > 0)
				rc = s_put(out, ",", 1);
			if (rc == 0)
				rc = s_put_string(out, m[k].key, m[k].len);
			if (rc == 0)
				rc = s_put(out, ":", 1);
			if (rc == 0)
				rc = s_dump(m[k].value, out);
		}
		if (m != small)
			free(m);
		return rc == 0 ? s_put(out, "}", 1) : -1;
	}
	case JSON_ARRAY: {
		if (s_put(out, "[", 1) < 0)
			return -1;
		for (size_t k = 0; k < json_array_size(v); k++) {
			if (k > 0 && s_put(out, ",", 1) < 0)
				return -1;
			if (s_dump(json_array_get(v, k), out) < 0)
				return -1;
		}
		return s_put(out, "]", 1);
	}
	case JSON_STRING:
		return s_put_string(out, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return s_puts(out, num);
	case JSON_REAL:
		mock_format_real(json_real_value(v), num, sizeof num);
		return s_puts(out, num);
	case JSON_TRUE:
		return s_puts(out, "true");
	case JSON_FALSE:
		return s_puts(out, "false");
	case JSON_NULL:
		return s_puts(out, "null");
	}
	return -1;
}

int
mock_canon_dump(const json_t *v, mock_buf_t *out)
{
	s_sink_t k = {.buf = out};
	return s_dump(v, &k);
}

int
mock_fingerprint(const json_t *messages, char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t n = json_array_size(messages), head = n;
	char count[32];
	s_sink_t *k = malloc(sizeof *k);
	int rc = -1;

	if (k == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *role =
		    json_string_value(json_object_get(json_array_get(messages, i), "role"));
		if (role != NULL && strcmp(role, "user") == 0) {
			head = i + 1;
			break;
		}
	}
	memset(k, 0, offsetof(s_sink_t, stage));
	k->max = MOCK_CANON_MAX;
	k->md = EVP_MD_CTX_new();
	if (k->md == NULL || EVP_DigestInit_ex(k->md, EVP_sha256(), NULL) != 1)
		goto out;
	/* [head, n] */
	if (s_put(k, "[[", 2) < 0)
		goto out;
	for (size_t i = 0; i < head; i++)
		if ((i > 0 && s_put(k, ",", 1) < 0) || s_dump(json_array_get(messages, i), k) < 0)
			goto out;
	snprintf(count, sizeof count, "],%zu]", n);
	if (s_puts(k, count) < 0 || s_flush(k) < 0)
		goto out;
	if (EVP_DigestFinal_ex(k->md, md, &mdlen) != 1 || mdlen != 32)
		goto out;
	for (unsigned int i = 0; i < mdlen; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[64] = '\0';
	rc = 0;
out:
	EVP_MD_CTX_free(k->md);
	free(k);
	return rc;
}
