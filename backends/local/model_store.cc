#include "backends/local/model_store.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backends/local/llama_log.h"
#include "gguf.h"
#include "llama.h"

namespace switchyard::backends {
namespace {

namespace fs = std::filesystem;

// magic (4) + version (4) + n_tensors (8) + n_kv (8).
constexpr uint64_t kHeaderBytes = 24;
// The smallest encodings, so a count can be checked against the file size without parsing:
// tensor info = name length (8) + name (>= 1) + n_dims (4) + one dim (8) + type (4) + offset (8);
// key-value = key length (8) + key (>= 1) + type (4) + value (>= 1).
constexpr uint64_t kMinTensorInfoBytes = 33;
constexpr uint64_t kMinKvBytes = 14;

uint32_t LoadLe32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

uint64_t LoadLe64(const unsigned char* p) {
  return uint64_t{LoadLe32(p)} | uint64_t{LoadLe32(p + 4)} << 32;
}

absl::Status OpenError(const std::string& path, int err) {
  const std::string message = absl::StrCat("cannot open model file ", path, ": ", strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES) return absl::PermissionDeniedError(message);
  return absl::InvalidArgumentError(message);
}

struct FileCloser {
  void operator()(FILE* f) const { fclose(f); }
};

struct GgufFree {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};

// Reads an integer-valued key of any integer GGUF type; nullopt when absent or not an integer.
std::optional<int64_t> GetInt(const gguf_context* ctx, const char* key) {
  const int64_t id = gguf_find_key(ctx, key);
  if (id < 0) return std::nullopt;
  switch (gguf_get_kv_type(ctx, id)) {
    case GGUF_TYPE_UINT8: return gguf_get_val_u8(ctx, id);
    case GGUF_TYPE_INT8: return gguf_get_val_i8(ctx, id);
    case GGUF_TYPE_UINT16: return gguf_get_val_u16(ctx, id);
    case GGUF_TYPE_INT16: return gguf_get_val_i16(ctx, id);
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(ctx, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(ctx, id);
    case GGUF_TYPE_UINT64: return static_cast<int64_t>(gguf_get_val_u64(ctx, id));
    case GGUF_TYPE_INT64: return gguf_get_val_i64(ctx, id);
    default: return std::nullopt;
  }
}

std::string GetString(const gguf_context* ctx, const char* key) {
  const int64_t id = gguf_find_key(ctx, key);
  if (id < 0 || gguf_get_kv_type(ctx, id) != GGUF_TYPE_STRING) return "";
  return gguf_get_val_str(ctx, id);
}

}  // namespace

std::vector<std::string> ModelSearchFolders(const std::string& configured_folder,
                                            const char* env_value) {
  std::vector<std::string> folders;
  auto add = [&folders](absl::string_view folder) {
    if (folder.empty()) return;
    if (std::find(folders.begin(), folders.end(), folder) != folders.end()) return;
    folders.emplace_back(folder);
  };
  add(configured_folder);
  if (env_value != nullptr) {
    for (absl::string_view entry : absl::StrSplit(env_value, ':')) add(entry);
  }
  return folders;
}

absl::StatusOr<std::string> ResolveModelPath(const std::string& name,
                                             const std::vector<std::string>& folders) {
  if (name.empty()) return absl::InvalidArgumentError("model name is empty");
  std::error_code ec;
  const fs::path as_given(name);
  if (fs::exists(as_given, ec)) {
    if (fs::is_directory(as_given, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model path ", name, " is a directory, not a GGUF file"));
    }
    return name;
  }
  if (as_given.is_absolute()) {
    return absl::NotFoundError(absl::StrCat("model file ", name, " does not exist"));
  }
  std::vector<std::string> candidates = {std::string(name)};
  if (!absl::EndsWithIgnoreCase(name, ".gguf")) candidates.push_back(absl::StrCat(name, ".gguf"));
  for (const std::string& folder : folders) {
    for (const std::string& candidate : candidates) {
      const fs::path path = fs::path(folder) / candidate;
      if (fs::is_regular_file(path, ec)) return path.string();
    }
  }
  if (folders.empty()) {
    return absl::NotFoundError(absl::StrCat("model ", name,
                                            " not found: no model folder is configured and ",
                                            kModelsEnvVar, " is not set"));
  }
  return absl::NotFoundError(absl::StrCat("model ", name, " not found; searched: ",
                                          absl::StrJoin(folders, ", "), " (configured folder, then ",
                                          kModelsEnvVar, ")"));
}

absl::StatusOr<std::string> ResolveModel(const std::string& name,
                                         const std::string& configured_folder) {
  return ResolveModelPath(name, ModelSearchFolders(configured_folder, getenv(kModelsEnvVar)));
}

absl::Status CheckGgufHeader(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a GGUF file"));
  }
  std::unique_ptr<FILE, FileCloser> file(fopen(path.c_str(), "rb"));
  if (file == nullptr) return OpenError(path, errno);
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return OpenError(path, ec.value());

  unsigned char header[kHeaderBytes];
  const size_t got = fread(header, 1, sizeof(header), file.get());
  if (got >= 4 && memcmp(header, "GGUF", 4) != 0) {
    // Git LFS pointers are a common way to end up with a "model" that is 130 bytes of text.
    if (got >= 7 && memcmp(header, "version", 7) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is not a GGUF file (it looks like a Git LFS pointer; fetch the real file)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a GGUF file (the magic bytes \"GGUF\" are missing)"));
  }
  if (got < sizeof(header)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is truncated: ", size,
                                                   " bytes, shorter than a GGUF header"));
  }
  const uint32_t version = LoadLe32(header + 4);
  if (version != 2 && version != 3) {
    // A big-endian file reads as a huge version number on this little-endian build.
    const bool swapped = version > 0xFFFF && (version >> 24) >= 1 && (version >> 24) <= 3;
    return absl::InvalidArgumentError(absl::StrCat(
        path, " has unsupported GGUF version ", version,
        swapped ? " (a big-endian file?)" : "", "; llama.cpp reads versions 2 and 3"));
  }
  const uint64_t n_tensors = LoadLe64(header + 8);
  const uint64_t n_kv = LoadLe64(header + 16);
  const uint64_t room = size - kHeaderBytes;
  // Dividing keeps a corrupt count near 2^64 from overflowing the product.
  if (n_tensors > room / kMinTensorInfoBytes || n_kv > room / kMinKvBytes ||
      n_tensors * kMinTensorInfoBytes + n_kv * kMinKvBytes > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is corrupt or truncated: the header announces ", n_tensors, " tensors and ", n_kv,
        " metadata keys, which cannot fit in ", size, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufInfo> ReadGgufInfo(const std::string& path) {
  if (absl::Status header = CheckGgufHeader(path); !header.ok()) return header;
  RouteLlamaLogs();

  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  std::unique_ptr<gguf_context, GgufFree> ctx(gguf_init_from_file(path.c_str(), params));
  if (ctx == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is corrupt: its GGUF metadata cannot be parsed (details in the llama.cpp log)"));
  }

  GgufInfo info;
  info.path = path;
  std::error_code ec;
  info.size_bytes = fs::file_size(path, ec);
  info.version = gguf_get_version(ctx.get());
  info.name = GetString(ctx.get(), "general.name");
  info.architecture = GetString(ctx.get(), "general.architecture");
  info.n_tensors = gguf_get_n_tensors(ctx.get());
  info.has_chat_template = gguf_find_key(ctx.get(), "tokenizer.chat_template") >= 0;
  if (!info.architecture.empty()) {
    info.context_length =
        GetInt(ctx.get(), absl::StrCat(info.architecture, ".context_length").c_str()).value_or(0);
  }
  if (std::optional<int64_t> ftype = GetInt(ctx.get(), "general.file_type")) {
    info.file_type = llama_ftype_name(static_cast<llama_ftype>(*ftype));
  }

  if (info.n_tensors == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has no tensors (a vocabulary-only GGUF?), so it is not a model"));
  }
  // The tensor table is parsed, but the data may still be cut short by an interrupted copy.
  const uint64_t data_offset = gguf_get_data_offset(ctx.get());
  uint64_t data_end = data_offset;
  for (int64_t i = 0; i < info.n_tensors; ++i) {
    data_end = std::max<uint64_t>(
        data_end, data_offset + gguf_get_tensor_offset(ctx.get(), i) +
                      gguf_get_tensor_size(ctx.get(), i));
    const int64_t* ne = gguf_get_tensor_ne(ctx.get(), i);
    int64_t elements = 1;
    for (int d = 0; d < GGML_MAX_DIMS; ++d) elements *= ne[d];
    info.n_params += elements;
  }
  if (data_end > info.size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is truncated: its tensors need ",
                                                   data_end, " bytes but the file has ",
                                                   info.size_bytes));
  }
  return info;
}

}  // namespace switchyard::backends
