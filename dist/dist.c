/* dist.c — data-parallel training over MPI (dist.h). With BG_WITH_MPI off,
 * or in a process mpirun did not start, every function acts as rank 0 of 1.
 * Calls layers/ (flat buffers, quantizer lists), quant/ and kernels/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/dist.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

#if defined(BG_WITH_MPI)
#include <mpi.h>
#endif

static struct {
    bool started;   /* MPI_Init ran here */
    int rank, size;
    bg_dist_stats stats;
} dist = {.rank = 0, .size = 1};

bool bg_dist_built_with_mpi(void) {
#if defined(BG_WITH_MPI)
    return true;
#else
    return false;
#endif
}

int bg_dist_rank(void) { return dist.rank; }
int bg_dist_size(void) { return dist.size; }
bool bg_dist_is_root(void) { return dist.rank == 0; }
bg_dist_stats bg_dist_get_stats(void) { return dist.stats; }

/* Whether a launcher started this process as one rank of several. */
static bool launched_by_mpirun(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return true;
    return false;
}

#if defined(BG_WITH_MPI)

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bg_status mpi_error(const char *what, int code) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return bg_set_error(BG_ERR_STATE, "dist: %s failed on rank %d: %.*s", what, dist.rank, len, msg);
}

bg_status bg_dist_init(int *argc, char ***argv) {
    int done = 0;
    MPI_Initialized(&done);
    if (done || !launched_by_mpirun()) return BG_OK;
    int provided = 0;
    // Only the thread that calls bg_* talks to MPI; OpenMP threads never do.
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return bg_set_error(BG_ERR_STATE, "dist: MPI_Init_thread failed (%d)", rc);
    // Errors come back as codes, so that a rank can say what failed.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist.size);
    dist.started = true;
    return BG_OK;
}

void bg_dist_finalize(void) {
    if (!dist.started) return;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
    dist.started = false;
}

_Noreturn void bg_dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    if (dist.started && dist.size > 1) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    exit(code);
}

/* Elements per bucket: 4 MiB of floats. */
#define BUCKET ((int64_t)1 << 20)

bg_status bg_dist_allreduce_grads(bg_module *m, double weight) {
    if (!m) return bg_set_error(BG_ERR_ARG, "dist_allreduce_grads: model is NULL");
    int64_t n = 0;
    float *g = bg_module_flat_grads(m, &n);
    if (dist.size == 1 || n == 0) return BG_OK;
    const bg_kernels *k = bg_kernels_get();
    double t0 = seconds();
    if (weight != 1.0) k->scale(g, g, (float)weight, n);
    enum { MAX_BUCKETS = 4096 };
    MPI_Request req[MAX_BUCKETS];
    int64_t bucket = n / MAX_BUCKETS + 1 > BUCKET ? n / MAX_BUCKETS + 1 : BUCKET;
    int nb = 0, rc = MPI_SUCCESS;
    for (int64_t off = 0; off < n && rc == MPI_SUCCESS; off += bucket, nb++) {
        int len = (int)(n - off < bucket ? n - off : bucket);
        rc = MPI_Iallreduce(MPI_IN_PLACE, g + off, len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req[nb]);
    }
    if (rc == MPI_SUCCESS) rc = MPI_Waitall(nb, req, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_error("the gradient allreduce", rc);
    // The mean: a power-of-two size divides exactly.
    k->scale(g, g, 1.0f / (float)dist.size, n);
    dist.stats.allreduces++;
    dist.stats.allreduce_seconds += seconds() - t0;
    dist.stats.bytes_per_allreduce = n * (int64_t)sizeof(float);
    return BG_OK;
}

bg_status bg_dist_broadcast_model(bg_module *m) {
    if (!m) return bg_set_error(BG_ERR_ARG, "dist_broadcast_model: model is NULL");
    if (dist.size == 1) return BG_OK;
    int64_t n = 0;
    float *p = bg_module_flat_params(m, &n);
    int rc = MPI_SUCCESS;
    for (int64_t off = 0; off < n && rc == MPI_SUCCESS; off += BUCKET) {
        int len = (int)(n - off < BUCKET ? n - off : BUCKET);
        rc = MPI_Bcast(p + off, len, MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    if (rc != MPI_SUCCESS) return mpi_error("the parameter broadcast", rc);
    return bg_dist_sync_state(m);
}

/* One quantizer's buffers, packed for the collectives. */
typedef struct packed_flags {
    int32_t observed, initialized, observer_on, enabled;
    int64_t calls;
} packed_flags;

bg_status bg_dist_sync_state(bg_module *m) {
    if (!m) return bg_set_error(BG_ERR_ARG, "dist_sync_state: model is NULL");
    if (dist.size == 1) return BG_OK;
    bg_quantizer_list *q = bg_model_quantizer_list(m);
    if (!q) return BG_ERR_NOMEM;
    int64_t total = 0;
    for (int i = 0; i < q->n; i++) total += bg_quant_state_num_scales(q->states[i]);
    if (q->n == 0) {   // a float model: nothing to exchange (the same on every rank)
        bg_quantizer_list_free(q);
        return BG_OK;
    }
    // [-rmax | rmin] reduced with MIN at once; [scale | zero_point] from rank 0.
    float *range = malloc(sizeof(float) * (size_t)(2 * total + 1));
    float *sz = malloc(sizeof(float) * (size_t)(2 * total + 1));
    packed_flags *fl = malloc(sizeof(packed_flags) * (size_t)(q->n + 1));
    bg_status st = BG_OK;
    if (!range || !sz || !fl) {
        st = bg_set_error(BG_ERR_NOMEM, "dist_sync_state: out of memory for %lld scales", (long long)total);
        goto done;
    }
    int64_t at = 0;
    for (int i = 0; i < q->n; i++) {
        int64_t P = bg_quant_state_num_scales(q->states[i]);
        bg_quant_state_flags f;
        bg_quant_state_get_buffers(q->states[i], range + total + at, range + at, sz + at, sz + total + at, &f);
        for (int64_t c = 0; c < P; c++) range[at + c] = -range[at + c];   // -rmax: MIN gives the max
        fl[i] = (packed_flags){f.observed, f.initialized, f.observer_on, f.enabled, f.calls};
        at += P;
    }
    int rc = MPI_Allreduce(MPI_IN_PLACE, range, (int)(2 * total), MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(sz, (int)(2 * total), MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(fl, (int)(sizeof(packed_flags) * (size_t)q->n), MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        st = mpi_error("the quantizer-state exchange", rc);
        goto done;
    }
    at = 0;
    for (int i = 0; i < q->n; i++) {
        int64_t P = bg_quant_state_num_scales(q->states[i]);
        for (int64_t c = 0; c < P; c++) range[at + c] = -range[at + c];
        bool observed = false;
        for (int64_t c = 0; c < P; c++) observed = observed || range[total + at + c] <= range[at + c];
        bg_quant_state_flags f = {.observed = observed || fl[i].observed, .initialized = fl[i].initialized,
                                  .observer_on = fl[i].observer_on, .enabled = fl[i].enabled, .calls = fl[i].calls};
        bg_quant_state_set_buffers(q->states[i], range + total + at, range + at, sz + at, sz + total + at, &f);
        at += P;
    }
done:
    free(range);
    free(sz);
    free(fl);
    bg_quantizer_list_free(q);
    return st;
}

bg_status bg_dist_sum_doubles(double *v, int n) {
    if (dist.size == 1 || n <= 0) return BG_OK;
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? BG_OK : mpi_error("a sum over ranks", rc);
}

#else   // single process: nothing to communicate

bg_status bg_dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (launched_by_mpirun())
        fprintf(stderr, "bitgrad: started by mpirun, but this build has no MPI (BG_WITH_MPI=OFF): "
                        "every rank trains alone\n");
    return BG_OK;
}
void bg_dist_finalize(void) {}
_Noreturn void bg_dist_abort(int code) {
    fflush(stdout);
    exit(code);
}
bg_status bg_dist_allreduce_grads(bg_module *m, double weight) {
    (void)weight;
    return m ? BG_OK : bg_set_error(BG_ERR_ARG, "dist_allreduce_grads: model is NULL");
}
bg_status bg_dist_broadcast_model(bg_module *m) {
    return m ? BG_OK : bg_set_error(BG_ERR_ARG, "dist_broadcast_model: model is NULL");
}
bg_status bg_dist_sync_state(bg_module *m) {
    return m ? BG_OK : bg_set_error(BG_ERR_ARG, "dist_sync_state: model is NULL");
}
bg_status bg_dist_sum_doubles(double *v, int n) {
    (void)v, (void)n;
    return BG_OK;
}

#endif
