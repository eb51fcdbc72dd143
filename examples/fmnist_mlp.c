/* fmnist_mlp.c — trains a 784-512-512-10 ReLU MLP on Fashion-MNIST and prints,
 * per epoch, the mean training loss, the test accuracy and the seconds taken.
 *
 *     ./build/fmnist_mlp                          # Adam, lr 1e-3, batch 128, 5 epochs, seed 0
 *     ./build/fmnist_mlp --optim sgd --lr 0.05 --epochs 10 --threads 1
 *
 * The data comes from the Debian package dataset-fashion-mnist
 * (/usr/share/datasets/fashion-mnist), or --data DIR / $BG_FMNIST_DIR. */
#include "examples/example_common.h"

static bg_module *build_mlp(bg_rng *rng) {
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 10, true, rng),
    });
}

int main(int argc, char **argv) {
    options o = {.epochs = 5, .batch = 128, .lr = 1e-3f, .optim = "adam", .threads = 0, .seed = 0,
                 .what = "Trains a 784-512-512-10 ReLU MLP on Fashion-MNIST."};
    int r = parse_args(argc, argv, &o);
    if (r) return r > 0 ? 0 : 2;
    return run_fmnist_example(&(fmnist_example){.name = "fmnist_mlp", .model_desc = "784-512-512-10 ReLU",
                                                .eval_batch = 1000, .build = build_mlp},
                              o);
}
