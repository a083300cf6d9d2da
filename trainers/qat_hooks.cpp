#include "trainers/qat_hooks.h"

#include <string>

namespace qforge::trainers {

namespace {
const std::string kPrefix = "observer/";
}

void attach_qat_schedule(Trainer& trainer, const quant::QatSchedule& schedule) {
  trainer.on_step_begin([schedule](Trainer& t, const StepInfo& info) {
    quant::apply_qat_schedule(t.model(), schedule, info.epoch, info.global_step);
  });
  trainer.on_epoch_end([](Trainer& t, int64_t) {
    quant::sync_qparams(t.model());  // the checkpoint's state dict gets current qparams
    auto& extra = t.extra_state();
    for (auto it = extra.begin(); it != extra.end();)
      it = it->first.rfind(kPrefix, 0) == 0 ? extra.erase(it) : std::next(it);
    for (auto& [k, v] : quant::observer_state(t.model())) extra[kPrefix + k] = v;
  });
  trainer.on_epoch_begin([](Trainer& t, int64_t) {
    std::map<std::string, Tensor> saved;
    for (const auto& [k, v] : t.extra_state())
      if (k.rfind(kPrefix, 0) == 0) saved[k.substr(kPrefix.size())] = v;
    if (!saved.empty()) quant::load_observer_state(t.model(), saved);
  });
}

}  // namespace qforge::trainers
