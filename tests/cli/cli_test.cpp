// The real qforge binary with small budgets: exit codes, the JSON summary
// line, an export that equals the QAT model, and a killed run that resumes
// to the same result as an uninterrupted one.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "core/archive.h"

namespace {

namespace fs = std::filesystem;

const std::string kQforge = QFORGE_CLI;
const std::string kSource = QFORGE_SOURCE_DIR;

struct CliRun {
  int code = -1;
  std::string out;   // stdout
  std::string json;  // its last line
};

CliRun run(const std::string& args) {
  CliRun r;
  FILE* p = popen((kQforge + " " + args + " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) r.out += buf;
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::string line;
  std::istringstream s(r.out);
  while (std::getline(s, line))
    if (!line.empty()) r.json = line;
  return r;
}

/// The raw text of `key`'s value in a flat JSON line ("" when absent).
std::string field(const std::string& json, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  size_t i = json.find(k);
  if (i == std::string::npos) return "";
  i += k.size();
  size_t j = i;
  if (json[i] == '"') j = json.find('"', i + 1) + 1;
  else
    while (j < json.size() && json[j] != ',' && json[j] != '}') ++j;
  return json.substr(i, j - i);
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qforge_cli_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
};

TEST_F(Cli, BadInputExitsWith2AndAJsonError) {
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("--help").code, 0);
  EXPECT_EQ(run("train").code, 2);
  EXPECT_EQ(run("train /no/such.yaml").code, 2);
  std::ofstream(path("bad.yaml")) << "model:\n  name: mnist_cnn\ntraining:\n  epocs: 2\n";
  const CliRun bad = run("train " + path("bad.yaml"));
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.json.find("\"error\":\"" + path("bad.yaml") + ":4:3: training.epocs: unknown key 'epocs'; did you "
                          "mean 'epochs'?"),
            std::string::npos)
      << bad.json;
  EXPECT_EQ(run("train " + kSource + "/recipes/mnist_fp32.yaml --set training.epochs=-1").code, 2);
  EXPECT_EQ(run("train " + kSource + "/recipes/mnist_fp32.yaml --set nonsense").code, 2);
  fs::create_directories(path("empty"));
  const CliRun nodata = run("train " + kSource + "/recipes/mnist_fp32.yaml --set data.dir=" + path("empty"));
  EXPECT_EQ(nodata.code, 2);
  EXPECT_NE(nodata.json.find("missing train-images-idx3-ubyte"), std::string::npos) << nodata.json;
  std::ofstream(path("fake_ckpt.h5")) << "junk";
  EXPECT_EQ(run("train " + kSource + "/recipes/mnist_fp32.yaml --set pretrained=" + path("fake_ckpt.h5")).code, 2);
  EXPECT_EQ(run("eval /no/such.h5").code, 2);
  std::ofstream(path("junk.h5")) << "not hdf5";
  const CliRun junk = run("eval " + path("junk.h5"));
  EXPECT_EQ(junk.code, 2);
  EXPECT_NE(field(junk.json, "error"), "");
  EXPECT_EQ(run("eval " + path("junk.h5") + " --dataset imagenet").code, 2);
}

TEST_F(Cli, TrainQatExportsAModelThatEqualsTheQatModelAndEvalReadsIt) {
  const CliRun t = run("train " + kSource +
                    "/recipes/mnist_qat_int8.yaml --set training.epochs=1 --set training.max_steps_per_epoch=12 "
                    "--out " + path("qat"));
  ASSERT_EQ(t.code, 0) << t.out;
  for (const char* k : {"test_accuracy", "images_per_s", "wall_s", "out_dir", "int8_accuracy", "int8_mismatches",
                        "export_path", "export_bytes"})
    EXPECT_NE(field(t.json, k), "") << k << " missing from " << t.json;
  EXPECT_EQ(field(t.json, "int8_mismatches"), "0");
  EXPECT_EQ(field(t.json, "int8_accuracy"), field(t.json, "test_accuracy"));
  EXPECT_GT(std::stod(field(t.json, "test_accuracy")), 50.0);  // 24 steps of training, far above chance
  EXPECT_TRUE(fs::exists(path("qat/recipe.yaml")));
  const std::string model = path("qat/mnist_cnn_int8.h5");
  ASSERT_TRUE(fs::exists(model));
  const CliRun e = run("eval " + model);
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_EQ(field(e.json, "accuracy"), field(t.json, "int8_accuracy"));
  EXPECT_EQ(field(e.json, "count"), "10000");

  // run: raw test images through the normalization recorded in the export.
  const std::string images = kSource + "/data/mnist/t10k-images-idx3-ubyte.gz",
                    labels = kSource + "/data/mnist/t10k-labels-idx1-ubyte.gz";
  const CliRun p = run("run " + model + " --input " + images + " --labels " + labels + " --show 2");
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_EQ(field(p.json, "accuracy"), field(t.json, "int8_accuracy"));
  EXPECT_EQ(field(p.json, "count"), "10000");
  EXPECT_EQ(field(p.json, "predictions").substr(0, 1), "[");
  // The same first two images as raw bytes.
  {
    std::ofstream raw(path("two.raw"), std::ios::binary);
    for (int i = 0; i < 2 * 784; ++i) raw.put(static_cast<char>(i % 251));
  }
  const CliRun rr = run("run " + model + " --raw --input " + path("two.raw"));
  ASSERT_EQ(rr.code, 0) << rr.out;
  EXPECT_EQ(field(rr.json, "count"), "2");
  {
    std::ofstream odd(path("odd.raw"), std::ios::binary);
    odd << "123";
  }
  EXPECT_EQ(run("run " + model + " --raw --input " + path("odd.raw")).code, 2);
  EXPECT_EQ(run("run " + model + " --input " + labels).code, 2);  // labels are not images
  EXPECT_EQ(run("run " + model).code, 2);

  // export from the last QAT checkpoint (the recipe comes from the run's
  // recipe.yaml): the same model, so the same predictions.
  const CliRun x = run("export " + path("qat/qat/ckpt/epoch_0001.h5") + " --out " + path("re.h5"));
  ASSERT_EQ(x.code, 0) << x.out;
  EXPECT_EQ(field(x.json, "path"), "\"" + path("re.h5") + "\"");
  const CliRun p2 = run("run " + path("re.h5") + " --input " + images + " --labels " + labels);
  ASSERT_EQ(p2.code, 0);
  EXPECT_EQ(field(p2.json, "predictions"), field(p.json, "predictions"));
  // eval reads checkpoints too: the QAT one gives the QAT eval accuracy.
  const CliRun q = run("eval " + path("qat/qat/ckpt/epoch_0001.h5"));
  ASSERT_EQ(q.code, 0) << q.out;
  EXPECT_EQ(field(q.json, "kind"), "\"qat\"");
  EXPECT_EQ(field(q.json, "accuracy"), field(t.json, "test_accuracy"));
  const CliRun f = run("eval " + path("qat/fp32/ckpt/epoch_0001.h5"));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_EQ(field(f.json, "kind"), "\"fp32\"");
  EXPECT_EQ(run("export " + path("qat/fp32/ckpt/epoch_0001.h5") + " --out " + path("no.h5")).code, 2);
  EXPECT_EQ(run("export " + model + " --out " + path("no.h5")).code, 2);  // already int8
  fs::copy_file(path("qat/qat/ckpt/epoch_0001.h5"), path("lonely.h5"));
  const CliRun lonely = run("export " + path("lonely.h5") + " --out " + path("no.h5"));
  EXPECT_EQ(lonely.code, 2);
  EXPECT_NE(lonely.json.find("no recipe.yaml"), std::string::npos) << lonely.json;
  EXPECT_EQ(run("export " + path("lonely.h5") + " --out " + path("yes.h5") + " --recipe " + path("qat/recipe.yaml")).code,
            0);

  // inspect: qparams of the int8 file; SQNR per layer and charts from the QAT checkpoint.
  const CliRun i8 = run("inspect " + model);
  ASSERT_EQ(i8.code, 0) << i8.out;
  EXPECT_EQ(field(i8.json, "kind"), "\"int8\"");
  EXPECT_NE(i8.out.find("conv2d           conv2"), std::string::npos) << i8.out;
  const CliRun in = run("inspect " + path("qat/qat/ckpt/epoch_0001.h5") + " --images 64 --plot " + path("plots"));
  ASSERT_EQ(in.code, 0) << in.out;
  EXPECT_EQ(field(in.json, "kind"), "\"qat\"");
  EXPECT_NE(in.json.find("{\"name\":\"conv1\",\"sqnr_db\":"), std::string::npos) << in.json;
  EXPECT_GT(std::stod(field(in.json, "min_sqnr_db")), 15.0);  // int8 tracks float closely
  for (const char* f : {"sqnr.svg", "hist_conv1.svg", "hist_fc.svg"}) {
    std::ifstream svg(path("plots/") + f);
    std::string head(4, ' ');
    svg.read(head.data(), 4);
    EXPECT_EQ(head, "<svg") << f;
  }
  EXPECT_EQ(run("inspect " + path("qat/qat/ckpt/epoch_0001.h5") + " --images 0").code, 2);

  // bench
  const CliRun b = run("bench " + model + " --batch 3 --threads 1 --min-sec 0.2");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(field(b.json, "batch"), "3");
  EXPECT_EQ(field(b.json, "threads"), "1");
  for (const char* k : {"latency_ms_p50", "images_per_s", "kernels"}) EXPECT_NE(field(b.json, k), "") << k;
  EXPECT_EQ(run("bench " + model + " --batch 0").code, 2);
}

TEST_F(Cli, PtqAndLsqRecipesRun) {
  const CliRun t = run("train " + kSource +
                    "/recipes/mnist_ptq_int8.yaml --set training.epochs=1 --set training.max_steps_per_epoch=10 "
                    "--set quant.calibration_images=200 --out " + path("ptq"));
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_EQ(field(t.json, "int8_mismatches"), "0");
  EXPECT_EQ(field(t.json, "int8_accuracy"), field(t.json, "test_accuracy"));
  // 4-bit LSQ, with fake quant starting a third of the way into QAT, the
  // data init, and an override list given on the command line (one --set
  // value with commas inside).
  const CliRun l = run("train " + kSource +
                    "/recipes/mnist_lsq_w4a4.yaml --set training.epochs=1 --set training.max_steps_per_epoch=9 "
                    "--set quant.epochs=1 --set quant.schedule.fake_quant_from=0.34 --set quant.lsq_init=data "
                    "--set 'quant.overrides=[{match: fc, weight_bits: 8, activation_bits: 6}]' --out " + path("lsq"));
  ASSERT_EQ(l.code, 0) << l.out;
  EXPECT_NE(l.out.find("fake_quant from step 3"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("lsq init=data"), std::string::npos) << l.out;
  {
    std::ifstream f(path("lsq") + "/recipe.yaml");
    const std::string resolved((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_NE(resolved.find("activation_bits: 6"), std::string::npos) << resolved;
    EXPECT_NE(resolved.find("lsq_init: data"), std::string::npos) << resolved;
  }
  EXPECT_EQ(field(l.json, "int8_mismatches"), "0");
  EXPECT_EQ(field(l.json, "int8_accuracy"), field(l.json, "test_accuracy"));
}

TEST_F(Cli, QatDistillsFromAnFp32TeacherAndAMismatchedTeacherIsABadInput) {
  const CliRun fp32 = run("train " + kSource +
                          "/recipes/mnist_fp32.yaml --set training.epochs=1 --set training.max_steps_per_epoch=30 "
                          "--out " + path("teacher"));
  ASSERT_EQ(fp32.code, 0) << fp32.out;
  const std::string teacher = path("teacher") + "/fp32/ckpt/epoch_0001.h5";
  // QAT from that model with the distillation term alone (alpha 1): the
  // student sees no label and keeps the teacher's accuracy. (That a student
  // learns from a teacher alone: TrainerTest's distillation test.)
  const CliRun q = run("train " + kSource +
                       "/recipes/mnist_qat_int8.yaml --set training.epochs=0 --set pretrained=" + teacher +
                       " --set quant.epochs=1 --set training.max_steps_per_epoch=12 --set distill.teacher=" + teacher +
                       " --set distill.alpha=1 --set distill.temperature=2 --out " + path("kd"));
  ASSERT_EQ(q.code, 0) << q.out;
  EXPECT_NE(q.out.find("== distillation from " + teacher + ": loss 0 * cross-entropy + 1 * T^2"), std::string::npos)
      << q.out;
  EXPECT_GT(std::stod(field(q.json, "test_accuracy")), 80.0) << q.out;
  EXPECT_EQ(field(q.json, "int8_mismatches"), "0");
  // A teacher whose weights do not fit the recipe's model.
  const CliRun bad = run("train " + kSource + "/recipes/mnist_fp32.yaml --set model.name=lenet5 --set distill.teacher=" +
                         teacher + " --out " + path("bad"));
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.json.find("distill.teacher: "), std::string::npos) << bad.json;
}

TEST_F(Cli, LstmRecipeExportsTheIntegerLstm) {
  const CliRun t = run("train " + kSource +
                       "/recipes/mnist_lstm_qat_int8.yaml --set training.epochs=1 --set training.max_steps_per_epoch=8 "
                       "--set quant.epochs=1 --set model.args.hidden=32 --out " + path("lstm"));
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_EQ(field(t.json, "int8_mismatches"), "0");
  EXPECT_EQ(field(t.json, "int8_accuracy"), field(t.json, "test_accuracy"));
  const CliRun e = run("eval " + path("lstm") + "/mnist_lstm_int8.h5");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_EQ(field(e.json, "accuracy"), field(t.json, "int8_accuracy"));
  // The FP32 checkpoint in dynamic int8; an int8 file is refused.
  const CliRun d = run("eval " + path("lstm") + "/fp32/ckpt/epoch_0001.h5 --dynamic");
  ASSERT_EQ(d.code, 0) << d.out;
  EXPECT_EQ(field(d.json, "kind"), "\"dynamic\"");
  EXPECT_EQ(run("eval " + path("lstm") + "/mnist_lstm_int8.h5 --dynamic").code, 2);
}

TEST_F(Cli, AKilledRunResumesToTheSameResult) {
  const std::string args = "train " + kSource +
                           "/recipes/mnist_fp32.yaml --set training.epochs=3 --set training.max_steps_per_epoch=15 "
                           "--set training.threads=2";
  const CliRun whole = run(args + " --out " + path("whole"));
  ASSERT_EQ(whole.code, 0) << whole.out;

  // The same run, killed (SIGKILL: no clean-up) once its first checkpoint is on disk.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    const std::string out = path("killed");
    execl(kQforge.c_str(), kQforge.c_str(), "train", (kSource + "/recipes/mnist_fp32.yaml").c_str(), "--set",
          "training.epochs=3", "--set", "training.max_steps_per_epoch=15", "--set", "training.threads=2", "--out",
          out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const fs::path first = fs::path(path("killed")) / "fp32" / "ckpt" / "epoch_0001.h5";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(first) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(fs::exists(first)) << "no checkpoint appeared";
  ASSERT_FALSE(fs::exists(fs::path(path("killed")) / "fp32" / "ckpt" / "epoch_0003.h5"))
      << "the run finished before it was killed; the test did not interrupt it";

  const CliRun resumed = run(args + " --out " + path("killed") + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;
  EXPECT_EQ(field(resumed.json, "test_accuracy"), field(whole.json, "test_accuracy"));
  // Bit-identical final weights.
  const qforge::Archive a = qforge::load_archive(path("whole") + "/fp32/ckpt/epoch_0003.h5");
  const qforge::Archive b = qforge::load_archive(path("killed") + "/fp32/ckpt/epoch_0003.h5");
  int compared = 0;
  for (const auto& [k, t] : a.tensors) {
    if (k.rfind("model/", 0) != 0) continue;
    ASSERT_TRUE(b.tensors.count(k)) << k;
    const auto& u = b.tensors.at(k);
    ASSERT_EQ(t.nbytes(), u.nbytes()) << k;
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0) << k;
    ++compared;
  }
  EXPECT_GT(compared, 10);
}

}  // namespace
