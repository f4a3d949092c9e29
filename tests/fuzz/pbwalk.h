/* Walks a protobuf-c message by its descriptor, for the fuzz harnesses' invariants. */
#ifndef AHP_FUZZ_PBWALK_H
#define AHP_FUZZ_PBWALK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct {
	size_t unknown_fields; /* fields kept as raw bytes, at any depth */
	size_t unknown_enums;  /* enum values the schema does not name */
	size_t strings;        /* strings read (strlen: ASan checks each is terminated) */
	size_t max_repeated;   /* the most elements in one repeated field */
	int max_depth;         /* nesting: 0 for a message without set sub-messages */
} fuzz_pb_stats_t;

/* Adds m's counts (and those of every message under it) to *st. */
void fuzz_pb_walk(const ProtobufCMessage *m, fuzz_pb_stats_t *st);
/* The same, with m at nesting level depth (fuzz_pb_walk starts at 0). */
void fuzz_pb_walk_at(const ProtobufCMessage *m, fuzz_pb_stats_t *st, int depth);

#endif
