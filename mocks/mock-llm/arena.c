/* mock-llm: a per-thread bump arena that holds a request's parsed JSON tree. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "mock_llm.h"

/*
 * Parsing a request body with jansson makes a few allocations per JSON value
 * and freeing the tree as many again; with a conversation of dozens of
 * messages that malloc traffic was most of the mock's CPU. jansson takes
 * one allocator for the whole process, so ours serves from this thread's
 * arena while mock_arena_begin() is in effect (only around json_loadb of a
 * request) and from malloc otherwise. free() of arena memory is a no-op;
 * mock_arena_reset() drops the whole tree at once, without walking it.
 */

#define S_BLOCK_MIN (64 * 1024)
#define S_BLOCK_KEEP (1024 * 1024) /* a block kept for the next request at most */
#define S_ALIGN 16

typedef struct s_block {
	struct s_block *next;
	size_t cap, used;
	_Alignas(S_ALIGN) char data[];
} s_block_t;

static _Thread_local struct {
	s_block_t *blocks; /* the newest first */
	int active;
	int registered;
} s_arena;

static pthread_key_t s_key;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void
s_free_blocks(s_block_t *b)
{
	while (b != NULL) {
		s_block_t *next = b->next;
		free(b);
		b = next;
	}
}

/* At thread exit (a connection's thread ends): its arena goes. */
static void
s_thread_exit(void *arg)
{
	s_free_blocks(arg);
}

static void
s_key_init(void)
{
	(void)pthread_key_create(&s_key, s_thread_exit);
}

static void *
s_malloc(size_t size)
{
	if (!s_arena.active)
		return malloc(size);
	if (size > SIZE_MAX / 2)
		return NULL;
	size = (size + S_ALIGN - 1) & ~(size_t)(S_ALIGN - 1);
	s_block_t *b = s_arena.blocks;
	if (b == NULL || b->cap - b->used < size) {
		size_t cap = size > S_BLOCK_MIN ? size : S_BLOCK_MIN;
		if (b != NULL && cap < b->cap * 2 && b->cap * 2 <= S_BLOCK_KEEP)
			cap = b->cap * 2;
		b = malloc(sizeof *b + cap);
		if (b == NULL)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = s_arena.blocks;
		s_arena.blocks = b;
		if (!s_arena.registered) {
			(void)pthread_once(&s_once, s_key_init);
			s_arena.registered = 1;
		}
		(void)pthread_setspecific(s_key, s_arena.blocks);
	}
	void *p = b->data + b->used;
	b->used += size;
	return p;
}

static void
s_free(void *p)
{
	if (p == NULL)
		return;
	/* Only this thread's own tree is ever freed here, so its blocks are
	 * the only ones to look at (one or two). */
	for (const s_block_t *b = s_arena.blocks; b != NULL; b = b->next)
		if ((char *)p >= b->data && (char *)p < b->data + b->cap)
			return;
	free(p);
}

void
mock_arena_install(void)
{
	json_set_alloc_funcs(s_malloc, s_free);
}

void
mock_arena_begin(void)
{
	s_arena.active = 1;
}

void
mock_arena_end(void)
{
	s_arena.active = 0;
}

void
mock_arena_reset(void)
{
	s_arena.active = 0;
	s_block_t *keep = s_arena.blocks;
	if (keep == NULL)
		return;
	s_free_blocks(keep->next);
	keep->next = NULL;
	if (keep->cap > S_BLOCK_KEEP) {
		free(keep);
		keep = NULL;
	} else {
		keep->used = 0;
	}
	s_arena.blocks = keep;
	(void)pthread_setspecific(s_key, keep);
}
