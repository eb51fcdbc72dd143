/* rng.c — the seeded PRNG and the weight initializers. Calls nothing above
 * tensor/. Draws happen on one thread in row-major order, so results do not
 * depend on the thread count. */
#include <math.h>

#include "tensor/tensor_internal.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bg_rng_seed(bg_rng *rng, uint64_t seed) {
    rng->s[0] = splitmix64(&seed);
    rng->s[1] = splitmix64(&seed);
}

/* xoroshiro128** */
uint64_t bg_rng_next(bg_rng *rng) {
    uint64_t s0 = rng->s[0], s1 = rng->s[1];
    uint64_t x = s0 * 5;
    uint64_t r = ((x << 7) | (x >> 57)) * 9;
    s1 ^= s0;
    rng->s[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    rng->s[1] = (s1 << 37) | (s1 >> 27);
    return r;
}

float bg_rng_uniform(bg_rng *rng) { return (float)(bg_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

float bg_rng_normal(bg_rng *rng) {
    double u1 = ((double)(bg_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(bg_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t bg_rng_below(bg_rng *rng, uint64_t n) {
    if (n == 0) return 0;
    // Rejection keeps the draw unbiased.
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = bg_rng_next(rng);
    while (r >= limit);
    return r % n;
}

// --- initializers -------------------------------------------------------------

static bg_status check_f32(const bg_tensor *t, const char *who) {
    if (!t) return bg_set_error(BG_ERR_ARG, "%s: tensor is NULL", who);
    if (t->dtype != BG_DTYPE_F32)
        return bg_set_error(BG_ERR_DTYPE, "%s: tensor is %s, want f32", who, bg_dtype_name(t->dtype));
    return BG_OK;
}

/* Visits every element of t (any strides) in row-major order. */
#define FOR_EACH_F32(t, p)                                                                \
    int64_t sh_[4] = {1, 1, 1, 1}, st_[4] = {0};                                          \
    for (int i_ = 0; i_ < (t)->ndim; i_++) {                                              \
        sh_[4 - (t)->ndim + i_] = (t)->shape[i_];                                         \
        st_[4 - (t)->ndim + i_] = (t)->stride[i_];                                        \
    }                                                                                     \
    for (int64_t a_ = 0; a_ < sh_[0]; a_++)                                               \
        for (int64_t b_ = 0; b_ < sh_[1]; b_++)                                           \
            for (int64_t c_ = 0; c_ < sh_[2]; c_++)                                       \
                for (int64_t d_ = 0; d_ < sh_[3]; d_++)                                   \
                    for (float *p = bg_f32(t) + a_ * st_[0] + b_ * st_[1] + c_ * st_[2] + \
                                    d_ * st_[3],                                          \
                               *once_ = p;                                                \
                         once_; once_ = NULL)

bg_status bg_init_uniform(bg_tensor *t, bg_rng *rng, float lo, float hi) {
    if (check_f32(t, "init_uniform") != BG_OK) return bg_last_status();
    if (!rng) return bg_set_error(BG_ERR_ARG, "init_uniform: rng is NULL");
    FOR_EACH_F32(t, p) *p = lo + (hi - lo) * bg_rng_uniform(rng);
    return BG_OK;
}

bg_status bg_init_normal(bg_tensor *t, bg_rng *rng, float mean, float std) {
    if (check_f32(t, "init_normal") != BG_OK) return bg_last_status();
    if (!rng) return bg_set_error(BG_ERR_ARG, "init_normal: rng is NULL");
    FOR_EACH_F32(t, p) *p = mean + std * bg_rng_normal(rng);
    return BG_OK;
}

bg_status bg_init_constant(bg_tensor *t, float value) {
    if (check_f32(t, "init_constant") != BG_OK) return bg_last_status();
    FOR_EACH_F32(t, p) *p = value;
    return BG_OK;
}

static int64_t receptive(const bg_tensor *t) {
    int64_t r = 1;
    for (int i = 2; i < t->ndim; i++) r *= t->shape[i];
    return r;
}

int64_t bg_fan_in(const bg_tensor *t) {
    if (!t || t->ndim == 0) return 1;
    return t->ndim == 1 ? t->shape[0] : t->shape[1] * receptive(t);
}

static int64_t fan_out(const bg_tensor *t) { return t->ndim == 0 ? 1 : t->shape[0] * receptive(t); }

/* PyTorch's calculate_gain('leaky_relu', a). */
static double leaky_gain(float a) { return sqrt(2.0 / (1.0 + (double)a * a)); }

bg_status bg_init_kaiming_uniform(bg_tensor *t, bg_rng *rng, float a) {
    if (check_f32(t, "init_kaiming_uniform") != BG_OK) return bg_last_status();
    float bound = (float)(leaky_gain(a) * sqrt(3.0 / (double)bg_fan_in(t)));
    return bg_init_uniform(t, rng, -bound, bound);
}

bg_status bg_init_kaiming_normal(bg_tensor *t, bg_rng *rng, float a) {
    if (check_f32(t, "init_kaiming_normal") != BG_OK) return bg_last_status();
    return bg_init_normal(t, rng, 0.0f, (float)(leaky_gain(a) / sqrt((double)bg_fan_in(t))));
}

bg_status bg_init_xavier_uniform(bg_tensor *t, bg_rng *rng, float gain) {
    if (check_f32(t, "init_xavier_uniform") != BG_OK) return bg_last_status();
    float bound = (float)(gain * sqrt(6.0 / (double)(bg_fan_in(t) + fan_out(t))));
    return bg_init_uniform(t, rng, -bound, bound);
}

bg_status bg_init_xavier_normal(bg_tensor *t, bg_rng *rng, float gain) {
    if (check_f32(t, "init_xavier_normal") != BG_OK) return bg_last_status();
    float std = (float)(gain * sqrt(2.0 / (double)(bg_fan_in(t) + fan_out(t))));
    return bg_init_normal(t, rng, 0.0f, std);
}

bg_status bg_init_torch_default(bg_tensor *t, bg_rng *rng) {
    return bg_init_kaiming_uniform(t, rng, sqrtf(5.0f));
}
