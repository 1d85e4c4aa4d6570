#include "gateway/allocator.h"

#include <malloc.h>

// gperftools' C entry points, declared weak: they resolve when the binary links tcmalloc or it
// is preloaded, and are null otherwise, so the library needs no allocator at link time.
extern "C" {
const char* tc_version(int* major, int* minor, const char** patch) __attribute__((weak));
void MallocExtension_ReleaseFreeMemory() __attribute__((weak));
}

namespace switchyard::gateway {

std::string_view AllocatorName() { return tc_version != nullptr ? "tcmalloc" : "glibc"; }

void ReleaseFreeMemory() {
  if (MallocExtension_ReleaseFreeMemory != nullptr) {
    MallocExtension_ReleaseFreeMemory();
    return;
  }
  malloc_trim(0);
}

}  // namespace switchyard::gateway
