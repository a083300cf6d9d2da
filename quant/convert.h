#pragma once
// convert(): a prepared (QAT or calibrated PTQ) model to the int8 runtime's
// model. Each QAT layer contributes to_qlayer(), the very object its eval
// path runs, so the converted model computes exactly what the QAT model
// computes in eval mode.

#include <array>

#include "nn/module.h"
#include "quant/runtime/model.h"

namespace qforge::quant {

/// Converts a Sequential chain (nested Sequentials are walked in order) into
/// a runtime graph: QATQuantStub -> quantize, QAT conv/linear layers ->
/// conv2d/linear, MaxPool2d -> max_pool2d, QATAvgPool -> global_avg_pool or
/// avg_pool2d (keeping the input's qparams), a BasicBlock -> its main path,
/// its shortcut from the block's input, and an add of both (QATAdd),
/// Flatten (from axis 1 to the end) -> flatten, ReLU -> relu, Identity and
/// Dropout -> nothing, DeQuantStub -> dequantize.
/// `input_shape` is one input without the batch ({C, H, W}). Throws
/// ValueError naming the module that has no int8 form (a float layer, an
/// unlinked QAT layer, a quantizer without qparams, ...). The result is
/// validated.
runtime::Model convert(nn::Module& model, std::array<int64_t, 3> input_shape);

}  // namespace qforge::quant
