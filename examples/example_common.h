/* example_common.h — what the Fashion-MNIST examples share: the command line,
 * the optimizer choice and the train/evaluate/report loop. Each example only
 * builds its model and calls run_fmnist_example(). Header-only (static) so
 * that every example stays one program a user can copy with this file. */
#ifndef BG_EXAMPLE_COMMON_H
#define BG_EXAMPLE_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bitgrad.h"

// --- command line -----------------------------------------------------------------

typedef struct options {
    int epochs;
    int64_t batch;
    float lr;
    const char *optim;   /* adam | adamw | sgd */
    int threads;         /* 0: one per core */
    uint64_t seed;
    const char *data;    /* NULL: $BG_FMNIST_DIR or the Debian package's folder */
    const char *npy_train, *npy_test;   /* "X.npy,Y.npy": the user's own arrays instead */
    const char *what;    /* one line for --help */
} options;

static void usage(FILE *f, const char *prog, const options *d) {
    fprintf(f,
            "usage: %s [options]\n"
            "%s\n"
            "  --epochs N        epochs (default %d)\n"
            "  --batch N         batch size (default %lld)\n"
            "  --lr X            learning rate (default %g)\n"
            "  --optim NAME      adam, adamw or sgd (momentum 0.9) (default %s)\n"
            "  --threads N       threads; 0 = auto: one per core, one fewer per core\n"
            "                    other processes keep busy, N pins N (default %d)\n"
            "  --seed N          seed of the initial weights and the shuffle (default %llu)\n"
            "  --data DIR        folder with the *-ubyte.gz files (default $BG_FMNIST_DIR or %s)\n"
            "  --npy-train X.npy,Y.npy   train on your own arrays (x [N,784] or [N,1,28,28] f32/f64/u8,\n"
            "                    y [N] integer labels) instead of Fashion-MNIST\n"
            "  --npy-test X.npy,Y.npy    test on these (default: the training arrays)\n"
            "  --help            this text\n",
            prog, d->what, d->epochs, (long long)d->batch, (double)d->lr, d->optim, d->threads,
            (unsigned long long)d->seed, BG_FMNIST_DEFAULT_DIR);
}

static int parse_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: expected an integer in %lld..%lld, got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a bad command line. */
static int parse_args(int argc, char **argv, options *o) {
    options d = *o;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, argv[0], &d);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: unknown option or missing value (try --help)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        long long n;
        if (!strcmp(a, "--epochs")) {
            if (parse_int(a, v, 1, 1000, &n)) return -1;
            o->epochs = (int)n;
        } else if (!strcmp(a, "--batch")) {
            if (parse_int(a, v, 1, 60000, &n)) return -1;
            o->batch = n;
        } else if (!strcmp(a, "--lr")) {
            char *end;
            double x = strtod(v, &end);
            if (end == v || *end || !(x > 0 && x < 100)) {
                fprintf(stderr, "--lr: expected a positive number, got '%s'\n", v);
                return -1;
            }
            o->lr = (float)x;
        } else if (!strcmp(a, "--optim")) {
            if (strcmp(v, "adam") && strcmp(v, "adamw") && strcmp(v, "sgd")) {
                fprintf(stderr, "--optim: expected adam, adamw or sgd, got '%s'\n", v);
                return -1;
            }
            o->optim = v;
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, v, 0, 1024, &n)) return -1;
            o->threads = (int)n;
        } else if (!strcmp(a, "--seed")) {
            if (parse_int(a, v, 0, INT64_MAX, &n)) return -1;
            o->seed = (uint64_t)n;
        } else if (!strcmp(a, "--data")) {
            o->data = v;
        } else if (!strcmp(a, "--npy-train") || !strcmp(a, "--npy-test")) {
            if (!strchr(v, ',')) {
                fprintf(stderr, "%s: expected X.npy,Y.npy, got '%s'\n", a, v);
                return -1;
            }
            *(!strcmp(a, "--npy-train") ? &o->npy_train : &o->npy_test) = v;
        } else {
            fprintf(stderr, "%s: unknown option (try --help)\n", a);
            return -1;
        }
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// --- the optimizer ---------------------------------------------------------------

static bg_optim *build_optim(bg_module *model, const options *o) {
    if (!strcmp(o->optim, "sgd")) {
        bg_sgd_opts so = BG_SGD_DEFAULTS;
        so.lr = o->lr;
        so.momentum = 0.9f;
        return bg_sgd_new(model, &so);
    }
    bg_adam_opts ao = strcmp(o->optim, "adamw") ? BG_ADAM_DEFAULTS : BG_ADAMW_DEFAULTS;
    ao.lr = o->lr;
    return strcmp(o->optim, "adamw") ? bg_adam_new(model, &ao) : bg_adamw_new(model, &ao);
}

// --- the run --------------------------------------------------------------------

typedef struct fmnist_example {
    const char *name;        /* printed first, e.g. "fmnist_mlp" */
    const char *model_desc;  /* e.g. "784-512-512-10 ReLU" */
    bool nchw;               /* images as [B,1,28,28] instead of [B,784] */
    int64_t eval_batch;
    bg_module *(*build)(bg_rng *rng);
} fmnist_example;

/* A dataset from "X.npy,Y.npy" (bg_dataset_from_npy). */
static bool npy_pair(const char *pair, bg_dataset **out) {
    char x[1024];
    const char *comma = strchr(pair, ',');
    snprintf(x, sizeof x, "%.*s", (int)(comma - pair), pair);
    return bg_dataset_from_npy(x, comma + 1, out) == BG_OK;
}

/* Data parallel under `mpirun -np N` (dist.h; one process otherwise): starts
 * MPI, and only rank 0 prints. */
static bool dist_begin(void) {
    if (bg_dist_init(NULL, NULL) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        return false;
    }
    if (!bg_dist_is_root() && !freopen("/dev/null", "w", stdout)) bg_dist_abort(1);
    return true;
}

/* Ends MPI; a rank that failed stops them all (the others may be waiting in
 * an allreduce). Returns status. */
static int dist_end(int status) {
    if (status != 0 && bg_dist_size() > 1) bg_dist_abort(status);
    bg_dist_finalize();
    return status;
}

/* Loads the data, builds the model and optimizer, and prints per epoch the
 * mean training loss, the test accuracy and the seconds taken. Returns the
 * process exit status. Under `mpirun -np N` the N processes train one model
 * data-parallel (dist.h): each takes its slice of every batch, rank 0
 * prints, and a failing rank stops them all. */
static int run_fmnist_example(const fmnist_example *ex, options o) {
    if (!dist_begin()) return 1;
    bg_set_num_threads(o.threads);
    int status = 1;
    bg_dataset *train = NULL, *test = NULL;
    bg_batcher *train_b = NULL, *test_b = NULL;
    bg_module *model = NULL;
    bg_optim *opt = NULL;
    bg_ctx *ctx = NULL;
    bg_batcher_opts train_opts = {.batch_size = o.batch, .shuffle = true, .seed = o.seed, .nchw = ex->nchw,
                                  .shard_rank = bg_dist_rank(), .shard_count = bg_dist_size()};
    bg_batcher_opts test_opts = {.batch_size = ex->eval_batch, .nchw = ex->nchw};
    bool loaded = o.npy_train ? npy_pair(o.npy_train, &train) && npy_pair(o.npy_test ? o.npy_test : o.npy_train, &test)
                              : bg_fmnist_load(o.data, BG_FMNIST_TRAIN, &train) == BG_OK &&
                                    bg_fmnist_load(o.data, BG_FMNIST_TEST, &test) == BG_OK;
    if (!loaded || bg_batcher_new(train, &train_opts, &train_b) != BG_OK ||
        bg_batcher_new(test, &test_opts, &test_b) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        goto done;
    }
    bg_rng rng;
    bg_rng_seed(&rng, o.seed);
    model = ex->build(&rng);
    opt = model ? build_optim(model, &o) : NULL;
    ctx = bg_ctx_new(0);
    if (!model || !opt || !ctx || bg_dist_broadcast_model(model) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        goto done;
    }
    printf("%s: %s, %lld parameters; %s lr %g, batch %lld, seed %llu, %d threads; "
           "%lld train / %lld test images\n",
           ex->name, ex->model_desc, (long long)bg_module_numel(model), bg_optim_kind(opt),
           (double)o.lr, (long long)o.batch, (unsigned long long)o.seed, bg_get_num_threads(),
           (long long)train->n, (long long)test->n);
    fflush(stdout);

    double acc = 0;
    for (int e = 0; e < o.epochs; e++) {
        double loss, t0 = now_seconds();
        if (bg_train_epoch(ctx, model, opt, train_b, NULL, &loss) != BG_OK) {
            fprintf(stderr, "%s\n", bg_last_error());
            goto done;
        }
        double t1 = now_seconds();
        if (bg_evaluate(ctx, model, test_b, &acc) != BG_OK) {
            fprintf(stderr, "%s\n", bg_last_error());
            goto done;
        }
        double t2 = now_seconds();
        printf("epoch %d/%d  train loss %.4f  test acc %.2f%%  %.2f s (train %.2f s, test %.2f s)\n",
               e + 1, o.epochs, loss, 100 * acc, t2 - t0, t1 - t0, t2 - t1);
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("final test accuracy %.2f%%; arena high-water mark %.1f MiB; peak RSS %.1f MiB\n",
           100 * acc, (double)bg_ctx_peak_bytes(ctx) / (1 << 20), (double)ru.ru_maxrss / 1024);
    status = 0;
done:
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(model);
    bg_batcher_free(train_b);
    bg_batcher_free(test_b);
    bg_dataset_free(train);
    bg_dataset_free(test);
    return dist_end(status);
}

#endif
