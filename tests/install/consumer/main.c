/* main.c — a program outside bitgrad's tree, built against an installed
 * bitgrad (tests/install/run.sh): trains a small MLP a few steps on random
 * data, quantizes it, exports it and runs the export with the integer
 * runtime. Exits 0 when every step worked and the loss went down. */
#include <stdio.h>
#include <string.h>

#include <bitgrad/bitgrad.h>

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "consumer.bgx";
    printf("bitgrad %s (header %s)\n", bg_version(), BG_VERSION_STRING);
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(16, 32, true, &rng), bg_relu_new(),
                                                          bg_linear_new(32, 4, true, &rng)});
    if (!net || bg_quantize_model(net, "int8", "int8") != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        return 1;
    }
    bg_optim *opt = bg_adam_new(net, &(bg_adam_opts){.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f});
    bg_ctx *ctx = bg_ctx_new(0);
    float x[64 * 16];
    int32_t y[64];
    for (int i = 0; i < 64; i++) {
        y[i] = i % 4;
        for (int j = 0; j < 16; j++) x[i * 16 + j] = (j % 4 == y[i] ? 1.0f : 0.0f) + 0.1f * bg_rng_uniform(&rng);
    }
    double first = 0, last = 0;
    for (int s = 0; s < 30; s++) {
        bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(64, 16), x);
        bg_tensor *yt = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(64), y);
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, net, xt), yt, NULL);
        if (!loss || bg_backward(ctx, loss) != BG_OK || bg_optim_step(opt) != BG_OK) {
            fprintf(stderr, "step %d: %s\n", s, bg_ctx_error(ctx));
            return 1;
        }
        last = bg_f32(loss)[0];
        if (s == 0) first = last;
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_infer_model *rt = NULL;
    float logits[64 * 4];
    if (bg_export(net, out, NULL) != BG_OK || bg_infer_load(out, &rt) != BG_OK || bg_infer_run(rt, x, 64, logits) != BG_OK) {
        fprintf(stderr, "export: %s\n", bg_last_error());
        return 1;
    }
    int right = 0;
    for (int i = 0; i < 64; i++) {
        int a = 0;
        for (int c = 1; c < 4; c++)
            if (logits[i * 4 + c] > logits[i * 4 + a]) a = c;
        right += a == y[i];
    }
    printf("loss %.4f -> %.4f; exported %s; the integer runtime classifies %d of 64\n", first, last, out, right);
    bg_infer_free(rt);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(net);
    return last < first && right >= 48 ? 0 : 1;
}
