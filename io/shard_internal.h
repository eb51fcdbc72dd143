/* shard_internal.h — what the two batchers (io/dataset.c, io/text.c) share
 * for data parallelism: checking shard_rank / shard_count and the slice of
 * a global batch that one process takes. Not installed. */
#ifndef BG_IO_SHARD_INTERNAL_H
#define BG_IO_SHARD_INTERNAL_H

#include "tensor/tensor.h"

/* The number of slices: 0 (the default) means one process. */
static inline int64_t bg_shards(int shard_count) { return shard_count > 0 ? shard_count : 1; }

/* BG_OK, or BG_ERR_ARG naming `who` when the shard does not exist or a batch
 * of `batch` `items` cannot be split over shard_count processes. */
static inline bg_status bg_shard_check(const char *who, int shard_rank, int shard_count, int64_t batch,
                                       const char *items) {
    if (shard_count < 0 || shard_rank < 0 || shard_rank >= bg_shards(shard_count))
        return bg_set_error(BG_ERR_ARG, "%s: shard %d of %d does not exist (0 <= shard_rank < shard_count)", who,
                            shard_rank, shard_count);
    if (shard_count > batch)
        return bg_set_error(BG_ERR_ARG, "%s: a batch of %lld %s cannot be split over %d processes", who,
                            (long long)batch, items, shard_count);
    return BG_OK;
}

/* Slice `rank` of `shards` of a batch of n rows: rows [rank*n/N, (rank+1)*n/N). */
static inline void bg_shard_slice(int64_t n, int rank, int64_t shards, int64_t *lo, int64_t *hi) {
    *lo = shards > 1 ? rank * n / shards : 0;
    *hi = shards > 1 ? (rank + 1) * n / shards : n;
}

#endif
