/* bitgrad.h — the umbrella header: every module's public header. */
#ifndef BITGRAD_H
#define BITGRAD_H

#include "tensor/tensor.h"
#include "kernels/kernels.h"
#include "quant/quant.h"
#include "autograd/autograd.h"
#include "layers/layers.h"
#include "optim/optim.h"
#include "format/format.h"
#include "dist/dist.h"
#include "io/io.h"
#include "qat/qat.h"
#include "infer/infer.h"
#include "infer/lm.h"

#endif
