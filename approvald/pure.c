/* approvald: the pure parts — validation, the canonical-arguments digest, rendering for the
 * CLI and the approvers file. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include "ahp/digest.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "approvald.h"

static int
s_name_ok(const char *s, int upper)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > APPR_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (upper && c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 1;
}

int
appr_run_id_ok(const char *s)
{
	return s_name_ok(s, 1);
}

int
appr_profile_ok(const char *s)
{
	return s_name_ok(s, 0);
}

char *
appr_canonical(const char *json, size_t len, char *err, size_t errlen)
{
	if (len > APPR_ARGS_MAX) {
		snprintf(err, errlen, "arguments_json is over %d bytes", APPR_ARGS_MAX);
		return NULL;
	}
	json_error_t je;
	/* Nesting is bounded by jansson (JSON_PARSER_MAX_DEPTH); duplicate keys are
	 * refused so that two spellings cannot mean different things to two readers. */
	json_t *j = json_loadb(json != NULL ? json : "", len, JSON_REJECT_DUPLICATES, &je);
	if (j == NULL) {
		snprintf(err, errlen, "arguments_json is not JSON: %s", je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "arguments_json is not a JSON object");
		return NULL;
	}
	char *out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (out == NULL)
		snprintf(err, errlen, "out of memory");
	return out;
}

int
appr_digest(const char *action, const char *json, size_t len, char out[APPR_DIGEST_LEN + 1],
            char *err, size_t errlen)
{
	char *canon = appr_canonical(json, len, err, errlen);
	if (canon == NULL)
		return -1;
	/* The one digest libahp defines, over the canonical object (so the
	 * orchestrator, which computes it from the parsed arguments, agrees). */
	json_t *j = json_loads(canon, 0, NULL);
	free(canon);
	int rc = j != NULL ? ahp_call_digest(action, j, out) : -1;
	json_decref(j);
	if (rc != 0) {
		snprintf(err, errlen, "cannot compute SHA-256");
		return -1;
	}
	return 0;
}

static int
s_text_ok(const char *s, size_t max)
{
	size_t n = s != NULL ? strlen(s) : 0;
	return n <= max && ahp_utf8_valid(s, n, 0);
}

int
appr_validate_create(const Ahp__Appr__CreateRequest *in, char digest[APPR_DIGEST_LEN + 1],
                     char *err, size_t errlen)
{
	if (!appr_run_id_ok(in->run_id)) {
		snprintf(err, errlen, "run_id must match [A-Za-z0-9-]{1,64}");
		return -1;
	}
	if (in->step < 1) {
		snprintf(err, errlen, "step must be >= 1");
		return -1;
	}
	if (!appr_profile_ok(in->profile)) {
		snprintf(err, errlen, "profile must match [a-z0-9-]{1,64}");
		return -1;
	}
	if (in->kind != AHP__APPR__KIND__KIND_APPROVAL &&
	    in->kind != AHP__APPR__KIND__KIND_QUESTION) {
		snprintf(err, errlen, "kind must be KIND_APPROVAL or KIND_QUESTION");
		return -1;
	}
	size_t alen = in->action != NULL ? strlen(in->action) : 0;
	if (alen == 0 || alen > APPR_ACTION_MAX || !ahp_utf8_valid(in->action, alen, 0)) {
		snprintf(err, errlen, "action must be 1..%d bytes of UTF-8", APPR_ACTION_MAX);
		return -1;
	}
	if (!s_text_ok(in->question, APPR_TEXT_MAX)) {
		snprintf(err, errlen, "question must be at most %d bytes of UTF-8", APPR_TEXT_MAX);
		return -1;
	}
	if (in->kind == AHP__APPR__KIND__KIND_QUESTION &&
	    (in->question == NULL || ahp_text_blank(in->question))) {
		snprintf(err, errlen, "a question needs its question text");
		return -1;
	}
	if (in->expires_s < 1 || in->expires_s > APPR_EXPIRES_MAX_S) {
		snprintf(err, errlen, "expires_s must be 1..%d (30 days)", APPR_EXPIRES_MAX_S);
		return -1;
	}
	const char *aj = in->arguments_json != NULL ? in->arguments_json : "";
	size_t len = strlen(aj);
	if (len > APPR_ARGS_MAX) {
		snprintf(err, errlen, "arguments_json is over %d bytes", APPR_ARGS_MAX);
		return -1;
	}
	if (!ahp_utf8_valid(aj, len, 0)) {
		snprintf(err, errlen, "arguments_json is not valid UTF-8");
		return -1;
	}
	if (appr_digest(in->action, aj, len, digest, err, errlen) != 0)
		return -1;
	if (in->digest == NULL || strcmp(in->digest, digest) != 0) {
		snprintf(err, errlen,
		         "digest does not match the arguments (expected hex SHA-256 of action + "
		         "\"\\n\" + canonical arguments JSON: %s)",
		         digest);
		return -1;
	}
	return 0;
}

const char *
appr_state_str(int state)
{
	switch (state) {
	case AHP__APPR__STATE__STATE_PENDING:
		return "pending";
	case AHP__APPR__STATE__STATE_APPROVED:
		return "approved";
	case AHP__APPR__STATE__STATE_REJECTED:
		return "rejected";
	case AHP__APPR__STATE__STATE_ANSWERED:
		return "answered";
	case AHP__APPR__STATE__STATE_CANCELLED:
		return "cancelled";
	default:
		return "unknown";
	}
}

char *
appr_fmt_span(int64_t ms, char *buf, size_t len)
{
	int64_t s = ms > 0 ? ms / 1000 : 0;
	int64_t d = s / 86400, h = s / 3600, m = (s / 60) % 60, sec = s % 60;
	if (h >= 48) {
		h %= 24;
		if (h)
			snprintf(buf, len, "%lldd%lldh", (long long)d, (long long)h);
		else
			snprintf(buf, len, "%lldd", (long long)d);
	} else if (h >= 1) {
		if (m)
			snprintf(buf, len, "%lldh%lldm", (long long)h, (long long)m);
		else
			snprintf(buf, len, "%lldh", (long long)h);
	} else if (m >= 1) {
		if (sec)
			snprintf(buf, len, "%lldm%llds", (long long)m, (long long)sec);
		else
			snprintf(buf, len, "%lldm", (long long)m);
	} else {
		snprintf(buf, len, "%llds", (long long)sec);
	}
	return buf;
}

char *
appr_fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "%lld ms", (long long)ms);
	return buf;
}

/* A growing string; on allocation failure it stays failed and s_buf_take returns NULL. */
typedef struct {
	char *s;
	size_t len, cap;
	int oom;
} s_buf_t;

static void
s_put(s_buf_t *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 128;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->s, cap);
		if (p == NULL) {
			b->oom = 1;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void
s_puts(s_buf_t *b, const char *s)
{
	s_put(b, s, strlen(s));
}

#define S_ELLIPSIS "\xe2\x80\xa6" /* … */

/* A quoted string, cut at max bytes (on a character boundary) with an ellipsis. */
static void
s_put_quoted(s_buf_t *b, const char *s, size_t max)
{
	size_t n = strlen(s), cut = n > max ? ahp_utf8_prefix(s, max) : n;
	s_puts(b, "\"");
	for (size_t i = 0; i < cut; i++) {
		if (s[i] == '"' || s[i] == '\\')
			s_puts(b, "\\");
		s_put(b, s + i, 1);
	}
	if (cut < n)
		s_puts(b, S_ELLIPSIS);
	s_puts(b, "\"");
}

#define S_VALUE_MAX 40

/* An argument name as the call shows it: bare when it is a plain name ([A-Za-z0-9_]{1,40}),
 * else quoted and cut like a value — a name holding `="team", content="…")` and spaces would
 * otherwise pass for other arguments and push the real ones out of the line. */
static void
s_put_key(s_buf_t *b, const char *key)
{
	size_t n = strlen(key);
	int plain = n >= 1 && n <= S_VALUE_MAX;
	for (size_t i = 0; plain && i < n; i++) {
		char c = key[i];
		plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '_';
	}
	if (plain)
		s_puts(b, key);
	else
		s_put_quoted(b, key, S_VALUE_MAX);
}

char *
appr_render_call(const Ahp__Appr__ApprovalRequest *r, size_t max)
{
	s_buf_t b = {0};
	const char *action = r->action != NULL ? r->action : "";
	if (r->kind == AHP__APPR__KIND__KIND_QUESTION) {
		s_puts(&b, action);
		s_puts(&b, ": ");
		s_put_quoted(&b, r->question != NULL ? r->question : "", 60);
		if (b.oom) {
			free(b.s);
			return NULL;
		}
		return b.s;
	}
	s_puts(&b, action);
	s_puts(&b, "(");
	const char *aj = r->arguments_json != NULL ? r->arguments_json : "";
	json_t *j = json_loads(aj, 0, NULL);
	if (!json_is_object(j)) {
		s_puts(&b, S_ELLIPSIS);
	} else {
		const char *key;
		json_t *v;
		int first = 1;
		json_object_foreach(j, key, v)
		{
			if (b.len >= max) {
				s_puts(&b, ", " S_ELLIPSIS);
				break;
			}
			if (!first)
				s_puts(&b, ", ");
			first = 0;
			s_put_key(&b, key);
			s_puts(&b, "=");
			if (json_is_string(v)) {
				s_put_quoted(&b, json_string_value(v), S_VALUE_MAX);
			} else {
				char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
				if (t == NULL) {
					b.oom = 1;
					break;
				}
				size_t n = strlen(t);
				size_t cut = n > S_VALUE_MAX ? ahp_utf8_prefix(t, S_VALUE_MAX) : n;
				s_put(&b, t, cut);
				if (cut < n)
					s_puts(&b, S_ELLIPSIS);
				free(t);
			}
		}
	}
	json_decref(j);
	s_puts(&b, ")");
	if (b.oom) {
		free(b.s);
		return NULL;
	}
	return b.s;
}

/* --- approvers --- */

void
appr_approvers_free(appr_approvers_t *a)
{
	free(a->rules);
	a->rules = NULL;
	a->n = 0;
}

const appr_rule_t *
appr_approvers_find(const appr_approvers_t *a, const char *profile)
{
	for (size_t i = 0; profile != NULL && i < a->n; i++)
		if (strcmp(a->rules[i].profile, profile) == 0)
			return &a->rules[i];
	return NULL;
}

int
appr_approvers_parse(const char *text, appr_approvers_t *out, char *err, size_t errlen)
{
	int lineno = 0;
	const char *p = text;
	while (*p != '\0') {
		const char *eol = strchr(p, '\n');
		size_t n = eol != NULL ? (size_t)(eol - p) : strlen(p);
		lineno++;
		char line[4096];
		if (n >= sizeof line) {
			snprintf(err, errlen, "%d: line too long", lineno);
			goto fail;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		p = eol != NULL ? eol + 1 : p + n;
		char *save = NULL;
		char *tok = strtok_r(line, " \t\r", &save);
		if (tok == NULL || tok[0] == '#')
			continue;
		if (!appr_profile_ok(tok)) {
			snprintf(err, errlen,
			         "%d: \"%.64s\" is not a profile name ([a-z0-9-]{1,64})", lineno,
			         tok);
			goto fail;
		}
		if (appr_approvers_find(out, tok) != NULL) {
			snprintf(err, errlen, "%d: profile %s is given twice", lineno, tok);
			goto fail;
		}
		appr_rule_t rule = {0};
		snprintf(rule.profile, sizeof rule.profile, "%s", tok);
		const char *users = "", *groups = "";
		while ((tok = strtok_r(NULL, " \t\r", &save)) != NULL) {
			if (tok[0] == '#')
				break;
			if (strncmp(tok, "users=", 6) == 0) {
				users = tok + 6;
			} else if (strncmp(tok, "groups=", 7) == 0) {
				groups = tok + 7;
			} else {
				snprintf(
				    err, errlen,
				    "%d: \"%.64s\": expected users=NAME,... or groups=NAME,...",
				    lineno, tok);
				goto fail;
			}
		}
		char why[256];
		if (ahp_rpc_allow_parse(&rule.allow, users, groups, 0, why, sizeof why) != 0) {
			snprintf(err, errlen, "%d: %s", lineno, why);
			goto fail;
		}
		appr_rule_t *r = realloc(out->rules, (out->n + 1) * sizeof *r);
		if (r == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		out->rules = r;
		out->rules[out->n++] = rule;
	}
	return 0;
fail:
	appr_approvers_free(out);
	return -1;
}

int
appr_approvers_load(const char *path, appr_approvers_t *out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	if (ahp_read_file(path, 1024 * 1024, &buf, &len) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char why[400];
	int rc = appr_approvers_parse(buf, out, why, sizeof why);
	free(buf);
	if (rc != 0)
		snprintf(err, errlen, "%s:%s", path, why);
	return rc;
}

int
appr_allow_has(const ahp_rpc_allow_t *allow, uid_t uid, gid_t gid)
{
	for (size_t i = 0; i < allow->n_uids; i++)
		if (allow->uids[i] == uid)
			return 1;
	for (size_t i = 0; i < allow->n_gids; i++)
		if (allow->gids[i] == gid)
			return 1;
	if (allow->n_gids == 0)
		return 0;
	struct passwd pw, *res = NULL;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) != 0 || res == NULL)
		return 0;
	gid_t groups[256];
	int n = (int)(sizeof groups / sizeof groups[0]);
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
		return 0;
	for (int i = 0; i < n; i++)
		for (size_t j = 0; j < allow->n_gids; j++)
			if (groups[i] == allow->gids[j])
				return 1;
	return 0;
}

char *
appr_user_name(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char tmp[4096];
	if (getpwuid_r(uid, &pw, tmp, sizeof tmp, &res) == 0 && res != NULL)
		snprintf(buf, len, "%s", pw.pw_name);
	else
		snprintf(buf, len, "uid:%u", (unsigned)uid);
	return buf;
}
