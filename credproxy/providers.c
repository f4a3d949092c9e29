/* credproxy providers.conf: the model-provider routes (/providers/<name>/...), one line
 * each: NAME BASE-URL AUTH [SECRET]. */
#include "cp.h"
#include "ahp/util.h"

#include <http_parser.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_MAX_FILE (64 * 1024)
#define S_MAX_PROVIDERS 256
#define S_MAX_URL 2048
#define S_MAX_NAME 64

struct cp_providers {
	cp_provider_t *items;
	size_t n;
};

static void
s_free_one(cp_provider_t *p)
{
	free(p->name);
	free(p->scheme);
	free(p->host);
	free(p->base_path);
	free(p->header);
	free(p->secret);
}

void
cp_providers_destroy(cp_providers_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	cp_providers_t *self = *self_p;
	*self_p = NULL;
	for (size_t i = 0; i < self->n; i++)
		s_free_one(&self->items[i]);
	free(self->items);
	free(self);
}

const cp_provider_t *
cp_providers_find(const cp_providers_t *self, const char *name)
{
	for (size_t i = 0; self && name && i < self->n; i++)
		if (strcmp(self->items[i].name, name) == 0)
			return &self->items[i];
	return NULL;
}

size_t
cp_providers_count(const cp_providers_t *self)
{
	return self ? self->n : 0;
}

const cp_provider_t *
cp_providers_at(const cp_providers_t *self, size_t i)
{
	return self && i < self->n ? &self->items[i] : NULL;
}

typedef struct {
	const char *path;
	size_t line;
	char *err;
	size_t errlen;
} s_ctx_t;

static int __attribute__((format(printf, 2, 3))) s_fail(s_ctx_t *c, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s:%zu: %s", c->path, c->line, msg);
	return -1;
}

/* Copies untrusted text into a message: printable ASCII, at most 60 bytes. */
static const char *
s_q(const char *s, size_t len, char *buf, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 4 < cap && o < 60; i++) {
		unsigned char ch = (unsigned char)s[i];
		buf[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	if (len > o)
		memcpy(buf + o, "...", 3), o += 3;
	buf[o] = '\0';
	return buf;
}

static char *
s_ndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d != NULL) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static bool
s_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > S_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
			return false;
	}
	return true;
}

/* BASE-URL: http or https, a host, optional port and path; no userinfo,
 * query or fragment (parsed by http-parser, the proxy's own URL parser). */
static int
s_parse_url(s_ctx_t *c, const char *url, size_t len, cp_provider_t *p)
{
	struct http_parser_url u;
	char q[80], host[CP_HOST_MAX + 1], hostbuf[CP_HOST_MAX + 3];
	const char *why = NULL;

	if (len > S_MAX_URL)
		return s_fail(c, "base URL is longer than %d bytes", S_MAX_URL);
	http_parser_url_init(&u);
	if (http_parser_parse_url(url, len, 0, &u) != 0)
		return s_fail(c, "base URL '%s' is not a URL (write e.g. https://api.openai.com)",
		              s_q(url, len, q, sizeof q));
	if (!(u.field_set & (1 << UF_SCHEMA)) || !(u.field_set & (1 << UF_HOST)))
		return s_fail(c, "base URL '%s' needs a scheme and a host",
		              s_q(url, len, q, sizeof q));
	if (u.field_set & (1 << UF_USERINFO))
		return s_fail(c,
		              "base URL '%s' holds user information (put credentials in a "
		              "secret)",
		              s_q(url, len, q, sizeof q));
	if (u.field_set & ((1 << UF_QUERY) | (1 << UF_FRAGMENT)))
		return s_fail(c, "base URL '%s' has a query or fragment",
		              s_q(url, len, q, sizeof q));
	const char *sch = url + u.field_data[UF_SCHEMA].off;
	size_t sl = u.field_data[UF_SCHEMA].len;
	if (sl == 5 && strncasecmp(sch, "https", 5) == 0)
		p->scheme = strdup("https");
	else if (sl == 4 && strncasecmp(sch, "http", 4) == 0)
		p->scheme = strdup("http");
	else
		return s_fail(c, "base URL scheme '%s' is not http or https",
		              s_q(sch, sl, q, sizeof q));
	if (p->scheme == NULL)
		return s_fail(c, "out of memory");
	const char *h = url + u.field_data[UF_HOST].off;
	size_t hl = u.field_data[UF_HOST].len;
	/* http-parser gives an IPv6 host without its brackets. */
	bool v6 = u.field_data[UF_HOST].off > 0 && h[-1] == '[';
	if (hl + 2 >= sizeof hostbuf)
		return s_fail(c, "base URL host is too long");
	int n = snprintf(hostbuf, sizeof hostbuf, v6 ? "[%.*s]" : "%.*s", (int)hl, h);
	if (cp_host_normalize(hostbuf, (size_t)n, host, sizeof host, &why) < 0)
		return s_fail(c, "base URL host '%s': %s", s_q(h, hl, q, sizeof q), why);
	p->host = strdup(host);
	if (u.field_set & (1 << UF_PORT)) {
		if (u.port == 0)
			return s_fail(c, "base URL port 0 is not allowed");
		p->port = u.port;
	} else {
		p->port = strcmp(p->scheme, "https") == 0 ? 443 : 80;
	}
	const char *path = "";
	size_t pl = 0;
	if (u.field_set & (1 << UF_PATH)) {
		path = url + u.field_data[UF_PATH].off;
		pl = u.field_data[UF_PATH].len;
		if (cp_path_check(path, pl, &why) < 0)
			return s_fail(c, "base URL path '%s': %s", s_q(path, pl, q, sizeof q), why);
	}
	while (pl > 0 && path[pl - 1] == '/')
		pl--;
	p->base_path = s_ndup(path, pl);
	if (p->host == NULL || p->base_path == NULL)
		return s_fail(c, "out of memory");
	return 0;
}

/* The secret must exist and be fit for a header line (never printed). */
static int
s_check_secret(s_ctx_t *c, ahp_secrets_t *secrets, const char *name)
{
	char q[80];
	size_t len = 0;
	const char *v = secrets ? ahp_secrets_get(secrets, name, &len) : NULL;
	if (v == NULL)
		return s_fail(c, "secret '%s' does not exist in the secrets directory",
		              s_q(name, strlen(name), q, sizeof q));
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)v[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return s_fail(c,
			              "secret '%s' holds a control character and cannot go in a "
			              "header",
			              name);
	}
	if (len == 0)
		return s_fail(c, "secret '%s' is empty", name);
	return 0;
}

static int
s_parse_line(s_ctx_t *c, char *line, ahp_secrets_t *secrets, cp_provider_t *p)
{
	char *tok[5];
	size_t tl[5], nt = 0;
	char q[80];
	const char *why = NULL;

	for (char *s = line; *s;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		char *e = s;
		while (*e && *e != ' ' && *e != '\t')
			e++;
		if (nt == 5)
			return s_fail(c, "too many fields (write NAME BASE-URL AUTH [SECRET])");
		tok[nt] = s;
		tl[nt++] = (size_t)(e - s);
		s = e;
	}
	if (nt < 3 || nt > 4)
		return s_fail(c,
		              "%s (write NAME BASE-URL AUTH [SECRET], e.g. \"openai "
		              "https://api.openai.com bearer openai-key\")",
		              nt < 3 ? "too few fields" : "too many fields");
	for (size_t i = 0; i < nt; i++)
		tok[i][tl[i]] = '\0';
	if (!s_name_ok(tok[0], tl[0]))
		return s_fail(c,
		              "provider name '%s' is not valid (use 1 to 64 characters from "
		              "a-z, 0-9 and -)",
		              s_q(tok[0], tl[0], q, sizeof q));
	p->name = strdup(tok[0]);
	if (p->name == NULL)
		return s_fail(c, "out of memory");
	if (s_parse_url(c, tok[1], tl[1], p) < 0)
		return -1;
	const char *a = tok[2];
	if (strcmp(a, "none") == 0) {
		p->auth = CP_AUTH_NONE;
	} else if (strcmp(a, "bearer") == 0) {
		p->auth = CP_AUTH_BEARER;
	} else if (strcmp(a, "x-api-key") == 0) {
		p->auth = CP_AUTH_X_API_KEY;
	} else if (strncmp(a, "header:", 7) == 0) {
		p->auth = CP_AUTH_HEADER;
		if (ahp_inject_header_check(a + 7, &why) < 0)
			return s_fail(c, "header '%s': %s", s_q(a + 7, strlen(a + 7), q, sizeof q),
			              why);
		p->header = strdup(a + 7);
		if (p->header == NULL)
			return s_fail(c, "out of memory");
	} else {
		return s_fail(c, "unknown auth '%s' (use none, bearer, x-api-key or header:NAME)",
		              s_q(a, tl[2], q, sizeof q));
	}
	if (p->auth == CP_AUTH_NONE) {
		if (nt == 4)
			return s_fail(c, "auth none takes no secret");
		return 0;
	}
	if (nt < 4)
		return s_fail(c, "auth %s needs a secret name", a);
	if (s_check_secret(c, secrets, tok[3]) < 0)
		return -1;
	p->secret = strdup(tok[3]);
	if (p->secret == NULL)
		return s_fail(c, "out of memory");
	return 0;
}

cp_providers_t *
cp_providers_load(const char *path, ahp_secrets_t *secrets, char *err, size_t errlen)
{
	char local[256];
	char *buf = NULL;
	size_t len = 0;

	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof local;
	}
	err[0] = '\0';
	cp_providers_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "%s: out of memory", path ? path : "(null)");
		return NULL;
	}
	if (path == NULL || *path == '\0')
		return self;
	if (ahp_read_file(path, S_MAX_FILE, &buf, &len) < 0) {
		if (errno == ENOENT)
			return self; /* no providers: an empty list */
		if (errno == EFBIG)
			snprintf(err, errlen, "%s: larger than %d bytes", path, S_MAX_FILE);
		else
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		cp_providers_destroy(&self);
		return NULL;
	}
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		goto fail;
	}
	s_ctx_t c = {.path = path, .err = err, .errlen = errlen};
	size_t cap = 0;
	for (char *line = buf; line != NULL && *line;) {
		char *nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		c.line++;
		size_t ll = strlen(line);
		if (ll > 0 && line[ll - 1] == '\r')
			line[--ll] = '\0';
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s != '\0' && *s != '#') {
			if (self->n == S_MAX_PROVIDERS) {
				s_fail(&c, "more than %d providers", S_MAX_PROVIDERS);
				goto fail;
			}
			if (self->n == cap) {
				size_t nc = cap ? cap * 2 : 8;
				cp_provider_t *it = realloc(self->items, nc * sizeof *it);
				if (it == NULL) {
					s_fail(&c, "out of memory");
					goto fail;
				}
				self->items = it;
				cap = nc;
			}
			cp_provider_t *p = &self->items[self->n];
			memset(p, 0, sizeof *p);
			int rc = s_parse_line(&c, s, secrets, p);
			if (rc == 0 && cp_providers_find(self, p->name) != NULL) {
				s_fail(&c, "provider '%s' is defined twice", p->name);
				rc = -1;
			}
			if (rc < 0) {
				s_free_one(p);
				goto fail;
			}
			self->n++;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
	return self;
fail:
	free(buf);
	cp_providers_destroy(&self);
	return NULL;
}
