/* fakeorch: test tool — a stand-in for the orchestrator's socket that answers orchctl's
 * events requests from a file, so that orchctl's inline decisions can be tested without a
 * run that really waits.
 *
 *   fakeorch ENDPOINT FILE
 *
 * FILE holds an ahp.orch.EventsReply as JSON ({"events": [{"seq", "kind", "text", "data"}],
 * "run": {"run_id", "state", ...}}), re-read at every request, so a test changes what the
 * "run" shows by rewriting it (write a temp file, then rename). An events request gets the
 * events with seq > after_seq; with none and wait_ms > 0 it is answered after at most 200 ms
 * (a short hold: orchctl asks again). A submit is answered with the file's run id (nothing
 * starts). Any other request gets ERR_BAD_REQUEST. Runs until
 * SIGTERM; prints "ready" on stdout once bound. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "ahp/jsonpb.h"
#include "ahp/rpc.h"
#include "orchestrator.pb-c.h"

static volatile sig_atomic_t s_stop = 0;

static void
s_on_term(int sig)
{
	(void)sig;
	s_stop = 1;
}

/* The file as an EventsReply (caller frees), or NULL after printing why. */
static Ahp__Orch__EventsReply *
s_load(const char *path)
{
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	if (j == NULL) {
		fprintf(stderr, "fakeorch: %s: %s\n", path, je.text);
		return NULL;
	}
	char err[256];
	ProtobufCMessage *m =
	    ahp_json_to_proto(&ahp__orch__events_reply__descriptor, j, err, sizeof err);
	json_decref(j);
	if (m == NULL)
		fprintf(stderr, "fakeorch: %s: %s\n", path, err);
	return (Ahp__Orch__EventsReply *)m;
}

static void
s_answer(ahp_rpc_server_t *srv, ahp_rpc_req_t **req, const char *path)
{
	Ahp__Orch__Request *in = ahp__orch__request__unpack(NULL, (*req)->body_len, (*req)->body);
	Ahp__Orch__Reply out = AHP__ORCH__REPLY__INIT;
	Ahp__Error e = AHP__ERROR__INIT;
	Ahp__Orch__EventsReply *er = NULL;
	Ahp__Orch__EventsReply view = AHP__ORCH__EVENTS_REPLY__INIT;
	Ahp__Orch__Event **sel = NULL;
	Ahp__Orch__SubmitReply sub = AHP__ORCH__SUBMIT_REPLY__INIT;
	if (in != NULL && in->body_case == AHP__ORCH__REQUEST__BODY_SUBMIT) {
		er = s_load(path);
		sub.run_id = er != NULL && er->run != NULL ? er->run->run_id : "";
		out.body_case = AHP__ORCH__REPLY__BODY_SUBMIT;
		out.submit = &sub;
	} else if (in == NULL || in->body_case != AHP__ORCH__REQUEST__BODY_EVENTS) {
		e.status = AHP__STATUS__ERR_BAD_REQUEST;
		e.message = "fakeorch answers submit and events requests only";
		out.error = &e;
	} else {
		for (int waited = 0;; waited += 50) {
			er = s_load(path);
			if (er == NULL)
				break;
			sel = calloc(er->n_events + 1, sizeof *sel);
			size_t n = 0;
			for (size_t i = 0; sel != NULL && i < er->n_events; i++)
				if (er->events[i]->seq > in->events->after_seq)
					sel[n++] = er->events[i];
			if (n > 0 || in->events->wait_ms == 0 || waited >= 200 || s_stop) {
				view.events = sel;
				view.n_events = n;
				view.run = er->run;
				break;
			}
			free(sel);
			sel = NULL;
			protobuf_c_message_free_unpacked(&er->base, NULL);
			er = NULL;
			usleep(50 * 1000);
		}
		if (er == NULL) {
			e.status = AHP__STATUS__ERR_INTERNAL;
			e.message = "fakeorch: unreadable file";
			out.error = &e;
		} else {
			out.body_case = AHP__ORCH__REPLY__BODY_EVENTS;
			out.events = &view;
		}
	}
	size_t len = ahp__orch__reply__get_packed_size(&out);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf != NULL) {
		ahp__orch__reply__pack(&out, buf);
		ahp_rpc_server_reply(srv, req, buf, len);
	} else {
		ahp_rpc_req_free(req);
	}
	free(buf);
	free(sel);
	if (er != NULL)
		protobuf_c_message_free_unpacked(&er->base, NULL);
	if (in != NULL)
		ahp__orch__request__free_unpacked(in, NULL);
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fputs("usage: fakeorch ENDPOINT FILE\n", stderr);
		return 2;
	}
	signal(SIGTERM, s_on_term);
	signal(SIGINT, s_on_term);
	ahp_rpc_server_t *srv = ahp_rpc_server_new(NULL, argv[1], 0, NULL);
	if (srv == NULL)
		return 1;
	puts("ready");
	fflush(stdout);
	while (!s_stop) {
		zmq_pollitem_t it = {ahp_rpc_server_socket(srv), 0, ZMQ_POLLIN, 0};
		if (zmq_poll(&it, 1, 200) < 0)
			continue;
		ahp_rpc_req_t *req = NULL;
		while (ahp_rpc_server_recv(srv, &req) == 1)
			s_answer(srv, &req, argv[2]);
	}
	ahp_rpc_server_destroy(&srv);
	return 0;
}
