/* ops_table.c — the op table (name, arity, backward), made from the op
 * registry autograd/ops.def. */
#include "autograd/autograd_internal.h"

const bg_op_def bg_op_table[BG_OP_COUNT] = {
    [BG_OP_NONE] = {.name = "none", .n_inputs = 0, .backward = NULL},
#define BG_OP(id, nm, arity) [BG_OP_##id] = {.name = #nm, .n_inputs = arity, .backward = bg_op_##nm##_backward},
#include "autograd/ops.def"
#undef BG_OP
};

const char *bg_op_name(bg_op op) {
    return (unsigned)op < BG_OP_COUNT && bg_op_table[op].name ? bg_op_table[op].name : "unknown";
}
