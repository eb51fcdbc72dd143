/* spec.c — the quantizer spec: defaults, validation, the short string form
 * (parse and canonical format), code ranges and names. Plain C over
 * bg_quant_spec; calls only tensor/'s error helpers. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

// ---------------------------------------------------------------------------
// names

static const char *const kind_names[BG_QUANT_KIND_COUNT] = {
    [BG_QUANT_INT] = "int", [BG_QUANT_TERNARY] = "ternary", [BG_QUANT_BINARY] = "binary"};

static const char *const granularity_names[BG_QUANT_GRANULARITY_COUNT] = {
    [BG_QUANT_PER_TENSOR] = "per_tensor",
    [BG_QUANT_PER_CHANNEL] = "per_channel",
    [BG_QUANT_PER_GROUP] = "per_group",
    [BG_QUANT_PER_TOKEN] = "per_token",
};

static const char *const range_names[BG_QUANT_RANGE_COUNT] = {
    [BG_QUANT_RANGE_MINMAX] = "minmax",
    [BG_QUANT_RANGE_MOVING_MINMAX] = "moving_minmax",
    [BG_QUANT_RANGE_PERCENTILE] = "percentile",
    [BG_QUANT_RANGE_MSE] = "mse",
    [BG_QUANT_RANGE_FIXED] = "scale",
    [BG_QUANT_RANGE_LSQ] = "lsq",
    [BG_QUANT_RANGE_LSQ_PLUS] = "lsq_plus",
    [BG_QUANT_RANGE_PACT] = "pact",
    [BG_QUANT_RANGE_ABSMEAN] = "absmean",
    [BG_QUANT_RANGE_ABSMAX] = "absmax",
};

static const char *const backward_names[BG_QUANT_BACKWARD_COUNT] = {
    [BG_QUANT_BWD_DEFAULT] = "default",
    [BG_QUANT_BWD_STE] = "ste",
    [BG_QUANT_BWD_CLIPPED_STE] = "clipped_ste",
    [BG_QUANT_BWD_LSQ] = "lsq",
    [BG_QUANT_BWD_LSQ_PLUS] = "lsq_plus",
    [BG_QUANT_BWD_PACT] = "pact",
};

const char *bg_quant_kind_name(bg_quant_kind k) {
    return (unsigned)k < BG_QUANT_KIND_COUNT ? kind_names[k] : "unknown";
}
const char *bg_quant_granularity_name(bg_quant_granularity g) {
    return (unsigned)g < BG_QUANT_GRANULARITY_COUNT ? granularity_names[g] : "unknown";
}
const char *bg_quant_range_name(bg_quant_range r) {
    return (unsigned)r < BG_QUANT_RANGE_COUNT ? range_names[r] : "unknown";
}
const char *bg_quant_backward_name(bg_quant_backward b) {
    return (unsigned)b < BG_QUANT_BACKWARD_COUNT ? backward_names[b] : "unknown";
}

// ---------------------------------------------------------------------------
// defaults, ranges, predicates

#define DEFAULT_MOMENTUM 0.01f    /* torch's MovingAverageMinMaxObserver averaging_constant */
#define DEFAULT_PERCENTILE 99.99f
#define DEFAULT_MSE_GRID 100

static bg_quant_backward default_backward(bg_quant_range r) {
    switch (r) {
    case BG_QUANT_RANGE_LSQ: return BG_QUANT_BWD_LSQ;
    case BG_QUANT_RANGE_LSQ_PLUS: return BG_QUANT_BWD_LSQ_PLUS;
    case BG_QUANT_RANGE_PACT: return BG_QUANT_BWD_PACT;
    case BG_QUANT_RANGE_ABSMEAN:
    case BG_QUANT_RANGE_ABSMAX: return BG_QUANT_BWD_STE;
    default: return BG_QUANT_BWD_CLIPPED_STE;
    }
}

/* Default signedness of the codes for a mapping and range. */
static bool default_unsigned(bool symmetric, bg_quant_range r) {
    return !symmetric || r == BG_QUANT_RANGE_PACT;
}

void bg_quant_spec_init(bg_quant_spec *spec, bg_quant_kind kind, int bits) {
    memset(spec, 0, sizeof *spec);
    spec->kind = kind;
    spec->bits = kind == BG_QUANT_INT ? bits : kind == BG_QUANT_TERNARY ? 2 : 1;
    spec->symmetric = true;
    spec->granularity = BG_QUANT_PER_TENSOR;
    spec->rounding = BG_QUANT_ROUND_NEAREST;
    spec->range = kind == BG_QUANT_INT ? BG_QUANT_RANGE_MINMAX : BG_QUANT_RANGE_ABSMEAN;
    spec->momentum = DEFAULT_MOMENTUM;
    spec->percentile = DEFAULT_PERCENTILE;
    spec->mse_grid = DEFAULT_MSE_GRID;
    spec->scale = 1.0f;
    spec->backward = default_backward(spec->range);
}

void bg_quant_spec_qrange(const bg_quant_spec *spec, int32_t *qmin, int32_t *qmax) {
    int32_t lo, hi;
    if (spec->kind == BG_QUANT_TERNARY || spec->kind == BG_QUANT_BINARY) {
        lo = -1;
        hi = 1;
    } else if (spec->is_unsigned) {
        lo = 0;
        hi = (int32_t)((1u << spec->bits) - 1);
    } else {
        lo = -(int32_t)(1u << (spec->bits - 1));
        hi = (int32_t)(1u << (spec->bits - 1)) - 1;
    }
    if (spec->narrow && spec->kind == BG_QUANT_INT) lo++;
    *qmin = lo;
    *qmax = hi;
}

bool bg_quant_spec_is_learned(const bg_quant_spec *spec) {
    return spec->range == BG_QUANT_RANGE_LSQ || spec->range == BG_QUANT_RANGE_LSQ_PLUS ||
           spec->range == BG_QUANT_RANGE_PACT;
}

bool bg_quant_spec_is_stateful(const bg_quant_spec *spec) {
    switch (spec->range) {
    case BG_QUANT_RANGE_MINMAX: return spec->granularity != BG_QUANT_PER_TOKEN;
    case BG_QUANT_RANGE_MOVING_MINMAX:
    case BG_QUANT_RANGE_PERCENTILE:
    case BG_QUANT_RANGE_MSE:
    case BG_QUANT_RANGE_LSQ:
    case BG_QUANT_RANGE_LSQ_PLUS:
    case BG_QUANT_RANGE_PACT: return true;
    default: return false;
    }
}

static bool uses_momentum(bg_quant_range r) {
    return r == BG_QUANT_RANGE_MOVING_MINMAX || r == BG_QUANT_RANGE_PERCENTILE ||
           r == BG_QUANT_RANGE_MSE;
}

bool bg_quant_spec_equal(const bg_quant_spec *a, const bg_quant_spec *b) {
    if (a->kind != b->kind || a->bits != b->bits || a->symmetric != b->symmetric ||
        a->is_unsigned != b->is_unsigned || a->narrow != b->narrow ||
        a->granularity != b->granularity || a->rounding != b->rounding || a->range != b->range ||
        a->backward != b->backward || a->check_finite != b->check_finite)
        return false;
    if (a->granularity == BG_QUANT_PER_CHANNEL && a->axis != b->axis) return false;
    if (a->granularity == BG_QUANT_PER_GROUP && a->group_size != b->group_size) return false;
    if (a->rounding == BG_QUANT_ROUND_STOCHASTIC && a->seed != b->seed) return false;
    if (uses_momentum(a->range) && a->momentum != b->momentum) return false;
    if (a->range == BG_QUANT_RANGE_PERCENTILE && a->percentile != b->percentile) return false;
    if (a->range == BG_QUANT_RANGE_MSE && a->mse_grid != b->mse_grid) return false;
    if (a->range == BG_QUANT_RANGE_FIXED && (a->scale != b->scale || a->zero_point != b->zero_point))
        return false;
    if (a->range == BG_QUANT_RANGE_PACT && a->pact_init != b->pact_init) return false;
    if ((a->range == BG_QUANT_RANGE_LSQ || a->range == BG_QUANT_RANGE_LSQ_PLUS) &&
        a->grad_scale != b->grad_scale)
        return false;
    return true;
}

// ---------------------------------------------------------------------------
// validation

/* Sets the error "quant_spec: <msg>[ in "<src>"]" and returns BG_ERR_ARG. */
BG_PRINTF(2, 3) static bg_status spec_error(const char *src, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (src) return bg_set_error(BG_ERR_ARG, "quant_spec: %s in \"%s\"", msg, src);
    return bg_set_error(BG_ERR_ARG, "quant_spec: %s", msg);
}

static const char *kind_label(const bg_quant_spec *s, char *buf, size_t len) {
    if (s->kind == BG_QUANT_INT) snprintf(buf, len, "int%d", s->bits);
    else snprintf(buf, len, "%s", bg_quant_kind_name(s->kind));
    return buf;
}

/* The checks shared by parse (src = the string) and validate (src = NULL). */
static bg_status validate(bg_quant_spec *s, const char *src) {
    char kl[16];
    if ((unsigned)s->kind >= BG_QUANT_KIND_COUNT) return spec_error(src, "unknown kind %d", (int)s->kind);
    if (s->kind == BG_QUANT_INT && (s->bits < 1 || s->bits > 8))
        return spec_error(src, "bits must be 1..8, got %d", s->bits);
    if (s->kind == BG_QUANT_TERNARY) s->bits = 2;
    if (s->kind == BG_QUANT_BINARY) s->bits = 1;
    kind_label(s, kl, sizeof kl);
    if ((unsigned)s->granularity >= BG_QUANT_GRANULARITY_COUNT)
        return spec_error(src, "unknown granularity %d", (int)s->granularity);
    if ((unsigned)s->rounding >= BG_QUANT_ROUNDING_COUNT)
        return spec_error(src, "unknown rounding %d", (int)s->rounding);
    if ((unsigned)s->range >= BG_QUANT_RANGE_COUNT) return spec_error(src, "unknown range %d", (int)s->range);
    if ((unsigned)s->backward >= BG_QUANT_BACKWARD_COUNT)
        return spec_error(src, "unknown backward %d", (int)s->backward);

    bool low_bit = s->kind != BG_QUANT_INT;
    if (low_bit && !s->symmetric) return spec_error(src, "%s is symmetric, affine conflicts", kl);
    if (low_bit && s->is_unsigned) return spec_error(src, "%s is signed, unsigned conflicts", kl);
    if (low_bit && s->narrow) return spec_error(src, "narrow does not apply to %s", kl);
    if (s->kind == BG_QUANT_INT && s->narrow && s->bits == 1)
        return spec_error(src, "int1 with narrow leaves a single level");

    if (s->granularity == BG_QUANT_PER_GROUP && s->group_size <= 0)
        return spec_error(src, "per_group needs a size > 0, got %" PRId64, s->group_size);
    if (s->granularity == BG_QUANT_PER_CHANNEL && (s->axis < -BG_MAX_DIMS || s->axis >= BG_MAX_DIMS))
        return spec_error(src, "per_channel axis must be in -%d..%d, got %d", BG_MAX_DIMS, BG_MAX_DIMS - 1,
                          s->axis);

    const char *rn = bg_quant_range_name(s->range);
    if (s->granularity == BG_QUANT_PER_TOKEN && bg_quant_spec_is_stateful(s))
        return spec_error(src, "per_token ranges are computed from each input, %s conflicts "
                          "(use per_tensor, per_channel or per_group)", rn);
    switch (s->range) {
    case BG_QUANT_RANGE_MOVING_MINMAX:
    case BG_QUANT_RANGE_PERCENTILE:
    case BG_QUANT_RANGE_MSE:
        if (!(s->momentum > 0.0f && s->momentum <= 1.0f))
            return spec_error(src, "momentum must be in (0, 1], got %g", (double)s->momentum);
        if (s->range == BG_QUANT_RANGE_PERCENTILE && !(s->percentile > 0.0f && s->percentile <= 100.0f))
            return spec_error(src, "percentile must be in (0, 100], got %g", (double)s->percentile);
        if (s->range == BG_QUANT_RANGE_MSE && (s->mse_grid < 1 || s->mse_grid > 10000))
            return spec_error(src, "mse grid must be 1..10000, got %d", s->mse_grid);
        break;
    case BG_QUANT_RANGE_FIXED: {
        if (!(s->scale > 0.0f) || !isfinite(s->scale))
            return spec_error(src, "scale must be positive and finite, got %g", (double)s->scale);
        int32_t qmin, qmax;
        bg_quant_spec_qrange(s, &qmin, &qmax);
        if (s->symmetric && s->zero_point != 0)
            return spec_error(src, "zp=%d needs affine (sym has zero point 0)", (int)s->zero_point);
        if (s->zero_point < qmin || s->zero_point > qmax)
            return spec_error(src, "zp must be in %d..%d, got %d", (int)qmin, (int)qmax, (int)s->zero_point);
        break;
    }
    case BG_QUANT_RANGE_LSQ:
        if (s->kind == BG_QUANT_BINARY) return spec_error(src, "lsq does not apply to binary");
        break;
    case BG_QUANT_RANGE_LSQ_PLUS:
        if (s->symmetric) return spec_error(src, "lsq_plus learns an offset, sym conflicts");
        break;
    case BG_QUANT_RANGE_PACT:
        if (s->kind != BG_QUANT_INT) return spec_error(src, "pact needs an int kind, got %s", kl);
        if (!s->symmetric) return spec_error(src, "pact clips at 0, affine conflicts");
        if (!s->is_unsigned) return spec_error(src, "pact is unsigned, signed conflicts");
        if (s->granularity != BG_QUANT_PER_TENSOR)
            return spec_error(src, "pact is per_tensor only, got %s",
                              bg_quant_granularity_name(s->granularity));
        if (!(s->pact_init >= 0.0f) || !isfinite(s->pact_init))
            return spec_error(src, "pact init must be >= 0, got %g", (double)s->pact_init);
        break;
    case BG_QUANT_RANGE_ABSMEAN:
        if (s->kind == BG_QUANT_INT) return spec_error(src, "absmean needs ternary or binary, got %s", kl);
        break;
    case BG_QUANT_RANGE_ABSMAX:
        if (!s->symmetric) return spec_error(src, "absmax is symmetric, affine conflicts");
        break;
    default: break;
    }
    if (s->rounding == BG_QUANT_ROUND_STOCHASTIC && s->kind == BG_QUANT_BINARY)
        return spec_error(src, "binary takes the sign, stochastic rounding conflicts");

    // The backward rule: learned ranges own theirs; the others take ste or clipped_ste.
    bg_quant_backward def = default_backward(s->range);
    if (s->backward == BG_QUANT_BWD_DEFAULT) s->backward = def;
    if (bg_quant_spec_is_learned(s) && s->backward != def)
        return spec_error(src, "backward %s conflicts with learned range %s (its %s would never learn)",
                          bg_quant_backward_name(s->backward), rn,
                          s->range == BG_QUANT_RANGE_PACT ? "alpha" : "scale");
    if (!bg_quant_spec_is_learned(s) && s->backward != BG_QUANT_BWD_STE &&
        s->backward != BG_QUANT_BWD_CLIPPED_STE)
        return spec_error(src, "backward %s needs range %s", bg_quant_backward_name(s->backward),
                          bg_quant_backward_name(s->backward));
    if (!(s->grad_scale >= 0.0f) || !isfinite(s->grad_scale))
        return spec_error(src, "gscale must be >= 0, got %g", (double)s->grad_scale);
    if (s->grad_scale != 0.0f && s->range != BG_QUANT_RANGE_LSQ && s->range != BG_QUANT_RANGE_LSQ_PLUS)
        return spec_error(src, "gscale applies to lsq and lsq_plus, not %s", rn);
    return BG_OK;
}

bg_status bg_quant_spec_validate(bg_quant_spec *spec) {
    if (!spec) return bg_set_error(BG_ERR_ARG, "quant_spec: spec is NULL");
    return validate(spec, NULL);
}

// ---------------------------------------------------------------------------
// parsing

#define SPEC_STR_LIMIT 255

enum slot {
    S_KIND, S_MAP, S_SIGN, S_NARROW, S_GRAN, S_ROUND, S_RANGE, S_ZP, S_MOMENTUM, S_BWD, S_GSCALE, S_CHECK,
    S_COUNT
};

typedef struct parser {
    const char *src;
    const char *seen[S_COUNT];   /* the token that filled each slot */
    char seen_buf[S_COUNT][64];
} parser;

/* Claims a slot for tok; two tokens for one slot conflict. */
static bg_status claim(parser *p, enum slot s, const char *tok) {
    if (p->seen[s])
        return spec_error(p->src, "conflicting options \"%s\" and \"%s\"", p->seen[s], tok);
    snprintf(p->seen_buf[s], sizeof p->seen_buf[s], "%s", tok);
    p->seen[s] = p->seen_buf[s];
    return BG_OK;
}

static bool parse_i64(const char *v, int64_t *out) {
    if (!v || !*v || isspace((unsigned char)*v)) return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end) return false;
    *out = x;
    return true;
}

static bool parse_u64(const char *v, uint64_t *out) {
    if (!v || !*v || !isdigit((unsigned char)*v)) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) return false;
    *out = x;
    return true;
}

static bool parse_f32(const char *v, float *out) {
    if (!v || !*v || isspace((unsigned char)*v)) return false;
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || !isfinite(x)) return false;
    *out = x;
    return true;
}

#define BAD_VALUE(tok) spec_error(p->src, "bad value in \"%s\"", (tok))

/* One token "name" or "name=value". */
static bg_status parse_token(parser *p, bg_quant_spec *s, char *tok) {
    char whole[64];
    snprintf(whole, sizeof whole, "%s", tok);
    char *val = strchr(tok, '=');
    if (val) *val++ = '\0';
    const char *name = tok;
    bg_status st;
    int64_t iv;

#define NOVAL() \
    if (val) return spec_error(p->src, "\"%s\" takes no value", name)
#define CLAIM(slot) \
    if ((st = claim(p, (slot), whole)) != BG_OK) return st

    // kinds
    if (strncmp(name, "int", 3) == 0 && name[3] && isdigit((unsigned char)name[3])) {
        NOVAL();
        if (!parse_i64(name + 3, &iv)) return spec_error(p->src, "unknown token \"%s\"", whole);
        CLAIM(S_KIND);
        if (iv < 1 || iv > 8) return spec_error(p->src, "bits must be 1..8, got %" PRId64, iv);
        s->kind = BG_QUANT_INT;
        s->bits = (int)iv;
        return BG_OK;
    }
    if (strcmp(name, "ternary") == 0 || strcmp(name, "binary") == 0) {
        NOVAL();
        CLAIM(S_KIND);
        s->kind = name[0] == 't' ? BG_QUANT_TERNARY : BG_QUANT_BINARY;
        s->bits = name[0] == 't' ? 2 : 1;
        return BG_OK;
    }
    // mapping
    if (strcmp(name, "sym") == 0 || strcmp(name, "affine") == 0) {
        NOVAL();
        CLAIM(S_MAP);
        s->symmetric = name[0] == 's';
        return BG_OK;
    }
    if (strcmp(name, "signed") == 0 || strcmp(name, "unsigned") == 0) {
        NOVAL();
        CLAIM(S_SIGN);
        s->is_unsigned = name[0] == 'u';
        return BG_OK;
    }
    if (strcmp(name, "narrow") == 0) {
        NOVAL();
        CLAIM(S_NARROW);
        s->narrow = true;
        return BG_OK;
    }
    // granularity
    if (strcmp(name, "per_tensor") == 0 || strcmp(name, "per_token") == 0) {
        NOVAL();
        CLAIM(S_GRAN);
        s->granularity = name[5] == 'e' ? BG_QUANT_PER_TENSOR : BG_QUANT_PER_TOKEN;
        return BG_OK;
    }
    if (strcmp(name, "per_channel") == 0) {
        CLAIM(S_GRAN);
        iv = 0;
        if (val && !parse_i64(val, &iv)) return BAD_VALUE(whole);
        if (iv < -BG_MAX_DIMS || iv >= BG_MAX_DIMS)
            return spec_error(p->src, "per_channel axis must be in -%d..%d, got %" PRId64, BG_MAX_DIMS,
                              BG_MAX_DIMS - 1, iv);
        s->granularity = BG_QUANT_PER_CHANNEL;
        s->axis = (int)iv;
        return BG_OK;
    }
    if (strcmp(name, "per_group") == 0) {
        CLAIM(S_GRAN);
        if (!val) return spec_error(p->src, "per_group needs a size, e.g. per_group=64");
        if (!parse_i64(val, &iv)) return BAD_VALUE(whole);
        if (iv <= 0) return spec_error(p->src, "per_group needs a size > 0, got %" PRId64, iv);
        s->granularity = BG_QUANT_PER_GROUP;
        s->group_size = iv;
        return BG_OK;
    }
    // rounding
    if (strcmp(name, "nearest") == 0) {
        NOVAL();
        CLAIM(S_ROUND);
        s->rounding = BG_QUANT_ROUND_NEAREST;
        return BG_OK;
    }
    if (strcmp(name, "stochastic") == 0) {
        CLAIM(S_ROUND);
        uint64_t seed = 0;
        if (val && !parse_u64(val, &seed)) return BAD_VALUE(whole);
        s->rounding = BG_QUANT_ROUND_STOCHASTIC;
        s->seed = seed;
        return BG_OK;
    }
    // ranges
    static const struct {
        const char *name;
        bg_quant_range range;
    } plain_ranges[] = {
        {"minmax", BG_QUANT_RANGE_MINMAX}, {"lsq", BG_QUANT_RANGE_LSQ},
        {"lsq_plus", BG_QUANT_RANGE_LSQ_PLUS}, {"lsq+", BG_QUANT_RANGE_LSQ_PLUS},
        {"absmean", BG_QUANT_RANGE_ABSMEAN}, {"absmax", BG_QUANT_RANGE_ABSMAX},
    };
    for (size_t k = 0; k < sizeof plain_ranges / sizeof plain_ranges[0]; k++)
        if (strcmp(name, plain_ranges[k].name) == 0) {
            NOVAL();
            CLAIM(S_RANGE);
            s->range = plain_ranges[k].range;
            return BG_OK;
        }
    if (strcmp(name, "moving_minmax") == 0 || strcmp(name, "percentile") == 0) {
        CLAIM(S_RANGE);
        bool moving = name[0] == 'm';
        float f = moving ? s->momentum : s->percentile;
        if (val && !parse_f32(val, &f)) return BAD_VALUE(whole);
        if (moving && val) CLAIM(S_MOMENTUM);
        s->range = moving ? BG_QUANT_RANGE_MOVING_MINMAX : BG_QUANT_RANGE_PERCENTILE;
        if (moving) s->momentum = f;
        else s->percentile = f;
        return BG_OK;
    }
    if (strcmp(name, "momentum") == 0) {
        // A separate momentum for percentile / mse (moving_minmax=M says it inline).
        float f;
        if (!val || !parse_f32(val, &f)) return BAD_VALUE(whole);
        CLAIM(S_MOMENTUM);
        s->momentum = f;
        return BG_OK;
    }
    if (strcmp(name, "mse") == 0) {
        CLAIM(S_RANGE);
        iv = s->mse_grid;
        if (val && !parse_i64(val, &iv)) return BAD_VALUE(whole);
        if (iv < 1 || iv > 10000) return spec_error(p->src, "mse grid must be 1..10000, got %" PRId64, iv);
        s->range = BG_QUANT_RANGE_MSE;
        s->mse_grid = (int)iv;
        return BG_OK;
    }
    if (strcmp(name, "pact") == 0) {
        CLAIM(S_RANGE);
        float f = 0.0f;
        if (val && !parse_f32(val, &f)) return BAD_VALUE(whole);
        s->range = BG_QUANT_RANGE_PACT;
        s->pact_init = f;
        return BG_OK;
    }
    if (strcmp(name, "scale") == 0) {
        CLAIM(S_RANGE);
        float f;
        if (!val || !parse_f32(val, &f)) return BAD_VALUE(whole);
        s->range = BG_QUANT_RANGE_FIXED;
        s->scale = f;
        return BG_OK;
    }
    if (strcmp(name, "zp") == 0) {
        CLAIM(S_ZP);
        if (!val || !parse_i64(val, &iv) || iv < INT32_MIN || iv > INT32_MAX) return BAD_VALUE(whole);
        s->zero_point = (int32_t)iv;
        return BG_OK;
    }
    // backward, gradient scale, checking
    if (strcmp(name, "ste") == 0 || strcmp(name, "clipped_ste") == 0) {
        NOVAL();
        CLAIM(S_BWD);
        s->backward = name[0] == 's' ? BG_QUANT_BWD_STE : BG_QUANT_BWD_CLIPPED_STE;
        return BG_OK;
    }
    if (strcmp(name, "gscale") == 0) {
        CLAIM(S_GSCALE);
        float f;
        if (val && strcmp(val, "auto") == 0) f = 0.0f;
        else if (val && strcmp(val, "none") == 0) f = 1.0f;
        else if (!val || !parse_f32(val, &f) || !(f > 0.0f)) return BAD_VALUE(whole);
        s->grad_scale = f;
        return BG_OK;
    }
    if (strcmp(name, "check") == 0) {
        NOVAL();
        CLAIM(S_CHECK);
        s->check_finite = true;
        return BG_OK;
    }
    return spec_error(p->src, "unknown token \"%s\"", whole);
#undef NOVAL
#undef CLAIM
}

bg_status bg_quant_spec_parse(const char *str, bg_quant_spec *out) {
    if (!str || !*str) return bg_set_error(BG_ERR_ARG, "quant_spec: empty spec string");
    if (!out) return bg_set_error(BG_ERR_ARG, "quant_spec: out is NULL");
    size_t len = strlen(str);
    if (len > SPEC_STR_LIMIT)
        return bg_set_error(BG_ERR_ARG, "quant_spec: string too long (%zu chars, at most %d)", len,
                            SPEC_STR_LIMIT);
    char buf[SPEC_STR_LIMIT + 1];
    memcpy(buf, str, len + 1);

    parser p = {.src = str};
    bg_quant_spec s;
    bg_quant_spec_init(&s, BG_QUANT_INT, 8);
    s.backward = BG_QUANT_BWD_DEFAULT;
    bg_status st;
    char *tok = buf;
    for (;;) {
        char *colon = strchr(tok, ':');
        if (colon) *colon = '\0';
        if (!*tok) return spec_error(str, "empty token");
        if (strlen(tok) >= 48) return spec_error(str, "token too long \"%.20s...\"", tok);
        if ((st = parse_token(&p, &s, tok)) != BG_OK) return st;
        if (!colon) break;
        tok = colon + 1;
    }
    if (!p.seen[S_KIND]) return spec_error(str, "no kind (int1..int8, ternary or binary)");
    // Defaults that depend on other tokens.
    if (!p.seen[S_RANGE]) s.range = s.kind == BG_QUANT_INT ? BG_QUANT_RANGE_MINMAX : BG_QUANT_RANGE_ABSMEAN;
    if (s.range == BG_QUANT_RANGE_LSQ_PLUS && !p.seen[S_MAP]) s.symmetric = false;
    if (!p.seen[S_SIGN]) s.is_unsigned = s.kind == BG_QUANT_INT && default_unsigned(s.symmetric, s.range);
    if (p.seen[S_ZP] && s.range != BG_QUANT_RANGE_FIXED)
        return spec_error(str, "\"%s\" needs a fixed scale (scale=S)", p.seen[S_ZP]);
    if (p.seen[S_MOMENTUM] && !uses_momentum(s.range))
        return spec_error(str, "\"%s\" applies to moving_minmax, percentile and mse, not %s",
                          p.seen[S_MOMENTUM], bg_quant_range_name(s.range));
    if (p.seen[S_GSCALE] && s.range != BG_QUANT_RANGE_LSQ && s.range != BG_QUANT_RANGE_LSQ_PLUS)
        return spec_error(str, "\"%s\" applies to lsq and lsq_plus, not %s", p.seen[S_GSCALE],
                          bg_quant_range_name(s.range));
    if ((st = validate(&s, str)) != BG_OK) return st;
    *out = s;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// formatting

typedef struct sbuf {
    char *buf;
    size_t len;
    size_t n;   /* length needed so far */
} sbuf;

BG_PRINTF(2, 3) static void put(sbuf *b, const char *fmt, ...) {
    char tmp[96];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n > 0) {
        if (b->buf && b->n + 1 < b->len) b->buf[b->n] = ':';
        b->n++;
    }
    for (int i = 0; i < k; i++, b->n++)
        if (b->buf && b->n + 1 < b->len) b->buf[b->n] = tmp[i];
    if (b->buf && b->len) b->buf[b->n < b->len ? b->n : b->len - 1] = '\0';
}

int bg_quant_spec_format(const bg_quant_spec *spec, char *buf, size_t len) {
    sbuf b = {.buf = buf, .len = len};
    if (buf && len) buf[0] = '\0';
    if (!spec) return 0;
    const bg_quant_spec *s = spec;
    if (s->kind == BG_QUANT_INT) put(&b, "int%d", s->bits);
    else put(&b, "%s", bg_quant_kind_name(s->kind));
    if (!s->symmetric) put(&b, "affine");
    if (s->kind == BG_QUANT_INT && s->is_unsigned != default_unsigned(s->symmetric, s->range))
        put(&b, "%s", s->is_unsigned ? "unsigned" : "signed");
    if (s->narrow) put(&b, "narrow");
    switch (s->granularity) {
    case BG_QUANT_PER_CHANNEL: put(&b, "per_channel=%d", s->axis); break;
    case BG_QUANT_PER_GROUP: put(&b, "per_group=%" PRId64, s->group_size); break;
    case BG_QUANT_PER_TOKEN: put(&b, "per_token"); break;
    default: break;
    }
    if (s->rounding == BG_QUANT_ROUND_STOCHASTIC) put(&b, "stochastic=%" PRIu64, s->seed);
    switch (s->range) {
    case BG_QUANT_RANGE_MOVING_MINMAX: put(&b, "moving_minmax=%.9g", (double)s->momentum); break;
    case BG_QUANT_RANGE_PERCENTILE:
        put(&b, "percentile=%.9g", (double)s->percentile);
        if (s->momentum != DEFAULT_MOMENTUM) put(&b, "momentum=%.9g", (double)s->momentum);
        break;
    case BG_QUANT_RANGE_MSE:
        put(&b, "mse=%d", s->mse_grid);
        if (s->momentum != DEFAULT_MOMENTUM) put(&b, "momentum=%.9g", (double)s->momentum);
        break;
    case BG_QUANT_RANGE_FIXED:
        put(&b, "scale=%.9g", (double)s->scale);
        if (s->zero_point != 0) put(&b, "zp=%d", (int)s->zero_point);
        break;
    case BG_QUANT_RANGE_PACT:
        if (s->pact_init != 0.0f) put(&b, "pact=%.9g", (double)s->pact_init);
        else put(&b, "pact");
        break;
    default: put(&b, "%s", bg_quant_range_name(s->range)); break;
    }
    if (s->backward != default_backward(s->range) && s->backward != BG_QUANT_BWD_DEFAULT)
        put(&b, "%s", bg_quant_backward_name(s->backward));
    if (s->grad_scale != 0.0f) put(&b, "gscale=%.9g", (double)s->grad_scale);
    if (s->check_finite) put(&b, "check");
    return (int)b.n;
}
