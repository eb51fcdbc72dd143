/* arena.c — the ctx: a chained bump arena, the sticky error, grad mode and the
 * counted aligned allocator. Calls nothing above tensor/. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor_internal.h"

#define DEFAULT_FIRST_BLOCK ((size_t)16 << 20)

static atomic_uint_fast64_t alloc_count;
static atomic_uint_fast32_t ctx_serial;

/* The next step's tag: same ctx, step + 1, never 0 in the low half. */
static uint64_t next_step_tag(uint64_t tag) {
    uint32_t step = (uint32_t)tag + 1;
    return (tag & ~(uint64_t)0xffffffffu) | (step ? step : 1);
}

bool bg_tensor_is_foreign(const bg_ctx *ctx, const bg_tensor *t) {
    return t && !t->persistent && t->arena_tag != 0 && t->arena_tag >> 32 != ctx->tag >> 32;
}

const char *bg_tensor_stale_reason(const bg_ctx *ctx, const bg_tensor *t) {
    if (!t || t->persistent || t->arena_tag == 0 || t->arena_tag == ctx->tag || bg_tensor_is_foreign(ctx, t))
        return NULL;
    return "was built before the last bg_ctx_reset: its memory now holds newer data";
}

uint64_t bg_alloc_count(void) { return (uint64_t)atomic_load(&alloc_count); }

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

void *bg_aligned_alloc(size_t nbytes) {
    // aligned_alloc wants a size that is a multiple of the alignment.
    size_t size = round_up(nbytes ? nbytes : 1, BG_ALIGN);
    void *p = aligned_alloc(BG_ALIGN, size);
    if (p) atomic_fetch_add(&alloc_count, 1);
    return p;
}

void bg_aligned_free(void *p) { free(p); }

// --- blocks -----------------------------------------------------------------

static bg_arena_block *block_new(size_t size) {
    bg_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    atomic_fetch_add(&alloc_count, 1);
    b->mem = bg_aligned_alloc(size);
    if (!b->mem) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static void blocks_free(bg_arena_block *b) {
    while (b) {
        bg_arena_block *next = b->next;
        bg_aligned_free(b->mem);
        free(b);
        b = next;
    }
}

bg_ctx *bg_ctx_new(size_t first_block) {
    bg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        bg_set_error(BG_ERR_NOMEM, "ctx_new: out of memory");
        return NULL;
    }
    atomic_fetch_add(&alloc_count, 1);
    ctx->first_block = first_block ? round_up(first_block, BG_ALIGN) : DEFAULT_FIRST_BLOCK;
    ctx->blocks = ctx->head = block_new(ctx->first_block);
    if (!ctx->blocks) {
        free(ctx);
        bg_set_error(BG_ERR_NOMEM, "ctx_new: cannot allocate a %zu-byte arena", first_block);
        return NULL;
    }
    ctx->grad_enabled = true;
    ctx->tag = (uint64_t)(atomic_fetch_add(&ctx_serial, 1) + 1) << 32 | 1;
    return ctx;
}

void bg_ctx_free(bg_ctx *ctx) {
    if (!ctx) return;
    blocks_free(ctx->blocks);
    free(ctx);
}

void bg_ctx_reset(bg_ctx *ctx) {
    if (!ctx) return;
    // Several blocks mean the last step outgrew the arena: replace them by one
    // block that holds the whole step, so the next identical step allocates
    // nothing.
    if (ctx->blocks->next) {
        size_t total = 0;
        for (bg_arena_block *b = ctx->blocks; b; b = b->next) total += b->size;
        bg_arena_block *one = block_new(total);
        if (one) {
            blocks_free(ctx->blocks);
            ctx->blocks = one;
        }
    }
    for (bg_arena_block *b = ctx->blocks; b; b = b->next) b->used = 0;
    ctx->head = ctx->blocks;
    ctx->used = 0;
    ctx->status = BG_OK;
    ctx->error[0] = '\0';
    ctx->tape_tail = NULL;
    ctx->n_nodes = 0;
    ctx->tape_walked = false;
    ctx->grad_pool = NULL;
    ctx->tag = next_step_tag(ctx->tag);
}

/* Larger requests are refused before any arithmetic on them (no wrap). */
#define ARENA_MAX_ALLOC ((size_t)1 << 60)

static bool block_fits(const bg_arena_block *b, size_t need) { return need <= b->size - b->used; }

void *bg_ctx_alloc(bg_ctx *ctx, size_t nbytes) {
    if (!ctx) return NULL;
    if (nbytes > ARENA_MAX_ALLOC) {
        bg_ctx_fail(ctx, BG_ERR_NOMEM, "arena: cannot allocate %zu bytes (more than 2^60)", nbytes);
        return NULL;
    }
    size_t need = round_up(nbytes ? nbytes : 1, BG_ALIGN);
    bg_arena_block *b = ctx->head;
    // Reuse later blocks kept from a previous step before chaining a new one.
    while (!block_fits(b, need) && b->next) {
        b = b->next;
        b->used = 0;
    }
    if (!block_fits(b, need)) {
        size_t size = need > ctx->first_block ? need : ctx->first_block;
        bg_arena_block *nb = block_new(size);
        if (!nb) {
            bg_ctx_fail(ctx, BG_ERR_NOMEM, "arena: cannot allocate %zu bytes", need);
            return NULL;
        }
        b->next = nb;
        b = nb;
    }
    ctx->head = b;
    void *p = b->mem + b->used;
    b->used += need;
    ctx->used += need;
    if (ctx->used > ctx->peak) ctx->peak = ctx->used;
    return p;
}

bg_arena_mark bg_ctx_mark(const bg_ctx *ctx) {
    return (bg_arena_mark){.block = ctx->head, .block_used = ctx->head->used, .used = ctx->used};
}

void bg_ctx_rollback(bg_ctx *ctx, bg_arena_mark mark) {
    // Blocks after mark.block are emptied when bg_ctx_alloc moves into them.
    ctx->head = mark.block;
    ctx->head->used = mark.block_used;
    ctx->used = mark.used;
}

size_t bg_ctx_used_bytes(const bg_ctx *ctx) { return ctx ? ctx->used : 0; }
size_t bg_ctx_peak_bytes(const bg_ctx *ctx) { return ctx ? ctx->peak : 0; }

// --- errors and grad mode ---------------------------------------------------

bg_status bg_ctx_status(const bg_ctx *ctx) { return ctx ? ctx->status : BG_ERR_ARG; }

const char *bg_ctx_error(const bg_ctx *ctx) { return ctx ? ctx->error : "ctx is NULL"; }

bg_tensor *bg_ctx_fail(bg_ctx *ctx, bg_status status, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx && ctx->status == BG_OK) {
        ctx->status = status;
        memcpy(ctx->error, msg, sizeof msg);
    }
    bg_set_error(status, "%s", msg);
    return NULL;
}

void bg_ctx_clear_error(bg_ctx *ctx) {
    if (!ctx) return;
    ctx->status = BG_OK;
    ctx->error[0] = '\0';
}

bool bg_set_grad_enabled(bg_ctx *ctx, bool enabled) {
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool bg_grad_enabled(const bg_ctx *ctx) { return ctx->grad_enabled; }
