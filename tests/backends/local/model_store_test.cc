#include "backends/local/model_store.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh folder per test under gtest's temp dir.
class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("model_store_" + std::string(
                                  ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "a");
    fs::create_directories(root_ / "b");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Write(const fs::path& rel, const std::string& bytes) {
    const fs::path path = root_ / rel;
    std::ofstream(path, std::ios::binary) << bytes;
    return path.string();
  }

  std::string Folder(const char* name) const { return (root_ / name).string(); }

  fs::path root_;
};

// The 24-byte GGUF header: magic, version, tensor count, key-value count (little-endian).
std::string Header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  std::string h = "GGUF";
  for (int i = 0; i < 4; ++i) h += static_cast<char>((version >> (8 * i)) & 0xFF);
  for (int i = 0; i < 8; ++i) h += static_cast<char>((n_tensors >> (8 * i)) & 0xFF);
  for (int i = 0; i < 8; ++i) h += static_cast<char>((n_kv >> (8 * i)) & 0xFF);
  return h;
}

TEST(ModelSearchFoldersTest, ConfiguredFirstThenEnvEntriesWithoutEmptiesOrDuplicates) {
  EXPECT_THAT(ModelSearchFolders("/cfg", "/x::/y:/cfg:"), ElementsAre("/cfg", "/x", "/y"));
  EXPECT_THAT(ModelSearchFolders("", "/x"), ElementsAre("/x"));
  EXPECT_THAT(ModelSearchFolders("/cfg", nullptr), ElementsAre("/cfg"));
  EXPECT_TRUE(ModelSearchFolders("", nullptr).empty());
}

TEST_F(ModelStoreTest, ResolvesInSearchOrderAndAddsGgufSuffix) {
  const std::string in_b = Write("b/m.gguf", "x");
  EXPECT_EQ(*ResolveModelPath("m.gguf", {Folder("a"), Folder("b")}), in_b);
  EXPECT_EQ(*ResolveModelPath("m", {Folder("a"), Folder("b")}), in_b);
  const std::string in_a = Write("a/m.gguf", "x");
  EXPECT_EQ(*ResolveModelPath("m", {Folder("a"), Folder("b")}), in_a);
  // An exact name wins over the added suffix within one folder.
  const std::string exact = Write("b/m", "x");
  EXPECT_EQ(*ResolveModelPath("m", {Folder("b")}), exact);
}

TEST_F(ModelStoreTest, ExistingPathsAreUsedAsIs) {
  const std::string abs = Write("a/direct.gguf", "x");
  EXPECT_EQ(*ResolveModelPath(abs, {Folder("b")}), abs);
  const fs::path old_cwd = fs::current_path();
  fs::current_path(root_);
  absl::StatusOr<std::string> rel = ResolveModelPath("a/direct.gguf", {});
  fs::current_path(old_cwd);
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(*rel, "a/direct.gguf");
}

TEST_F(ModelStoreTest, NotFoundListsEveryFolder) {
  absl::StatusOr<std::string> r = ResolveModelPath("missing.gguf", {Folder("a"), Folder("b")});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr("missing.gguf"), HasSubstr(Folder("a")), HasSubstr(Folder("b")),
                    HasSubstr("SWITCHYARD_MODELS")));

  EXPECT_EQ(ResolveModelPath("/nonexistent/abs.gguf", {Folder("a")}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveModelPath("", {Folder("a")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveModelPath(Folder("a"), {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, ResolveModelReadsTheEnvironment) {
  const std::string in_b = Write("b/env.gguf", "x");
  setenv(kModelsEnvVar, (Folder("a") + ":" + Folder("b")).c_str(), 1);
  absl::StatusOr<std::string> found = ResolveModel("env", "/configured/folder");
  absl::StatusOr<std::string> missing = ResolveModel("nope", "/configured/folder");
  unsetenv(kModelsEnvVar);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, in_b);
  EXPECT_THAT(missing.status().message(),
              AllOf(HasSubstr("/configured/folder"), HasSubstr(Folder("a")), HasSubstr(Folder("b"))));
}

TEST_F(ModelStoreTest, HeaderCheck) {
  struct Case {
    const char* name;
    std::string bytes;
    const char* want;  // substring of the error; nullptr for OK
  };
  const std::vector<Case> cases = {
      {"ok.gguf", Header(3, 1, 1) + std::string(100, '\0'), nullptr},
      {"v2.gguf", Header(2, 0, 0), nullptr},
      {"text.gguf", "this is plain text, not a model", "not a GGUF file"},
      {"lfs.gguf", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS"},
      {"empty.gguf", "", "truncated"},
      {"short.gguf", "GGUF\x03\0", "truncated"},
      {"v1.gguf", Header(1, 0, 0), "unsupported GGUF version 1"},
      {"v9.gguf", Header(9, 0, 0), "unsupported GGUF version 9"},
      {"bigendian.gguf", Header(0x03000000, 0, 0), "big-endian"},
      {"tensors.gguf", Header(3, 1000, 1) + std::string(100, '\0'), "corrupt or truncated"},
      {"kv.gguf", Header(3, 0, ~uint64_t{0}), "corrupt or truncated"},
  };
  for (const Case& c : cases) {
    const std::string path = Write(c.name, c.bytes);
    absl::Status status = CheckGgufHeader(path);
    if (c.want == nullptr) {
      EXPECT_TRUE(status.ok()) << c.name << ": " << status;
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
      EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr(c.want))) << c.name;
    }
  }
  EXPECT_EQ(CheckGgufHeader(Folder("a") + "/none.gguf").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CheckGgufHeader(Folder("a")).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, ReadGgufInfoRejectsGarbageAfterAValidHeader) {
  // A plausible header followed by noise: the metadata parser must fail cleanly.
  std::string bytes = Header(3, 1, 2);
  for (int i = 0; i < 400; ++i) bytes += static_cast<char>((i * 37 + 11) & 0xFF);
  const std::string path = Write("noise.gguf", bytes);
  absl::StatusOr<GgufInfo> info = ReadGgufInfo(path);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace switchyard::backends
