// The process's memory allocator. The gateway binary links tcmalloc by default (CMake option
// SWITCHYARD_TCMALLOC): its per-thread caches make the many small allocations of a request
// cheaper than glibc's malloc (BENCHMARKS.md, "Session 10: tcmalloc"). The library links no
// allocator, so tests and embedders keep theirs; these calls adapt to whichever is running.
#ifndef SWITCHYARD_GATEWAY_ALLOCATOR_H_
#define SWITCHYARD_GATEWAY_ALLOCATOR_H_

#include <string_view>

namespace switchyard::gateway {

// "tcmalloc" when the process runs gperftools' tcmalloc (linked or preloaded), else "glibc".
std::string_view AllocatorName();

// Hands the memory the allocator holds free back to the system. Start-up (loading the model,
// building the policies) frees far more than serving keeps; called once before serving.
void ReleaseFreeMemory();

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_ALLOCATOR_H_
