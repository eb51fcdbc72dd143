/* atomic.c — the atomic file writer every bitgrad writer goes through
 * (format/format.h: bg_atomic_begin / _commit / _abort): the bytes go to
 * "<path>.tmp-XXXXXX" in the same folder, which is fsync'd and renamed over
 * path, so a crash never leaves a half-written file in place of a good one.
 *
 * Two guards around that:
 * - an existing path that is not a regular file (a device node such as
 *   /dev/null, a FIFO, a folder, a socket) is refused before anything is
 *   created: rename would replace the node itself with a regular file;
 * - stale temporary files of the same path, left by a writer that was killed
 *   (kill -9, power loss) before its rename, are removed when the next write
 *   of that path begins. A writer holds an exclusive flock on its temporary
 *   file from creation until after the rename, and a temporary file is stale
 *   only when (a) its name is exactly "<basename>.tmp-" plus 6 letters or
 *   digits, (b) it is a regular file owned by this user, (c) it was last
 *   modified at least BG_ATOMIC_STALE_SECONDS ago, and (d) its flock can be
 *   taken without waiting. The lock is what makes two concurrent writers of
 *   the same path safe: a live writer's file is locked, however slow its
 *   write or fsync, so the other writer leaves it alone; the lock dies with
 *   its process, so a killed writer's file is not. The age rule protects
 *   writers that do not lock (older bitgrad builds, other programs) and a
 *   writer in the instant between creating its file and locking it; a writer
 *   also checks, once it holds its lock, that its name still refers to its
 *   file, and makes a new one otherwise. Where flock is not supported the
 *   writer proceeds unlocked and nothing is ever removed.
 * Calls tensor/ (errors) and POSIX only. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "format/format.h"

#define TMP_SUFFIX ".tmp-XXXXXX"
#define TMP_RANDOM 6   /* the Xs mkstemp replaces */

static const char *node_kind(mode_t m) {
    if (S_ISDIR(m)) return "a folder";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

bg_status bg_atomic_check_target(const char *op, const char *path) {
    if (!op || !path) return bg_set_error(BG_ERR_ARG, "atomic write: op or path is NULL");
    struct stat sb;
    // stat follows a symbolic link: a link to a device is refused too. A path
    // that does not exist (or cannot be examined) is left to the write, which
    // reports its own error.
    if (stat(path, &sb) != 0 || S_ISREG(sb.st_mode)) return BG_OK;
    return bg_set_error(BG_ERR_IO, "%s: %s: exists and is not a regular file (%s), refusing to replace it", op, path,
                        node_kind(sb.st_mode));
}

/* The folder of path ("." when it has none) and where its last component
 * starts; the folder string is malloc'ed (NULL when out of memory). */
static char *split_path(const char *path, const char **base) {
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash) {
        char *d = malloc(2);
        if (d) memcpy(d, ".", 2);
        return d;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);   // "/x" -> "/"
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

static bool is_alnum_ascii(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* name is exactly base + ".tmp-" + 6 letters or digits (mkstemp's alphabet). */
static bool is_own_temp_name(const char *name, const char *base, size_t blen) {
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp-", 5) != 0) return false;
    const char *x = name + blen + 5;
    for (int i = 0; i < TMP_RANDOM; i++)
        if (!is_alnum_ascii(x[i])) return false;
    return x[TMP_RANDOM] == '\0';
}

int bg_atomic_remove_stale(const char *path) {
    if (!path || !*path) return 0;
    const char *base;
    char *dir = split_path(path, &base);
    size_t blen = strlen(base);
    if (!dir || blen == 0) {
        free(dir);
        return 0;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (dfd < 0) return 0;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return 0;
    }
    const time_t now = time(NULL);
    int removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_own_temp_name(e->d_name, base, blen)) continue;
        int fd = openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat sb, again;
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_uid == geteuid() &&
            now - sb.st_mtime >= BG_ATOMIC_STALE_SECONDS && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            // the name still refers to the file just locked (a writer that
            // finished renames its file away before it unlocks)
            fstatat(dfd, e->d_name, &again, AT_SYMLINK_NOFOLLOW) == 0 && again.st_dev == sb.st_dev &&
            again.st_ino == sb.st_ino && unlinkat(dfd, e->d_name, 0) == 0)
            removed++;
        close(fd);   // drops the lock
    }
    closedir(d);   // closes dfd
    return removed;
}

bg_status bg_atomic_begin(bg_atomic_file *af, const char *op, const char *path) {
    if (!af) return bg_set_error(BG_ERR_ARG, "atomic write: af is NULL");
    *af = (bg_atomic_file){.lock_fd = -1};
    if (!op || !path || !*path) return bg_set_error(BG_ERR_ARG, "atomic write: op or path is NULL or empty");
    bg_status s = bg_atomic_check_target(op, path);
    if (s != BG_OK) return s;
    bg_atomic_remove_stale(path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof TMP_SUFFIX);
    if (!tmp) return bg_set_error(BG_ERR_NOMEM, "%s: %s: out of memory", op, path);
    int fd = -1;
    for (int attempt = 0; attempt < 8; attempt++) {
        memcpy(tmp, path, plen);
        memcpy(tmp + plen, TMP_SUFFIX, sizeof TMP_SUFFIX);
        fd = mkstemp(tmp);
        if (fd < 0) {
            s = bg_set_error(BG_ERR_IO, "%s: %s: cannot create a temporary file: %s", op, path, strerror(errno));
            free(tmp);
            return s;
        }
        // Lock it (see the top of the file); where flock is not supported,
        // go on unlocked (no writer there ever removes a temporary file).
        int r;
        while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {}
        if (r != 0) break;
        // A cleaner may have taken our file for a stale one in the instant
        // between mkstemp and flock: then the name is gone (or another file's).
        struct stat mine, named;
        if (fstat(fd, &mine) == 0 && stat(tmp, &named) == 0 && mine.st_dev == named.st_dev &&
            mine.st_ino == named.st_ino)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        s = bg_set_error(BG_ERR_IO, "%s: %s: cannot create a temporary file: it keeps disappearing", op, path);
        free(tmp);
        return s;
    }
    fchmod(fd, 0644);   // mkstemp makes 0600; the output is an ordinary file
    // A second descriptor of the same open file keeps the lock after the
    // FILE is closed, until the rename is done.
    af->lock_fd = dup(fd);
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        s = bg_set_error(BG_ERR_IO, "%s: %s: cannot open %s: %s", op, path, tmp, strerror(errno));
        close(fd);
        if (af->lock_fd >= 0) close(af->lock_fd);
        unlink(tmp);
        free(tmp);
        *af = (bg_atomic_file){.lock_fd = -1};
        return s;
    }
    af->tmp = tmp;
    af->path = path;
    af->op = op;
    return BG_OK;
}

static void release(bg_atomic_file *af, bool remove_tmp) {
    if (af->f) fclose(af->f);
    if (remove_tmp && af->tmp) unlink(af->tmp);
    if (af->lock_fd >= 0) close(af->lock_fd);
    free(af->tmp);
    *af = (bg_atomic_file){.lock_fd = -1};
}

void bg_atomic_abort(bg_atomic_file *af) {
    if (af) release(af, true);
}

bg_status bg_atomic_commit(bg_atomic_file *af, bool write_ok) {
    if (!af || !af->f || !af->tmp) return bg_set_error(BG_ERR_ARG, "atomic write: no file in progress");
    const char *op = af->op, *path = af->path, *tmp = af->tmp;
    bg_status s = BG_OK;
    int err = errno;   // the caller's failed write, when !write_ok
    if (!write_ok || ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0) {
        if (write_ok) err = errno;
        s = bg_set_error(BG_ERR_IO, "%s: %s: cannot write %s: %s", op, path, tmp, strerror(err));
        release(af, true);
        return s;
    }
    int r = fclose(af->f);
    af->f = NULL;
    if (r != 0) {
        s = bg_set_error(BG_ERR_IO, "%s: %s: cannot close %s: %s", op, path, tmp, strerror(errno));
        release(af, true);
        return s;
    }
    // Again right before the rename: the path may have changed meanwhile.
    if ((s = bg_atomic_check_target(op, path)) != BG_OK) {
        release(af, true);
        return s;
    }
    if (rename(tmp, path) != 0) {
        s = bg_set_error(BG_ERR_IO, "%s: %s: cannot rename %s into place: %s", op, path, tmp, strerror(errno));
        release(af, true);
        return s;
    }
    // Make the rename itself durable (best effort).
    const char *base;
    char *dir = split_path(path, &base);
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    release(af, false);
    return BG_OK;
}
