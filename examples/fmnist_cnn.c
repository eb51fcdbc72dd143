/* fmnist_cnn.c — trains a small CNN on Fashion-MNIST and prints, per epoch,
 * the mean training loss, the test accuracy and the seconds taken:
 *   conv 1->32 3x3, ReLU, maxpool 2, conv 32->64 3x3, ReLU, maxpool 2,
 *   flatten, linear 1600->128, ReLU, linear 128->10.
 *
 *     ./build/fmnist_cnn                          # Adam, lr 1e-3, batch 128, 3 epochs, seed 0
 *     ./build/fmnist_cnn --optim sgd --lr 0.05 --epochs 10 --threads 1
 *
 * The data comes from the Debian package dataset-fashion-mnist
 * (/usr/share/datasets/fashion-mnist), or --data DIR / $BG_FMNIST_DIR. */
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
} options;

static void usage(FILE *f, const char *prog, const options *d) {
    fprintf(f,
            "usage: %s [options]\n"
            "Trains a two-conv-layer CNN on Fashion-MNIST.\n"
            "  --epochs N        epochs (default %d)\n"
            "  --batch N         batch size (default %lld)\n"
            "  --lr X            learning rate (default %g)\n"
            "  --optim NAME      adam, adamw or sgd (momentum 0.9) (default %s)\n"
            "  --threads N       threads; 0 = one per core (default %d)\n"
            "  --seed N          seed of the initial weights and the shuffle (default %llu)\n"
            "  --data DIR        folder with the *-ubyte.gz files (default $BG_FMNIST_DIR or %s)\n"
            "  --help            this text\n",
            prog, d->epochs, (long long)d->batch, (double)d->lr, d->optim, d->threads,
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

// --- the model --------------------------------------------------------------------

/* x [N,1,28,28] -> [N,32,26,26] -> [N,32,13,13] -> [N,64,11,11] -> [N,64,5,5]
 * -> [N,1600] -> [N,128] -> [N,10]. */
static bg_module *build_cnn(bg_rng *rng) {
    return bg_sequential_new(10, (bg_module *[]){
        bg_conv2d_new(1, 32, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(32, 64, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_flatten_new(),
        bg_linear_new(1600, 128, true, rng), bg_relu_new(),
        bg_linear_new(128, 10, true, rng),
    });
}

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

// --- training and evaluation ------------------------------------------------------

/* One epoch; returns the mean training loss, or -1 after printing the error. */
static double train_epoch(bg_ctx *ctx, bg_module *model, bg_optim *opt, bg_batcher *batches) {
    bg_module_train(model, true);
    double loss_sum = 0;
    int64_t seen = 0;
    bg_tensor *x, *y;
    while (bg_batcher_next(batches, ctx, &x, &y)) {
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, model, x), y, NULL);
        if (!loss || bg_backward(ctx, loss) != BG_OK || bg_optim_step(opt) != BG_OK) {
            fprintf(stderr, "training failed: %s\n",
                    bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
            return -1;
        }
        loss_sum += (double)bg_f32(loss)[0] * (double)y->shape[0];
        seen += y->shape[0];
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    if (bg_ctx_status(ctx) != BG_OK) {
        fprintf(stderr, "training failed: %s\n", bg_ctx_error(ctx));
        return -1;
    }
    return loss_sum / (double)seen;
}

/* Test accuracy in [0,1], or -1 after printing the error. */
static double evaluate(bg_ctx *ctx, bg_module *model, bg_batcher *batches) {
    bg_module_train(model, false);
    bool was = bg_set_grad_enabled(ctx, false);
    int64_t correct = 0, seen = 0;
    bg_tensor *x, *y;
    while (bg_batcher_next(batches, ctx, &x, &y)) {
        bg_tensor *logits = bg_module_forward(ctx, model, x);   // [B,10]
        if (!logits) break;
        const float *l = bg_f32(logits);
        const int32_t *lab = y->data;
        int64_t c = logits->shape[1];
        for (int64_t i = 0; i < logits->shape[0]; i++) {
            int64_t best = 0;
            for (int64_t k = 1; k < c; k++)
                if (l[i * c + k] > l[i * c + best]) best = k;
            correct += best == lab[i];
        }
        seen += logits->shape[0];
        bg_ctx_reset(ctx);
    }
    bg_set_grad_enabled(ctx, was);
    if (bg_ctx_status(ctx) != BG_OK) {
        fprintf(stderr, "evaluation failed: %s\n", bg_ctx_error(ctx));
        return -1;
    }
    return (double)correct / (double)seen;
}

int main(int argc, char **argv) {
    options o = {.epochs = 3, .batch = 128, .lr = 1e-3f, .optim = "adam", .threads = 0, .seed = 0};
    int r = parse_args(argc, argv, &o);
    if (r) return r > 0 ? 0 : 2;
    bg_set_num_threads(o.threads);

    int status = 1;
    bg_dataset *train = NULL, *test = NULL;
    bg_batcher *train_b = NULL, *test_b = NULL;
    bg_module *model = NULL;
    bg_optim *opt = NULL;
    bg_ctx *ctx = NULL;
    if (bg_fmnist_load(o.data, BG_FMNIST_TRAIN, &train) != BG_OK ||
        bg_fmnist_load(o.data, BG_FMNIST_TEST, &test) != BG_OK ||
        bg_batcher_new(train,
                       &(bg_batcher_opts){.batch_size = o.batch, .shuffle = true, .seed = o.seed,
                                          .nchw = true},
                       &train_b) != BG_OK ||
        bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 250, .nchw = true}, &test_b) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        goto done;
    }
    bg_rng rng;
    bg_rng_seed(&rng, o.seed);
    model = build_cnn(&rng);
    opt = model ? build_optim(model, &o) : NULL;
    ctx = bg_ctx_new(0);
    if (!model || !opt || !ctx) {
        fprintf(stderr, "%s\n", bg_last_error());
        goto done;
    }
    printf("fmnist_cnn: conv32-pool-conv64-pool-128-10, %lld parameters; %s lr %g, batch %lld, seed %llu, "
           "%d threads; %lld train / %lld test images\n",
           (long long)bg_module_numel(model), bg_optim_kind(opt), (double)o.lr, (long long)o.batch,
           (unsigned long long)o.seed, bg_get_num_threads(), (long long)train->n,
           (long long)test->n);
    fflush(stdout);

    double acc = 0;
    for (int e = 0; e < o.epochs; e++) {
        double t0 = now_seconds();
        double loss = train_epoch(ctx, model, opt, train_b);
        double t1 = now_seconds();
        acc = loss < 0 ? -1 : evaluate(ctx, model, test_b);
        double t2 = now_seconds();
        if (acc < 0) goto done;
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
    return status;
}
