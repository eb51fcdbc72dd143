/* text.c — byte-level text for language models: a file read as bytes, its
 * training / validation split, random windows (resumable from one int64)
 * and a fixed evaluation set, and the King James Bible made with Debian's
 * `bible` program into a cache file. Calls tensor/ (arena tensors, bg_rng)
 * and format/ (atomic writes) only. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"
#include "io/shard_internal.h"

extern char **environ;

#define KJV_PACKAGES "bible-kjv and bible-kjv-text"
#define TEXT_MAX_DIM (1LL << 30)

// --- loading ---------------------------------------------------------------------

void bg_text_free(bg_text *text) {
    if (!text) return;
    free(text->path);
    free(text->bytes);
    free(text);
}

bg_status bg_text_load(const char *path, bg_text **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "text: out is NULL");
    *out = NULL;
    if (!path || !*path) return bg_set_error(BG_ERR_ARG, "text: path is NULL or empty");
    int fd;
    while ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 && errno == EINTR) {}
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT) return bg_set_error(BG_ERR_IO, "text: %s: no such file", path);
        return bg_set_error(BG_ERR_IO, "text: %s: cannot open: %s", path, strerror(err));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bg_set_error(BG_ERR_IO, "text: %s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return bg_set_error(BG_ERR_FORMAT, "text: %s: the file is empty", path);
    }
    int64_t n = (int64_t)sb.st_size;
    bg_status st = BG_OK;
    bg_text *t = calloc(1, sizeof *t);
    if (t) t->path = strdup(path);
    if (t && t->path) t->bytes = malloc((size_t)n);
    if (!t || !t->path || !t->bytes) {
        st = bg_set_error(BG_ERR_NOMEM, "text: %s: cannot allocate %lld bytes", path, (long long)n);
        goto fail;
    }
    int64_t got = 0;
    while (got < n) {
        size_t chunk = (size_t)(n - got < (1LL << 30) ? n - got : (1LL << 30));
        ssize_t r = read(fd, t->bytes + got, chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = bg_set_error(BG_ERR_IO, "text: %s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0) {
            st = bg_set_error(BG_ERR_IO, "text: %s: cannot read: the file shrank from %lld to %lld bytes while being read",
                              path, (long long)n, (long long)got);
            goto fail;
        }
        got += r;
    }
    close(fd);
    t->n = n;
    // floor(0.9 n) without overflow
    t->n_train = n / 10 * 9 + n % 10 * 9 / 10;
    t->n_val = n - t->n_train;
    *out = t;
    return BG_OK;
fail:
    close(fd);
    bg_text_free(t);
    return st;
}

const uint8_t *bg_text_split_bytes(const bg_text *text, bg_text_split split, int64_t *n) {
    if (n) *n = 0;
    if (!text || !text->bytes) return NULL;
    if (split == BG_TEXT_TRAIN) {
        if (n) *n = text->n_train;
        return text->bytes;
    }
    if (split == BG_TEXT_VAL) {
        if (n) *n = text->n_val;
        return text->bytes + text->n_train;
    }
    return NULL;
}

// --- the King James Bible -----------------------------------------------------------

/* mkdir -p for an absolute path (mode for every folder it creates). */
static bg_status make_dirs(const char *dir, mode_t mode) {
    char buf[4096];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return bg_set_error(BG_ERR_ARG, "text: the cache folder name is too long (%zu bytes)", len);
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            int err = errno;
            return bg_set_error(BG_ERR_IO, "text: cannot create the cache folder %s: %s", buf, strerror(err));
        }
        buf[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return bg_set_error(BG_ERR_IO, "text: cannot create the cache folder %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return bg_set_error(BG_ERR_IO, "text: cannot create the cache folder %s: it exists and is not a folder", dir);
    return BG_OK;
}

/* The cache folder (see bg_text_load_kjv), created when missing. */
static bg_status kjv_cache_dir(char *dir, size_t len) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int w;
    if (xdg && xdg[0] == '/')
        w = snprintf(dir, len, "%s/bitgrad", xdg);
    else if (home && home[0] == '/')
        w = snprintf(dir, len, "%s/.cache/bitgrad", home);
    else
        w = snprintf(dir, len, "/tmp/bitgrad-%lu", (unsigned long)getuid());
    if (w < 0 || (size_t)w >= len)
        return bg_set_error(BG_ERR_ARG, "text: the cache folder name is too long");
    bg_status st = make_dirs(dir, 0700);
    if (st != BG_OK) return st;
    // In the shared /tmp, only a folder of our own.
    struct stat sb;
    if (!(xdg && xdg[0] == '/') && !(home && home[0] == '/') &&
        (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid()))
        return bg_set_error(BG_ERR_IO, "text: the cache folder %s is not a folder of this user", dir);
    return BG_OK;
}

/* The program name on $PATH (the shell's default path when unset) into
 * buf; false when no directory has an executable regular file of that name.
 * Searched here rather than left to posix_spawnp, whose failure to find a
 * program is not reported the same way everywhere (valgrind: exit status 127). */
static bool find_program(const char *name, char *buf, size_t len) {
    const char *p = getenv("PATH");
    if (!p) p = "/usr/local/bin:/usr/bin:/bin";
    while (true) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        int w = dlen ? snprintf(buf, len, "%.*s/%s", (int)dlen, p, name) : snprintf(buf, len, "./%s", name);
        struct stat sb;
        if (w > 0 && (size_t)w < len && stat(buf, &sb) == 0 && S_ISREG(sb.st_mode) && access(buf, X_OK) == 0)
            return true;
        if (!end) return false;
        p = end + 1;
    }
}

/* Runs `bible -l0 Ge1:1-Re22:21` with its stdout into path, atomically. */
static bg_status kjv_make(const char *path) {
    char program[4096];
    if (!find_program("bible", program, sizeof program))
        return bg_set_error(BG_ERR_IO,
                            "text: the program bible was not found; install the Debian packages "
                            "%s (scripts/install-deps.sh)", KJV_PACKAGES);
    bg_atomic_file af;
    bg_status st = bg_atomic_begin(&af, "text", path);
    if (st != BG_OK) return st;
    fflush(af.f);
    int fd = fileno(af.f);
    posix_spawn_file_actions_t fa;
    char *argv[] = {"bible", "-l0", "Ge1:1-Re22:21", NULL};
    pid_t pid;
    int err = posix_spawn_file_actions_init(&fa);
    if (err == 0) err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (err == 0) err = posix_spawn_file_actions_adddup2(&fa, fd, 1);
    if (err == 0) err = posix_spawn(&pid, program, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        bg_atomic_abort(&af);
        return bg_set_error(BG_ERR_IO, "text: cannot run %s (%s): %s", BG_KJV_COMMAND, program, strerror(err));
    }
    int ws;
    pid_t r;
    while ((r = waitpid(pid, &ws, 0)) < 0 && errno == EINTR) {}
    if (r < 0) {
        err = errno;
        bg_atomic_abort(&af);
        return bg_set_error(BG_ERR_IO, "text: %s: cannot wait for it: %s", BG_KJV_COMMAND, strerror(err));
    }
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        bg_atomic_abort(&af);
        if (WIFEXITED(ws))
            return bg_set_error(BG_ERR_IO, "text: %s failed (exit status %d)", BG_KJV_COMMAND, WEXITSTATUS(ws));
        return bg_set_error(BG_ERR_IO, "text: %s failed (killed by signal %d)", BG_KJV_COMMAND,
                            WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size != BG_KJV_BYTES) {
        long long size = fstat(fd, &sb) == 0 ? (long long)sb.st_size : -1;
        bg_atomic_abort(&af);
        return bg_set_error(BG_ERR_IO, "text: %s wrote %lld bytes, want %d", BG_KJV_COMMAND, size,
                            BG_KJV_BYTES);
    }
    return bg_atomic_commit(&af, true);
}

bg_status bg_text_load_kjv(bg_text **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "text: out is NULL");
    *out = NULL;
    char dir[4096], path[4096 + 16];
    bg_status st = kjv_cache_dir(dir, sizeof dir);
    if (st != BG_OK) return st;
    snprintf(path, sizeof path, "%s/kjv.txt", dir);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size != BG_KJV_BYTES) {
        st = kjv_make(path);
        if (st != BG_OK) return st;
    }
    st = bg_text_load(path, out);
    if (st == BG_OK && (*out)->n != BG_KJV_BYTES) {   // replaced meanwhile by something else
        long long n = (long long)(*out)->n;
        bg_text_free(*out);
        *out = NULL;
        return bg_set_error(BG_ERR_FORMAT, "text: %s is %lld bytes, want %d", path, n, BG_KJV_BYTES);
    }
    return st;
}

// --- batchers -------------------------------------------------------------------------

struct bg_text_batcher {
    const bg_text *text;
    bg_text_batcher_opts opts;
    const uint8_t *data;   /* the split */
    int64_t len;           /* its bytes */
    int64_t starts;        /* valid window starts: len - T */
    int64_t all_windows;   /* fixed: floor((len-1)/T) */
    int64_t windows;       /* fixed: after max_windows */
    int64_t batches;       /* fixed: ceil(windows / B) */
    int64_t pos;           /* batches drawn (random) / returned this pass (fixed) */
    int64_t *offsets;      /* [B] starts of the last batch */
    int64_t last_count, last_lo;   /* this process's windows of the last batch: offsets[last_lo ...] */
};

bg_status bg_text_batcher_new(const bg_text *text, const bg_text_batcher_opts *opts,
                              bg_text_batcher **out) {
    static const char *const who = "text_batcher_new";
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!text || !opts) return bg_set_error(BG_ERR_ARG, "%s: %s is NULL", who, text ? "opts" : "text");
    if (!text->bytes || text->n < 1) return bg_set_error(BG_ERR_ARG, "%s: text is empty", who);
    if (opts->batch_size < 1 || opts->batch_size > TEXT_MAX_DIM)
        return bg_set_error(BG_ERR_ARG, "%s: batch_size must be in 1..2^30: %lld", who,
                            (long long)opts->batch_size);
    if (opts->context < 1 || opts->context > TEXT_MAX_DIM)
        return bg_set_error(BG_ERR_ARG, "%s: context must be in 1..2^30: %lld", who,
                            (long long)opts->context);
    if (opts->split != BG_TEXT_TRAIN && opts->split != BG_TEXT_VAL)
        return bg_set_error(BG_ERR_ARG, "%s: unknown split %d", who, (int)opts->split);
    bg_status sc = bg_shard_check(who, opts->shard_rank, opts->shard_count, opts->batch_size, "windows");
    if (sc != BG_OK) return sc;
    if (opts->max_windows < 0)
        return bg_set_error(BG_ERR_ARG, "%s: max_windows must not be negative: %lld", who,
                            (long long)opts->max_windows);
    int64_t len, T = opts->context;
    const uint8_t *data = bg_text_split_bytes(text, opts->split, &len);
    if (len < T + 1)
        return bg_set_error(BG_ERR_ARG,
                            "text: the %s split of %s is %lld bytes, shorter than one window of "
                            "%lld (context %lld + 1)",
                            opts->split == BG_TEXT_TRAIN ? "training" : "validation",
                            text->path ? text->path : "(memory)", (long long)len, (long long)T + 1,
                            (long long)T);
    bg_text_batcher *b = calloc(1, sizeof *b);
    if (b) b->offsets = malloc((size_t)opts->batch_size * sizeof *b->offsets);
    if (!b || !b->offsets) {
        free(b);
        return bg_set_error(BG_ERR_NOMEM, "%s: cannot allocate %lld window offsets", who,
                            (long long)opts->batch_size);
    }
    b->text = text;
    b->opts = *opts;
    b->data = data;
    b->len = len;
    b->starts = len - T;
    if (opts->fixed) {
        b->all_windows = (len - 1) / T;
        b->windows = opts->max_windows > 0 && opts->max_windows < b->all_windows ? opts->max_windows
                                                                                 : b->all_windows;
        b->batches = (b->windows + opts->batch_size - 1) / opts->batch_size;
    }
    *out = b;
    return BG_OK;
}

void bg_text_batcher_free(bg_text_batcher *b) {
    if (!b) return;
    free(b->offsets);
    free(b);
}

/* splitmix64's finalizer: a bijection of 64-bit words. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Start of window j of the fixed set: T * floor(j * W / M). */
static int64_t fixed_offset(const bg_text_batcher *b, int64_t j) {
    int64_t k = j;
    if (b->windows < b->all_windows)
        k = (int64_t)((unsigned __int128)j * (uint64_t)b->all_windows / (uint64_t)b->windows);
    return k * b->opts.context;
}

bool bg_text_batcher_next(bg_text_batcher *b, bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "text_batcher_next: ctx is NULL");
        return false;
    }
    if (!b || !x || !y) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "text_batcher_next: %s is NULL", !b ? "batcher" : "x or y");
        return false;
    }
    if (bg_ctx_status(ctx) != BG_OK) return false;
    int64_t B = b->opts.batch_size, T = b->opts.context, count = B;
    if (b->opts.fixed) {
        if (b->pos >= b->batches) {
            // End of the pass: the next call starts it again.
            b->pos = 0;
            b->last_count = 0;
            return false;
        }
        int64_t left = b->windows - b->pos * B;
        if (left < count) count = left;
    }
    // This process's slice of a random batch (all B offsets are drawn, so the
    // stream is the same whatever the number of processes).
    int64_t lo, hi;
    bg_shard_slice(count, b->opts.shard_rank, b->opts.fixed ? 1 : bg_shards(b->opts.shard_count), &lo, &hi);
    bg_tensor *xt = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(hi - lo, T));
    bg_tensor *yt = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(hi - lo, T));
    if (!xt || !yt) return false;
    if (b->opts.fixed) {
        for (int64_t i = 0; i < count; i++) b->offsets[i] = fixed_offset(b, b->pos * B + i);
    } else {
        // Batch k's generator depends on (seed, k) only: seeking is O(1).
        bg_rng rng;
        bg_rng_seed(&rng, mix64(mix64(b->opts.seed) ^ (uint64_t)b->pos));
        for (int64_t i = 0; i < count; i++)
            b->offsets[i] = (int64_t)bg_rng_below(&rng, (uint64_t)b->starts);
    }
    int32_t *xd = xt->data, *yd = yt->data;
    count = hi - lo;
    for (int64_t i = 0; i < count; i++) {
        const uint8_t *src = b->data + b->offsets[lo + i];
        int32_t *xr = xd + i * T, *yr = yd + i * T;
        for (int64_t t = 0; t < T; t++) {
            xr[t] = src[t];
            yr[t] = src[t + 1];
        }
    }
    b->last_count = count;
    b->last_lo = lo;
    b->pos++;
    *x = xt;
    *y = yt;
    return true;
}

const int64_t *bg_text_batcher_offsets(const bg_text_batcher *b, int64_t *count) {
    if (count) *count = b ? b->last_count : 0;
    if (!b || b->last_count == 0) return NULL;
    return b->offsets + b->last_lo;
}

int64_t bg_text_batcher_batches(const bg_text_batcher *b) {
    return b && b->opts.fixed ? b->batches : 0;
}

int64_t bg_text_batcher_windows(const bg_text_batcher *b) {
    if (!b) return 0;
    return b->opts.fixed ? b->windows : b->starts;
}

int64_t bg_text_batcher_position(const bg_text_batcher *b) { return b ? b->pos : 0; }

bg_status bg_text_batcher_seek(bg_text_batcher *b, int64_t position) {
    if (!b) return bg_set_error(BG_ERR_ARG, "text_batcher_seek: batcher is NULL");
    if (position < 0)
        return bg_set_error(BG_ERR_ARG, "text_batcher_seek: position %lld is negative",
                            (long long)position);
    if (b->opts.fixed && position > b->batches)
        return bg_set_error(BG_ERR_ARG, "text_batcher_seek: position %lld out of range (0..%lld batches)",
                            (long long)position, (long long)b->batches);
    b->pos = position;
    b->last_count = 0;
    return BG_OK;
}
