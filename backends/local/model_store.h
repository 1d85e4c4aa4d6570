// Finds GGUF model files and checks them before llama.cpp sees them.
//
// llama.cpp reports a bad file through its log and a null pointer; these functions turn a
// missing, foreign, truncated or corrupt file into one absl::Status naming the file, so the
// gateway can refuse to start with a clear message instead of a crash or a bare "failed to load".
// All functions are thread-safe and touch only the file system.
#ifndef SWITCHYARD_BACKENDS_LOCAL_MODEL_STORE_H_
#define SWITCHYARD_BACKENDS_LOCAL_MODEL_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::backends {

// Environment variable with extra model folders, colon-separated like PATH.
inline constexpr char kModelsEnvVar[] = "SWITCHYARD_MODELS";

// The folders searched, in order: `configured_folder` (skipped when empty), then each non-empty
// entry of `env_value` (the value of SWITCHYARD_MODELS, or nullptr when unset). Duplicates are
// dropped so an error message lists each folder once.
std::vector<std::string> ModelSearchFolders(const std::string& configured_folder,
                                            const char* env_value);

// Resolves a model name or path to an existing regular file:
//   1. `name` as given, if it names an existing file (absolute, or relative to the working
//      directory);
//   2. otherwise, unless `name` is absolute, `folder/name` for each folder in order, and then
//      `folder/name.gguf` when `name` has no ".gguf" suffix.
// NotFound lists every folder searched. InvalidArgument for an empty name or a directory.
absl::StatusOr<std::string> ResolveModelPath(const std::string& name,
                                             const std::vector<std::string>& folders);

// ResolveModelPath over ModelSearchFolders(configured_folder, getenv(SWITCHYARD_MODELS)).
absl::StatusOr<std::string> ResolveModel(const std::string& name,
                                         const std::string& configured_folder);

// Reads only the fixed 24-byte header: magic "GGUF", a supported version (2 or 3, little-endian)
// and tensor/key-value counts that can fit in the file. Cheap enough for a directory listing.
// InvalidArgument naming the file otherwise (NotFound/PermissionDenied when it cannot be opened).
absl::Status CheckGgufHeader(const std::string& path);

// What a model listing shows about one GGUF file.
struct GgufInfo {
  std::string path;
  std::string name;          // general.name; empty when absent
  std::string architecture;  // general.architecture, e.g. "llama"
  uint32_t version = 0;      // GGUF format version
  int64_t n_tensors = 0;
  int64_t n_params = 0;       // sum of tensor element counts
  int64_t context_length = 0; // <arch>.context_length; 0 when absent
  std::string file_type;      // quantisation from general.file_type, e.g. "F16", "Q4_K - Medium"
  uint64_t size_bytes = 0;    // file size
  bool has_chat_template = false;  // tokenizer.chat_template present
};

// Header check, then the full metadata and tensor table (no tensor data is read), then checks
// that every tensor's data lies inside the file, which catches a truncated download. Use it as
// the validation before loading as well as for listing.
absl::StatusOr<GgufInfo> ReadGgufInfo(const std::string& path);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_LOCAL_MODEL_STORE_H_
