/* metrics.c — quantization error per layer: MSE, SQNR (dB) and cosine
 * similarity from sums taken in one pass over (x, fake_quant(x)), plus the
 * zero and flip fractions of ternary / binary weights. Calls qat.h and the
 * layer iteration of layers/layers.h (bg_qlayer_*), which owns the sums. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/layers.h"
#include "qat/qat.h"

static int spec_bits(const bg_quant_state *st) {
    const bg_quant_spec *s = bg_quant_state_spec(st);
    return s ? s->bits : 0;
}

int bg_qat_metrics(bg_module *model, bg_qat_layer_metrics *out, int max) {
    int n = bg_qlayer_count(model);
    for (int i = 0; i < n && i < max && out; i++) {
        bg_module *l = bg_qlayer_at(model, i);
        bg_qat_layer_metrics *m = &out[i];
        memset(m, 0, sizeof *m);
        bg_qlayer_name(model, i, m->name, sizeof m->name);
        m->kind = bg_module_kind(l);
        const bg_quant_state *ws = bg_qlayer_weight_state(l), *as = bg_qlayer_input_state(l);
        m->w_bits = ws ? spec_bits(ws) : 0;
        m->a_bits = as ? spec_bits(as) : 0;
        bg_quant_stats *w = bg_qlayer_stats(l, false), *a = bg_qlayer_stats(l, true);
        m->has_weight = w && w->n > 0;
        m->has_input = a && a->n > 0;
        bg_quant_error_from_stats(m->has_weight ? w : NULL, &m->weight);
        bg_quant_error_from_stats(m->has_input ? a : NULL, &m->input);
        if (ws) {
            bg_quant_kind k = bg_quant_state_spec(ws)->kind;
            m->ternary = k == BG_QUANT_TERNARY || k == BG_QUANT_BINARY;
        }
        if (m->ternary && m->has_weight) {
            m->zero_frac = (double)w->zeros / (double)w->n;
            if (w->levels && w->n_levels == w->n) {
                int64_t flips = 0;
                if (w->prev_version >= 0)
                    for (int64_t j = 0; j < w->n_levels; j++) flips += w->levels[j] != w->prev_levels[j];
                m->flip_frac = (double)flips / (double)w->n_levels;
                memcpy(w->prev_levels, w->levels, (size_t)w->n_levels);
                w->prev_version = w->version;
            }
        }
    }
    return n;
}

void bg_qat_metrics_print(const bg_qat_layer_metrics *m, int n, FILE *f) {
    if (!m || !f) return;
    for (int i = 0; i < n; i++) {
        const bg_qat_layer_metrics *l = &m[i];
        fprintf(f, "  %-8s %-10s w%-2d a%-2d", l->name, l->kind, l->w_bits, l->a_bits);
        if (l->has_weight)
            fprintf(f, "  W: sqnr %6.2f dB mse %.3g cos %.5f", l->weight.sqnr_db, l->weight.mse, l->weight.cosine);
        if (l->has_input)
            fprintf(f, "  X: sqnr %6.2f dB mse %.3g cos %.5f", l->input.sqnr_db, l->input.mse, l->input.cosine);
        if (l->ternary && l->has_weight) fprintf(f, "  zeros %.3f flips %.5f", l->zero_frac, l->flip_frac);
        fprintf(f, "\n");
    }
}
