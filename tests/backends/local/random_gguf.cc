#include "tests/backends/local/random_gguf.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ggml.h"
#include "gguf.h"

namespace switchyard::testing {
namespace {

struct GgufFree {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};
struct GgmlFree {
  void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};

absl::StatusOr<ggml_type> TypeNamed(const std::string& name) {
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  if (name == "q4_0") return GGML_TYPE_Q4_0;
  if (name == "f16") return GGML_TYPE_F16;
  return absl::InvalidArgumentError(
      absl::StrCat("type '", name, "' is not one of q8_0, q4_0, f16"));
}

// llama_ftype values of general.file_type for the matrix type.
uint32_t FileType(ggml_type type) {
  switch (type) {
    case GGML_TYPE_Q8_0:
      return 7;
    case GGML_TYPE_Q4_0:
      return 2;
    default:
      return 1;  // mostly f16
  }
}

}  // namespace

absl::StatusOr<RandomGgufInfo> WriteRandomGguf(const RandomGgufOptions& options,
                                               const std::string& path) {
  absl::StatusOr<ggml_type> matrix_type = TypeNamed(options.type);
  if (!matrix_type.ok()) return matrix_type.status();
  if (options.n_embd <= 0 || options.n_embd % 32 != 0 || options.n_ff <= 0 ||
      options.n_ff % 32 != 0 || options.n_layer <= 0 || options.n_head <= 0 ||
      options.n_head_kv <= 0 || options.n_embd % options.n_head != 0 ||
      options.n_head % options.n_head_kv != 0) {
    return absl::InvalidArgumentError(
        "shape: n_embd and n_ff must be positive multiples of 32, n_embd divisible by n_head, "
        "n_head divisible by n_head_kv");
  }

  gguf_init_params read_params{/*no_alloc=*/true, /*ctx=*/nullptr};
  std::unique_ptr<gguf_context, GgufFree> source(
      gguf_init_from_file(options.tokenizer_from.c_str(), read_params));
  if (source == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.tokenizer_from, ": not a readable GGUF file"));
  }
  const int64_t tokens_key = gguf_find_key(source.get(), "tokenizer.ggml.tokens");
  if (tokens_key < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.tokenizer_from, ": has no tokenizer.ggml.tokens"));
  }
  const int64_t n_vocab = static_cast<int64_t>(gguf_get_arr_n(source.get(), tokens_key));

  std::unique_ptr<gguf_context, GgufFree> out(gguf_init_empty());
  gguf_set_kv(out.get(), source.get());
  const int32_t head_dim = options.n_embd / options.n_head;
  gguf_set_val_str(out.get(), "general.architecture", "llama");
  gguf_set_val_str(out.get(), "general.name", "switchyard-random");
  gguf_set_val_u32(out.get(), "general.file_type", FileType(*matrix_type));
  gguf_set_val_u32(out.get(), "llama.context_length", static_cast<uint32_t>(options.n_ctx_train));
  gguf_set_val_u32(out.get(), "llama.embedding_length", static_cast<uint32_t>(options.n_embd));
  gguf_set_val_u32(out.get(), "llama.feed_forward_length", static_cast<uint32_t>(options.n_ff));
  gguf_set_val_u32(out.get(), "llama.block_count", static_cast<uint32_t>(options.n_layer));
  gguf_set_val_u32(out.get(), "llama.attention.head_count", static_cast<uint32_t>(options.n_head));
  gguf_set_val_u32(out.get(), "llama.attention.head_count_kv",
                   static_cast<uint32_t>(options.n_head_kv));
  gguf_set_val_u32(out.get(), "llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
  gguf_set_val_f32(out.get(), "llama.attention.layer_norm_rms_epsilon", 1e-5f);
  gguf_set_val_f32(out.get(), "llama.rope.freq_base", 10000.0f);
  gguf_set_val_u32(out.get(), "llama.vocab_size", static_cast<uint32_t>(n_vocab));

  struct Spec {
    std::string name;
    int64_t ne0, ne1;  // ne0: row length (inputs), ne1: rows (outputs); ne1 == 0 for a vector
  };
  const int64_t n_embd = options.n_embd, n_ff = options.n_ff;
  const int64_t n_embd_kv = static_cast<int64_t>(head_dim) * options.n_head_kv;
  std::vector<Spec> specs = {{"token_embd.weight", n_embd, n_vocab},
                             {"output_norm.weight", n_embd, 0},
                             {"output.weight", n_embd, n_vocab}};
  for (int32_t layer = 0; layer < options.n_layer; ++layer) {
    const std::string blk = absl::StrCat("blk.", layer, ".");
    specs.push_back({blk + "attn_norm.weight", n_embd, 0});
    specs.push_back({blk + "attn_q.weight", n_embd, n_embd});
    specs.push_back({blk + "attn_k.weight", n_embd, n_embd_kv});
    specs.push_back({blk + "attn_v.weight", n_embd, n_embd_kv});
    specs.push_back({blk + "attn_output.weight", n_embd, n_embd});
    specs.push_back({blk + "ffn_norm.weight", n_embd, 0});
    specs.push_back({blk + "ffn_gate.weight", n_embd, n_ff});
    specs.push_back({blk + "ffn_up.weight", n_embd, n_ff});
    specs.push_back({blk + "ffn_down.weight", n_ff, n_embd});
  }

  ggml_init_params meta_params{ggml_tensor_overhead() * (specs.size() + 1), nullptr,
                               /*no_alloc=*/true};
  std::unique_ptr<ggml_context, GgmlFree> meta(ggml_init(meta_params));
  // The tensors' data lives here until the file is written; gguf keeps only pointers.
  std::vector<std::vector<uint8_t>> data(specs.size());
  std::mt19937_64 random(options.seed);
  RandomGgufInfo info;
  info.n_vocab = n_vocab;
  std::vector<float> rows;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& spec = specs[i];
    ggml_tensor* tensor;
    if (spec.ne1 == 0) {
      tensor = ggml_new_tensor_1d(meta.get(), GGML_TYPE_F32, spec.ne0);
      data[i].resize(ggml_nbytes(tensor));
      auto* ones = reinterpret_cast<float*>(data[i].data());
      std::fill(ones, ones + spec.ne0, 1.0f);  // RMS norm gains: identity
    } else {
      tensor = ggml_new_tensor_2d(meta.get(), *matrix_type, spec.ne0, spec.ne1);
      data[i].resize(ggml_nbytes(tensor));
      // Uniform in +-sqrt(3/n_in): unit-variance inputs keep unit variance through the layer.
      const float scale = std::sqrt(3.0f / static_cast<float>(spec.ne0));
      std::uniform_real_distribution<float> uniform(-scale, scale);
      rows.resize(static_cast<size_t>(spec.ne0 * spec.ne1));
      for (float& value : rows) value = uniform(random);
      ggml_quantize_chunk(*matrix_type, rows.data(), data[i].data(), 0, spec.ne1, spec.ne0,
                          nullptr);
    }
    info.parameters += spec.ne0 * std::max<int64_t>(spec.ne1, 1);
    ggml_set_name(tensor, spec.name.c_str());
    gguf_add_tensor(out.get(), tensor);
    gguf_set_tensor_data(out.get(), spec.name.c_str(), data[i].data());
  }

  const std::string temporary = path + ".part";
  if (!gguf_write_to_file(out.get(), temporary.c_str(), /*only_meta=*/false)) {
    std::filesystem::remove(temporary);
    return absl::InternalError(absl::StrCat(temporary, ": could not write the GGUF file"));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::filesystem::remove(temporary);
    return absl::InternalError(absl::StrCat(path, ": ", error.message()));
  }
  info.bytes = std::filesystem::file_size(path);
  return info;
}

}  // namespace switchyard::testing
