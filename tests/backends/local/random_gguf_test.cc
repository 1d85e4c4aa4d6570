// The benchmark's random-weight model writer: the file it writes is a GGUF that our model store
// reads back with the shape asked for, and that the real engine loads and generates from.
#include "tests/backends/local/random_gguf.h"

#include <filesystem>
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "backends/local/llama_backend.h"
#include "backends/local/model_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/recording_sink.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kStories = std::string(SWITCHYARD_SHARED_MODELS) + "/stories260K.gguf";

class RandomGgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("random_gguf_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  RandomGgufOptions Small() const {
    RandomGgufOptions options;
    options.tokenizer_from = kStories;
    options.n_embd = 64;
    options.n_layer = 2;
    options.n_head = 4;
    options.n_head_kv = 2;
    options.n_ff = 128;
    return options;
  }

  std::string Generate(const std::string& path) {
    backends::LocalBackendOptions options;
    options.model_path = path;
    options.n_threads = 1;
    options.n_slots = 1;
    options.n_ctx = 256;
    auto backend = backends::LocalBackend::Create(options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return "";
    backends::ChatRequest request;
    request.messages.push_back({"user", "Once upon a time"});
    request.max_tokens = 12;
    request.temperature = 0.0f;
    auto sink = std::make_shared<RecordingSink>();
    auto call = (*backend)->Start(request, sink);
    EXPECT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_TRUE(sink->status_.ok()) << sink->status_;
    // Random weights may sample the end-of-sequence token early.
    EXPECT_GE(sink->completion_.usage.completion_tokens, 1);
    EXPECT_LE(sink->completion_.usage.completion_tokens, 12);
    return sink->text_;
  }

  fs::path dir_;
};

TEST_F(RandomGgufTest, WritesTheShapeAskedFor) {
  const std::string path = (dir_ / "small.gguf").string();
  absl::StatusOr<RandomGgufInfo> info = WriteRandomGguf(Small(), path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(fs::exists(path + ".part"));
  EXPECT_EQ(info->n_vocab, 512);  // stories260K's tokenizer
  // Embeddings and output (2 x 64 x 512), then per layer: norms 2 x 64, q and o 64 x 64,
  // k and v 64 x 32 (2 of 4 heads), gate and up 64 x 128, down 128 x 64; the output norm 64.
  const int64_t per_layer = 2 * 64 + 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128;
  EXPECT_EQ(info->parameters, 2 * 64 * 512 + 64 + 2 * per_layer);

  absl::StatusOr<backends::GgufInfo> read = backends::ReadGgufInfo(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->architecture, "llama");
  EXPECT_EQ(read->n_params, info->parameters);
  EXPECT_EQ(read->file_type, "Q8_0");
  EXPECT_EQ(read->size_bytes, info->bytes);
}

TEST_F(RandomGgufTest, TheEngineLoadsItAndGeneratesDeterministically) {
  for (const char* type : {"q8_0", "q4_0"}) {
    RandomGgufOptions options = Small();
    options.type = type;
    const std::string path = (dir_ / (std::string(type) + ".gguf")).string();
    ASSERT_TRUE(WriteRandomGguf(options, path).ok()) << type;
    const std::string first = Generate(path);
    EXPECT_FALSE(first.empty()) << type;
    EXPECT_EQ(Generate(path), first) << type;
  }
}

TEST_F(RandomGgufTest, BadInputsAreClearErrors) {
  RandomGgufOptions options = Small();
  options.type = "q3_k";
  EXPECT_THAT(WriteRandomGguf(options, (dir_ / "a.gguf").string()).status().message(),
              HasSubstr("type 'q3_k'"));
  options = Small();
  options.n_embd = 100;
  EXPECT_THAT(WriteRandomGguf(options, (dir_ / "b.gguf").string()).status().message(),
              HasSubstr("multiples of 32"));
  options = Small();
  options.tokenizer_from = (dir_ / "missing.gguf").string();
  EXPECT_THAT(WriteRandomGguf(options, (dir_ / "c.gguf").string()).status().message(),
              HasSubstr("not a readable GGUF"));
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace switchyard::testing
