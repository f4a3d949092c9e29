/* Walks a protobuf-c message by its descriptor, for the fuzz harnesses' invariants. */
#ifndef AHP_FUZZ_PBWALK_H
#define AHP_FUZZ_PBWALK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct {
	size_t unknown_fields; /* fields kept as raw bytes, at any depth */
	size_t unknown_enums;  /* enum values the schema does not name */
	size_t strings;        /* strings read (strlen: ASan checks each is terminated) */
} fuzz_pb_stats_t;

/* Adds m's counts (and those of every message under it) to *st. */
void fuzz_pb_walk(const ProtobufCMessage *m, fuzz_pb_stats_t *st);

#endif
