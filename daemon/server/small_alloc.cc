#include "daemon/server/small_alloc.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace qpool::server {
namespace {

constexpr size_t kAlign = 16;
constexpr size_t kMaxSmall = 1024;
constexpr size_t kClasses = kMaxSmall / kAlign;  // class c holds blocks of (c + 1) * 16 bytes
constexpr size_t kMaxCachedBytesPerClass = 64 * 1024;

// Precedes every block; 16 bytes keep the block 16-byte aligned, as malloc's are.
struct alignas(kAlign) BlockHeader {
  uint32_t size_class;  // kClasses for a large block
  uint32_t unused;
  size_t large_size;  // the requested size of a large block
};
static_assert(sizeof(BlockHeader) == kAlign);

struct FreeBlock {
  FreeBlock* next;
};

class ThreadCache {
 public:
  ~ThreadCache() {
    for (size_t c = 0; c < kClasses; ++c) {
      while (lists_[c] != nullptr) {
        FreeBlock* next = lists_[c]->next;
        std::free(HeaderOf(lists_[c]));
        lists_[c] = next;
      }
    }
  }

  void* Pop(size_t size_class) {
    FreeBlock* block = lists_[size_class];
    if (block == nullptr) return nullptr;
    lists_[size_class] = block->next;
    counts_[size_class]--;
    return block;
  }

  bool Push(size_t size_class, void* ptr) {
    if (counts_[size_class] * ClassBytes(size_class) >= kMaxCachedBytesPerClass) return false;
    auto* block = static_cast<FreeBlock*>(ptr);
    block->next = lists_[size_class];
    lists_[size_class] = block;
    counts_[size_class]++;
    return true;
  }

  static size_t ClassBytes(size_t size_class) { return (size_class + 1) * kAlign; }
  static BlockHeader* HeaderOf(void* ptr) { return static_cast<BlockHeader*>(ptr) - 1; }

 private:
  FreeBlock* lists_[kClasses] = {};
  size_t counts_[kClasses] = {};
};

thread_local ThreadCache cache;

size_t ClassOf(size_t size) { return size == 0 ? 0 : (size - 1) / kAlign; }

size_t Capacity(const BlockHeader* header) {
  return header->size_class < kClasses ? ThreadCache::ClassBytes(header->size_class)
                                       : header->large_size;
}

void* Nghttp2Malloc(size_t size, void*) { return SmallAlloc(size); }
void Nghttp2Free(void* ptr, void*) { SmallFree(ptr); }
void* Nghttp2Calloc(size_t count, size_t size, void*) { return SmallCalloc(count, size); }
void* Nghttp2Realloc(void* ptr, size_t size, void*) { return SmallRealloc(ptr, size); }

}  // namespace

void* SmallAlloc(size_t size) {
  if (size <= kMaxSmall) {
    const size_t size_class = ClassOf(size);
    if (void* ptr = cache.Pop(size_class)) return ptr;
    void* raw = std::malloc(sizeof(BlockHeader) + ThreadCache::ClassBytes(size_class));
    if (raw == nullptr) return nullptr;
    auto* header = static_cast<BlockHeader*>(raw);
    header->size_class = static_cast<uint32_t>(size_class);
    return header + 1;
  }
  void* raw = std::malloc(sizeof(BlockHeader) + size);
  if (raw == nullptr) return nullptr;
  auto* header = static_cast<BlockHeader*>(raw);
  header->size_class = kClasses;
  header->large_size = size;
  return header + 1;
}

void SmallFree(void* ptr) {
  if (ptr == nullptr) return;
  BlockHeader* header = ThreadCache::HeaderOf(ptr);
  if (header->size_class < kClasses && cache.Push(header->size_class, ptr)) return;
  std::free(header);
}

void* SmallCalloc(size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) return nullptr;
  void* ptr = SmallAlloc(count * size);
  if (ptr != nullptr) std::memset(ptr, 0, count * size);
  return ptr;
}

void* SmallRealloc(void* ptr, size_t size) {
  if (ptr == nullptr) return SmallAlloc(size);
  if (size == 0) {
    SmallFree(ptr);
    return nullptr;
  }
  const size_t capacity = Capacity(ThreadCache::HeaderOf(ptr));
  if (size <= capacity) return ptr;
  void* grown = SmallAlloc(size);
  if (grown == nullptr) return nullptr;
  std::memcpy(grown, ptr, capacity);
  SmallFree(ptr);
  return grown;
}

nghttp2_mem* Nghttp2SmallAlloc() {
  static nghttp2_mem mem{nullptr, &Nghttp2Malloc, &Nghttp2Free, &Nghttp2Calloc, &Nghttp2Realloc};
  return &mem;
}

}  // namespace qpool::server
