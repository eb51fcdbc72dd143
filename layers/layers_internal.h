/* layers_internal.h — helpers shared by the layer files (not installed). */
#ifndef BG_LAYERS_INTERNAL_H
#define BG_LAYERS_INTERNAL_H

#include "layers/layers.h"

/* The most elements a described weight may hold (2^32 floats = 16 GiB): a
 * hostile description must not ask for absurd memory. */
#define BG_HPARAM_MAX_NUMEL ((int64_t)1 << 32)

/* BG_OK when the product of the n sizes (each in [1, BG_HPARAM_MAX_DIM]) is
 * at most BG_HPARAM_MAX_NUMEL; else BG_ERR_FORMAT naming the limit. */
bg_status bg_hparam_check_numel(int n, const int64_t *sizes);

/* Finalizes a freshly built module; frees it and returns NULL on failure. */
bg_module *bg_module_finish(bg_module *m);

/* PyTorch's bias init for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
void bg_init_bias_like(bg_tensor *b, const bg_tensor *w, bg_rng *rng);

struct json_t;
/* Conv2d's hyperparameters (shared by Conv2d and QConv2d). */
bg_status bg_conv2d_hparams_save(struct json_t *hp, int64_t in, int64_t out, int64_t kh, int64_t kw,
                                 const bg_conv2d_opts *o, bool bias);
bg_status bg_conv2d_hparams_load(const struct json_t *hp, int64_t *in, int64_t *out, int64_t k[2], bg_conv2d_opts *o,
                                 bool *bias);

#endif
