/* fmnist_cnn.c — trains a small CNN on Fashion-MNIST and prints, per epoch,
 * the mean training loss, the test accuracy and the seconds taken:
 *   conv 1->32 3x3, ReLU, maxpool 2, conv 32->64 3x3, ReLU, maxpool 2,
 *   flatten, linear 1600->128, ReLU, linear 128->10.
 *
 *     ./build/fmnist_cnn                          # Adam, lr 1e-3, batch 128, 3 epochs, seed 0
 *     ./build/fmnist_cnn --optim sgd --lr 0.05 --epochs 10 --threads 1
 *
 * The data comes from the Debian package dataset-fashion-mnist
 * (/usr/share/datasets/fashion-mnist), or --data DIR / $BG_FMNIST_DIR. */
#include "examples/example_common.h"

/* x [N,1,28,28] -> [N,32,26,26] -> [N,32,13,13] -> [N,64,11,11] -> [N,64,5,5]
 * -> [N,1600] -> [N,128] -> [N,10]. */
static bg_module *build_cnn(bg_rng *rng) {
    return bg_sequential_new(10, (bg_module *[]){
        bg_conv2d_new(1, 32, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(32, 64, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_flatten_new(),
        bg_linear_new(1600, 128, true, rng), bg_relu_new(),
        bg_linear_new(128, 10, true, rng),
    });
}

int main(int argc, char **argv) {
    options o = {.epochs = 3, .batch = 128, .lr = 1e-3f, .optim = "adam", .threads = 0, .seed = 0,
                 .what = "Trains a two-conv-layer CNN on Fashion-MNIST."};
    int r = parse_args(argc, argv, &o);
    if (r) return r > 0 ? 0 : 2;
    // Test batches of 250 keep the arena near 70 MiB.
    return run_fmnist_example(&(fmnist_example){.name = "fmnist_cnn",
                                                .model_desc = "conv32-pool-conv64-pool-128-10",
                                                .nchw = true, .eval_batch = 250, .build = build_cnn},
                              o);
}
