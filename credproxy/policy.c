/* credproxy policy: host/authority normalisation, egress rules built from the profiles,
 * per-request decisions and the injected values they carry. Pure: no I/O. */
#include "cp.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An expanded header value is at most this long: ample for a JWT, and it
 * bounds what one template-heavy rule can make of 64 KiB secrets. */
#define S_MAX_EXPANDED 16384

/* One secret value the policy copied (wiped on destroy). */
typedef struct {
	char *name;
	uint8_t *value;
	size_t len;
} s_secret_t;

typedef struct {
	char *name;
	cp_rule_t *rules;
	unsigned n_rules;
} s_profile_t;

struct cp_policy {
	s_profile_t *profiles;
	size_t n_profiles;
	s_secret_t *secrets;
	size_t n_secrets, cap_secrets;
};

/* ---- hosts, authorities, paths ---- */

int
cp_host_normalize(const char *in, size_t len, char *out, size_t outlen, const char **why)
{
	const char *dummy;
	char buf[CP_HOST_MAX + 2];

	if (why == NULL)
		why = &dummy;
	if (in == NULL || out == NULL || outlen < CP_HOST_MAX + 1) {
		*why = "internal error: no room for the host";
		return -1;
	}
	out[0] = '\0';
	if (len == 0) {
		*why = "empty host";
		return -1;
	}
	if (in[0] == '[') {
		/* RFC 3986 IP-literal; IPvFuture and zone ids are refused by
		 * inet_pton, which is what we want. */
		struct in6_addr a6;
		char ip[INET6_ADDRSTRLEN];
		if (len < 3 || in[len - 1] != ']' || len - 2 >= sizeof ip) {
			*why = "malformed IPv6 address";
			return -1;
		}
		memcpy(ip, in + 1, len - 2);
		ip[len - 2] = '\0';
		if (memchr(ip, '\0', len - 2) != NULL || inet_pton(AF_INET6, ip, &a6) != 1) {
			*why = "malformed IPv6 address";
			return -1;
		}
		if (inet_ntop(AF_INET6, &a6, out, (socklen_t)outlen) == NULL) {
			*why = "malformed IPv6 address";
			return -1;
		}
		return 0;
	}
	/* One trailing dot is the same host (RFC 1034 absolute form). */
	if (in[len - 1] == '.')
		len--;
	if (len == 0) {
		*why = "empty host";
		return -1;
	}
	if (len > CP_HOST_MAX) {
		*why = "host name longer than 253 bytes";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch == ':' || ch == '[' || ch == ']') {
			*why = "an IPv6 address must be written in brackets";
			return -1;
		}
		buf[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch);
	}
	buf[len] = '\0';
	if (ahp_host_check(buf, len, why) < 0)
		return -1;
	memcpy(out, buf, len + 1);
	return 0;
}

int
cp_authority_parse(const char *in, size_t len, char *host, size_t hostlen, uint16_t *port,
                   const char **why)
{
	const char *dummy;
	size_t hl = len;

	if (why == NULL)
		why = &dummy;
	if (port != NULL)
		*port = 0;
	if (in == NULL) {
		*why = "empty authority";
		return -1;
	}
	if (memchr(in, '@', len) != NULL) {
		*why = "userinfo (user@host) is not allowed";
		return -1;
	}
	if (len > 0 && in[0] == '[') {
		const char *close = memchr(in, ']', len);
		if (close == NULL) {
			*why = "malformed IPv6 address";
			return -1;
		}
		hl = (size_t)(close - in) + 1;
		if (hl < len && in[hl] != ':') {
			*why = "only a port may follow an IPv6 address";
			return -1;
		}
	} else {
		const char *colon = memchr(in, ':', len);
		if (colon != NULL) {
			hl = (size_t)(colon - in);
			if (memchr(colon + 1, ':', len - hl - 1) != NULL) {
				*why = "an IPv6 address must be written in brackets";
				return -1;
			}
		}
	}
	if (hl < len) {
		const char *p = in + hl + 1;
		size_t pl = len - hl - 1;
		unsigned long v = 0;
		if (pl == 0 || pl > 5) {
			*why = "malformed port";
			return -1;
		}
		for (size_t i = 0; i < pl; i++) {
			if (p[i] < '0' || p[i] > '9') {
				*why = "malformed port";
				return -1;
			}
			v = v * 10 + (unsigned long)(p[i] - '0');
		}
		if (v == 0 || v > 65535) {
			*why = "port out of range (1..65535)";
			return -1;
		}
		if (port != NULL)
			*port = (uint16_t)v;
	}
	return cp_host_normalize(in, hl, host, hostlen, why);
}

static int
s_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Besides what cp.h lists, a raw '\\' is refused (some servers read it as
 * '/'), and a segment is a dot segment also when what precedes a ';' is one
 * ("/..;/" is ".." to Tomcat and others that take path parameters).
 */
int
cp_path_check(const char *path, size_t len, const char **why)
{
	const char *dummy;
	if (why == NULL)
		why = &dummy;
	if (path == NULL || len == 0 || path[0] != '/') {
		*why = "the path must start with '/'";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)path[i];
		if (ch <= 0x20 || ch == 0x7f) {
			*why = "control byte or space in the path";
			return -1;
		}
		if (ch == '\\') {
			*why = "backslash in the path";
			return -1;
		}
		if (ch != '%')
			continue;
		if (i + 2 >= len || s_hex(path[i + 1]) < 0 || s_hex(path[i + 2]) < 0) {
			*why = "malformed percent-encoding in the path";
			return -1;
		}
		int v = s_hex(path[i + 1]) * 16 + s_hex(path[i + 2]);
		if (v == '/' || v == '\\' || v == 0) {
			*why = "encoded '/', '\\' or NUL in the path";
			return -1;
		}
		i += 2;
	}
	/* Each segment, decoded for dots only: "." / ".." / "%2e" / ".%2E"... */
	for (size_t i = 0; i < len;) {
		size_t start = i + 1, e = start, dots = 0;
		bool other = false;
		while (e < len && path[e] != '/')
			e++;
		for (size_t j = start; j < e && path[j] != ';';) {
			if (path[j] == '.') {
				dots++;
				j++;
			} else if (path[j] == '%' && path[j + 1] == '2' &&
			           (path[j + 2] == 'e' || path[j + 2] == 'E')) {
				dots++;
				j += 3;
			} else {
				other = true;
				break;
			}
		}
		if (!other && (dots == 1 || dots == 2)) {
			*why = "dot segment ('.' or '..') in the path";
			return -1;
		}
		i = e;
	}
	return 0;
}

/* ---- building ---- */

static void
s_wipe_free(void *p, size_t len)
{
	if (p == NULL)
		return;
	explicit_bzero(p, len);
	free(p);
}

static void
s_rule_free(cp_rule_t *r)
{
	free(r->host);
	for (unsigned i = 0; r->methods && i < r->n_methods; i++)
		free(r->methods[i]);
	free(r->methods);
	for (unsigned i = 0; r->paths && i < r->n_paths; i++)
		free(r->paths[i]);
	free(r->paths);
	for (unsigned i = 0; r->inject && i < r->n_inject; i++) {
		free(r->inject[i].name);
		s_wipe_free(r->inject[i].value, r->inject[i].value_len);
	}
	free(r->inject);
	free(r->secrets); /* the refs point into the policy's secret table */
}

void
cp_policy_destroy(cp_policy_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	cp_policy_t *self = *self_p;
	*self_p = NULL;
	for (size_t i = 0; i < self->n_profiles; i++) {
		s_profile_t *p = &self->profiles[i];
		for (unsigned j = 0; p->rules && j < p->n_rules; j++)
			s_rule_free(&p->rules[j]);
		free(p->rules);
		free(p->name);
	}
	free(self->profiles);
	for (size_t i = 0; i < self->n_secrets; i++) {
		free(self->secrets[i].name);
		s_wipe_free(self->secrets[i].value, self->secrets[i].len);
	}
	free(self->secrets);
	free(self);
}

bool
cp_policy_has_profile(const cp_policy_t *self, const char *profile)
{
	for (size_t i = 0; self && profile && i < self->n_profiles; i++)
		if (strcmp(self->profiles[i].name, profile) == 0)
			return true;
	return false;
}

typedef struct {
	char *err;
	size_t errlen;
	const char *profile;
	unsigned index;
} s_build_t;

static void
s_failf(s_build_t *b, const char *what, const char *detail)
{
	snprintf(b->err, b->errlen, "%s: egress[%u]: %s%s%s", b->profile, b->index, what,
	         detail ? ": " : "", detail ? detail : "");
}

/* The policy's copy of secret name (one per name, shared by rules). NULL with
 * b->err when it does not exist, cannot go in a header, or on OOM. */
static const s_secret_t *
s_secret(cp_policy_t *self, ahp_secrets_t *secrets, const char *name, s_build_t *b)
{
	for (size_t i = 0; i < self->n_secrets; i++)
		if (strcmp(self->secrets[i].name, name) == 0)
			return &self->secrets[i];
	size_t len = 0;
	const char *v = secrets ? ahp_secrets_get(secrets, name, &len) : NULL;
	if (v == NULL) {
		char msg[200];
		snprintf(msg, sizeof msg, "secret '%s' does not exist", name);
		s_failf(b, msg, NULL);
		return NULL;
	}
	/* A secret goes into a header line: a CR, LF or NUL in it would end the
	 * header (request smuggling); other controls are refused as well. */
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)v[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			char msg[200];
			snprintf(msg, sizeof msg,
			         "secret '%s' holds a control character and cannot go in a header",
			         name);
			s_failf(b, msg, NULL);
			return NULL;
		}
	}
	if (self->n_secrets == self->cap_secrets) {
		size_t cap = self->cap_secrets ? self->cap_secrets * 2 : 8;
		s_secret_t *s = realloc(self->secrets, cap * sizeof *s);
		if (s == NULL) {
			s_failf(b, "out of memory", NULL);
			return NULL;
		}
		self->secrets = s;
		self->cap_secrets = cap;
	}
	s_secret_t *s = &self->secrets[self->n_secrets];
	s->name = strdup(name);
	s->value = malloc(len ? len : 1);
	s->len = len;
	if (s->name == NULL || s->value == NULL) {
		free(s->name);
		free(s->value);
		s_failf(b, "out of memory", NULL);
		return NULL;
	}
	memcpy(s->value, v, len);
	self->n_secrets++;
	return s;
}

/* Adds a ref to the rule's secret list once. Refs hold the secret's index
 * in len until the build ends (the table may still move); cp_policy_new then
 * turns them into pointers. */
static int
s_rule_add_secret(cp_rule_t *r, size_t idx)
{
	for (unsigned i = 0; i < r->n_secrets; i++)
		if ((size_t)r->secrets[i].len == idx)
			return 0;
	cp_secret_ref_t *s = realloc(r->secrets, (r->n_secrets + 1) * sizeof *s);
	if (s == NULL)
		return -1;
	r->secrets = s;
	r->secrets[r->n_secrets++] = (cp_secret_ref_t){.name = NULL, .value = NULL, .len = idx};
	return 0;
}

/* Expands every {{secret:NAME}} of value into a new buffer. */
static int
s_expand(cp_policy_t *self, ahp_secrets_t *secrets, cp_rule_t *r, const ahp_kv_t *kv,
         cp_inject_t *out, s_build_t *b)
{
	size_t cap = S_MAX_EXPANDED, o = 0;
	char *buf = malloc(cap + 1);
	const char *p = kv->value;
	if (buf == NULL) {
		s_failf(b, "out of memory", NULL);
		return -1;
	}
	while (*p) {
		const char *open = strstr(p, "{{");
		size_t lit = open ? (size_t)(open - p) : strlen(p);
		const uint8_t *val = NULL;
		size_t vlen = 0;
		if (o + lit > cap)
			goto toolong;
		memcpy(buf + o, p, lit);
		o += lit;
		if (open == NULL)
			break;
		const char *close = strstr(open + 2, "}}");
		char name[129];
		size_t nl = close ? (size_t)(close - open - 9) : 0;
		if (close == NULL || strncmp(open + 2, "secret:", 7) != 0 || close < open + 10 ||
		    nl >= sizeof name) {
			s_wipe_free(buf, cap + 1);
			s_failf(b, "malformed template in header", kv->name);
			return -1;
		}
		memcpy(name, open + 9, nl);
		name[nl] = '\0';
		for (size_t i = 0; i < nl; i++) {
			char ch = name[i];
			bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
			if (!ok) {
				s_wipe_free(buf, cap + 1);
				s_failf(b, "malformed template in header", kv->name);
				return -1;
			}
		}
		const s_secret_t *s = s_secret(self, secrets, name, b);
		if (s == NULL) {
			s_wipe_free(buf, cap + 1);
			return -1;
		}
		val = s->value;
		vlen = s->len;
		if (o + vlen > cap)
			goto toolong;
		memcpy(buf + o, val, vlen);
		o += vlen;
		if (s_rule_add_secret(r, (size_t)(s - self->secrets)) < 0) {
			s_wipe_free(buf, cap + 1);
			s_failf(b, "out of memory", NULL);
			return -1;
		}
		p = close + 2;
	}
	buf[o] = '\0';
	/* Keep only what the value needs: a rule may inject 32 headers. The
	 * copy is made by hand so the larger buffer is wiped, not left to
	 * realloc. */
	char *fit = malloc(o + 1);
	if (fit == NULL) {
		s_wipe_free(buf, cap + 1);
		s_failf(b, "out of memory", NULL);
		return -1;
	}
	memcpy(fit, buf, o + 1);
	s_wipe_free(buf, cap + 1);
	out->value = fit;
	out->value_len = o;
	return 0;
toolong:
	s_wipe_free(buf, cap + 1);
	{
		char msg[200];
		snprintf(msg, sizeof msg, "header '%s' is longer than %d bytes once expanded",
		         kv->name, S_MAX_EXPANDED);
		s_failf(b, msg, NULL);
	}
	return -1;
}

static char **
s_strv_dup(char *const *v, unsigned n)
{
	char **d = calloc(n ? n : 1, sizeof *d);
	if (d == NULL)
		return NULL;
	for (unsigned i = 0; i < n; i++) {
		d[i] = strdup(v[i]);
		if (d[i] == NULL) {
			for (unsigned j = 0; j < i; j++)
				free(d[j]);
			free(d);
			return NULL;
		}
	}
	return d;
}

static int
s_build_rule(cp_policy_t *self, ahp_secrets_t *secrets, const ahp_egress_t *e, cp_rule_t *r,
             s_build_t *b)
{
	const char *why = NULL;
	char host[CP_HOST_MAX + 1];
	const char *h = e->host ? e->host : "";
	size_t hl = strlen(h);

	r->index = b->index;
	r->wildcard = hl > 2 && h[0] == '*' && h[1] == '.';
	if (r->wildcard) {
		h += 2;
		hl -= 2;
	}
	if (cp_authority_parse(h, hl, host, sizeof host, &r->port, &why) < 0) {
		s_failf(b, "malformed host", why);
		return -1;
	}
	if (r->wildcard &&
	    (strchr(host, ':') != NULL || ahp_host_check(host, strlen(host), &why) < 0)) {
		s_failf(b, "malformed host", "a wildcard names sub-domains of a host name");
		return -1;
	}
	if (r->wildcard) {
		struct in_addr a;
		if (inet_pton(AF_INET, host, &a) == 1) {
			s_failf(b, "malformed host", "a wildcard names sub-domains of a host name");
			return -1;
		}
		r->host = malloc(strlen(host) + 3);
		if (r->host != NULL)
			snprintf(r->host, strlen(host) + 3, "*.%s", host);
	} else {
		r->host = strdup(host);
	}
	if (r->host == NULL) {
		s_failf(b, "out of memory", NULL);
		return -1;
	}
	static char *const s_get[] = {"GET"};
	r->methods = e->n_methods ? s_strv_dup(e->methods, e->n_methods) : s_strv_dup(s_get, 1);
	r->n_methods = e->n_methods ? e->n_methods : 1;
	if (r->methods == NULL) {
		r->n_methods = 0;
		s_failf(b, "out of memory", NULL);
		return -1;
	}
	if (e->n_paths > 0) {
		r->paths = s_strv_dup(e->paths, e->n_paths);
		if (r->paths == NULL) {
			s_failf(b, "out of memory", NULL);
			return -1;
		}
		r->n_paths = e->n_paths;
	}
	if (e->n_inject > 0) {
		r->inject = calloc(e->n_inject, sizeof *r->inject);
		if (r->inject == NULL) {
			s_failf(b, "out of memory", NULL);
			return -1;
		}
	}
	for (unsigned i = 0; i < e->n_inject; i++) {
		const ahp_kv_t *kv = &e->inject[i];
		if (ahp_inject_header_check(kv->name, &why) < 0) {
			s_failf(b, "invalid header name", why);
			return -1;
		}
		r->inject[i].name = strdup(kv->name);
		if (r->inject[i].name == NULL) {
			s_failf(b, "out of memory", NULL);
			return -1;
		}
		r->n_inject = i + 1;
		if (s_expand(self, secrets, r, kv, &r->inject[i], b) < 0)
			return -1;
	}
	return 0;
}

cp_policy_t *
cp_policy_new(const ahp_profiles_t *profiles, ahp_secrets_t *secrets, char *err, size_t errlen)
{
	char local[256];
	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof local;
	}
	err[0] = '\0';
	cp_policy_t *self = calloc(1, sizeof *self);
	size_t n = profiles ? ahp_profiles_count(profiles) : 0;
	if (self == NULL ||
	    (n > 0 && (self->profiles = calloc(n, sizeof *self->profiles)) == NULL)) {
		free(self);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const ahp_profile_t *p = ahp_profiles_at(profiles, i);
		s_profile_t *sp = &self->profiles[self->n_profiles++];
		sp->name = strdup(p->name);
		if (sp->name == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (p->n_egress == 0)
			continue;
		sp->rules = calloc(p->n_egress, sizeof *sp->rules);
		if (sp->rules == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		for (unsigned j = 0; j < p->n_egress; j++) {
			s_build_t b = {
			    .err = err, .errlen = errlen, .profile = p->name, .index = j};
			cp_rule_t *r = &sp->rules[j];
			sp->n_rules = j + 1;
			r->profile = sp->name;
			if (s_build_rule(self, secrets, &p->egress[j], r, &b) < 0)
				goto fail;
		}
	}
	/* The secret table no longer moves: turn the rules' indices into refs. */
	for (size_t i = 0; i < self->n_profiles; i++)
		for (unsigned j = 0; j < self->profiles[i].n_rules; j++) {
			cp_rule_t *r = &self->profiles[i].rules[j];
			for (unsigned k = 0; k < r->n_secrets; k++) {
				const s_secret_t *s = &self->secrets[r->secrets[k].len];
				r->secrets[k] = (cp_secret_ref_t){
				    .name = s->name, .value = s->value, .len = s->len};
			}
		}
	return self;
fail:
	cp_policy_destroy(&self);
	return NULL;
}

/* ---- deciding ---- */

/* Wildcard "*.example.com" matches a.example.com and a.b.example.com, never
 * example.com itself. */
static bool
s_host_match(const cp_rule_t *r, const char *host)
{
	if (!r->wildcard)
		return strcmp(r->host, host) == 0;
	const char *suffix = r->host + 1; /* ".example.com" */
	size_t sl = strlen(suffix), hl = strlen(host);
	return hl > sl && strcmp(host + hl - sl, suffix) == 0;
}

static bool
s_port_match(const cp_rule_t *r, uint16_t port)
{
	if (r->port == 0)
		return port == 80 || port == 443;
	return r->port == port;
}

static bool
s_method_match(const cp_rule_t *r, const char *method)
{
	for (unsigned i = 0; i < r->n_methods; i++)
		if (strcmp(r->methods[i], method) == 0)
			return true;
	return false;
}

/* A prefix ending in '/' matches what starts with it; "/health" matches
 * "/health" and "/health/..." but not "/healthz" (segment boundary). */
static bool
s_path_match(const cp_rule_t *r, const char *path)
{
	if (r->n_paths == 0)
		return true;
	if (path == NULL)
		return false;
	for (unsigned i = 0; i < r->n_paths; i++) {
		const char *p = r->paths[i];
		size_t pl = strlen(p);
		if (strncmp(path, p, pl) != 0)
			continue;
		if (pl > 0 && p[pl - 1] == '/')
			return true;
		if (path[pl] == '\0' || path[pl] == '/')
			return true;
	}
	return false;
}

/* Untrusted text for a reason line: printable ASCII only, cut at max bytes. */
static const char *
s_safe(const char *s, char *buf, size_t max)
{
	size_t o = 0;
	for (; s && *s && o + 4 < max; s++) {
		unsigned char ch = (unsigned char)*s;
		buf[o++] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	if (s && *s)
		memcpy(buf + o, "...", 3), o += 3;
	buf[o] = '\0';
	return buf;
}

/*
 * The first rule (profile order) that matches host, port, method and path
 * allows. A refusal names how far the closest rule got: a rule for the host
 * but another port is CP_DENY_PORT, right port but another method
 * CP_DENY_METHOD, then CP_DENY_PATH.
 *
 * A rule names a loopback or private host "explicitly" when it is an exact
 * (non-wildcard) rule: the proxy lets such a rule reach a special address
 * (cp_addr_special) and refuses that for rule->wildcard, so "*.corp.example"
 * resolving to 10.0.0.5 is still refused.
 */
void
cp_policy_decide(const cp_policy_t *self, const char *profile, const char *method, const char *host,
                 uint16_t port, const char *path, cp_decision_t *out)
{
	char ph[64], hh[80], mh[24], pp[80];
	const s_profile_t *sp = NULL;

	memset(out, 0, sizeof *out);
	for (size_t i = 0; self && profile && i < self->n_profiles; i++)
		if (strcmp(self->profiles[i].name, profile) == 0)
			sp = &self->profiles[i];
	s_safe(profile ? profile : "", ph, sizeof ph);
	s_safe(host ? host : "", hh, sizeof hh);
	if (sp == NULL || host == NULL) {
		out->verdict = CP_DENY_PROFILE;
		snprintf(out->reason, sizeof out->reason, "profile %s is not loaded", ph);
		if (sp != NULL) {
			out->verdict = CP_DENY_HOST;
			snprintf(out->reason, sizeof out->reason, "no host in profile %s", ph);
		}
		return;
	}
	enum cp_verdict best = CP_DENY_HOST;
	for (unsigned i = 0; i < sp->n_rules; i++) {
		const cp_rule_t *r = &sp->rules[i];
		if (!s_host_match(r, host))
			continue;
		if (!s_port_match(r, port)) {
			if (best < CP_DENY_PORT)
				best = CP_DENY_PORT;
			continue;
		}
		if (method != NULL && !s_method_match(r, method)) {
			if (best < CP_DENY_METHOD)
				best = CP_DENY_METHOD;
			continue;
		}
		if (method != NULL && !s_path_match(r, path)) {
			best = CP_DENY_PATH;
			continue;
		}
		out->verdict = CP_ALLOW;
		out->rule = r;
		return;
	}
	out->verdict = best;
	switch (best) {
	case CP_DENY_PORT:
		snprintf(out->reason, sizeof out->reason,
		         "port %u of %s is not allowed in profile %s", (unsigned)port, hh, ph);
		break;
	case CP_DENY_METHOD:
		snprintf(out->reason, sizeof out->reason,
		         "method %s to %s is not allowed in profile %s",
		         s_safe(method, mh, sizeof mh), hh, ph);
		break;
	case CP_DENY_PATH:
		snprintf(out->reason, sizeof out->reason,
		         "path %s of %s is not allowed in profile %s",
		         s_safe(path ? path : "", pp, sizeof pp), hh, ph);
		break;
	default:
		snprintf(out->reason, sizeof out->reason, "no rule for %s in profile %s", hh, ph);
		break;
	}
}
