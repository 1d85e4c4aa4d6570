// The CLI's model store: `switchyard models` lists the GGUF files on the model search path and
// `switchyard pull` downloads one into the model folder. Both write to stdout/stderr and return
// the process exit status (0 ok, 1 failure, 2 usage error).
#ifndef SWITCHYARD_GATEWAY_MODEL_COMMANDS_H_
#define SWITCHYARD_GATEWAY_MODEL_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace switchyard::gateway {

// switchyard models [--config FILE]
int ModelsCommand(int argc, char** argv);
// switchyard pull URL --sha256 HEX [--dir DIR] [--config FILE]
int PullCommand(int argc, char** argv);

struct PullOptions {
  std::string url;
  std::string sha256;  // 64 hex digits, any case
  std::string dir;     // created when missing
  bool progress = false;  // draw a progress bar on stderr
};

struct PullResult {
  std::string path;    // the final file
  uint64_t bytes = 0;  // its size
  uint64_t resumed_from = 0;  // bytes of an earlier .part that were kept
  bool already_present = false;  // the file was there with the right checksum
};

// Downloads `url` to dir/<last URL segment>: the bytes go to "<file>.part" (continued with a
// Range request when it exists), the SHA-256 is checked, the GGUF header and tensor table are
// checked, and the .part is renamed over the final name. On a checksum or GGUF mismatch only the
// .part is deleted (InvalidArgument / DataLoss); on a transfer error the .part stays for the
// next run to continue (Unavailable).
absl::StatusOr<PullResult> PullModel(const PullOptions& options);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_MODEL_COMMANDS_H_
