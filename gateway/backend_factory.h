// Builds the real backend of a configured target: the llama.cpp engine for `local` targets, an
// OpenAI-compatible client on the process's one libcurl loop for remote ones.
#ifndef SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_
#define SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_

#include "gateway/gateway.h"

namespace switchyard::gateway {

// The returned factory shares one CurlLoop between all remote targets it builds.
BackendFactory MakeDefaultBackendFactory();

// Where local models are looked for: `model_dirs` (the config's models.dirs), then each folder
// of $SWITCHYARD_MODELS not already listed.
std::vector<std::string> ModelFolders(const std::vector<std::string>& model_dirs);

// What would stop `serve` on this machine that parsing cannot see, without loading anything:
// local models not found on the search path (or not GGUF), api_key_env variables not set,
// ca_bundle files that cannot be read, and decision log or metering state folders that cannot
// be written. One message per problem, naming the target or section; empty when none.
std::vector<std::string> CheckEnvironment(const Config& config);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_
