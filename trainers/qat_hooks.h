#pragma once
// Runs a QAT schedule (quant/prepare.h) from a Trainer's hooks.

#include "quant/prepare.h"
#include "trainers/trainer.h"

namespace qforge::trainers {

/// Before every step, sets the model's quantizer and BN switches to what
/// `schedule` says at (epoch, global step). At every epoch end, the
/// observers' statistics go into the trainer's extra state (keys
/// "observer/<module path>/<statistic>"), so checkpoints carry them; at
/// every epoch start where such keys exist (every epoch after the first, and
/// after a resume) they are loaded back. The model must be
/// prepared (quant::prepare_qat) before fit().
void attach_qat_schedule(Trainer& trainer, const quant::QatSchedule& schedule);

}  // namespace qforge::trainers
