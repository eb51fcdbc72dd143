/* dist.h — data-parallel training over MPI: the same model on N processes
 * (ranks), each taking its own slice of every global batch; one allreduce of
 * the model's flat gradient buffer per step makes every rank take the same
 * optimizer step.
 *
 * Built with MPI when CMake finds it (BG_WITH_MPI); without it, or when the
 * program was not started by mpirun, every call works as a single process
 * (rank 0 of 1) and communicates nothing, so a program written for N ranks
 * runs unchanged on one.
 *
 *   bg_dist_init(&argc, &argv);            // first thing in main
 *   ... build the model (same seed everywhere), then
 *   bg_dist_broadcast_model(model);        // rank 0's parameters and quantizer state
 *   bg_batcher_opts o = {.batch_size = 128, .shard_rank = bg_dist_rank(), .shard_count = bg_dist_size()};
 *   each step: forward, backward, bg_dist_allreduce_grads(model), bg_optim_step, bg_dist_sync_state(model)
 *   (bg_train_epoch / bg_train_steps do the last three themselves)
 *   bg_dist_finalize();
 *
 * Errors: a rank that fails calls bg_dist_abort(code): every rank stops with
 * a non-zero exit instead of waiting forever in the next collective call.
 * Calls layers/ (flat buffers, quantizer lists), quant/ (state buffers) and
 * kernels/ (scale); nothing above io/. */
#ifndef BG_DIST_H
#define BG_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "layers/layers.h"

/* Starts MPI when the process was started by mpirun (OpenMPI's or a PMI
 * launcher's environment), else does nothing. argc/argv may be NULL. Safe to
 * call twice. BG_ERR_STATE + bg_last_error() when MPI fails to start. */
bg_status bg_dist_init(int *argc, char ***argv);
/* Ends MPI (after every rank's last collective call). No-op when not started. */
void bg_dist_finalize(void);
/* Stops every rank now with exit status code (MPI_Abort); exit(code) when
 * single-process. For a rank that failed: the others may be waiting in a
 * collective call and would never return. */
_Noreturn void bg_dist_abort(int code);

/* This process's rank (0 when single) and the number of ranks (1). */
int bg_dist_rank(void);
int bg_dist_size(void);
/* True on rank 0: the rank that prints, writes logs, plots and checkpoints. */
bool bg_dist_is_root(void);
/* True when this build has MPI (whether or not it was started by mpirun). */
bool bg_dist_built_with_mpi(void);

/* Rank 0's flat parameter buffer and quantizer state (observed ranges,
 * scales, flags) copied to every rank, so that ranks that built the model
 * differently (another seed, a checkpoint only rank 0 read) start equal. */
bg_status bg_dist_broadcast_model(bg_module *m);

/* Replaces every rank's flat gradient buffer by the mean over ranks. With
 * equal local batches this is the gradient of the global batch's mean loss;
 * with two ranks it is bitwise the sum of the two halves' gradients / 2.
 * `weight` scales this rank's gradient first (1 for equal local batches;
 * n_local * size / n_global otherwise). Runs as allreduces of buckets of at
 * most 4 MiB, all started before the first is waited for. Collective: every
 * rank must call it. */
bg_status bg_dist_allreduce_grads(bg_module *m, double weight);

/* Makes the quantizers' non-gradient state equal on every rank after each
 * rank observed its own slice: observed ranges are combined (min of the
 * minima, max of the maxima: what one process that saw the whole global
 * batch holds for min/max observers, a superset for the averaging ones),
 * and rank 0's scales, zero points and flags are copied to the others.
 * Collective. */
bg_status bg_dist_sync_state(bg_module *m);

/* Sums n doubles over ranks in place (e.g. a loss and a row count);
 * collective. BG_ERR_STATE when MPI fails. */
bg_status bg_dist_sum_doubles(double *v, int n);

/* Communication counters since bg_dist_init: seconds spent in gradient
 * allreduces and bytes of gradient reduced per call (what each rank hands
 * to MPI; a ring allreduce sends 2 (N-1)/N of it per rank). */
typedef struct bg_dist_stats {
    int64_t allreduces;
    double allreduce_seconds;
    int64_t bytes_per_allreduce;
} bg_dist_stats;
bg_dist_stats bg_dist_get_stats(void);

#endif
