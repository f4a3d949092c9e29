/* mock-llm: a growable byte buffer with a hard ceiling for untrusted input. */
#include <stdlib.h>
#include <string.h>

#include "mock_llm.h"

void
mock_buf_init(mock_buf_t *self, size_t max)
{
	self->data = NULL;
	self->len = 0;
	self->cap = 0;
	self->max = max;
}

int
mock_buf_put(mock_buf_t *self, const void *p, size_t n)
{
	/* The ceiling is checked before allocating so input cannot make us grow
	 * past it. */
	if (n > self->max || self->len > self->max - n)
		return -1;
	if (self->len + n + 1 > self->cap) {
		size_t cap = self->cap ? self->cap : 256;
		while (cap < self->len + n + 1)
			cap *= 2;
		if (cap > self->max + 1)
			cap = self->max + 1;
		char *d = realloc(self->data, cap);
		if (d == NULL)
			return -1;
		self->data = d;
		self->cap = cap;
	}
	if (n > 0)
		memcpy(self->data + self->len, p, n);
	self->len += n;
	self->data[self->len] = '\0';
	return 0;
}

int
mock_buf_puts(mock_buf_t *self, const char *s)
{
	return mock_buf_put(self, s, strlen(s));
}

char *
mock_buf_steal(mock_buf_t *self)
{
	char *d = self->data;
	if (d == NULL)
		d = strdup("");
	self->data = NULL;
	self->len = 0;
	self->cap = 0;
	return d;
}

void
mock_buf_free(mock_buf_t *self)
{
	free(self->data);
	self->data = NULL;
	self->len = 0;
	self->cap = 0;
}
