/* The egress relay: a connection accepted inside a sandbox's netns, spliced to proxy_socket. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

/* One bounded buffer per direction: a direction reads only when its buffer is
 * empty and writes until it is, so a slow side stalls its peer (TCP / unix
 * backpressure) instead of growing memory. */
#define S_BUF (32 * 1024)

typedef struct {
	uint8_t buf[S_BUF];
	size_t len, off;
	bool eof;  /* the reading side said EOF */
	bool shut; /* we passed the EOF on (shutdown of the writing side) */
} s_dir_t;

struct sbx_relay {
	int cfd;      /* client, inside the sandbox */
	int ufd;      /* upstream, proxy_socket */
	s_dir_t up;   /* client -> upstream */
	s_dir_t down; /* upstream -> client */
};

/* Closes the client's connection with a reset: its connect succeeded (the
 * listener accepted), so a plain close would read as an empty reply; an RST
 * says "refused" to curl and friends. */
static void
s_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

sbx_relay_t *
sbx_relay_new(int client_fd, const char *proxy_socket, const uint8_t *header, size_t hlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (proxy_socket == NULL || proxy_socket[0] == '\0' ||
	    strlen(proxy_socket) >= sizeof(sa.sun_path) || header == NULL || hlen == 0 ||
	    hlen > S_BUF) {
		s_reset(client_fd);
		return NULL;
	}
	memcpy(sa.sun_path, proxy_socket, strlen(proxy_socket) + 1);
	int ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ufd < 0) {
		s_reset(client_fd);
		return NULL;
	}
	/* A unix connect completes at once or fails (EAGAIN when the listener's
	 * backlog is full): either way the loop never waits on it. */
	if (connect(ufd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		/* the sandbox only sees a reset: say why here, at most every 10 s */
		static int64_t last;
		int64_t now = ahp_mono_ms();
		if (last == 0 || now - last >= 10000) {
			last = now;
			log_warn("relay: cannot reach the egress proxy at %s: %s (sandboxes' "
			         "connections are reset; is credproxy running?)",
			         proxy_socket, strerror(errno));
		}
		close(ufd);
		s_reset(client_fd);
		return NULL;
	}
	sbx_relay_t *self = calloc(1, sizeof(*self));
	if (self == NULL) {
		close(ufd);
		s_reset(client_fd);
		return NULL;
	}
	self->cfd = client_fd;
	self->ufd = ufd;
	/* The header goes first: the client is not read until it is sent. */
	memcpy(self->up.buf, header, hlen);
	self->up.len = hlen;
	return self;
}

void
sbx_relay_destroy(sbx_relay_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	sbx_relay_t *self = *self_p;
	if (self->cfd >= 0)
		close(self->cfd);
	if (self->ufd >= 0)
		close(self->ufd);
	free(self);
	*self_p = NULL;
}

void
sbx_relay_events(const sbx_relay_t *self, int *cfd, short *cev, int *ufd, short *uev)
{
	*cfd = self->cfd;
	*ufd = self->ufd;
	*cev = 0;
	*uev = 0;
	if (!self->up.eof && self->up.len == 0)
		*cev |= POLLIN;
	if (self->down.len > self->down.off)
		*cev |= POLLOUT;
	if (!self->down.eof && self->down.len == 0)
		*uev |= POLLIN;
	if (self->up.len > self->up.off)
		*uev |= POLLOUT;
}

/* Reads into an empty buffer. -1 on a hard error. */
static int
s_fill(s_dir_t *d, int fd)
{
	ssize_t n = recv(fd, d->buf, sizeof(d->buf), 0);
	if (n > 0) {
		d->len = (size_t)n;
		d->off = 0;
		return 0;
	}
	if (n == 0) {
		d->eof = true;
		return 0;
	}
	return errno == EAGAIN || errno == EINTR ? 0 : -1;
}

static int
s_flush(s_dir_t *d, int fd)
{
	while (d->off < d->len) {
		ssize_t n = send(fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
		if (n > 0) {
			d->off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		return -1;
	}
	d->len = d->off = 0;
	return 0;
}

int
sbx_relay_io(sbx_relay_t *self, short crev, short urev)
{
	if ((crev | urev) & POLLNVAL)
		return -1;
	/* An error or hang-up (poll reports them unasked) on a side whose
	 * reading is over means that side is gone; otherwise reading tells. */
	if (((crev & (POLLERR | POLLHUP)) && self->up.eof) ||
	    ((urev & (POLLERR | POLLHUP)) && self->down.eof))
		return -1;
	if ((crev & (POLLIN | POLLHUP | POLLERR)) && !self->up.eof && self->up.len == 0)
		if (s_fill(&self->up, self->cfd) != 0)
			return -1;
	if ((urev & (POLLIN | POLLHUP | POLLERR)) && !self->down.eof && self->down.len == 0)
		if (s_fill(&self->down, self->ufd) != 0)
			return -1;
	/* Try writing right away: the peer is usually ready. */
	if (self->up.len > self->up.off && s_flush(&self->up, self->ufd) != 0)
		return -1;
	if (self->down.len > self->down.off && s_flush(&self->down, self->cfd) != 0)
		return -1;
	/* Pass half-closes on once everything before them is delivered. */
	if (self->up.eof && self->up.len == 0 && !self->up.shut) {
		shutdown(self->ufd, SHUT_WR);
		self->up.shut = true;
	}
	if (self->down.eof && self->down.len == 0 && !self->down.shut) {
		shutdown(self->cfd, SHUT_WR);
		self->down.shut = true;
	}
	return self->up.shut && self->down.shut ? -1 : 0;
}
