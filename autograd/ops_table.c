/* ops_table.c — the one table of ops: name, arity, backward. Each entry's
 * forward and backward live in the ops_<family>.c file named beside it. */
#include "autograd/autograd_internal.h"

#define OP(id, nm, arity) [BG_OP_##id] = {.name = #nm, .n_inputs = arity, .backward = bg_op_##nm##_backward}

const bg_op_def bg_op_table[BG_OP_COUNT] = {
    [BG_OP_NONE] = {.name = "none", .n_inputs = 0, .backward = NULL},
    // ops_eltwise.c
    OP(ADD,           add,           2),
    OP(SUB,           sub,           2),
    OP(MUL,           mul,           2),
    OP(DIV,           div,           2),
    OP(SCALE,         scale,         1),
    OP(NEG,           neg,           1),
    OP(EXP,           exp,           1),
    OP(LOG,           log,           1),
    OP(SQRT,          sqrt,          1),
    OP(ABS,           abs,           1),
    OP(CLAMP,         clamp,         1),
    OP(RELU,          relu,          1),
    OP(LEAKY_RELU,    leaky_relu,    1),
    OP(GELU,          gelu,          1),
    OP(SILU,          silu,          1),
    OP(SIGMOID,       sigmoid,       1),
    OP(TANH,          tanh,          1),
    OP(DROPOUT,       dropout,       1),
    // ops_reduce.c
    OP(SUM,           sum,           1),
    OP(MEAN,          mean,          1),
    OP(MAX,           max,           1),
    OP(SOFTMAX,       softmax,       1),
    OP(LOG_SOFTMAX,   log_softmax,   1),
    OP(CROSS_ENTROPY, cross_entropy, 2),
    OP(MSE,           mse,           2),
    // ops_shape.c
    OP(RESHAPE,       reshape,       1),
    OP(PERMUTE,       permute,       1),
    OP(CONCAT,        concat,        -1),
    OP(SLICE,         slice,         1),
    OP(EMBEDDING,     embedding,     2),
    // ops_matmul.c
    OP(MATMUL,        matmul,        2),
    OP(LINEAR,        linear,        3),
    // ops_norm.c
    OP(LAYERNORM,     layernorm,     3),
    OP(RMSNORM,       rmsnorm,       2),
    // ops_conv.c
    OP(CONV2D,        conv2d,        3),
    OP(MAX_POOL2D,    max_pool2d,    1),
    OP(AVG_POOL2D,    avg_pool2d,    1),
    // ops_quant.c (x, then the learned parameters of the spec: 1 to 3 inputs)
    OP(FAKE_QUANT,    fake_quant,    -1),
    // ops_qlinear.c
    OP(QLINEAR_INT,   qlinear_int,   3),
};

const char *bg_op_name(bg_op op) {
    return (unsigned)op < BG_OP_COUNT && bg_op_table[op].name ? bg_op_table[op].name : "unknown";
}
