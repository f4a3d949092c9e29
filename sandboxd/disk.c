/* Per-sandbox disks: an ext4 image per uid slot, on a loop device, holds /workspace and /tmp. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/loop.h>

#include "ahp/limit_table.h"
#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

/*
 * Why an image per sandbox (docs/security.md "Disk and CPU"):
 *   - a hard limit on /workspace and /tmp together, enforced by the kernel
 *     (ENOSPC inside), whatever the host filesystem is: project quotas
 *     would need ext4/xfs mounted with prjquota, which sandboxd cannot
 *     assume and must not change;
 *   - the image is fallocate()d: its whole size is reserved on the host at
 *     create time, so a full sandbox never eats into the host's free space
 *     (a sparse image would only cap one sandbox; N of them could still
 *     fill the host). When the host has no room for the reservation,
 *     Create fails instead of a later write on the host;
 *   - the image is a file in the state dir: it survives a sandboxd restart
 *     with the workspace in it, and deleting it frees everything at once.
 *
 * Layout under state_dir:
 *   disks/s<slot>.img        the image (0600 root), fallocated, ext4 (from a template)
 *   disks/s<slot>.img.loop   the number of the loop device it was last attached to
 *   disks/.template-v3-<MiB>.img  a sparse ext4 (no journal) made by mke2fs once per size
 *   disks/.ready-<MiB>-<k>.img  images ready for the next disks (sbx_disk_prepare,
 *                            s_recycle)
 *   workspaces/s<slot>/      its mount point (nosuid, nodev); in the image:
 *       ws/                  the sandbox's /workspace, owned by its host uid
 *       tmp/                 the sandbox's /tmp (01777, its uid)
 *       proc/meminfo,cpuinfo what the sandbox sees in /proc (its own limits)
 *       lost+found/          mke2fs's, never visible inside
 *
 * The loop device is attached with LO_FLAGS_AUTOCLEAR: once the filesystem
 * is unmounted everywhere it detaches by itself, so an unmount (lazy, as
 * sandboxes may still be exiting) is the whole teardown. An image is never
 * attached twice at once (two ext4 instances on one file would corrupt
 * it): attaching first checks the loop device it was last attached to
 * (IMG.loop) and, when that is still backed by the same inode (a lazily
 * unmounted instance holds it), mounts that one. No other loop device is
 * opened: they are shared with the whole host.
 *
 * Everything here runs as root in the privileged process (zygote, or
 * sandboxd before it starts serving), never inside a sandbox.
 */

#define S_MKE2FS "/sbin/mke2fs"
#define S_LOOP_TRIES 16
#define S_MOUNT_FLAGS (MS_NOSUID | MS_NODEV | MS_NOATIME)
/* noinit_itable: no background zeroing of inode tables (ext4lazyinit): the
 * image is fallocated, so they read as zeros already. nobarrier: the disk's
 * ext4 never sends the loop device a flush, which the loop device turns into
 * an fsync of the whole image on the host: every unmount paid one (~10% of
 * the CPU of a back-to-back one-shot), and a command's fsync(2) or syncfs(2)
 * made the host flush its own disk as often as it liked (sync(2), global, is
 * refused: seccomp.c). Its writes reach the image's page cache and the host
 * writes them back like any file's. What barriers gave the check after a
 * crash of the host is kept: a start checks every disk unless a clean stop
 * left its mark (S_STOPPED, below), and a clean stop gets the barriers back
 * before the unmount (sbx_disk_stop). docs/security.md "No barriers". */
#define S_MOUNT_OPTS "errors=remount-ro,noinit_itable,nobarrier"
/* disks/.stopped: made (durably) by a clean stop after every disk was unmounted
 * with barriers, deleted by the next start (sbx_disk_restore); missing there,
 * every disk not live is checked with e2fsck -fp before it is mounted. */
#define S_STOPPED ".stopped"

static int
s_paths(const sbx_store_t *store, uint32_t slot, char *img, char *mp)
{
	int a = snprintf(img, PATH_MAX, "%s/s%u.img", sbx_store_dir(store, "disks"), slot);
	int b = snprintf(mp, PATH_MAX, "%s/s%u", sbx_store_dir(store, "workspaces"), slot);
	if (a < 0 || a >= PATH_MAX || b < 0 || b >= PATH_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* 1 when path is a mount point (another device than its parent), 0 not, -1 error. */
static int
s_mounted(const char *path)
{
	char parent[PATH_MAX];
	struct stat a, b;
	if (snprintf(parent, sizeof(parent), "%s/..", path) >= (int)sizeof(parent)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (lstat(path, &a) != 0 || stat(parent, &b) != 0)
		return -1;
	if (!S_ISDIR(a.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return a.st_dev != b.st_dev;
}

/* Runs an e2fsprogs tool (argv[0] under /sbin, else /usr/sbin) with stdin and
 * stdout on /dev/null; its exit status (0-255), or -1 when it could not run or
 * was killed (err says why). */
static int
s_tool(char *const argv[], char *err, size_t errlen)
{
	char *const envp[] = {(char *)"PATH=/usr/sbin:/sbin:/usr/bin:/bin",
	                      (char *)"MKE2FS_CONFIG=/etc/mke2fs.conf", NULL};
	char p1[64], p2[64];
	snprintf(p1, sizeof(p1), "/sbin/%s", argv[0]);
	snprintf(p2, sizeof(p2), "/usr/sbin/%s", argv[0]);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "%s: fork: %s", argv[0], strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		execve(p1, argv, envp);
		execve(p2, argv, envp);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st)) {
		snprintf(err, errlen, "%s killed by signal %d", argv[0],
		         WIFSIGNALED(st) ? WTERMSIG(st) : -1);
		return -1;
	}
	if (WEXITSTATUS(st) == 127)
		snprintf(err, errlen, "%s failed (status 127: is e2fsprogs installed?)", argv[0]);
	return WEXITSTATUS(st);
}

/* Runs mke2fs on the image file: ext4, no reserved blocks (the sandbox is
 * never root on the host: reserved blocks would shrink its quota), no
 * discard (that would punch holes in the reservation), inode tables zeroed
 * lazily (the fallocated file reads as zeros anyway), no resize inode (a
 * sandbox disk never grows; its reserved descriptor blocks were 3/4 of the
 * template's data, copied into every image), and the layout's directories
 * (ws/, tmp/, proc/) made from `layout` (-d): a spawn only sets their owner
 * instead of making three directories.
 *
 * No journal (docs/security.md "Disk and CPU", why): every mount of a
 * journaled disk started a jbd2 thread and every unmount committed and
 * stopped it, ~1 ms of CPU and half the unmount's time per sandbox. What a
 * journal buys, a consistent filesystem after a crash of the host, comes
 * from e2fsck instead: the start after a crash of the host finds no mark of
 * a clean stop (S_STOPPED) and sbx_disk_restore checks every disk not live
 * (s_check, e2fsck -fp) before mounting it again; a disk whose superblock
 * says not clean (ext4 without a journal clears its valid flag while
 * mounted) or flagged with an error is checked at any start. A crash of
 * sandboxd alone changes nothing where its mounts are the host's (they stay);
 * where they die with its mount namespace (a container), they are unmounted
 * without barriers, and the next start checks every disk (S_STOPPED). */
static int
s_mkfs(const char *img, const char *layout, char *err, size_t errlen)
{
	char *const argv[] = {(char *)"mke2fs",
	                      (char *)"-q",
	                      (char *)"-F",
	                      (char *)"-t",
	                      (char *)"ext4",
	                      (char *)"-m",
	                      (char *)"0",
	                      (char *)"-O",
	                      (char *)"^resize_inode,^has_journal",
	                      (char *)"-L",
	                      (char *)"ahp-sandbox",
	                      (char *)"-E",
	                      (char *)"nodiscard,lazy_itable_init=1",
	                      (char *)"-d",
	                      (char *)layout,
	                      (char *)img,
	                      NULL};
	int rc = s_tool(argv, err, errlen);
	if (rc != 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "mke2fs failed (status %d)", rc);
		return -1;
	}
	return 0;
}

/* The state word of an ext4 superblock (at 1024 + 0x3a; EXT4_VALID_FS = 1
 * is set by mke2fs and a clean unmount, cleared on disk while a filesystem
 * without a journal is mounted; EXT4_ERROR_FS = 2). -1 when img holds no
 * ext4 superblock (magic 0xEF53 at 1024 + 0x38). */
static int
s_sb_state(const char *img)
{
	unsigned char sb[4];
	int fd = open(img, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n = fd >= 0 ? pread(fd, sb, sizeof(sb), 1024 + 0x38) : -1;
	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)sizeof(sb) || sb[0] != 0x53 || sb[1] != 0xef)
		return -1;
	return sb[2] | sb[3] << 8;
}

/* Before a disk from an earlier run is mounted again (sbx_disk_restore,
 * sbx_disk_attach): a filesystem that was not cleanly unmounted (the host
 * crashed, or lost power, while it was mounted) or that ext4 marked with an
 * error is checked and repaired with `e2fsck -p` first, as a boot checks
 * one. What -p may not fix unattended (blocks claimed by two inodes, ...) is
 * never mounted as it is: without a journal, a crash can leave a block
 * that held a file's data (the sandbox's bytes) claimed by metadata too,
 * and a file of the sandbox would write straight into the kernel's
 * filesystem metadata. `e2fsck -fy` then repairs what it can (what it
 * cannot keep goes to lost+found/, outside the sandbox's view, or is
 * cleared); a disk even that leaves inconsistent is not mounted. force:
 * checked (e2fsck -fp) even when its superblock says clean, which it may
 * without being so when sandboxd did not stop cleanly (S_STOPPED). Only
 * called when no instance of it is live (s_check_unless_live): never on a
 * mounted filesystem. 0 when clean or repaired, -1 when it must not be
 * mounted. */
static int
s_check(const char *img, bool force)
{
	int state = s_sb_state(img);
	if (state < 0 || (!force && (state & 3) == 1))
		return 0; /* clean (not ext4 at all: the mount says so) */
	char err[256] = "";
	char *const argv[] = {(char *)"e2fsck", (char *)(force ? "-fp" : "-p"), (char *)img, NULL};
	int rc = s_tool(argv, err, sizeof(err));
	/* 0 clean, 1 errors fixed, 2 fixed (reboot: for a root fs); 4 and up: not fixed */
	if (rc >= 0 && rc < 4) {
		if (force)
			log_info("disk %s: sandboxd did not stop cleanly (its disks may have been "
			         "unmounted without barriers): checked with e2fsck -fp (status %d)",
			         img, rc);
		else
			log_info("disk %s was not cleanly unmounted (state %#x): checked with "
			         "e2fsck -p (status %d)",
			         img, (unsigned)state, rc);
		return 0;
	}
	char erry[256] = "";
	char *const argy[] = {(char *)"e2fsck", (char *)"-fy", (char *)img, NULL};
	int ry = s_tool(argy, erry, sizeof(erry));
	if (ry >= 0 && ry < 4) {
		log_warn("disk %s was not cleanly unmounted; e2fsck -p could not repair it "
		         "(%s%sstatus %d): repaired with e2fsck -fy (status %d), what it could not "
		         "keep is in lost+found/ of the image or gone",
		         img, err, err[0] ? ", " : "", rc, ry);
		return 0;
	}
	log_error("disk %s is damaged: neither e2fsck -p (%s%sstatus %d) nor e2fsck -fy "
	          "(%s%sstatus %d) could repair it; not mounted (the image is kept)",
	          img, err, err[0] ? ", " : "", rc, erry, erry[0] ? ", " : "", ry);
	return -1;
}

/* Formatted images are copied from a template per size: mke2fs (a fork, an
 * exec and its writes) costs more than the rest of a sandbox's start, while
 * the formatted metadata of a fresh filesystem is small (about 600 KiB for
 * 1 GiB with lazy init). Templates are sparse, made once per size and kept
 * in disks/; at most S_TEMPLATES_MAX sizes, the least recently used goes. */
#define S_TEMPLATES_MAX 4

/* Deletes the least recently used templates beyond S_TEMPLATES_MAX - 1. */
static void
s_prune_templates(const char *dir)
{
	for (;;) {
		DIR *d = opendir(dir);
		if (d == NULL)
			return;
		int n = 0;
		char oldest[NAME_MAX + 1] = "";
		struct timespec when = {0, 0};
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			struct stat st;
			size_t l = strlen(e->d_name);
			if (strncmp(e->d_name, ".template-", 10) != 0 || l < 14 ||
			    strcmp(e->d_name + l - 4, ".img") != 0 ||
			    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			n++;
			if (oldest[0] == '\0' || st.st_mtim.tv_sec < when.tv_sec ||
			    (st.st_mtim.tv_sec == when.tv_sec &&
			     st.st_mtim.tv_nsec < when.tv_nsec)) {
				when = st.st_mtim;
				ahp_strlcpy(oldest, e->d_name, sizeof(oldest));
			}
		}
		if (n < S_TEMPLATES_MAX || oldest[0] == '\0') {
			closedir(d);
			return;
		}
		(void)unlinkat(dirfd(d), oldest, 0);
		closedir(d);
	}
}

/* The layout directory mke2fs -d copies into a template: the image root's
 * ws/ (0700), tmp/ (01777) and proc/ (0755), all root's (a spawn gives ws/
 * and tmp/ to the slot's uid). Made under dir as .layout-<MiB>; removed
 * with s_layout_rm. */
static int
s_layout(const char *dir, uint32_t mb, char *out, size_t len)
{
	static const struct {
		const char *name;
		mode_t mode;
	} sub[] = {{"ws", 0700}, {"tmp", 01777}, {"proc", 0755}};
	if (snprintf(out, len, "%s/.layout-%u", dir, mb) >= (int)len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	(void)mkdir(out, 0755);
	int fd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fchown(fd, 0, 0) == 0 && fchmod(fd, 0755) == 0 ? 0 : -1;
	for (size_t i = 0; rc == 0 && i < sizeof(sub) / sizeof(sub[0]); i++) {
		if (mkdirat(fd, sub[i].name, sub[i].mode) != 0 && errno != EEXIST)
			rc = -1;
		/* mkdir applies the umask */
		else if (fchmodat(fd, sub[i].name, sub[i].mode, 0) != 0)
			rc = -1;
	}
	close(fd);
	return rc;
}

static void
s_layout_rm(const char *layout)
{
	static const char *const sub[] = {"ws", "tmp", "proc"};
	char p[PATH_MAX];
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (snprintf(p, sizeof(p), "%s/%s", layout, sub[i]) < (int)sizeof(p))
			(void)rmdir(p);
	(void)rmdir(layout);
}

/* The template of mb MiB (made when missing), open read-only. -1 with err.
 * Named .template-v3-: the templates of earlier versions (v2: a journal;
 * before: a resize inode, no layout) are not taken and go as the least
 * recently used. */
static int
s_template(const char *dir, uint32_t mb, bool make, char *err, size_t errlen)
{
	char t[PATH_MAX], tmp[PATH_MAX], layout[PATH_MAX];
	if (snprintf(t, sizeof(t), "%s/.template-v3-%u.img", dir, mb) >= (int)sizeof(t) ||
	    snprintf(tmp, sizeof(tmp), "%s/.template-v3-%u.new", dir, mb) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "disk template path too long");
		return -1;
	}
	int fd = open(t, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		(void)futimens(fd, NULL); /* recently used */
		return fd;
	}
	if (!make) {
		snprintf(err, errlen, "no disk template of %u MiB", mb);
		return -1;
	}
	s_prune_templates(dir);
	(void)unlink(tmp);
	int w = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w < 0 || ftruncate(w, (off_t)mb << 20) != 0) {
		snprintf(err, errlen, "disk template: %s", strerror(errno));
		if (w >= 0)
			close(w);
		unlink(tmp);
		return -1;
	}
	close(w);
	if (s_layout(dir, mb, layout, sizeof(layout)) != 0) {
		snprintf(err, errlen, "disk template layout: %s", strerror(errno));
		s_layout_rm(layout);
		unlink(tmp);
		return -1;
	}
	int rc = s_mkfs(tmp, layout, err, errlen);
	s_layout_rm(layout);
	if (rc != 0 || rename(tmp, t) != 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "disk template: %s", strerror(errno));
		unlink(tmp);
		return -1;
	}
	fd = open(t, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		snprintf(err, errlen, "disk template: %s", strerror(errno));
	return fd;
}

/* Copies the data extents of src (SEEK_DATA / SEEK_HOLE) into dst at the
 * same offsets; holes stay as dst has them (fallocated: zeros). */
static int
s_copy_data(int src, int dst, off_t size)
{
	off_t off = 0;
	while (off < size) {
		off_t d = lseek(src, off, SEEK_DATA);
		if (d < 0)
			return errno == ENXIO ? 0 : -1; /* no data after off */
		off_t h = lseek(src, d, SEEK_HOLE);
		if (h < 0)
			return -1;
		loff_t in = d, out = d;
		while (in < h) {
			ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(h - in), 0);
			if (n <= 0)
				return n == 0 ? (errno = EIO, -1) : -1;
		}
		off = h;
	}
	return 0;
}

/* What the host keeps free whatever sandboxes ask for: 5% of the state
 * directory's filesystem, at most 1 GiB. */
static uint64_t
s_headroom(const struct statvfs *v)
{
	uint64_t five = (uint64_t)v->f_blocks * v->f_frsize / 20;
	return five < (1ull << 30) ? five : 1ull << 30;
}

static bool
s_room(const struct statvfs *v, uint32_t mb)
{
	uint64_t avail = (uint64_t)v->f_bavail * v->f_frsize;
	return avail >= ((uint64_t)mb << 20) + s_headroom(v);
}

/* A new image of mb MiB at img: reserved in full (fallocate), then the
 * template's formatted metadata copied in. Made under a temporary name and
 * renamed, so a crash never leaves a half-made image under the real name. */
static int
s_create(const char *dir, const char *img, uint32_t mb, bool make_template, char *err,
         size_t errlen)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.new", img) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "disk image path too long");
		return -1;
	}
	(void)unlink(tmp);
	int tfd = -1;
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "disk image: %s", strerror(errno));
		return -1;
	}
	/* the reservation first: no template is made for a size that does not
	 * fit. Checked before fallocate, which on ENOSPC may keep what it got:
	 * the host would be full for a moment. */
	struct statvfs vfs;
	if (fstatvfs(fd, &vfs) == 0 && !s_room(&vfs, mb)) {
		snprintf(err, errlen,
		         "no room on the host for a %u MiB sandbox disk (sandbox.disk_mb; "
		         "the host keeps %u MiB free)",
		         mb, (unsigned)(s_headroom(&vfs) >> 20));
		goto fail;
	}
	if (fallocate(fd, 0, 0, (off_t)mb << 20) != 0) {
		int e = errno;
		if (e == ENOSPC)
			snprintf(err, errlen,
			         "no room on the host for a %u MiB sandbox disk (sandbox.disk_mb)",
			         mb);
		else
			snprintf(err, errlen, "reserving %u MiB for the disk: %s", mb, strerror(e));
		goto fail;
	}
	if ((tfd = s_template(dir, mb, make_template, err, errlen)) < 0)
		goto fail;
	if (s_copy_data(tfd, fd, (off_t)mb << 20) != 0) {
		snprintf(err, errlen, "copying the disk template: %s", strerror(errno));
		goto fail;
	}
	/* Attaching a loop device (LOOP_CONFIGURE) flushes the backing file's
	 * dirty pages and waits for the writes: the template's copy, ~1 ms of
	 * I/O here. Flushed now, an image made ahead (sbx_disk_prepare) costs
	 * the spawn that attaches it nothing of it; made by the spawn itself,
	 * the wait only moves from the attach to here. */
	if (fdatasync(fd) != 0) {
		snprintf(err, errlen, "writing the disk image: %s", strerror(errno));
		goto fail;
	}
	close(fd);
	close(tfd);
	if (rename(tmp, img) != 0) {
		snprintf(err, errlen, "disk image: %s", strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
fail:
	close(fd);
	if (tfd >= 0)
		close(tfd);
	unlink(tmp);
	return -1;
}

/* /dev/loopN for n, made when devtmpfs has not (yet) got it. */
static int
s_loop_node(int n, char *path, size_t len)
{
	snprintf(path, len, "/dev/loop%d", n);
	struct stat st;
	if (stat(path, &st) == 0)
		return 0;
	return mknod(path, S_IFBLK | 0600, makedev(7, (unsigned)n));
}

/* IMG.loop: the number of the loop device the image was last attached to. */
static int
s_loop_record_path(const char *img, char *rec, size_t len)
{
	if (snprintf(rec, len, "%s.loop", img) >= (int)len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* The loop device a lazily unmounted instance of the image still holds: its
 * number, or -1. Loop devices are the host's, shared with everything else
 * on it (the host's own sandboxd, other containers of sandboxd): only the
 * one device this image was last attached to (IMG.loop, written by
 * s_mount) is looked at, never a scan of them all, and it is taken only
 * while it is backed by the image's inode (a number freed by autoclear may
 * since belong to someone else: then it is left alone). */
static int
s_loop_find(const char *img, const struct stat *st, int *fdp)
{
	*fdp = -1;
	char rec[PATH_MAX], *buf = NULL;
	size_t len = 0;
	long n;
	if (s_loop_record_path(img, rec, sizeof(rec)) != 0 ||
	    ahp_read_file(rec, 32, &buf, &len) != 0)
		return -1; /* never attached */
	while (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	int ok = ahp_parse_long(buf, 0, 1 << 20, &n) == 0;
	free(buf);
	char p[PATH_MAX];
	if (!ok)
		return -1;
	/* bound devices only: no node is made for a free number */
	snprintf(p, sizeof(p), "/sys/block/loop%ld/loop", n);
	if (access(p, F_OK) != 0 || s_loop_node((int)n, p, sizeof(p)) != 0)
		return -1;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct loop_info64 li;
	int found = ioctl(fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == st->st_ino &&
	            li.lo_device == st->st_dev;
	if (!found) {
		close(fd);
		return -1;
	}
	/* Kept open until the mount is made: an open device is neither cleared
	 * by autoclear nor rebound to another file in between. */
	*fdp = fd;
	return (int)n;
}

/* s_check, unless an instance of img is still live (a lazily unmounted one
 * whose loop device still backs the image: it is mounted again as it is). */
static int
s_check_unless_live(const char *img, bool force)
{
	int state = s_sb_state(img);
	if (state < 0 || (!force && (state & 3) == 1))
		return 0; /* clean: no loop device looked at */
	struct stat st;
	int lfd = -1, rc = 0;
	if (stat(img, &st) == 0 && s_loop_find(img, &st, &lfd) < 0)
		rc = s_check(img, force);
	if (lfd >= 0)
		close(lfd);
	return rc;
}

/* Records n as the image's loop device (before it is mounted: a crash
 * between the two leaves a record of a device that clears itself). */
static int
s_loop_record(const char *img, int n)
{
	char rec[PATH_MAX], buf[32];
	if (s_loop_record_path(img, rec, sizeof(rec)) != 0)
		return -1;
	int fd = open(rec, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	int l = snprintf(buf, sizeof(buf), "%d\n", n);
	int rc = ahp_write_all(fd, buf, (size_t)l);
	if (close(fd) != 0)
		rc = -1;
	return rc;
}

/* Attaches the image to a free loop device (LOOP_CONFIGURE, autoclear).
 * Returns the loop fd (keep it open until mounted: closing it clears the
 * device) and its path in dev. */
static int
s_loop_attach(int imgfd, int *num, char *dev, size_t devlen, char *err, size_t errlen)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		snprintf(err, errlen, "/dev/loop-control: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < S_LOOP_TRIES; i++) {
		int fd = -1;
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			snprintf(err, errlen, "no free loop device: %s", strerror(errno));
			break;
		}
		const char *op = "mknod";
		if (s_loop_node(n, dev, devlen) != 0 ||
		    (op = "open", fd = open(dev, O_RDWR | O_CLOEXEC)) < 0) {
			/* no node and no right to make one (CAP_MKNOD), or no right to
			 * open it (a container's device cgroup): say so, not "no free
			 * device"; other errors: another process's race, try again */
			if (errno == EPERM || errno == EACCES) {
				snprintf(err, errlen, "%s %s: %s", op, dev, strerror(errno));
				break;
			}
			continue;
		}
		struct loop_config lc;
		memset(&lc, 0, sizeof(lc));
		lc.fd = (uint32_t)imgfd;
		lc.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(fd, LOOP_CONFIGURE, &lc) == 0) {
			close(ctl);
			*num = n;
			return fd;
		}
		int e = errno;
		close(fd);
		if (e != EBUSY) { /* EBUSY: another process took it first */
			snprintf(err, errlen, "LOOP_CONFIGURE %s: %s", dev, strerror(e));
			break;
		}
	}
	if (err[0] == '\0')
		snprintf(err, errlen, "no free loop device");
	close(ctl);
	return -1;
}

/* Mounts the image at mp (its own loop device, or the one a lazily
 * unmounted instance of it still holds). */
static int
s_mount(const char *img, const char *mp, char *err, size_t errlen)
{
	int imgfd = open(img, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (imgfd < 0 || fstat(imgfd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "disk image %s: %s", img, strerror(errno ? errno : EINVAL));
		if (imgfd >= 0)
			close(imgfd);
		return -1;
	}
	char dev[64];
	for (int i = 0; i < S_LOOP_TRIES; i++) {
		int lfd = -1, num = -1;
		int n = s_loop_find(img, &st, &lfd);
		if (n >= 0)
			snprintf(dev, sizeof(dev), "/dev/loop%d", n);
		else if ((lfd = s_loop_attach(imgfd, &num, dev, sizeof(dev), err, errlen)) < 0)
			break;
		if (n < 0 && s_loop_record(img, num) != 0) {
			snprintf(err, errlen, "recording %s for %s: %s", dev, img, strerror(errno));
			close(lfd);
			break;
		}
		int rc = mount(dev, mp, "ext4", S_MOUNT_FLAGS, S_MOUNT_OPTS);
		int e = errno;
		if (lfd >= 0)
			close(lfd); /* the mount holds the device now (or autoclear frees it) */
		if (rc == 0) {
			/* The mount marked the disk "not clean" in its superblock,
			 * in the image's page cache: without barriers (S_MOUNT_OPTS)
			 * nothing makes that durable, and nothing needs to. After a
			 * crash of the host the next start checks every disk not
			 * live whatever its superblock says, since only a clean stop
			 * leaves disks/.stopped and a start deletes it, durably,
			 * before it mounts anything (sbx_disk_restore). (An
			 * fdatasync here, for the mark alone, cost every mount a
			 * flush of the host's disk: ~0.7 ms of a back-to-back
			 * one-shot.) What the image holds of its template is on the
			 * host's disk already: LOOP_CONFIGURE fsyncs the backing
			 * file, and s_create / s_recycle flushed it before. */
			close(imgfd);
			return 0;
		}
		/* a found device may have been cleared in between: look again */
		if (n < 0 || (e != ENXIO && e != ENODEV && e != ENOENT && e != EINVAL)) {
			snprintf(err, errlen, "mount %s: %s", dev, strerror(e));
			break;
		}
	}
	close(imgfd);
	if (err[0] == '\0')
		snprintf(err, errlen, "mount: the loop device kept going away");
	return -1;
}

/* A directory of the image root, owned and moded as asked (made or fixed). */
static int
s_dir(const char *mp, const char *name, uid_t uid, mode_t mode)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", mp, name) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (mkdir(p, mode) != 0 && errno != EEXIST)
		return -1;
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	int rc = 0;
	if (st.st_uid != uid || st.st_gid != uid)
		rc = fchown(fd, uid, uid);
	if (rc == 0 && (st.st_mode & 07777) != mode)
		rc = fchmod(fd, mode);
	close(fd);
	return rc;
}

/* Replaces the content of a root-owned 0444 file in place (a sandbox has it
 * bind-mounted: the inode must stay the same). */
static int
s_put(const char *mp, const char *name, const char *buf, size_t len)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", mp, name) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return -1;
	/* written over, then cut to length: truncating to 0 first makes ext4
	 * write the file out at close (auto_da_alloc, for replace-by-truncate),
	 * a flush through the loop device at every spawn and claim */
	int rc = 0;
	for (size_t o = 0; rc == 0 && o < len;) {
		ssize_t n = pwrite(fd, buf + o, len - o, (off_t)o);
		if (n > 0)
			o += (size_t)n;
		else if (n < 0 && errno != EINTR)
			rc = -1;
	}
	if (rc == 0 && ftruncate(fd, (off_t)len) != 0)
		rc = -1;
	close(fd);
	return rc;
}

/* The first processor's block of the host's /proc/cpuinfo (up to the blank
 * line), without its "processor" line. Read once per process: making
 * /proc/cpuinfo asks every CPU for its frequency (an IPI each), and it was
 * read at every spawn and every claim; what a sandbox is shown of the
 * processor does not change while sandboxd runs. */
static size_t
s_cpu_block(char *out, size_t cap)
{
	static char block[4096];
	static size_t len;
	static bool read_once;
	if (!read_once) {
		char *buf = NULL;
		size_t n = 0;
		if (ahp_read_file("/proc/cpuinfo", 1 << 20, &buf, &n) != 0)
			return 0;
		for (char *l = buf; l != NULL && *l != '\0' && *l != '\n';) {
			char *nl = strchr(l, '\n');
			size_t ll = nl ? (size_t)(nl - l) + 1 : strlen(l);
			if (strncmp(l, "processor", 9) != 0 && len + ll < sizeof(block)) {
				memcpy(block + len, l, ll);
				len += ll;
			}
			l = nl ? nl + 1 : NULL;
		}
		free(buf);
		read_once = true;
	}
	size_t o = len < cap ? len : 0;
	memcpy(out, block, o);
	return o;
}

int
sbx_disk_proc_files(const sbx_store_t *store, uint32_t slot, const sbx_limits_t *lim)
{
	char img[PATH_MAX], mp[PATH_MAX];
	if (s_paths(store, slot, img, mp) != 0 || s_dir(mp, "proc", 0, 0755) != 0)
		return -1;
	char buf[16384];
	unsigned long long kb = (unsigned long long)lim->memory_mb * 1024u;
	int n = snprintf(buf, sizeof(buf),
	                 "MemTotal:       %8llu kB\nMemFree:        %8llu kB\n"
	                 "MemAvailable:   %8llu kB\nBuffers:               0 kB\n"
	                 "Cached:                0 kB\nSwapCached:            0 kB\n"
	                 "Active:                0 kB\nInactive:              0 kB\n"
	                 "SwapTotal:             0 kB\nSwapFree:              0 kB\n"
	                 "Shmem:                 0 kB\nSlab:                  0 kB\n"
	                 "SReclaimable:          0 kB\nSUnreclaim:            0 kB\n",
	                 kb, kb, kb);
	if (s_put(mp, "proc/meminfo", buf, (size_t)n) != 0)
		return -1;
	char block[4096];
	size_t bl = s_cpu_block(block, sizeof(block));
	uint32_t cpus = (lim->cpus_milli + 999) / 1000;
	size_t o = 0;
	for (uint32_t i = 0; i < cpus && o + bl + 64 < sizeof(buf); i++) {
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "processor\t: %u\n", i);
		memcpy(buf + o, block, bl);
		o += bl;
		buf[o++] = '\n';
	}
	return s_put(mp, "proc/cpuinfo", buf, o);
}

/* disks/.ready-<MiB>-<k>.img (k < sbx_disk_ready_max(MiB), sbx.h): images
 * ready for the next disk of that size, made ahead (sbx_disk_prepare) or
 * emptied after a discard (s_recycle); a spawn takes one by rename. Each holds
 * its reservation on the host: a new image that finds no room deletes them
 * first, and a discarded one is not kept while the host is below its
 * headroom. Up to 8 (4 before 2026-12-01): back to back, the discard helper
 * empties images one after the other and falls a few behind; with 4, 17-21%
 * of the spawns found none and made one on the spawner's path while the
 * helper deleted as many emptied ones a moment later for want of a name
 * (1-5% with 8; ~0.3 ms of CPU per one-shot). S_READY_MAX is the most names
 * a spawn looks at. */
#define S_READY_MAX SBX_READY_MAX
/* disks/.ready-x<slot>.img: a discarded image being emptied (s_recycle); a
 * sandboxd killed meanwhile leaves it, deleted at the next start (and by
 * s_ready_prune). */
#define S_RECYCLING ".ready-x"
/* How long a discard waits for the loop device of the image to let go of
 * it before deleting the image instead of emptying it. */
#define S_DETACH_WAIT_MS 5000

static int
s_ready_path(const sbx_store_t *store, uint32_t mb, int k, char *out)
{
	int n =
	    snprintf(out, PATH_MAX, "%s/.ready-%u-%d.img", sbx_store_dir(store, "disks"), mb, k);
	if (n < 0 || n >= PATH_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Deletes the ready images, but those of keep_mb (0: all). */
static void
s_ready_prune(const sbx_store_t *store, uint32_t keep_mb)
{
	DIR *d = opendir(sbx_store_dir(store, "disks"));
	if (d == NULL)
		return;
	char keep[64];
	int kl = snprintf(keep, sizeof(keep), ".ready-%u-", keep_mb);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		/* one being emptied is its discarder's, but at a stop */
		if (strncmp(e->d_name, ".ready-", 7) == 0 &&
		    (keep_mb == 0 || (strncmp(e->d_name, keep, (size_t)kl) != 0 &&
		                      strncmp(e->d_name, S_RECYCLING, strlen(S_RECYCLING)) != 0)))
			(void)unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

/* Whether any ready image (of any size) is there. */
static bool
s_ready_any(const sbx_store_t *store)
{
	DIR *d = opendir(sbx_store_dir(store, "disks"));
	if (d == NULL)
		return false;
	struct dirent *e;
	bool any = false;
	while (!any && (e = readdir(d)) != NULL)
		any = strncmp(e->d_name, ".ready-", 7) == 0;
	closedir(d);
	return any;
}

bool
sbx_disk_ready(const sbx_store_t *store, uint32_t mb)
{
	char ready[PATH_MAX];
	for (int k = 0; k < S_READY_MAX; k++)
		if (s_ready_path(store, mb, k, ready) == 0 && access(ready, F_OK) == 0)
			return true;
	return false;
}

int
sbx_disk_prepare(const sbx_store_t *store, uint32_t mb)
{
	char ready[PATH_MAX], err[256] = "";
	s_ready_prune(store, mb);
	if (sbx_disk_ready(store, mb))
		return 0;
	if (s_ready_path(store, mb, 0, ready) != 0)
		return -1;
	/* never makes a template: the spawner may be making that one */
	return s_create(sbx_store_dir(store, "disks"), ready, mb, false, err, sizeof(err));
}

/*
 * Empties the image of a discarded disk for a later one, instead of freeing
 * its reservation and making another (fallocate and the release of a whole
 * image's extents, with the host's discards: the largest part of a
 * sandbox's build and teardown). Only once nothing holds the image: its
 * loop device keeps it open until the last mount of the old filesystem is
 * gone (a dying sandbox's namespace may hold one a moment), and two ext4
 * instances on one file would corrupt it. A write lease is granted only
 * while no other open file refers to the image, so it is asked for until
 * it is (at most S_DETACH_WAIT_MS). Then FALLOC_FL_ZERO_RANGE turns every
 * extent back into an unwritten one: still reserved, read as zeros by
 * anyone, also by a raw read of the device the next sandbox gets, and the
 * host's page cache of it is dropped; the template's metadata is copied in
 * as for a new image, and it goes under a ready name. 0 when it did; -1
 * when the caller must delete the image (no free ready name, no template,
 * still held, a host filesystem without ZERO_RANGE).
 */
static int
s_recycle(const sbx_store_t *store, const char *img)
{
	int fd = open(img, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	int tfd = -1, k = 0;
	struct stat st;
	char ready[PATH_MAX], err[256] = "";
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    st.st_size <= 0 || (st.st_size & ((1 << 20) - 1)) != 0 ||
	    (uint64_t)st.st_size > ((uint64_t)AHP_LIM_DISK_MB_MAX << 20))
		goto fail;
	uint32_t mb = (uint32_t)(st.st_size >> 20);
	int keep = sbx_disk_ready_max(mb);
	/* a host below its headroom gets the room back rather than an image kept
	 * for later (only new images made the ready ones go, and only sandboxd's) */
	struct statvfs vfs;
	if (fstatvfs(fd, &vfs) != 0 || !s_room(&vfs, 0))
		goto fail;
	/* a free ready name first: no wait for an image that would be deleted */
	for (; k < keep; k++)
		if (s_ready_path(store, mb, k, ready) == 0 && access(ready, F_OK) != 0 &&
		    errno == ENOENT)
			break;
	if (k == keep)
		goto fail;
	int64_t deadline = ahp_mono_ms() + S_DETACH_WAIT_MS;
	useconds_t pause = 50;
	while (fcntl(fd, F_SETLEASE, F_WRLCK) != 0) {
		if ((errno != EAGAIN && errno != EBUSY) || ahp_mono_ms() >= deadline) {
			log_info("disk %s: still held after %d ms (lease: %s); deleted, not kept",
			         img, S_DETACH_WAIT_MS, strerror(errno));
			goto fail;
		}
		usleep(pause);
		pause = pause < 2000 ? pause * 2 : 4000;
	}
	(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	if (fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, st.st_size) != 0 ||
	    (tfd = s_template(sbx_store_dir(store, "disks"), mb, false, err, sizeof(err))) < 0 ||
	    s_copy_data(tfd, fd, st.st_size) != 0 || fdatasync(fd) != 0)
		goto fail;
	close(tfd);
	close(fd);
	/* names come and go meanwhile (spawns take them, other discards and the
	 * preparer make them): the first free one */
	for (k = 0; k < keep; k++)
		if (s_ready_path(store, mb, k, ready) == 0 &&
		    renameat2(AT_FDCWD, img, AT_FDCWD, ready, RENAME_NOREPLACE) == 0)
			return 0;
	return -1;
fail:
	if (tfd >= 0)
		close(tfd);
	if (fd >= 0)
		close(fd);
	return -1;
}

int
sbx_disk_attach(const sbx_store_t *store, uint32_t slot, uid_t uid, const sbx_limits_t *lim,
                char *err, size_t errlen)
{
	char img[PATH_MAX], mp[PATH_MAX];
	err[0] = '\0';
	if (s_paths(store, slot, img, mp) != 0) {
		snprintf(err, errlen, "disk path too long");
		return -1;
	}
	if (mkdir(mp, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", mp, strerror(errno));
		return -1;
	}
	int m = s_mounted(mp);
	if (m < 0) {
		snprintf(err, errlen, "workspace s%u: %s", slot, strerror(errno));
		return -1;
	}
	if (m == 0) {
		struct stat st;
		if (lstat(img, &st) != 0) {
			if (errno != ENOENT) {
				snprintf(err, errlen, "disk image s%u: %s", slot, strerror(errno));
				return -1;
			}
			/* a ready one (sbx_disk_prepare, s_recycle), else a new one */
			char ready[PATH_MAX];
			bool took = false;
			for (int k = 0; k < S_READY_MAX && !took; k++)
				took = s_ready_path(store, lim->disk_mb, k, ready) == 0 &&
				       rename(ready, img) == 0;
			/* the ready images hold room on the host: when that is what a
			 * new one lacks, they go first */
			const char *dir = sbx_store_dir(store, "disks");
			if (!took && s_create(dir, img, lim->disk_mb, true, err, errlen) != 0) {
				if (strstr(err, "no room") == NULL || !s_ready_any(store))
					return -1;
				s_ready_prune(store, 0);
				err[0] = '\0';
				if (s_create(dir, img, lim->disk_mb, true, err, errlen) != 0)
					return -1;
			}
		} else if (s_check_unless_live(img, false) != 0) {
			/* a disk of an earlier run sbx_disk_restore did not mount */
			snprintf(err, errlen,
			         "disk image s%u is damaged (e2fsck could not repair it; see the "
			         "log): not mounted",
			         slot);
			return -1;
		}
		if (s_mount(img, mp, err, errlen) != 0)
			return -1;
	}
	if (s_dir(mp, "ws", uid, 0700) != 0 || s_dir(mp, "tmp", uid, 01777) != 0 ||
	    sbx_disk_proc_files(store, slot, lim) != 0) {
		snprintf(err, errlen, "disk s%u layout: %s", slot, strerror(errno));
		return -1;
	}
	return 0;
}

int
sbx_disk_discard(const sbx_store_t *store, uint32_t slot, bool recycle)
{
	char img[PATH_MAX], mp[PATH_MAX];
	if (s_paths(store, slot, img, mp) != 0)
		return -1;
	int rc = 0;
	/* lazily: a dying sandbox's mount namespace may hold it a moment more;
	 * the loop device clears itself when the last holder lets go */
	if (s_mounted(mp) == 1 && umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
		log_warn("unmounting %s: %s", mp, strerror(errno));
		rc = -1;
	}
	/* the record goes first: the image is never mounted under this name again */
	char rec[PATH_MAX];
	if (s_loop_record_path(img, rec, sizeof(rec)) == 0 && unlink(rec) != 0 && errno != ENOENT)
		rc = -1;
	/* Recycled under another name (S_RECYCLING): the emptying may wait 5 s
	 * for the old instance to let go, and a sandboxd killed meanwhile must
	 * not find the image under the slot's name at its next start, where
	 * sbx_disk_restore would mount it again beside that old instance (its
	 * record is gone) before the orphan is deleted. */
	char busy[PATH_MAX];
	if (rc == 0 && recycle &&
	    snprintf(busy, sizeof(busy), "%s/" S_RECYCLING "%u.img", sbx_store_dir(store, "disks"),
	             slot) < (int)sizeof(busy) &&
	    rename(img, busy) == 0) {
		if (s_recycle(store, busy) != 0 && unlink(busy) != 0 && errno != ENOENT)
			rc = -1;
	} else if (unlink(img) != 0 && errno != ENOENT) {
		rc = -1;
	}
	if (rc == 0 && rmdir(mp) != 0 && errno != ENOENT && errno != ENOTEMPTY)
		rc = -1;
	return rc;
}

int
sbx_disk_restore(const sbx_store_t *store, char *err, size_t errlen)
{
	const char *dir = sbx_store_dir(store, "disks");
	DIR *d = opendir(dir);
	if (d == NULL) {
		snprintf(err, errlen, "disks: %.400s: %s", dir, strerror(errno));
		return -1;
	}
	/* Not stopped cleanly (killed, or its mount namespace gone with a
	 * container): a disk that was not live any more may have been unmounted
	 * without barriers, "clean" on the host's disk before its metadata, so
	 * every one is checked. The mark goes, durably, before any is mounted:
	 * no mount makes its own "not clean" mark durable (s_mount), so a mark
	 * left on the host's disk would let the start after a crash of the host
	 * mount every disk this run had mounted unchecked. */
	bool force = true;
	if (unlinkat(dirfd(d), S_STOPPED, 0) == 0) {
		force = false;
		if (fsync(dirfd(d)) != 0) {
			snprintf(err, errlen,
			         "disks: removing the mark of a clean stop (%s/%s): %s", dir,
			         S_STOPPED, strerror(errno));
			closedir(d);
			return -1;
		}
	} else if (errno != ENOENT) {
		snprintf(err, errlen, "disks: removing the mark of a clean stop (%s/%s): %s", dir,
		         S_STOPPED, strerror(errno));
		closedir(d);
		return -1;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		char num[16];
		long slot;
		/* half-emptied by a discarder a crash killed: no one's */
		if (strncmp(e->d_name, S_RECYCLING, strlen(S_RECYCLING)) == 0) {
			(void)unlinkat(dirfd(d), e->d_name, 0);
			continue;
		}
		if (e->d_name[0] != 's' || l < 6 || l - 5 >= sizeof(num) ||
		    strcmp(e->d_name + l - 4, ".img") != 0)
			continue;
		memcpy(num, e->d_name + 1, l - 5);
		num[l - 5] = '\0';
		if (ahp_parse_long(num, 0, UINT32_MAX - 1, &slot) != 0)
			continue;
		char img[PATH_MAX], mp[PATH_MAX], err[256] = "";
		if (s_paths(store, (uint32_t)slot, img, mp) != 0)
			continue;
		if (mkdir(mp, 0755) != 0 && errno != EEXIST)
			continue;
		if (s_mounted(mp) != 0)
			continue;
		/* a lazily unmounted instance may still be live (its loop device
		 * backs the image): then it is mounted again as it is, never
		 * checked; else a disk mounted at a crash is repaired first, and
		 * one that cannot be is not mounted */
		if (s_check_unless_live(img, force) != 0)
			continue;
		if (s_mount(img, mp, err, sizeof(err)) != 0)
			log_warn("workspace s%ld: %s", slot, err);
	}
	closedir(d);
	return 0;
}

typedef struct {
	uint32_t *slots;
	size_t n, cap;
} s_used_t;

static void
s_note_slot(void *arg, const char *id, const sbx_meta_t *meta)
{
	(void)id;
	s_used_t *u = arg;
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 64;
		uint32_t *n = realloc(u->slots, cap * sizeof(*n));
		if (n == NULL)
			return;
		u->slots = n;
		u->cap = cap;
	}
	u->slots[u->n++] = meta->slot;
}

/* fdatasync of an image file: 0 / -1 (errno). */
static int
s_sync_image(const char *img)
{
	int fd = open(img, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	int rc = fdatasync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

void
sbx_disk_stop(sbx_store_t *store)
{
	s_ready_prune(store, 0); /* images made ahead: nothing is left of them */
	/* the /etc template's tmpfs (sandbox.c) goes */
	if (s_mounted(sbx_store_dir(store, "etc")) == 1 &&
	    umount2(sbx_store_dir(store, "etc"), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
		log_warn("unmounting %s: %s", sbx_store_dir(store, "etc"), strerror(errno));
	/* disks no sandbox record claims (pool spares whose discard the zygote
	 * had not done yet) go; the others are unmounted, their images stay
	 * (sbx_disk_restore mounts them at the next start) */
	s_used_t used = {NULL, 0, 0};
	sbx_store_meta_each(store, s_note_slot, &used);
	bool barriers = true; /* every kept disk goes with its barriers back */
	DIR *d = opendir(sbx_store_dir(store, "disks"));
	struct dirent *e;
	while (d != NULL && (e = readdir(d)) != NULL) {
		long slot;
		char num[16];
		size_t l = strlen(e->d_name);
		if (e->d_name[0] != 's' || l < 6 || l - 5 >= sizeof(num) ||
		    strcmp(e->d_name + l - 4, ".img") != 0)
			continue;
		memcpy(num, e->d_name + 1, l - 5);
		num[l - 5] = '\0';
		if (ahp_parse_long(num, 0, UINT32_MAX - 1, &slot) != 0)
			continue;
		bool claimed = false;
		for (size_t i = 0; i < used.n && !claimed; i++)
			claimed = used.slots[i] == (uint32_t)slot;
		char img[PATH_MAX], mp[PATH_MAX];
		if (!claimed) {
			(void)sbx_disk_discard(store, (uint32_t)slot, false);
		} else if (s_paths(store, (uint32_t)slot, img, mp) == 0 && s_mounted(mp) == 1) {
			/* A kept disk gets its barriers back before it goes: its
			 * unmount (whenever the last holder lets go) then flushes
			 * everything through the loop device before it writes the
			 * superblock that says "clean", and that with FUA. Without,
			 * "clean" and the metadata it vouches for reach the host's
			 * disk in any order: a crash of the host in between leaves
			 * a disk that says clean and is not, mounted unchecked. */
			struct statvfs v;
			unsigned long ro =
			    statvfs(mp, &v) == 0 && (v.f_flag & ST_RDONLY) ? MS_RDONLY : 0;
			if (mount(NULL, mp, NULL, MS_REMOUNT | S_MOUNT_FLAGS | ro, "barrier") !=
			    0) {
				log_warn("remounting %s with barriers: %s", mp, strerror(errno));
				barriers = false;
			}
			if (umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
				log_warn("unmounting %s: %s", mp, strerror(errno));
			/* A disk ext4 stopped writing to after an error (remounted
			 * read-only, or only marked emergency_ro on newer kernels:
			 * statvfs says read-write, and the barrier remount succeeds)
			 * writes nothing at its remount or unmount: what it wrote
			 * before, its error state included, may still be only in
			 * the image's page cache. Every kept image is synced before
			 * the mark of a clean stop, or there is no mark (a flush
			 * per kept disk, at a clean stop only). */
			if (s_sync_image(img) != 0) {
				log_warn("disks: syncing %s: %s", img, strerror(errno));
				barriers = false;
			}
		}
	}
	/* The mark of a clean stop (sbx_disk_restore), made durable last; not
	 * when a kept disk could not get its barriers back. */
	int fd = d != NULL && barriers
	             ? openat(dirfd(d), S_STOPPED,
	                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)
	             : -1;
	if (fd < 0 || fsync(fd) != 0 || fsync(dirfd(d)) != 0)
		log_warn("disks: no mark of a clean stop (%s): the next start checks them all",
		         barriers ? strerror(errno) : "a kept disk is not all on the host's disk");
	if (fd >= 0)
		close(fd);
	if (d != NULL)
		closedir(d);
	free(used.slots);
}
