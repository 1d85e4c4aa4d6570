// Writes a Llama-architecture GGUF with random weights through ggml's own GGUF writer, so the
// engine benchmark can run on real matrix sizes (hundreds of millions of parameters) without any
// download. The tokenizer (and every other key the shape does not override) is copied from a
// small real model, so prompts tokenize and chat templates apply as usual; the text it generates
// is noise.
#ifndef SWITCHYARD_TESTS_BACKENDS_LOCAL_RANDOM_GGUF_H_
#define SWITCHYARD_TESTS_BACKENDS_LOCAL_RANDOM_GGUF_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace switchyard::testing {

struct RandomGgufOptions {
  std::string tokenizer_from;  // a Llama-family GGUF whose tokenizer.* keys are copied
  int32_t n_embd = 1024;
  int32_t n_layer = 16;
  int32_t n_head = 16;
  int32_t n_head_kv = 16;
  int32_t n_ff = 2816;
  int32_t n_ctx_train = 4096;
  std::string type = "q8_0";  // q8_0, q4_0 or f16 for the matrices; norms stay f32
  uint64_t seed = 1;
};

struct RandomGgufInfo {
  int64_t parameters = 0;
  int64_t n_vocab = 0;
  uint64_t bytes = 0;  // file size
};

// Writes the model to `path` (through a temporary file renamed at the end).
absl::StatusOr<RandomGgufInfo> WriteRandomGguf(const RandomGgufOptions& options,
                                               const std::string& path);

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_BACKENDS_LOCAL_RANDOM_GGUF_H_
