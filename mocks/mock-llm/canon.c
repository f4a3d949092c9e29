/* mock-llm: canonical JSON of a conversation and its SHA-256 fingerprint. */
#include <math.h>
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
s_put_string(mock_buf_t *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0; /* start of the pending unescaped run */

	if (mock_buf_put(out, "\"", 1) < 0)
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
		if (mock_buf_put(out, s + run, i - run) < 0 || mock_buf_put(out, esc, n) < 0)
			return -1;
		run = i + 1;
	}
	if (mock_buf_put(out, s + run, len - run) < 0)
		return -1;
	return mock_buf_put(out, "\"", 1);
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

int
mock_canon_dump(const json_t *v, mock_buf_t *out)
{
	char num[48];

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v);
		s_member_t *m = calloc(n ? n : 1, sizeof *m);
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
		rc = mock_buf_put(out, "{", 1);
		for (size_t k = 0; rc == 0 && k < i; k++) {
			if (k > 0)
				rc = mock_buf_put(out, ",", 1);
			if (rc == 0)
				rc = s_put_string(out, m[k].key, m[k].len);
			if (rc == 0)
				rc = mock_buf_put(out, ":", 1);
			if (rc == 0)
				rc = mock_canon_dump(m[k].value, out);
		}
		free(m);
		return rc == 0 ? mock_buf_put(out, "}", 1) : -1;
	}
	case JSON_ARRAY: {
		if (mock_buf_put(out, "[", 1) < 0)
			return -1;
		for (size_t k = 0; k < json_array_size(v); k++) {
			if (k > 0 && mock_buf_put(out, ",", 1) < 0)
				return -1;
			if (mock_canon_dump(json_array_get(v, k), out) < 0)
				return -1;
		}
		return mock_buf_put(out, "]", 1);
	}
	case JSON_STRING:
		return s_put_string(out, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return mock_buf_puts(out, num);
	case JSON_REAL:
		mock_format_real(json_real_value(v), num, sizeof num);
		return mock_buf_puts(out, num);
	case JSON_TRUE:
		return mock_buf_puts(out, "true");
	case JSON_FALSE:
		return mock_buf_puts(out, "false");
	case JSON_NULL:
		return mock_buf_puts(out, "null");
	}
	return -1;
}

int
mock_fingerprint(const json_t *messages, char hex[65], size_t *canon_len)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	mock_buf_t b;

	mock_buf_init(&b, MOCK_CANON_MAX);
	if (mock_canon_dump(messages, &b) < 0) {
		mock_buf_free(&b);
		return -1;
	}
	if (EVP_Digest(b.data, b.len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		mock_buf_free(&b);
		return -1;
	}
	for (unsigned int i = 0; i < mdlen; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[64] = '\0';
	if (canon_len != NULL)
		*canon_len = b.len;
	mock_buf_free(&b);
	return 0;
}
