// Builds the real backend of a configured target: the llama.cpp engine for `local` targets, an
// OpenAI-compatible client on the process's one libcurl loop for remote ones.
#ifndef SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_
#define SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_

#include "gateway/gateway.h"

namespace switchyard::gateway {

// The returned factory shares one CurlLoop between all remote targets it builds.
BackendFactory MakeDefaultBackendFactory();

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_BACKEND_FACTORY_H_
