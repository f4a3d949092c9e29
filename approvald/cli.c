/* approvald: the human CLI — list, show, approve, reject, answer — on the humans' socket.
 * Everything that came from a run or a model is shown terminal-safe (libahp
 * ahp_term_escape); --json prints approvald's reply exactly. */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ahp/jsonpb.h"
#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "approvald.h"

#define CLI_TIMEOUT_MS 10000
#define CALL_MAX 90 /* bytes of the rendered call in a list line, before escaping */

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static int
s_usage(void)
{
	fputs("usage: approvald [--home DIR] [--json] list [--all] [--run RUN] [--limit N]\n"
	      "       approvald [--home DIR] [--json] show ID\n"
	      "       approvald [--home DIR] [--json] approve ID [-m TEXT]\n"
	      "       approvald [--home DIR] [--json] reject ID [-m TEXT]\n"
	      "       approvald [--home DIR] [--json] answer ID TEXT\n"
	      "(approvald --help for more)\n",
	      stderr);
	return EXIT_USAGE;
}

static int
s_parse_id(const char *s, uint64_t *id)
{
	long v;
	if (s[0] == '#')
		s++;
	if (ahp_parse_long(s, 1, INT64_MAX, &v) != 0)
		return -1;
	*id = (uint64_t)v;
	return 0;
}

/* Writes s on one line, every control shown (the text came from a run or a model). */
static void
s_put1(const char *s)
{
	ahp_term_fputs(s != NULL ? s : "", AHP_TERM_ONE_LINE, stdout);
}

/* Sends req and returns the reply (caller frees), or NULL after printing why with *rc. */
static Ahp__Appr__HumanReply *
s_call(const char *ep, const Ahp__Appr__HumanRequest *req, int idempotent, int *rc)
{
	if (strncmp(ep, "ipc://", 6) == 0) {
		/* No socket file: not running. Said at once rather than after the timeout. */
		struct stat st;
		if (stat(ep + 6, &st) != 0 && errno == ENOENT) {
			ahp_term_printf(stderr, "approvald: not running (no socket at %s)\n",
			                ep + 6);
			*rc = EXIT_UNREACHABLE;
			return NULL;
		}
	}
	size_t len = ahp__appr__human_request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	ahp_rpc_client_t *cl = buf != NULL ? ahp_rpc_client_new(NULL, ep) : NULL;
	if (cl == NULL) {
		free(buf);
		ahp_term_printf(stderr, "approvald: cannot connect to %s\n", ep);
		*rc = EXIT_UNREACHABLE;
		return NULL;
	}
	ahp__appr__human_request__pack(req, buf);
	uint8_t *reply = NULL;
	size_t rlen = 0;
	int status = 0;
	char err[512] = "";
	int r = ahp_rpc_call(cl, buf, len, CLI_TIMEOUT_MS, idempotent, idempotent ? 1 : 0, &reply,
	                     &rlen, &status, err, sizeof err);
	free(buf);
	ahp_rpc_client_destroy(&cl);
	if (r != 0) {
		if (status == AHP__STATUS__ERR_TIMEOUT || status == AHP__STATUS__ERR_UNAVAILABLE) {
			ahp_term_printf(stderr, "approvald: not reachable at %s: %s\n", ep, err);
			*rc = EXIT_UNREACHABLE;
		} else if (status == AHP__STATUS__ERR_PERMISSION_DENIED) {
			char who[64];
			ahp_term_printf(stderr,
			                "approvald: %s may not use approvald (not in decide_users, "
			                "decide_groups or approvers_file): %s\n",
			                appr_user_name(getuid(), who, sizeof who), err);
			*rc = EXIT_REFUSED;
		} else {
			ahp_term_printf(stderr, "approvald: %s: %s\n", ahp_status_str(status), err);
			*rc = EXIT_REFUSED;
		}
		return NULL;
	}
	Ahp__Appr__HumanReply *hr = ahp__appr__human_reply__unpack(NULL, rlen, reply);
	free(reply);
	if (hr == NULL) {
		fprintf(stderr, "approvald: the reply is not an ahp.appr.HumanReply\n");
		*rc = EXIT_REFUSED;
		return NULL;
	}
	if (hr->error != NULL && hr->error->status != AHP__STATUS__OK) {
		ahp_term_printf(stderr, "approvald: %s\n",
		                hr->error->message != NULL && hr->error->message[0] != '\0'
		                    ? hr->error->message
		                    : ahp_status_str(hr->error->status));
		ahp__appr__human_reply__free_unpacked(hr, NULL);
		*rc = EXIT_REFUSED;
		return NULL;
	}
	return hr;
}

static int
s_print_json(const ProtobufCMessage *m)
{
	json_t *j = ahp_proto_to_json(m);
	char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (s == NULL) {
		fprintf(stderr, "approvald: out of memory\n");
		return EXIT_REFUSED;
	}
	puts(s);
	free(s);
	return EXIT_OK;
}

static void
s_list_line(const Ahp__Appr__ApprovalRequest *r, int64_t now)
{
	char span[32];
	char *call = appr_render_call(r, CALL_MAX);
	printf("#%" PRIu64 "  %s  ", r->id, appr_state_str(r->state));
	s_put1(call != NULL ? call : r->action);
	free(call);
	printf("  run ");
	s_put1(r->run_id);
	printf("  step %u  profile ", r->step);
	s_put1(r->profile);
	if (r->state == AHP__APPR__STATE__STATE_PENDING) {
		if (r->expires_ms > now)
			printf("  expires in %s",
			       appr_fmt_span(r->expires_ms - now, span, sizeof span));
		else
			printf("  expired");
	} else if (r->decision != NULL) {
		printf("  by ");
		s_put1(r->decision->by);
	}
	printf("\n");
}

static int
s_list(const char *ep, int json, int argc, char **argv)
{
	Ahp__Appr__ListRequest l = AHP__APPR__LIST_REQUEST__INIT;
	for (int i = 1; i < argc; i++) {
		long v;
		if (strcmp(argv[i], "--all") == 0 || strcmp(argv[i], "-a") == 0)
			l.all = 1;
		else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc)
			l.run_id = argv[++i];
		else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc &&
		         ahp_parse_long(argv[i + 1], 1, APPR_LIST_MAX, &v) == 0) {
			l.limit = (uint32_t)v;
			i++;
		} else
			return s_usage();
	}
	Ahp__Appr__HumanRequest req = AHP__APPR__HUMAN_REQUEST__INIT;
	req.body_case = AHP__APPR__HUMAN_REQUEST__BODY_LIST;
	req.list = &l;
	int rc = EXIT_OK;
	Ahp__Appr__HumanReply *hr = s_call(ep, &req, 1, &rc);
	if (hr == NULL)
		return rc;
	Ahp__Appr__ListReply empty = AHP__APPR__LIST_REPLY__INIT;
	const Ahp__Appr__ListReply *lr = hr->list != NULL ? hr->list : &empty;
	if (json) {
		rc = s_print_json(&lr->base);
	} else if (lr->n_requests == 0) {
		printf(l.all ? "no requests\n" : "no pending requests\n");
	} else {
		int64_t now = ahp_now_ms();
		for (size_t i = 0; i < lr->n_requests; i++)
			s_list_line(lr->requests[i], now);
	}
	ahp__appr__human_reply__free_unpacked(hr, NULL);
	return rc;
}

static void
s_field(const char *name, const char *value)
{
	printf("%-11s", name);
	s_put1(value);
	printf("\n");
}

static void
s_show_text(const Ahp__Appr__ApprovalRequest *r)
{
	char t[40], span[32], buf[64];
	int question = r->kind == AHP__APPR__KIND__KIND_QUESTION;
	printf("#%" PRIu64 "  %s  %s\n", r->id, appr_state_str(r->state),
	       question ? "question" : "approval");
	s_field("run", r->run_id);
	snprintf(buf, sizeof buf, "%u", r->step);
	s_field("step", buf);
	s_field("profile", r->profile);
	s_field("action", r->action);
	if (question || (r->question != NULL && r->question[0] != '\0'))
		s_field(question ? "question" : "rule", r->question);
	s_field("digest", r->digest);
	s_field("created", appr_fmt_time(r->created_ms, t, sizeof t));
	printf("%-11s%s", "expires", appr_fmt_time(r->expires_ms, t, sizeof t));
	if (r->state == AHP__APPR__STATE__STATE_PENDING) {
		int64_t now = ahp_now_ms();
		if (r->expires_ms > now)
			printf(" (in %s)", appr_fmt_span(r->expires_ms - now, span, sizeof span));
	}
	printf("\n");
	if (!question) {
		printf("arguments\n");
		json_t *j = json_loads(r->arguments_json != NULL ? r->arguments_json : "", 0, NULL);
		char *pretty = j != NULL ? json_dumps(j, JSON_INDENT(2)) : NULL;
		json_decref(j);
		const char *text = pretty != NULL ? pretty : r->arguments_json;
		/* Indented; JSON escapes the values' own line breaks, and every control that
		 * remains is shown (\t passes: the indentation is the dump's). */
		char *esc = ahp_term_escape(text, strlen(text), 0);
		if (esc != NULL) {
			char *save = NULL;
			for (char *line = strtok_r(esc, "\n", &save); line != NULL;
			     line = strtok_r(NULL, "\n", &save))
				printf("  %s\n", line);
		}
		free(esc);
		free(pretty);
	}
	const Ahp__Appr__Decision *d = r->decision;
	if (d == NULL) {
		if (question)
			printf("%-11snone yet: approvald answer %" PRIu64 " TEXT\n", "decision",
			       r->id);
		else
			printf("%-11snone yet: approvald approve %" PRIu64
			       " | approvald reject %" PRIu64 "\n",
			       "decision", r->id, r->id);
		return;
	}
	printf("%-11s%s by ", "decision", appr_state_str(d->state));
	s_put1(d->by);
	if (d->by_uid >= 0)
		printf(" (uid %" PRId64 ")", d->by_uid);
	printf(" at %s\n", appr_fmt_time(d->at_ms, t, sizeof t));
	if (d->comment != NULL && d->comment[0] != '\0')
		s_field(question ? "answer" : "comment", d->comment);
}

static int
s_show(const char *ep, int json, int argc, char **argv)
{
	uint64_t id;
	if (argc != 2 || s_parse_id(argv[1], &id) != 0)
		return s_usage();
	Ahp__Appr__ShowRequest s = AHP__APPR__SHOW_REQUEST__INIT;
	s.id = id;
	Ahp__Appr__HumanRequest req = AHP__APPR__HUMAN_REQUEST__INIT;
	req.body_case = AHP__APPR__HUMAN_REQUEST__BODY_SHOW;
	req.show = &s;
	int rc = EXIT_OK;
	Ahp__Appr__HumanReply *hr = s_call(ep, &req, 1, &rc);
	if (hr == NULL)
		return rc;
	if (hr->request == NULL) {
		fprintf(stderr, "approvald: the reply has no request\n");
		rc = EXIT_REFUSED;
	} else if (json) {
		rc = s_print_json(&hr->request->base);
	} else {
		s_show_text(hr->request);
	}
	ahp__appr__human_reply__free_unpacked(hr, NULL);
	return rc;
}

static int
s_decide(const char *ep, int json, int argc, char **argv)
{
	const char *cmd = argv[0];
	Ahp__Appr__DecideRequest d = AHP__APPR__DECIDE_REQUEST__INIT;
	const char *id_arg = NULL;
	const char *comment = NULL;
	int answer = strcmp(cmd, "answer") == 0;
	for (int i = 1; i < argc; i++) {
		if (!answer && (strcmp(argv[i], "-m") == 0 || strcmp(argv[i], "--message") == 0) &&
		    i + 1 < argc && comment == NULL)
			comment = argv[++i];
		else if (id_arg == NULL)
			id_arg = argv[i];
		else if (answer && comment == NULL)
			comment = argv[i];
		else
			return s_usage();
	}
	if (id_arg == NULL || s_parse_id(id_arg, &d.id) != 0 || (answer && comment == NULL))
		return s_usage();
	d.state = answer                        ? AHP__APPR__STATE__STATE_ANSWERED
	          : strcmp(cmd, "approve") == 0 ? AHP__APPR__STATE__STATE_APPROVED
	                                        : AHP__APPR__STATE__STATE_REJECTED;
	d.comment = (char *)(comment != NULL ? comment : "");
	Ahp__Appr__HumanRequest req = AHP__APPR__HUMAN_REQUEST__INIT;
	req.body_case = AHP__APPR__HUMAN_REQUEST__BODY_DECIDE;
	req.decide = &d;
	int rc = EXIT_OK;
	/* Not retried: a retry after a lost reply would be told "already decided". */
	Ahp__Appr__HumanReply *hr = s_call(ep, &req, 0, &rc);
	if (hr == NULL)
		return rc;
	const Ahp__Appr__ApprovalRequest *r = hr->request;
	if (r == NULL) {
		fprintf(stderr, "approvald: the reply has no request\n");
		rc = EXIT_REFUSED;
	} else if (json) {
		rc = s_print_json(&r->base);
	} else {
		printf("%s #%" PRIu64 " (", appr_state_str(r->state), r->id);
		s_put1(r->action);
		printf(", run ");
		s_put1(r->run_id);
		printf(" step %u)\n", r->step);
	}
	ahp__appr__human_reply__free_unpacked(hr, NULL);
	return rc;
}

int
appr_cli(const char *human_endpoint, int json, int argc, char **argv)
{
	/* --json is accepted after the command too. */
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			argv[n++] = argv[i];
	}
	argc = n;
	const char *cmd = argv[0];
	if (strcmp(cmd, "list") == 0)
		return s_list(human_endpoint, json, argc, argv);
	if (strcmp(cmd, "show") == 0)
		return s_show(human_endpoint, json, argc, argv);
	if (strcmp(cmd, "approve") == 0 || strcmp(cmd, "reject") == 0 || strcmp(cmd, "answer") == 0)
		return s_decide(human_endpoint, json, argc, argv);
	ahp_term_printf(stderr, "approvald: unknown command \"%s\"\n", cmd);
	return s_usage();
}
