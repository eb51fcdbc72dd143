/* tensor_internal.h — the ctx's layout, shared with autograd/ (which owns the
 * tape fields). Not installed; users see bg_ctx as opaque. */
#ifndef BG_TENSOR_INTERNAL_H
#define BG_TENSOR_INTERNAL_H

#include <assert.h>

#include "tensor/tensor.h"

/* Internal invariants only: nothing a user passes may reach one. */
#define BG_ASSERT(cond) assert(cond)

typedef struct bg_arena_block {
    struct bg_arena_block *next;
    size_t size;   /* usable bytes after the header */
    size_t used;
    unsigned char *mem;
} bg_arena_block;

struct bg_ctx {
    bg_arena_block *head;      /* block being filled (newest) */
    bg_arena_block *blocks;    /* all blocks, oldest first */
    size_t used;               /* bytes handed out since reset */
    size_t peak;
    size_t first_block;
    bg_status status;
    char error[BG_ERROR_MAX];
    bool grad_enabled;
    struct bg_node *tape_tail; /* last recorded node; nodes link backwards */
    int64_t n_nodes;
    bool tape_walked;          /* a backward ran over this tape */
    uint64_t tag;              /* this ctx (high 32 bits) and step since reset (low 32) */
    struct bg_grad_pool *grad_pool; /* gradient buffers free for reuse this step (autograd) */
};

/* A point in the arena to come back to: everything allocated after
 * bg_ctx_mark is handed out again after bg_ctx_rollback (tensors made in
 * between must not be used after it). For autograd's recomputed blocks. */
typedef struct bg_arena_mark {
    bg_arena_block *block;
    size_t block_used, used;
} bg_arena_mark;
bg_arena_mark bg_ctx_mark(const bg_ctx *ctx);
void bg_ctx_rollback(bg_ctx *ctx, bg_arena_mark mark);

/* Why t cannot be read on ctx now (built before ctx's last reset, so its
 * memory holds newer data), or NULL when it can. Persistent tensors,
 * caller-made headers (tag 0) and tensors of another ctx pass: another
 * ctx's live tensors are valid inputs (a dataset held in its own ctx). */
const char *bg_tensor_stale_reason(const bg_ctx *ctx, const bg_tensor *t);
/* True when t was made by another ctx (a loss whose tape is elsewhere). */
bool bg_tensor_is_foreign(const bg_ctx *ctx, const bg_tensor *t);

#endif
