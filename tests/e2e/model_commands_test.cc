// The built binary's model store: `switchyard models` on the shared models, and `switchyard pull`
// against a small in-test HTTP file server that honours Range requests and can cut a transfer
// short (the network is offline here, and a local server makes interruption deterministic).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBinary = SWITCHYARD_BINARY;
const std::string kModels = SWITCHYARD_SHARED_MODELS;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Serves one file at /<name> over HTTP/1.1, one connection at a time, closing after each answer.
// Honours "Range: bytes=N-" with 206; `cut_after` makes the next answer stop after that many body
// bytes and drop the connection, like a network failure.
class FileServer {
 public:
  FileServer(std::string name, std::string body) : name_(std::move(name)), body_(std::move(body)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 8);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FileServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + path;
  }
  void CutNextAfter(size_t bytes) { cut_after_ = static_cast<long>(bytes); }
  std::vector<std::string> ranges() {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  void Serve() {
    while (!stop_) {
      const int client = accept(fd_, nullptr, nullptr);
      if (client < 0) return;
      timeval timeout{5, 0};
      setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      Answer(client, request);
      close(client);
    }
  }

  void Answer(int client, const std::string& request) {
    const size_t path_start = request.find(' ') + 1;
    const std::string path =
        request.substr(path_start, request.find(' ', path_start) - path_start);
    std::string head;
    std::string body;
    if (path != "/" + name_) {
      body = "not found";
      head = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n";
    } else {
      size_t from = 0;
      const size_t range = request.find("Range: bytes=");
      if (range != std::string::npos) {
        from = std::stoul(request.substr(range + 13));
        std::lock_guard<std::mutex> lock(mu_);
        ranges_.push_back(request.substr(range + 13, request.find("\r\n", range) - range - 13));
      }
      if (from >= body_.size() && range != std::string::npos) {
        head = "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n";
      } else if (range != std::string::npos) {
        body = body_.substr(from);
        head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(from) +
               "-" + std::to_string(body_.size() - 1) + "/" + std::to_string(body_.size()) +
               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
      } else {
        body = body_;
        head = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
      }
    }
    head += "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    const long cut = cut_after_.exchange(-1);
    if (cut >= 0 && static_cast<size_t>(cut) < body.size()) body.resize(static_cast<size_t>(cut));
    const std::string out = head + body;
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = send(client, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
  }

  const std::string name_;
  const std::string body_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<long> cut_after_{-1};
  std::mutex mu_;
  std::vector<std::string> ranges_;
  std::thread thread_;
};

class ModelCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(kModels) / "stories260K.gguf")) {
      GTEST_SKIP() << "shared models not found at " << kModels;
    }
    dir_ = fs::temp_directory_path() /
           ("switchyard_pull_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = ReadAll(fs::path(kModels) / "stories260K.gguf");
    sha256_ = gateway::Sha256Hex(model_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  RunResult Pull(const std::string& url, const std::string& sha256) {
    return RunCommand({kBinary, "pull", url, "--sha256", sha256, "--dir", dir_.string()}, "", 60);
  }

  fs::path dir_;
  std::string model_;
  std::string sha256_;
};

TEST_F(ModelCommandsTest, ModelsListsTheSharedModels) {
  RunResult result =
      RunCommand({"/usr/bin/env", "SWITCHYARD_MODELS=" + kModels, kBinary, "models"}, "", 60);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("NAME"));
  EXPECT_THAT(result.out, HasSubstr("CONTEXT"));
  std::string stories_line;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("stories260K.gguf")) stories_line = line;
  }
  ASSERT_FALSE(stories_line.empty()) << result.out;
  // 1185376 bytes, llama architecture, no file type key, 292.8K parameters, 2048 context.
  EXPECT_THAT(stories_line, HasSubstr("1.1 MiB"));
  EXPECT_THAT(stories_line, HasSubstr("llama"));
  EXPECT_THAT(stories_line, HasSubstr("292.8K"));
  EXPECT_THAT(stories_line, HasSubstr("2048"));
  EXPECT_THAT(stories_line, HasSubstr(kModels));
  EXPECT_THAT(result.out, ::testing::MatchesRegex(
                              "(.|\n)*llama-2-tiny-random.gguf +1.7 MiB +llama +F16 +513.0K +4096(.|\n)*"));

  RunResult none = RunCommand({"/usr/bin/env", "-u", "SWITCHYARD_MODELS", kBinary, "models"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, HasSubstr("no model folders"));
}

TEST_F(ModelCommandsTest, PullDownloadsVerifiesAndRenames) {
  FileServer server("stories260K.gguf", model_);
  RunResult result = Pull(server.url("stories260K.gguf"), sha256_);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("sha256 ok"));
  EXPECT_EQ(ReadAll(dir_ / "stories260K.gguf"), model_);
  EXPECT_FALSE(fs::exists(dir_ / "stories260K.gguf.part"));
  EXPECT_TRUE(server.ranges().empty());
  // No terminal here, so no progress bar on stderr.
  EXPECT_THAT(result.err, Not(HasSubstr("%")));

  // A second pull finds the file in place and checks it instead of downloading.
  RunResult again = Pull(server.url("stories260K.gguf"), sha256_);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("already present"));
}

TEST_F(ModelCommandsTest, PullResumesAnInterruptedDownload) {
  FileServer server("stories260K.gguf", model_);
  // The connection drops after 400000 bytes: exit 1, the .part is kept.
  server.CutNextAfter(400000);
  RunResult cut = Pull(server.url("stories260K.gguf"), sha256_);
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_THAT(cut.err, HasSubstr("run the same command again to resume"));
  ASSERT_TRUE(fs::exists(dir_ / "stories260K.gguf.part"));
  EXPECT_EQ(fs::file_size(dir_ / "stories260K.gguf.part"), 400000u);
  EXPECT_FALSE(fs::exists(dir_ / "stories260K.gguf"));

  RunResult resumed = Pull(server.url("stories260K.gguf"), sha256_);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("resumed from"));
  EXPECT_THAT(server.ranges(), ::testing::ElementsAre("400000-"));
  EXPECT_EQ(ReadAll(dir_ / "stories260K.gguf"), model_);
  EXPECT_FALSE(fs::exists(dir_ / "stories260K.gguf.part"));
}

TEST_F(ModelCommandsTest, PullResumesFromAnExistingPartFile) {
  FileServer server("stories260K.gguf", model_);
  std::ofstream(dir_ / "stories260K.gguf.part", std::ios::binary) << model_.substr(0, 123457);
  RunResult result = Pull(server.url("stories260K.gguf"), sha256_);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(server.ranges(), ::testing::ElementsAre("123457-"));
  EXPECT_EQ(ReadAll(dir_ / "stories260K.gguf"), model_);
}

TEST_F(ModelCommandsTest, ChecksumMismatchDeletesOnlyThePart) {
  FileServer server("stories260K.gguf", model_);
  std::ofstream(dir_ / "keep.gguf", std::ios::binary) << "another model";
  const std::string wrong(64, 'a');
  RunResult result = Pull(server.url("stories260K.gguf"), wrong);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("checksum mismatch"));
  EXPECT_THAT(result.err, HasSubstr("expected sha256 " + wrong));
  EXPECT_THAT(result.err, HasSubstr("got " + sha256_));
  EXPECT_FALSE(fs::exists(dir_ / "stories260K.gguf.part"));
  EXPECT_FALSE(fs::exists(dir_ / "stories260K.gguf"));
  EXPECT_EQ(ReadAll(dir_ / "keep.gguf"), "another model");
}

TEST_F(ModelCommandsTest, NonGgufDownloadIsRefused) {
  const std::string text = "this is not a model, just text that happens to be served\n";
  FileServer server("fake.gguf", text);
  RunResult result = Pull(server.url("fake.gguf"), gateway::Sha256Hex(text));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("not a usable GGUF file"));
  EXPECT_FALSE(fs::exists(dir_ / "fake.gguf"));
  EXPECT_FALSE(fs::exists(dir_ / "fake.gguf.part"));
}

TEST_F(ModelCommandsTest, UsageAndHttpErrors) {
  FileServer server("stories260K.gguf", model_);
  RunResult missing = Pull(server.url("missing.gguf"), sha256_);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("HTTP 404"));
  EXPECT_FALSE(fs::exists(dir_ / "missing.gguf"));
  EXPECT_FALSE(fs::exists(dir_ / "missing.gguf.part"));  // nothing to resume

  RunResult no_sha = RunCommand({kBinary, "pull", server.url("stories260K.gguf")});
  EXPECT_EQ(no_sha.exit_code, 2);
  EXPECT_THAT(no_sha.err, HasSubstr("--sha256"));
  RunResult bad_sha = Pull(server.url("stories260K.gguf"), "abc");
  EXPECT_EQ(bad_sha.exit_code, 1);
  EXPECT_THAT(bad_sha.err, HasSubstr("64 hexadecimal digits"));
}

}  // namespace
}  // namespace switchyard::testing
