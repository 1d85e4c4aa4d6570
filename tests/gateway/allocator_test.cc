// The allocator adapter in a test binary, which links no allocator of its own: glibc's malloc.
#include "gateway/allocator.h"

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace switchyard::gateway {
namespace {

// Resident set size in bytes, from /proc/self/statm.
size_t ResidentBytes() {
  long pages = 0;
  FILE* file = std::fopen("/proc/self/statm", "r");
  if (file == nullptr) return 0;
  if (std::fscanf(file, "%*s %ld", &pages) != 1) pages = 0;
  std::fclose(file);
  return static_cast<size_t>(pages) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

TEST(AllocatorTest, ATestBinaryRunsGlibcMalloc) { EXPECT_EQ(AllocatorName(), "glibc"); }

TEST(AllocatorTest, ReleaseFreeMemoryHandsFreedHeapBackToTheSystem) {
  // 64 MiB in blocks small enough for the heap (not mmap), every one touched; then all freed but
  // the last, which pins the heap's top so that free() alone cannot shrink it.
  constexpr size_t kBlock = 4096;
  constexpr size_t kBlocks = 16384;
  std::vector<std::unique_ptr<char[]>> blocks;
  blocks.reserve(kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(std::make_unique<char[]>(kBlock));
    blocks.back()[0] = 1;
    blocks.back()[kBlock - 1] = 1;
  }
  for (size_t i = 0; i + 1 < kBlocks; ++i) blocks[i].reset();
  const size_t before = ResidentBytes();
  ReleaseFreeMemory();
  const size_t after = ResidentBytes();
  ASSERT_GT(before, after);
  EXPECT_GT(before - after, 32u << 20) << "before " << before << " after " << after;
}

}  // namespace
}  // namespace switchyard::gateway
