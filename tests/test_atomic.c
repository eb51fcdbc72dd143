/* test_atomic.c — the atomic-write layer (format/atomic.c) under every
 * writer: an existing path that is not a regular file (a FIFO, a folder, a
 * link to one, /dev/null) is refused by the safetensors writer, checkpoints,
 * bg_export, ONNX and plots, with the node left as it was and nothing left
 * behind; stale "<name>.tmp-XXXXXX" files of a killed writer are removed by
 * the next save while everything else (other names, fresh files, a live
 * writer's locked file, links, folders) stays; two processes saving the same
 * path at once both succeed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/test_util.h"

static char dir[128];

static void in_dir(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

static bool exists(const char *name) {
    char p[256];
    in_dir(p, sizeof p, name);
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static int count_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* Names in dir that contain ".tmp-". */
static int count_temps(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

/* Sets a file's times age_seconds into the past. */
static void age(const char *name, time_t age_seconds) {
    char p[256];
    in_dir(p, sizeof p, name);
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= age_seconds;
    t[1] = t[0];
    CHECK(utimensat(AT_FDCWD, p, t, 0) == 0);
}

/* Creates a file with some bytes, age_seconds old. */
static void touch(const char *name, time_t age_seconds) {
    char p[256];
    in_dir(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    CHECK_MSG(f != NULL, "create %s", p);
    if (f) {
        fputs("stale bytes", f);
        fclose(f);
    }
    age(name, age_seconds);
}

/* A writer with one small tensor. */
static bg_status save_small(const char *path, float value) {
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    float data[4] = {value, value, value, value};
    bg_tensor t = {0};
    t.dtype = BG_DTYPE_F32;
    t.ndim = 1;
    t.shape[0] = 4;
    t.stride[0] = 1;
    t.data = data;
    bg_status s = bg_safetensors_writer_add(w, "x", &t);
    if (s == BG_OK) s = bg_safetensors_writer_save(w, path);
    bg_safetensors_writer_free(w);
    return s;
}

static void test_not_regular(void) {
    char fifo[256], sub[256], link[256], want[512];
    in_dir(fifo, sizeof fifo, "node.fifo");
    in_dir(sub, sizeof sub, "folder");
    in_dir(link, sizeof link, "link");
    CHECK(mkfifo(fifo, 0644) == 0);
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(symlink("node.fifo", link) == 0);
    const int entries = count_entries();

    CHECK(save_small(fifo, 1.0f) == BG_ERR_IO);
    snprintf(want, sizeof want, "safetensors: %s: exists and is not a regular file (a FIFO), refusing to replace it", fifo);
    CHECK_STR(bg_last_error(), want);
    CHECK(save_small(sub, 1.0f) == BG_ERR_IO);
    snprintf(want, sizeof want, "safetensors: %s: exists and is not a regular file (a folder), refusing to replace it", sub);
    CHECK_STR(bg_last_error(), want);
    CHECK(save_small(link, 1.0f) == BG_ERR_IO);   // a link to a FIFO: the link is not replaced either
    snprintf(want, sizeof want, "safetensors: %s: exists and is not a regular file (a FIFO), refusing to replace it", link);
    CHECK_STR(bg_last_error(), want);

    // the check alone on /dev/null (nothing is created whatever it says)
    CHECK(bg_atomic_check_target("export", "/dev/null") == BG_ERR_IO);
    CHECK_STR(bg_last_error(), "export: /dev/null: exists and is not a regular file (a character device), refusing to replace it");
    CHECK(bg_atomic_check_target("export", fifo) == BG_ERR_IO);
    char reg[256];
    in_dir(reg, sizeof reg, "absent.bin");
    CHECK(bg_atomic_check_target("export", reg) == BG_OK);

    // every writer of the library: checkpoint, export, ONNX, plot
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_module *net = bg_sequential_new(2, (bg_module *[]){bg_linear_new(4, 3, true, &rng), bg_relu_new()});
    CHECK(bg_checkpoint_save(fifo, &(bg_checkpoint){.model = net}) == BG_ERR_IO);
    CHECK_MSG(strstr(bg_last_error(), "exists and is not a regular file (a FIFO)") != NULL, "checkpoint: %s", bg_last_error());
    CHECK(bg_export(net, fifo, NULL) == BG_ERR_IO);
    snprintf(want, sizeof want, "safetensors: %s: exists and is not a regular file (a FIFO), refusing to replace it", fifo);
    CHECK_STR(bg_last_error(), want);
    CHECK(bg_export_onnx(net, sub, 2, (int64_t[]){1, 4}) == BG_ERR_IO);
    snprintf(want, sizeof want, "onnx_export: %s: exists and is not a regular file (a folder), refusing to replace it", sub);
    CHECK_STR(bg_last_error(), want);
    bg_module_free(net);

    // a plot whose figure name is taken by a FIFO
    char pdir[256], png[300], logp[256];
    in_dir(pdir, sizeof pdir, "plots");
    in_dir(logp, sizeof logp, "run.jsonl");
    CHECK(mkdir(pdir, 0755) == 0);
    snprintf(png, sizeof png, "%s/training.png", pdir);
    CHECK(mkfifo(png, 0644) == 0);
    FILE *f = fopen(logp, "w");
    if (f) {
        fputs("{\"type\":\"step\",\"step\":1,\"loss\":0.5}\n{\"type\":\"step\",\"step\":2,\"loss\":0.4}\n", f);
        fclose(f);
    }
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_read(logp, &log) == BG_OK);
    if (log) {
        CHECK(bg_plot_training(log, png) == BG_ERR_IO);
        snprintf(want, sizeof want, "plot: %s: exists and is not a regular file (a FIFO), refusing to replace it", png);
        CHECK_STR(bg_last_error(), want);
        bg_trainlog_free(log);
    }
    struct stat sb;
    CHECK(stat(png, &sb) == 0 && S_ISFIFO(sb.st_mode));
    unlink(png);
    rmdir(pdir);
    unlink(logp);

    // the nodes are as they were, nothing was left beside them
    CHECK(stat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));
    CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    CHECK(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
    CHECK_MSG(count_entries() == entries, "%d entries, want %d", count_entries(), entries);
    unlink(link);
    unlink(fifo);
    rmdir(sub);
}

static void test_stale(void) {
    char path[256];
    in_dir(path, sizeof path, "run.st");
    CHECK(save_small(path, 1.0f) == BG_OK);
    const time_t old = 3600;
    touch("run.st.tmp-AbC123", old);      // a killed writer's: removed
    touch("run.st.tmp-zz09QQ", old);      // another one
    touch("run.st.tmp-fresh1", 0);        // modified just now: a writer that does not lock may be writing it
    touch("run.st.tmp-AbC12", old);       // 5 random characters: not the writer's pattern
    touch("run.st.tmp-AbC1234", old);     // 7
    touch("run.st.tmp-AbC12!", old);      // not a letter or digit
    touch("run.st.tmp-AbC123.bak", old);  // something after the pattern
    touch("other.st.tmp-AbC123", old);    // another file's temporary
    touch("xrun.st.tmp-AbC123", old);     // a longer basename
    touch("run.st.TMP-AbC123", old);
    touch("notes.txt", old);
    // a live writer's file: old, but locked
    touch("run.st.tmp-Locked", old);
    char locked[256];
    in_dir(locked, sizeof locked, "run.st.tmp-Locked");
    int lfd = open(locked, O_RDONLY);
    CHECK(lfd >= 0 && flock(lfd, LOCK_EX) == 0);
    // a folder and a link of the pattern
    char sub[256], link[256];
    in_dir(sub, sizeof sub, "run.st.tmp-Dir123");
    in_dir(link, sizeof link, "run.st.tmp-Lnk123");
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(symlink("notes.txt", link) == 0);

    CHECK(save_small(path, 2.0f) == BG_OK);
    CHECK_MSG(!exists("run.st.tmp-AbC123") && !exists("run.st.tmp-zz09QQ"), "stale temporary files remain");
    static const char *const kept[] = {"run.st.tmp-fresh1", "run.st.tmp-AbC12", "run.st.tmp-AbC1234",
                                       "run.st.tmp-AbC12!", "run.st.tmp-AbC123.bak", "other.st.tmp-AbC123",
                                       "xrun.st.tmp-AbC123", "run.st.TMP-AbC123", "notes.txt",
                                       "run.st.tmp-Locked", "run.st.tmp-Dir123", "run.st.tmp-Lnk123", "run.st"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) CHECK_MSG(exists(kept[i]), "%s was removed", kept[i]);
    bg_safetensors *st = NULL;
    bg_tensor v;
    CHECK(bg_safetensors_open(path, &st) == BG_OK && bg_safetensors_get(st, "x", &v) == BG_OK && bg_f32(&v)[0] == 2.0f);
    bg_safetensors_free(st);

    // unlocked, the same file is stale at the next save
    close(lfd);
    CHECK(bg_atomic_remove_stale(path) == 1);
    CHECK(!exists("run.st.tmp-Locked"));

    // a checkpoint save cleans up after its own killed writer too
    char ck[256];
    in_dir(ck, sizeof ck, "model.safetensors");
    touch("model.safetensors.tmp-K1ll3d", old);
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *net = bg_linear_new(3, 2, true, &rng);
    CHECK_MSG(bg_checkpoint_save(ck, &(bg_checkpoint){.model = net}) == BG_OK, "%s", bg_last_error());
    CHECK(!exists("model.safetensors.tmp-K1ll3d"));
    bg_module_free(net);
    unlink(ck);

    rmdir(sub);
    unlink(link);
    static const char *const rm[] = {"run.st.tmp-fresh1", "run.st.tmp-AbC12", "run.st.tmp-AbC1234", "run.st.tmp-AbC12!",
                                     "run.st.tmp-AbC123.bak", "other.st.tmp-AbC123", "xrun.st.tmp-AbC123",
                                     "run.st.TMP-AbC123", "notes.txt", "run.st"};
    for (size_t i = 0; i < sizeof rm / sizeof rm[0]; i++) {
        char p[256];
        in_dir(p, sizeof p, rm[i]);
        unlink(p);
    }
    CHECK_MSG(count_entries() == 0, "%d entries left", count_entries());
}

/* A writer killed (SIGKILL) between begin and commit leaves its temporary
 * file, unlocked by the kernel; a writer alive (stopped between begin and
 * commit) keeps its file locked, and its commit still succeeds after
 * another save of the same path. */
static void test_killed_and_live_writers(void) {
    char path[256];
    in_dir(path, sizeof path, "w.st");
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    pid_t kid = fork();
    if (kid == 0) {   // the killed writer
        bg_atomic_file af;
        if (bg_atomic_begin(&af, "test", path) != BG_OK) _exit(1);
        fputs("half of a file", af.f);
        fflush(af.f);
        raise(SIGKILL);
        _exit(2);
    }
    int st = 0;
    waitpid(kid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "killed writer: status %d", st);
    CHECK(count_temps() == 1);
    // make it old, as if the crash were a while ago
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-")) age(e->d_name, 60);
    if (d) closedir(d);

    pid_t live = fork();
    if (live == 0) {   // the live writer: begins, waits for the parent, commits
        bg_atomic_file af;
        if (bg_atomic_begin(&af, "test", path) != BG_OK) _exit(1);
        fputs("live writer", af.f);
        fflush(af.f);
        char c = 1;
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(3);
        _exit(bg_atomic_commit(&af, true) == BG_OK ? 0 : 4);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    // the live writer's begin removed the killed writer's file; its own is
    // the one left: make it old too, then save the same path meanwhile
    CHECK_MSG(count_temps() == 1, "%d temporary files, want the live writer's alone", count_temps());
    d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-")) age(e->d_name, 60);
    if (d) closedir(d);
    CHECK(save_small(path, 3.0f) == BG_OK);   // leaves the live writer's (locked) file alone
    CHECK_MSG(count_temps() == 1, "%d temporary files, want the live writer's alone", count_temps());
    CHECK(write(go[1], &c, 1) == 1);
    waitpid(live, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "live writer: status %d", st);
    CHECK(count_temps() == 0);
    FILE *f = fopen(path, "rb");
    char buf[32] = {0};
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    const char *content = buf;
    CHECK_STR(content, "live writer");
    close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
    unlink(path);
}

/* Two processes saving the same path 100 times each: every save succeeds,
 * the file is always one of theirs, no temporary file remains. */
static void test_concurrent(void) {
    char path[256];
    in_dir(path, sizeof path, "both.st");
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            int fails = 0;
            for (int i = 0; i < 100; i++) fails += save_small(path, (float)(k + 1)) != BG_OK;
            _exit(fails > 100 ? 100 : fails);
        }
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: %d saves failed", k, WEXITSTATUS(st));
    }
    bg_safetensors *st = NULL;
    bg_tensor v;
    CHECK(bg_safetensors_open(path, &st) == BG_OK && bg_safetensors_get(st, "x", &v) == BG_OK &&
          (bg_f32(&v)[0] == 1.0f || bg_f32(&v)[0] == 2.0f));
    bg_safetensors_free(st);
    CHECK_MSG(count_temps() == 0, "%d temporary files left", count_temps());
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bg_test_atomic_%d", (int)getpid());
    mkdir(dir, 0755);
    test_not_regular();
    test_stale();
    test_killed_and_live_writers();
    test_concurrent();
    rmdir(dir);
    return bg_test_finish();
}
