// qforge: the command line.
//   qforge train RECIPE [--set key.path=value ...] [--out DIR] [--resume]
//   qforge eval MODEL|CHECKPOINT [--dataset mnist|cifar10] [--data DIR] [--recipe FILE] [--dynamic]
//   qforge export CHECKPOINT --out FILE [--recipe FILE]
//   qforge run MODEL --input FILE [--labels FILE] [--raw] [--show N]
//   qforge bench MODEL [--batch N] [--threads N] [--min-sec S]
//   qforge inspect MODEL|CHECKPOINT [--recipe FILE] [--plot DIR] [--images N]
// Exit codes: 0 success, 1 failure at run time, 2 bad input.
#include <cstdio>
// A --set value is one YAML value, commas included ("[{match: fc, weight_bits: 8}]"):
// cxxopts must not split it. argv strings cannot hold a NUL.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

using namespace qforge;

namespace {

void usage() {
  std::puts(
      "usage: qforge <command> [options]\n"
      "  train RECIPE [--set key.path=value ...] [--out DIR] [--resume]\n"
      "      FP32 training, QAT or PTQ, export and validation as the recipe says\n"
      "  eval MODEL|CHECKPOINT [--dataset mnist|cifar10] [--data DIR] [--recipe FILE] [--dynamic]\n"
      "      accuracy of an int8 export, an FP32 or a QAT checkpoint on a test set\n"
      "  export CHECKPOINT --out FILE [--recipe FILE]\n"
      "      a QAT checkpoint to an int8 model file\n"
      "  run MODEL --input FILE [--labels FILE] [--raw] [--show N]\n"
      "      predictions of an int8 model for 8-bit images (IDX, or raw bytes)\n"
      "  bench MODEL [--batch N] [--threads N] [--min-sec S]\n"
      "      latency and throughput of an int8 model\n"
      "  inspect MODEL|CHECKPOINT [--recipe FILE] [--plot DIR] [--images N]\n"
      "      per-layer qparams and weight ranges; per-layer SQNR (and SVG charts) for a QAT checkpoint\n"
      "Run 'qforge <command> --help' for a command's options.");
}

int fail_input(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "qforge %s: %s\n", cmd.c_str(), msg.c_str());
  std::printf("%s\n", cli::json_line({{"command", cli::json_string(cmd)}, {"error", cli::json_string(msg)}}).c_str());
  return 2;
}

/// Runs `body`, mapping errors to exit codes: bad input (RecipeError,
/// FormatError, a missing file) is 2, anything else at run time is 1.
int guarded(const std::string& cmd, const std::function<int()>& body) {
  try {
    return body();
  } catch (const cli::RecipeError& e) {
    return fail_input(cmd, e.what());
  } catch (const FormatError& e) {
    return fail_input(cmd, e.what());
  } catch (const IOError& e) {
    return fail_input(cmd, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qforge %s: %s\n", cmd.c_str(), e.what());
    std::printf("%s\n", cli::json_line({{"command", cli::json_string(cmd)}, {"error", cli::json_string(e.what())}}).c_str());
    return 1;
  }
}

/// Parses a subcommand's options; returns -1 to go on, else an exit code.
int parse(cxxopts::Options& o, int argc, char** argv, const std::string& cmd, cxxopts::ParseResult& a) {
  try {
    a = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return fail_input(cmd, e.what());
  }
  if (a.count("help")) {
    std::puts(o.help().c_str());
    return 0;
  }
  return -1;
}

int train(int argc, char** argv) {
  cxxopts::Options o("qforge train", "FP32 training, QAT or PTQ, export and validation, as a recipe says");
  o.add_options()("recipe", "recipe file (YAML)", cxxopts::value<std::string>())(
      "set", "override a recipe value: key.path=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "out", "output directory (default out/<recipe name>)", cxxopts::value<std::string>())(
      "resume", "continue an interrupted run from its newest checkpoints in the output directory")(
      "h,help", "show help");
  o.parse_positional({"recipe"});
  o.positional_help("RECIPE");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "train", a); rc >= 0) return rc;
  if (!a.count("recipe")) return fail_input("train", "needs a recipe file (qforge train RECIPE)");
  cli::Recipe r;
  try {
    r = cli::parse_recipe(a["recipe"].as<std::string>(),
                          a.count("set") ? a["set"].as<std::vector<std::string>>() : std::vector<std::string>{},
                          QFORGE_SOURCE_DIR);
  } catch (const cli::RecipeError& e) {
    return fail_input("train", e.what());
  }
  cli::TrainArgs ta;
  ta.out_dir = a.count("out") ? a["out"].as<std::string>() : "";
  ta.resume = a.count("resume") > 0;
  ta.source_dir = QFORGE_SOURCE_DIR;
  // Errors while training (a corrupt checkpoint on resume, say) are run-time failures.
  return guarded("train", [&]() -> int {
    try {
      return cli::run_train(r, ta);
    } catch (const Error& e) {
      throw std::runtime_error(e.what());
    }
  });
}

int run_cmd(int argc, char** argv) {
  cxxopts::Options o("qforge run", "predictions of an int8 model for 8-bit images");
  o.add_options()("model", "int8 model file", cxxopts::value<std::string>())(
      "input", "images: an IDX file ([N, H, W] or [N, C, H, W], gzipped or not), or raw bytes with --raw",
      cxxopts::value<std::string>())("labels", "optional IDX labels [N], for the accuracy",
                                     cxxopts::value<std::string>())(
      "raw", "the input is raw bytes [N, C, H, W]")(
      "show", "print this many predictions", cxxopts::value<int64_t>()->default_value("10"))("h,help", "show help");
  o.parse_positional({"model"});
  o.positional_help("MODEL");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "run", a); rc >= 0) return rc;
  if (!a.count("model") || !a.count("input")) return fail_input("run", "needs MODEL and --input FILE");
  const std::string model = a["model"].as<std::string>(), input = a["input"].as<std::string>();
  if (!std::filesystem::is_regular_file(model)) return fail_input("run", "no such model file '" + model + "'");
  if (!std::filesystem::is_regular_file(input)) return fail_input("run", "no such input file '" + input + "'");
  const int64_t show = a["show"].as<int64_t>();
  if (show < 0) return fail_input("run", "--show must be >= 0");
  return guarded("run", [&] {
    return cli::run_predict(model, input, a.count("labels") ? a["labels"].as<std::string>() : "", a.count("raw") > 0,
                            show);
  });
}

int bench(int argc, char** argv) {
  cxxopts::Options o("qforge bench", "latency and throughput of an int8 model on random input");
  o.add_options()("model", "int8 model file", cxxopts::value<std::string>())(
      "batch", "images per call", cxxopts::value<int64_t>()->default_value("64"))(
      "threads", "worker threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "min-sec", "seconds of timed calls", cxxopts::value<double>()->default_value("2"))("h,help", "show help");
  o.parse_positional({"model"});
  o.positional_help("MODEL");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "bench", a); rc >= 0) return rc;
  if (!a.count("model")) return fail_input("bench", "needs a model file (qforge bench MODEL)");
  const std::string model = a["model"].as<std::string>();
  const int64_t batch = a["batch"].as<int64_t>();
  const int threads = a["threads"].as<int>();
  const double min_sec = a["min-sec"].as<double>();
  if (!std::filesystem::is_regular_file(model)) return fail_input("bench", "no such model file '" + model + "'");
  if (batch < 1 || batch > 65536) return fail_input("bench", "--batch must be in [1, 65536]");
  if (threads < 0 || threads > 1024) return fail_input("bench", "--threads must be in [0, 1024]");
  if (!(min_sec > 0 && min_sec <= 3600)) return fail_input("bench", "--min-sec must be in (0, 3600]");
  return guarded("bench", [&] { return cli::run_bench(model, batch, threads, min_sec); });
}

int eval(int argc, char** argv) {
  cxxopts::Options o("qforge eval", "accuracy of an int8 export, or of a qforge train checkpoint, on a test set");
  o.add_options()("model", "int8 model file, or a checkpoint (FP32 or QAT) of qforge train",
                  cxxopts::value<std::string>())(
      "dataset", "mnist or cifar10 (default: the recipe's, or from the model's input)", cxxopts::value<std::string>())(
      "data", "dataset directory (default: the recipe's, or the dataset's usual place)", cxxopts::value<std::string>())(
      "recipe", "the run's recipe, for a checkpoint (default: recipe.yaml in a parent directory)",
      cxxopts::value<std::string>())(
      "dynamic", "an FP32 checkpoint in dynamic int8 (LSTM and Linear weights int8, activations per call)")(
      "h,help", "show help");
  o.parse_positional({"model"});
  o.positional_help("MODEL");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "eval", a); rc >= 0) return rc;
  if (!a.count("model")) return fail_input("eval", "needs a model file (qforge eval MODEL)");
  const std::string model = a["model"].as<std::string>();
  const std::string dataset = a.count("dataset") ? a["dataset"].as<std::string>() : "";
  if (!dataset.empty() && dataset != "mnist" && dataset != "cifar10")
    return fail_input("eval", "--dataset must be mnist or cifar10, got '" + dataset + "'");
  if (!std::filesystem::is_regular_file(model)) return fail_input("eval", "no such model file '" + model + "'");
  return guarded("eval", [&] {
    return cli::run_eval(model, dataset, a.count("data") ? a["data"].as<std::string>() : "",
                         a.count("recipe") ? a["recipe"].as<std::string>() : "", QFORGE_SOURCE_DIR,
                         a.count("dynamic") > 0);
  });
}

int export_cmd(int argc, char** argv) {
  cxxopts::Options o("qforge export", "convert a QAT checkpoint of qforge train to an int8 model file");
  o.add_options()("checkpoint", "QAT checkpoint (e.g. out/RUN/qat/ckpt/epoch_0001.h5)", cxxopts::value<std::string>())(
      "out", "int8 model file to write", cxxopts::value<std::string>())(
      "recipe", "the run's recipe (default: recipe.yaml in a parent directory of the checkpoint)",
      cxxopts::value<std::string>())("h,help", "show help");
  o.parse_positional({"checkpoint"});
  o.positional_help("CHECKPOINT");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "export", a); rc >= 0) return rc;
  if (!a.count("checkpoint") || !a.count("out")) return fail_input("export", "needs CHECKPOINT and --out FILE");
  const std::string ckpt = a["checkpoint"].as<std::string>();
  if (!std::filesystem::is_regular_file(ckpt)) return fail_input("export", "no such checkpoint '" + ckpt + "'");
  return guarded("export", [&] {
    return cli::run_export(ckpt, a["out"].as<std::string>(), a.count("recipe") ? a["recipe"].as<std::string>() : "",
                           QFORGE_SOURCE_DIR);
  });
}

int inspect(int argc, char** argv) {
  cxxopts::Options o("qforge inspect", "per-layer qparams, weight ranges and SQNR of a model or checkpoint");
  o.add_options()("model", "int8 model file, or a checkpoint of qforge train", cxxopts::value<std::string>())(
      "recipe", "the run's recipe, for a checkpoint (default: recipe.yaml in a parent directory)",
      cxxopts::value<std::string>())("plot", "write SVG charts into this directory", cxxopts::value<std::string>())(
      "images", "training images for the SQNR batch", cxxopts::value<int64_t>()->default_value("256"))(
      "h,help", "show help");
  o.parse_positional({"model"});
  o.positional_help("MODEL|CHECKPOINT");
  cxxopts::ParseResult a;
  if (const int rc = parse(o, argc, argv, "inspect", a); rc >= 0) return rc;
  if (!a.count("model")) return fail_input("inspect", "needs a model or checkpoint file");
  const std::string model = a["model"].as<std::string>();
  const int64_t images = a["images"].as<int64_t>();
  if (!std::filesystem::is_regular_file(model)) return fail_input("inspect", "no such file '" + model + "'");
  if (images < 1 || images > 60000) return fail_input("inspect", "--images must be in [1, 60000]");
  return guarded("inspect", [&] {
    return cli::run_inspect(model, a.count("recipe") ? a["recipe"].as<std::string>() : "",
                            a.count("plot") ? a["plot"].as<std::string>() : "", images, QFORGE_SOURCE_DIR);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "train") return train(argc - 1, argv + 1);
  if (cmd == "eval") return eval(argc - 1, argv + 1);
  if (cmd == "run") return run_cmd(argc - 1, argv + 1);
  if (cmd == "export") return export_cmd(argc - 1, argv + 1);
  if (cmd == "bench") return bench(argc - 1, argv + 1);
  if (cmd == "inspect") return inspect(argc - 1, argv + 1);
  std::fprintf(stderr, "qforge: unknown command '%s'\n", cmd.c_str());
  usage();
  return 2;
}
