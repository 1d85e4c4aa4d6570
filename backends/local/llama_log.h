// Routes llama.cpp's and ggml's process-wide log. By default both print every load step and
// warning to stderr, which buries the gateway's own logs; only errors are worth a line there.
#ifndef SWITCHYARD_BACKENDS_LOCAL_LLAMA_LOG_H_
#define SWITCHYARD_BACKENDS_LOCAL_LLAMA_LOG_H_

namespace switchyard::backends {

// Installs the filter once per process (later calls do nothing): errors go to stderr prefixed
// "llama.cpp: ", everything else is dropped, unless SWITCHYARD_LLAMA_LOG=all is set, which keeps
// every level for debugging. Also runs llama_backend_init() once. Thread-safe.
void RouteLlamaLogs();

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_LOCAL_LLAMA_LOG_H_
