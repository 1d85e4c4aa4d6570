#include "gateway/model_commands.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backends/local/model_store.h"
#include "gateway/backend_factory.h"
#include "gateway/config.h"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

namespace fs = std::filesystem;

// "--name value", "--name=value" and positionals; nullopt (with `error`) for anything else.
struct CommandArgs {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;
};

std::optional<CommandArgs> ParseCommandArgs(int argc, char** argv,
                                            const std::vector<std::string>& with_value,
                                            std::string& error) {
  CommandArgs args;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (!arg.starts_with("--")) {
      args.positional.push_back(std::move(arg));
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (std::find(with_value.begin(), with_value.end(), name) == with_value.end()) {
      error = absl::StrCat("unknown option --", name);
      return std::nullopt;
    }
    if (!value) {
      if (i + 1 >= argc) {
        error = absl::StrCat("option --", name, " needs a value");
        return std::nullopt;
      }
      value = argv[++i];
    }
    args.options.emplace_back(name, *value);
  }
  return args;
}

std::optional<std::string> Get(const CommandArgs& args, std::string_view name) {
  std::optional<std::string> value;
  for (const auto& [key, v] : args.options) {
    if (key == name) value = v;
  }
  return value;
}

int Usage(const std::string& message) {
  std::cerr << "switchyard: " << message << "\nRun 'switchyard --help' for usage.\n";
  return 2;
}

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? absl::StrFormat("%.0f %s", bytes, units[unit])
                   : absl::StrFormat("%.1f %s", bytes, units[unit]);
}

std::string HumanCount(int64_t n) {
  if (n >= 1'000'000'000) return absl::StrFormat("%.1fB", n / 1e9);
  if (n >= 1'000'000) return absl::StrFormat("%.1fM", n / 1e6);
  if (n >= 1'000) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrCat(n);
}

// The config's models.dirs (when a config is given), then $SWITCHYARD_MODELS.
absl::StatusOr<std::vector<std::string>> SearchFolders(const std::optional<std::string>& config) {
  if (!config) return ModelFolders({});
  absl::StatusOr<Config> loaded = LoadConfigFile(*config);
  if (!loaded.ok()) return loaded.status();
  return ModelFolders(loaded->model_dirs);
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void Update(const char* data, size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &size);
    return absl::BytesToHexString(
        absl::string_view(reinterpret_cast<const char*>(digest), size));
  }

 private:
  struct Free {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

// Hashes a whole file (an earlier .part, or a file already in place).
absl::Status HashFile(const fs::path& path, Sha256& hash) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.Update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read error"));
  return absl::OkStatus();
}

struct Transfer {
  FILE* out = nullptr;
  Sha256* hash = nullptr;
  uint64_t offset = 0;  // bytes already in the .part when the request started
  long status = 0;      // HTTP status of the final response, read at the first body byte
  bool truncated = false;  // the server ignored the Range: restart the .part from zero
  CURL* curl = nullptr;
  bool write_error = false;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_draw;
};

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->status == 0) {
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->status);
    if (t->status >= 400) return n;  // the error body is not the model
    if (t->offset > 0 && t->status == 200) {
      // Resume refused: the body is the whole file, so the .part starts over.
      t->truncated = true;
      if (ftruncate(fileno(t->out), 0) != 0 || fseek(t->out, 0, SEEK_SET) != 0) {
        t->write_error = true;
        return 0;
      }
      *t->hash = Sha256();
      t->offset = 0;
    }
  }
  if (t->status >= 400) return n;
  if (fwrite(data, 1, n, t->out) != n) {
    t->write_error = true;
    return 0;
  }
  t->hash->Update(data, n);
  return n;
}

int DrawProgress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  const auto clock = std::chrono::steady_clock::now();
  if (clock - t->last_draw < std::chrono::milliseconds(100) && (total == 0 || now < total)) {
    return 0;
  }
  t->last_draw = clock;
  const double done = static_cast<double>(t->offset + now);
  const double all = total > 0 ? static_cast<double>(t->offset + total) : 0;
  const double seconds = std::chrono::duration<double>(clock - t->started).count();
  const double rate = seconds > 0 ? static_cast<double>(now) / seconds : 0;
  constexpr int kWidth = 30;
  std::string bar;
  if (all > 0) {
    const int filled = static_cast<int>(kWidth * done / all);
    bar = absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, ' '), "] ",
                       absl::StrFormat("%3.0f%% ", 100 * done / all));
  }
  std::cerr << "\r" << bar << HumanBytes(done)
            << (all > 0 ? absl::StrCat(" / ", HumanBytes(all)) : std::string()) << "  "
            << HumanBytes(rate) << "/s   " << std::flush;
  return 0;
}

bool IsHex64(const std::string& text) {
  return text.size() == 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

// The last path segment of the URL, without query or fragment.
absl::StatusOr<std::string> FileNameOf(const std::string& url) {
  std::string path = url.substr(0, url.find_first_of("?#"));
  const size_t scheme = path.find("://");
  if (scheme == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("not a URL: ", url));
  }
  const size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos || slash < scheme + 3 ? "" : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("the URL does not end in a file name: ", url));
  }
  return name;
}

}  // namespace

absl::StatusOr<PullResult> PullModel(const PullOptions& options) {
  if (!IsHex64(options.sha256)) {
    return absl::InvalidArgumentError("--sha256 must be 64 hexadecimal digits");
  }
  const std::string expected = absl::AsciiStrToLower(policies::Sv(options.sha256));
  absl::StatusOr<std::string> name = FileNameOf(options.url);
  if (!name.ok()) return name.status();
  std::error_code error;
  fs::create_directories(options.dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create model folder ", options.dir, ": ", error.message()));
  }
  const fs::path final_path = fs::path(options.dir) / *name;
  const fs::path part_path = fs::path(options.dir) / (*name + ".part");
  PullResult result;
  result.path = final_path.string();

  if (fs::exists(final_path)) {
    Sha256 hash;
    if (absl::Status status = HashFile(final_path, hash); !status.ok()) return status;
    if (hash.HexDigest() != expected) {
      return absl::AlreadyExistsError(absl::StrCat(
          final_path.string(), " already exists with a different sha256; remove it first"));
    }
    result.bytes = fs::file_size(final_path);
    result.already_present = true;
    return result;
  }

  Sha256 hash;
  uint64_t offset = 0;
  if (fs::exists(part_path)) {
    offset = fs::file_size(part_path, error);
    if (error) offset = 0;
    if (offset > 0) {
      if (absl::Status status = HashFile(part_path, hash); !status.ok()) return status;
    }
  }
  FILE* out = std::fopen(part_path.c_str(), offset > 0 ? "ab" : "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", part_path.string()));
  }

  Transfer transfer;
  transfer.out = out;
  transfer.hash = &hash;
  transfer.offset = offset;
  CURL* curl = curl_easy_init();
  transfer.curl = curl;
  curl_easy_setopt(curl, CURLOPT_URL, options.url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "switchyard-pull");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled transfer (under 1 byte/s for a minute) fails; the .part stays for a retry.
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
  // A plain Range header, not CURLOPT_RESUME_FROM: a server that ignores it answers 200 with the
  // whole file, which WriteBody handles by starting the .part over.
  const std::string range = absl::StrCat(offset, "-");
  if (offset > 0) curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
  if (options.progress) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &DrawProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
  }
  char curl_error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  const CURLcode code = curl_easy_perform(curl);
  long status = transfer.status;
  if (status == 0) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  const bool flushed = std::fflush(out) == 0 && fsync(fileno(out)) == 0;
  std::fclose(out);
  if (options.progress) std::cerr << "\n";

  // 416: the .part already holds the whole file; the checks below decide.
  const bool complete_part = status == 416 && offset > 0;
  if (transfer.write_error || !flushed) {
    return absl::DataLossError(absl::StrCat("cannot write ", part_path.string()));
  }
  // A failure before the first byte (an HTTP error, a refused connection) leaves nothing to
  // resume: no empty .part is left behind.
  const bool failed = status >= 400 || code != CURLE_OK;
  if (!complete_part && failed && fs::file_size(part_path, error) == 0) {
    fs::remove(part_path, error);
  }
  if (!complete_part && status >= 400) {
    return absl::NotFoundError(
        absl::StrCat("download failed: HTTP ", status, " from ", options.url));
  }
  if (!complete_part && code != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(
        "download interrupted (", curl_error[0] != '\0' ? curl_error : curl_easy_strerror(code),
        "); ", part_path.string(), " is kept: run the same command again to resume"));
  }
  result.resumed_from = transfer.truncated ? 0 : offset;

  const std::string actual = hash.HexDigest();
  if (actual != expected) {
    fs::remove(part_path, error);
    return absl::InvalidArgumentError(absl::StrCat(
        "checksum mismatch for ", options.url, ": expected sha256 ", expected, ", got ", actual,
        "; deleted ", part_path.string()));
  }
  if (absl::StatusOr<backends::GgufInfo> info = backends::ReadGgufInfo(part_path.string());
      !info.ok()) {
    fs::remove(part_path, error);
    return absl::InvalidArgumentError(absl::StrCat("the download is not a usable GGUF file (",
                                                   info.status().message(), "); deleted ",
                                                   part_path.string()));
  }
  fs::rename(part_path, final_path, error);
  if (error) {
    return absl::PermissionDeniedError(absl::StrCat("cannot rename ", part_path.string(), " to ",
                                                    final_path.string(), ": ", error.message()));
  }
  result.bytes = fs::file_size(final_path);
  return result;
}

int ModelsCommand(int argc, char** argv) {
  std::string error;
  std::optional<CommandArgs> args = ParseCommandArgs(argc, argv, {"config"}, error);
  if (!args) return Usage(error);
  if (!args->positional.empty()) return Usage("models takes no positional arguments");
  absl::StatusOr<std::vector<std::string>> folders = SearchFolders(Get(*args, "config"));
  if (!folders.ok()) {
    std::cerr << "switchyard: " << folders.status().message() << "\n";
    return 1;
  }
  if (folders->empty()) {
    std::cerr << "switchyard: no model folders: set models.dirs in a config (--config FILE) or "
                 "$SWITCHYARD_MODELS\n";
    return 1;
  }
  std::printf("%-32s %10s  %-10s %-16s %8s %8s  %s\n", "NAME", "SIZE", "ARCH", "QUANT", "PARAMS",
              "CONTEXT", "FOLDER");
  for (const std::string& folder : *folders) {
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) {
      std::cerr << "switchyard: model folder " << folder << " does not exist\n";
      continue;
    }
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : fs::directory_iterator(folder, ec)) {
      if (entry.is_regular_file(ec) && entry.path().extension() == ".gguf") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      absl::StatusOr<backends::GgufInfo> info = backends::ReadGgufInfo(file.string());
      if (!info.ok()) {
        std::printf("%-32s %10s  unreadable: %s  %s\n", file.filename().c_str(),
                    HumanBytes(static_cast<double>(fs::file_size(file, ec))).c_str(),
                    std::string(info.status().message()).c_str(), folder.c_str());
        continue;
      }
      std::printf("%-32s %10s  %-10s %-16s %8s %8s  %s\n", file.filename().c_str(),
                  HumanBytes(static_cast<double>(info->size_bytes)).c_str(),
                  info->architecture.c_str(),
                  info->file_type.empty() ? "-" : info->file_type.c_str(),
                  HumanCount(info->n_params).c_str(),
                  info->context_length > 0 ? absl::StrCat(info->context_length).c_str() : "-",
                  folder.c_str());
    }
  }
  return 0;
}

int PullCommand(int argc, char** argv) {
  std::string error;
  std::optional<CommandArgs> args =
      ParseCommandArgs(argc, argv, {"sha256", "dir", "config"}, error);
  if (!args) return Usage(error);
  if (args->positional.size() != 1) return Usage("pull takes exactly one URL");
  std::optional<std::string> sha256 = Get(*args, "sha256");
  if (!sha256) return Usage("pull needs --sha256 HEX (the file's SHA-256, 64 hex digits)");
  PullOptions options;
  options.url = args->positional[0];
  options.sha256 = *sha256;
  if (std::optional<std::string> dir = Get(*args, "dir")) {
    options.dir = *dir;
  } else {
    absl::StatusOr<std::vector<std::string>> folders = SearchFolders(Get(*args, "config"));
    if (!folders.ok()) {
      std::cerr << "switchyard: " << folders.status().message() << "\n";
      return 1;
    }
    options.dir = folders->empty() ? "./models" : folders->front();
  }
  options.progress = isatty(STDERR_FILENO) != 0;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  absl::StatusOr<PullResult> result = PullModel(options);
  if (!result.ok()) {
    std::cerr << "switchyard: " << result.status().message() << "\n";
    return 1;
  }
  if (result->already_present) {
    std::cout << result->path << " is already present (sha256 ok)\n";
  } else {
    std::cout << "saved " << result->path << " (" << HumanBytes(static_cast<double>(result->bytes))
              << ", sha256 ok"
              << (result->resumed_from > 0
                      ? absl::StrCat(", resumed from ", HumanBytes(static_cast<double>(result->resumed_from)))
                      : std::string())
              << ")\n";
  }
  return 0;
}

}  // namespace switchyard::gateway
