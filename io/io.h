/*
 * io — files above the model: checkpoints and model descriptions
 * (io/checkpoint.h), exports and ONNX (io/export.h), datasets and batchers
 * (io/dataset.h), byte-level text and its window batchers for language
 * models (io/text.h), the training loop (io/train.h), training logs and
 * plots (io/trainlog.h). Bytes-level formats (safetensors, bit packing) are in
 * format/format.h. This header includes them all.
 */
#ifndef BG_IO_H
#define BG_IO_H

#include "format/format.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/export.h"
#include "io/text.h"
#include "io/train.h"
#include "io/calibrate.h"
#include "io/trainlog.h"

#endif /* BG_IO_H */
