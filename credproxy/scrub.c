/* credproxy scrubber: streaming redaction of injected secrets that an upstream reflects,
 * raw and in their common encodings (base64 standard and URL-safe, percent-encoding). */
#include "cp.h"

#include <event2/buffer.h>
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MIN_SECRET 8
#define S_PATTERNS_PER_SECRET 12 /* raw, 2 x 3 base64 cores, 4 percent forms, JSON */
#define S_LABEL_MAX 160          /* "[redacted:" NAME "]", NAME at most 128 */

typedef struct {
	uint8_t *bytes;
	size_t len;
	unsigned secret; /* index into names */
} s_pat_t;

struct cp_scrub {
	s_pat_t *pats;
	unsigned n_pats;
	char **names;
	unsigned n_names;
	size_t window; /* the longest pattern */
	uint8_t *hold; /* bytes kept between feeds, then the work buffer */
	size_t hold_len, hold_cap;
	/* The first ctx bytes of hold are the end of the last redaction (already
	 * replaced by its labels), kept so that a secret overlapping it whose end
	 * arrives in the next feed still extends it. labels: who it named. */
	size_t ctx;
	unsigned labels[8], n_labels;
	/* per-pass search state */
	size_t *next; /* next occurrence of each pattern at or after from[] */
	size_t *from;
	size_t *cur; /* s_extend: per pattern, the first occurrence not yet judged */
};

#define S_NONE SIZE_MAX

/* ---- patterns ---- */

static int
s_add(s_pat_t *pats, unsigned *n, const uint8_t *b, size_t len, unsigned secret)
{
	if (len < S_MIN_SECRET)
		return 0;
	for (unsigned i = 0; i < *n; i++)
		if (pats[i].len == len && memcmp(pats[i].bytes, b, len) == 0)
			return 0; /* the same bytes once: e.g. a percent form equal to raw */
	uint8_t *c = malloc(len);
	if (c == NULL)
		return -1;
	memcpy(c, b, len);
	pats[*n] = (s_pat_t){.bytes = c, .len = len, .secret = secret};
	(*n)++;
	return 0;
}

/*
 * A secret inside a longer base64 stream starts at bit 8a of a 24-bit group,
 * a = 0, 1 or 2. Character j of the encoding covers bits [6j, 6j + 6); those
 * that fall wholly inside the secret's bits are the same whatever surrounds
 * it, so they are the pattern for that alignment: encode a zero bytes, the
 * secret and zero fill, keep characters ceil(8a/6) .. floor(8(a+len)/6). At
 * most one character on each side (4 bits of the secret) mixes with its
 * neighbours and is left as it is.
 */
static int
s_add_base64(s_pat_t *pats, unsigned *n, const uint8_t *v, size_t len, unsigned secret)
{
	if (len > SIZE_MAX / 2 - 8)
		return -1;
	size_t raw = (len + 2 + 2) / 3 * 3; /* a <= 2 leading zeros, then fill */
	uint8_t *in = calloc(raw, 1), *enc = malloc(raw / 3 * 4 + 1);
	int rc = in && enc ? 0 : -1;
	for (size_t a = 0; rc == 0 && a < 3; a++) {
		memset(in, 0, raw);
		memcpy(in + a, v, len);
		EVP_EncodeBlock(enc, in, (int)raw);
		size_t start = (8 * a + 5) / 6, end = 8 * (a + len) / 6;
		rc = s_add(pats, n, enc + start, end - start, secret);
		for (size_t i = start; rc == 0 && i < end; i++) {
			if (enc[i] == '+')
				enc[i] = '-';
			else if (enc[i] == '/')
				enc[i] = '_';
		}
		if (rc == 0)
			rc = s_add(pats, n, enc + start, end - start, secret);
	}
	if (in != NULL) {
		explicit_bzero(in, raw);
		free(in);
	}
	if (enc != NULL) {
		explicit_bzero(enc, raw / 3 * 4 + 1);
		free(enc);
	}
	return rc;
}

/* RFC 3986 section 2.3: unreserved bytes stay as they are, the rest %XX,
 * in upper and lower hex; and the same with '/' kept, as path encoders
 * (Python's urllib.parse.quote, JavaScript's encodeURI) write it. */
static int
s_add_percent(s_pat_t *pats, unsigned *n, const uint8_t *v, size_t len, unsigned secret)
{
	static const char up[] = "0123456789ABCDEF", lo[] = "0123456789abcdef";
	uint8_t *enc = malloc(len * 3);
	if (enc == NULL)
		return -1;
	for (int pass = 0; pass < 4; pass++) {
		const char *hex = (pass & 1) ? lo : up;
		size_t o = 0;
		for (size_t i = 0; i < len; i++) {
			uint8_t c = v[i];
			bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			                  (c >= '0' && c <= '9') || c == '-' || c == '.' ||
			                  c == '_' || c == '~' || ((pass & 2) && c == '/');
			if (unreserved) {
				enc[o++] = c;
			} else {
				enc[o++] = '%';
				enc[o++] = (uint8_t)hex[c >> 4];
				enc[o++] = (uint8_t)hex[c & 15];
			}
		}
		if (s_add(pats, n, enc, o, secret) < 0) {
			explicit_bzero(enc, len * 3);
			free(enc);
			return -1;
		}
	}
	explicit_bzero(enc, len * 3);
	free(enc);
	return 0;
}

/* The secret as a JSON string body writes it when '/', '"' or '\\' are
 * escaped (RFC 8259 section 7; many encoders escape '/'). */
static int
s_add_json(s_pat_t *pats, unsigned *n, const uint8_t *v, size_t len, unsigned secret)
{
	uint8_t *enc = malloc(len * 2 + 1);
	if (enc == NULL)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '/' || v[i] == '"' || v[i] == '\\')
			enc[o++] = '\\';
		enc[o++] = v[i];
	}
	int rc = s_add(pats, n, enc, o, secret);
	explicit_bzero(enc, len * 2 + 1);
	free(enc);
	return rc;
}

void
cp_scrub_destroy(cp_scrub_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	cp_scrub_t *self = *self_p;
	*self_p = NULL;
	for (unsigned i = 0; i < self->n_pats; i++) {
		explicit_bzero(self->pats[i].bytes, self->pats[i].len);
		free(self->pats[i].bytes);
	}
	free(self->pats);
	for (unsigned i = 0; i < self->n_names; i++)
		free(self->names[i]);
	free(self->names);
	if (self->hold != NULL) {
		/* Held bytes may be the start of a secret. */
		explicit_bzero(self->hold, self->hold_cap);
		free(self->hold);
	}
	free(self->next);
	free(self->from);
	free(self->cur);
	free(self);
}

cp_scrub_t *
cp_scrub_new(const cp_secret_ref_t *secrets, unsigned n)
{
	cp_scrub_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	if (n > 0) {
		self->names = calloc(n, sizeof *self->names);
		self->pats = calloc((size_t)n * S_PATTERNS_PER_SECRET, sizeof *self->pats);
		if (self->names == NULL || self->pats == NULL)
			goto fail;
	}
	for (unsigned i = 0; i < n; i++) {
		const cp_secret_ref_t *s = &secrets[i];
		if (s->value == NULL || s->len < S_MIN_SECRET)
			continue;
		unsigned idx = self->n_names;
		self->names[idx] = strdup(s->name ? s->name : "secret");
		if (self->names[idx] == NULL)
			goto fail;
		self->n_names++;
		if (s_add(self->pats, &self->n_pats, s->value, s->len, idx) < 0 ||
		    s_add_base64(self->pats, &self->n_pats, s->value, s->len, idx) < 0 ||
		    s_add_percent(self->pats, &self->n_pats, s->value, s->len, idx) < 0 ||
		    s_add_json(self->pats, &self->n_pats, s->value, s->len, idx) < 0)
			goto fail;
	}
	for (unsigned i = 0; i < self->n_pats; i++)
		if (self->pats[i].len > self->window)
			self->window = self->pats[i].len;
	if (self->n_pats > 0) {
		self->next = calloc(self->n_pats, sizeof *self->next);
		self->from = calloc(self->n_pats, sizeof *self->from);
		self->cur = calloc(self->n_pats, sizeof *self->cur);
		if (self->next == NULL || self->from == NULL || self->cur == NULL)
			goto fail;
	}
	return self;
fail:
	cp_scrub_destroy(&self);
	return NULL;
}

/* ---- matching ---- */

/* Where the output goes: an evbuffer or a bounded string. */
typedef struct {
	struct evbuffer *ev;
	char *str;
	size_t cap, len; /* str: cap includes the NUL */
	bool failed;
} s_sink_t;

static void
s_put(s_sink_t *k, const void *b, size_t len)
{
	if (len == 0 || k->failed)
		return;
	if (k->ev != NULL) {
		if (evbuffer_add(k->ev, b, len) < 0)
			k->failed = true;
		return;
	}
	if (k->cap == 0)
		return;
	size_t room = k->cap - 1 - k->len;
	if (len > room)
		len = room;
	memcpy(k->str + k->len, b, len);
	k->len += len;
	k->str[k->len] = '\0';
}

static void
s_put_label(s_sink_t *k, const char *name)
{
	char label[S_LABEL_MAX];
	int n = snprintf(label, sizeof label, "[redacted:%s]", name);
	if (n > 0)
		s_put(k, label, (size_t)n < sizeof label ? (size_t)n : sizeof label - 1);
}

/* Next occurrence of pattern i starting at or after pos; S_NONE if none.
 * Cached: a pattern is searched again only once the cursor passes its last
 * hit, so a pass over n bytes costs O(n) per pattern (memmem is glibc's
 * two-way search, linear). */
static size_t
s_next(cp_scrub_t *self, unsigned i, const uint8_t *buf, size_t len, size_t pos)
{
	if (self->from[i] <= pos && (self->next[i] == S_NONE || self->next[i] >= pos))
		return self->next[i];
	const s_pat_t *p = &self->pats[i];
	size_t r = S_NONE;
	if (pos < len && len - pos >= p->len) {
		const uint8_t *hit = memmem(buf + pos, len - pos, p->bytes, p->len);
		if (hit != NULL)
			r = (size_t)(hit - buf);
	}
	self->from[i] = pos;
	self->next[i] = r;
	return r;
}

/* Grows the region [start, *end) by every occurrence that starts inside it
 * and ends beyond it; a secret not yet named is added to labels and emitted.
 * Each pattern's cursor only moves forward (the region only grows), so a
 * long run of overlapping occurrences costs linear time, not quadratic.
 * Returns the number of labels added. */
static int
s_extend(cp_scrub_t *self, const uint8_t *buf, size_t len, size_t start, size_t *end,
         unsigned *labels, unsigned *nl, s_sink_t *k)
{
	int added = 0;
	for (unsigned i = 0; i < self->n_pats; i++)
		self->cur[i] = start;
	for (bool grew = true; grew;) {
		grew = false;
		for (unsigned i = 0; i < self->n_pats; i++) {
			size_t plen = self->pats[i].len;
			for (;;) {
				size_t at = s_next(self, i, buf, len, self->cur[i]);
				if (at == S_NONE || at >= *end)
					break; /* none, or not reached yet: judged later */
				self->cur[i] = at + 1;
				if (at + plen <= *end)
					continue; /* inside the region already */
				*end = at + plen;
				grew = true;
				unsigned sec = self->pats[i].secret;
				bool seen = false;
				for (unsigned j = 0; j < *nl; j++)
					seen = seen || labels[j] == sec;
				if (!seen) {
					if (*nl < 8)
						labels[(*nl)++] = sec;
					s_put_label(k, self->names[sec]);
					added++;
				}
			}
		}
	}
	return added;
}

/*
 * Scans buf[0, len), whose first ctx bytes close the previous redaction:
 * emits clean bytes and labels to k. Matches starting before limit are taken
 * (leftmost, then longest); an occurrence that starts inside a redaction and
 * ends beyond it extends it (overlapping secrets are all redacted, each named
 * once). Returns where output stopped and sets *rstart to where the last
 * redaction began when it ends there (else to the return value).
 */
static size_t
s_scan(cp_scrub_t *self, const uint8_t *buf, size_t len, size_t limit, size_t ctx, s_sink_t *k,
       int *count, size_t *rstart)
{
	size_t pos = ctx, emitted = ctx;
	for (unsigned i = 0; i < self->n_pats; i++) {
		self->from[i] = SIZE_MAX;
		self->next[i] = S_NONE;
	}
	*rstart = 0;
	if (ctx > 0) {
		size_t end = ctx;
		*count += s_extend(self, buf, len, 0, &end, self->labels, &self->n_labels, k);
		emitted = pos = end;
	}
	while (pos < limit) {
		size_t best = S_NONE, blen = 0;
		unsigned bi = 0;
		for (unsigned i = 0; i < self->n_pats; i++) {
			size_t at = s_next(self, i, buf, len, pos);
			if (at == S_NONE)
				continue;
			if (at < best || (at == best && self->pats[i].len > blen)) {
				best = at;
				blen = self->pats[i].len;
				bi = i;
			}
		}
		if (best == S_NONE || best >= limit)
			break;
		s_put(k, buf + emitted, best - emitted);
		size_t end = best + blen;
		unsigned sec = self->pats[bi].secret;
		self->labels[0] = sec;
		self->n_labels = 1;
		s_put_label(k, self->names[sec]);
		*count +=
		    1 + s_extend(self, buf, len, best + 1, &end, self->labels, &self->n_labels, k);
		emitted = pos = end;
		*rstart = best;
	}
	if (limit > emitted) {
		s_put(k, buf + emitted, limit - emitted);
		emitted = limit;
		*rstart = emitted;
	}
	return emitted;
}

/* Where the bytes that must wait begin: the leftmost position in the last
 * window-1 bytes from which the rest of buf is a proper prefix of a pattern
 * (a match could begin there and end in data not yet seen). Everything
 * before it is final now, so a stream such as SSE is not held back by the
 * scrubber unless its tail could really be the start of a secret. */
static size_t
s_wait_from(const cp_scrub_t *self, const uint8_t *buf, size_t total)
{
	size_t lo = total > self->window - 1 ? total - (self->window - 1) : 0;
	for (size_t p = lo; p < total; p++) {
		size_t rest = total - p;
		for (unsigned i = 0; i < self->n_pats; i++)
			if (self->pats[i].len > rest && self->pats[i].bytes[0] == buf[p] &&
			    memcmp(self->pats[i].bytes, buf + p, rest) == 0)
				return p;
	}
	return total;
}

int
cp_scrub_feed(cp_scrub_t *self, const void *in, size_t len, struct evbuffer *out, bool final)
{
	s_sink_t k = {.ev = out};
	int count = 0;

	if (self == NULL || out == NULL || (in == NULL && len > 0))
		return -1;
	if (self->n_pats == 0) {
		if (len > 0 && evbuffer_add(out, in, len) < 0)
			return -1;
		return 0;
	}
	if (self->hold_len + len > self->hold_cap) {
		size_t need = self->hold_len + len;
		if (need < self->hold_len)
			return -1;
		size_t cap = self->hold_cap ? self->hold_cap : 256;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		uint8_t *b = malloc(cap);
		if (b == NULL)
			return -1;
		if (self->hold != NULL) {
			memcpy(b, self->hold, self->hold_len);
			explicit_bzero(self->hold, self->hold_cap);
			free(self->hold);
		}
		self->hold = b;
		self->hold_cap = cap;
	}
	if (len > 0)
		memcpy(self->hold + self->hold_len, in, len);
	size_t total = self->hold_len + len;
	if (total == 0)
		return 0; /* nothing seen yet: hold may not even exist */
	/* A match could still begin in the last window-1 bytes and end in data
	 * not yet seen: those wait, unless this is the end. */
	size_t limit = final ? total : s_wait_from(self, self->hold, total);
	size_t rstart = 0;
	size_t done = s_scan(self, self->hold, total, limit, self->ctx, &k, &count, &rstart);
	if (k.failed)
		return -1;
	/* Keep up to window-1 bytes of a redaction that ends where output
	 * stopped: an overlapping secret may still extend it. */
	size_t ctx = final ? 0 : done - rstart;
	if (ctx > self->window - 1)
		ctx = self->window - 1;
	size_t keep_from = done - ctx;
	memmove(self->hold, self->hold + keep_from, total - keep_from);
	explicit_bzero(self->hold + (total - keep_from), keep_from);
	self->hold_len = total - keep_from;
	self->ctx = ctx;
	if (final)
		self->n_labels = 0;
	return count;
}

int
cp_scrub_string(const cp_secret_ref_t *secrets, unsigned n, const char *in, size_t len, char *out,
                size_t outlen)
{
	if (out != NULL && outlen > 0)
		out[0] = '\0';
	if (in == NULL)
		return 0;
	cp_scrub_t *self = cp_scrub_new(secrets, n);
	if (self == NULL)
		return 0; /* no memory to search: give nothing back rather than the raw value */
	int count = cp_scrub_apply(self, in, len, out, outlen);
	cp_scrub_destroy(&self);
	return count;
}

void
cp_scrub_reset(cp_scrub_t *self)
{
	if (self == NULL)
		return;
	if (self->hold != NULL)
		explicit_bzero(self->hold, self->hold_len);
	self->hold_len = 0;
	self->ctx = 0;
	self->n_labels = 0;
}

int
cp_scrub_apply(cp_scrub_t *self, const char *in, size_t len, char *out, size_t outlen)
{
	s_sink_t k = {.str = out, .cap = outlen};
	int count = 0;

	if (out != NULL && outlen > 0)
		out[0] = '\0';
	if (self == NULL || in == NULL)
		return 0;
	if (self->n_pats == 0) {
		s_put(&k, in, len);
	} else {
		/* A whole value: every match is complete, nothing is held, and
		 * the stream's held bytes are not touched. */
		size_t rstart;
		s_scan(self, (const uint8_t *)in, len, len, 0, &k, &count, &rstart);
	}
	return count;
}
