#include "daemon/server/small_alloc.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

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

// The page blocks (small_alloc.h): one reserved range, a part of it per class, each part handed
// out front to back and reused through its free list. Never destroyed (blocks may be freed late).
class PageBlocks {
 public:
  static constexpr size_t kPage = 4096;

  static PageBlocks& Get() {
    static PageBlocks* blocks = new PageBlocks();
    return *blocks;
  }

  // A block for `size` bytes, zero-filled; null when `size` is no page block's or none is left.
  void* Alloc(size_t size) {
    const int c = ClassFor(size);
    if (c < 0 || base_ == nullptr) return nullptr;
    absl::MutexLock lock(&mu_);
    std::vector<char*>& free_list = free_[c];
    if (!free_list.empty()) {
      char* block = free_list.back();
      free_list.pop_back();
      return block;
    }
    if (used_[c] + kClasses[c].block_bytes > kClasses[c].span) return nullptr;
    char* block = base_ + kClasses[c].offset + used_[c];
    used_[c] += kClasses[c].block_bytes;
    return block;
  }

  // Hands the block's pages back to the kernel and keeps the block for reuse.
  void Free(void* ptr) {
    const size_t c = ClassOf(ptr);
    madvise(ptr, kClasses[c].block_bytes, MADV_DONTNEED);
    absl::MutexLock lock(&mu_);
    free_[c].push_back(static_cast<char*>(ptr));
  }

  // The pages stay the block's; only their contents go (they read as zeros when next touched).
  void Release(void* ptr) { madvise(ptr, kClasses[ClassOf(ptr)].block_bytes, MADV_DONTNEED); }

  bool Contains(const void* ptr) const {
    const char* p = static_cast<const char*>(ptr);
    return base_ != nullptr && p >= base_ && p < base_ + kTotal;
  }
  size_t BytesOf(const void* ptr) const { return kClasses[ClassOf(ptr)].block_bytes; }

 private:
  struct Class {
    size_t min_bytes;    // requests of min_bytes..block_bytes bytes take a block of this class
    size_t block_bytes;  // a whole number of pages
    size_t offset;       // where its part of the range starts
    size_t span;         // its part's length
  };
  // nghttp2's stream map (4,096 bytes) and its frame buffer (16,394 bytes). A session's other
  // blocks (its 2.9 KB state, written through at once) pack better in malloc's heap.
  static constexpr Class kClasses[] = {
      {3 * 1024 + 1, 4 * 1024, 0, size_t{256} << 20},
      {12 * 1024 + 1, 20 * 1024, size_t{256} << 20, size_t{1} << 30},
  };
  static constexpr size_t kNumClasses = std::size(kClasses);
  static constexpr size_t kTotal =
      kClasses[kNumClasses - 1].offset + kClasses[kNumClasses - 1].span;

  PageBlocks() {
    // Address space only (MAP_NORESERVE): pages become resident as they are written. A
    // PROT_NONE page on each side keeps the range a mapping of its own (/proc/PID/smaps shows
    // its RSS apart; no neighbour merges into it).
    if (sysconf(_SC_PAGESIZE) != static_cast<long>(kPage)) return;
    void* reserved = mmap(nullptr, kTotal + 2 * kPage, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) return;
    char* base = static_cast<char*>(reserved) + kPage;
    if (mprotect(base, kTotal, PROT_READ | PROT_WRITE) != 0) {
      munmap(reserved, kTotal + 2 * kPage);
      return;
    }
    base_ = base;
  }

  static int ClassFor(size_t size) {
    for (size_t c = 0; c < kNumClasses; ++c) {
      if (size >= kClasses[c].min_bytes && size <= kClasses[c].block_bytes)
        return static_cast<int>(c);
    }
    return -1;
  }
  size_t ClassOf(const void* ptr) const {
    const size_t offset = static_cast<size_t>(static_cast<const char*>(ptr) - base_);
    size_t c = 0;
    while (c + 1 < kNumClasses && offset >= kClasses[c + 1].offset) ++c;
    return c;
  }

  char* base_ = nullptr;
  absl::Mutex mu_;
  size_t used_[kNumClasses] ABSL_GUARDED_BY(mu_) = {};
  std::vector<char*> free_[kNumClasses] ABSL_GUARDED_BY(mu_);
};

// The session slabs (small_alloc.h): slabs of kSlabBytes from one reserved range, each holding
// blocks of one 16-byte size class, with a free list and a count of live blocks. A slab that
// empties hands its pages back to the kernel, except one per class kept as a spare, so that one
// connection opened and closed over and over does not fault the same pages in each time. Never
// destroyed.
class SessionSlabs {
 public:
  static constexpr size_t kSlabBytes = 64 * 1024;
  // Under the stream map's 4,096 bytes, which stays a page block.
  static constexpr size_t kMaxBlock = kSessionSlabMaxBytes;
  static constexpr size_t kRangeBytes = size_t{256} << 20;  // room for ~50,000 sessions

  static SessionSlabs& Get() {
    static SessionSlabs* slabs = new SessionSlabs();
    return *slabs;
  }

  // Whether `ptr` came from a slab: one subtraction and one comparison (until the range exists,
  // base_address is kUnset, and no pointer lies within kRangeBytes past it).
  static bool Contains(const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) - base_address.load(std::memory_order_relaxed) <
           kRangeBytes;
  }

  // A block of `size` bytes (not zeroed); null when `size` is over kMaxBlock or no slab is left.
  void* Alloc(size_t size) {
    if (size == 0 || size > kMaxBlock || base_ == nullptr) return nullptr;
    const size_t c = (size - 1) / kAlign;
    const size_t bytes = (c + 1) * kAlign;
    absl::MutexLock lock(&mu_);
    std::vector<uint32_t>& open = open_[c];
    while (!open.empty()) {
      const uint32_t index = open.back();
      Slab& slab = slabs_[index];
      void* block = nullptr;
      if (slab.free != nullptr) {
        block = slab.free;
        slab.free = slab.free->next;
      } else if (slab.bump + bytes <= kSlabBytes) {
        block = base_ + index * kSlabBytes + slab.bump;
        slab.bump += static_cast<uint32_t>(bytes);
      } else {
        slab.open = false;  // full: back on the list when a block is freed
        open.pop_back();
        continue;
      }
      if (slab.live++ == 0 && spare_[c] == index + 1) spare_[c] = 0;
      return block;
    }
    if (fresh_ == kNumSlabs) return nullptr;
    const uint32_t index = fresh_++;
    Slab& slab = slabs_[index];
    slab.size_class = static_cast<uint32_t>(c);
    slab.bump = static_cast<uint32_t>(bytes);
    slab.live = 1;
    slab.open = true;
    open.push_back(index);
    return base_ + index * kSlabBytes;
  }

  void Free(void* ptr) {
    const auto index = static_cast<uint32_t>((static_cast<char*>(ptr) - base_) / kSlabBytes);
    absl::MutexLock lock(&mu_);
    Slab& slab = slabs_[index];
    auto* block = static_cast<FreeBlock*>(ptr);
    block->next = slab.free;
    slab.free = block;
    if (!slab.open) {
      slab.open = true;
      open_[slab.size_class].push_back(index);
    }
    if (--slab.live > 0) return;
    uint32_t& spare = spare_[slab.size_class];
    if (spare == 0) {
      spare = index + 1;  // kept resident, free list and all
      return;
    }
    // Empty: its pages go back; it starts over (reads as zeros, handed out front to back).
    madvise(base_ + index * kSlabBytes, kSlabBytes, MADV_DONTNEED);
    slab.free = nullptr;
    slab.bump = 0;
  }

  size_t BytesOf(const void* ptr) {
    const size_t index = static_cast<size_t>(static_cast<const char*>(ptr) - base_) / kSlabBytes;
    absl::MutexLock lock(&mu_);
    return (slabs_[index].size_class + 1) * kAlign;
  }

  size_t ResidentBytes() {
    size_t slabs = 0;
    {
      absl::MutexLock lock(&mu_);
      slabs = fresh_;
    }
    if (slabs == 0) return 0;
    std::vector<unsigned char> pages(slabs * kSlabBytes / PageBlocks::kPage);
    if (mincore(base_, slabs * kSlabBytes, pages.data()) != 0) return 0;
    size_t resident = 0;
    for (const unsigned char page : pages) resident += (page & 1) * PageBlocks::kPage;
    return resident;
  }

 private:
  static constexpr size_t kNumSlabs = kRangeBytes / kSlabBytes;
  static constexpr size_t kNumClasses = kMaxBlock / kAlign;

  struct Slab {
    FreeBlock* free;
    uint32_t bump;  // bytes handed out front to back
    uint32_t live;
    uint32_t size_class;
    bool open;  // on open_[size_class]: it may have room
  };

  SessionSlabs() {
    // Address space only, as for the page blocks; the slabs' records too (zeros: empty slabs).
    void* range = mmap(nullptr, kRangeBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void* records = mmap(nullptr, kNumSlabs * sizeof(Slab), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (range == MAP_FAILED || records == MAP_FAILED) return;
    base_ = static_cast<char*>(range);
    slabs_ = static_cast<Slab*>(records);
    base_address.store(reinterpret_cast<uintptr_t>(base_), std::memory_order_relaxed);
  }

  static constexpr uintptr_t kUnset = UINTPTR_MAX - kRangeBytes;
  static inline std::atomic<uintptr_t> base_address{kUnset};
  char* base_ = nullptr;
  Slab* slabs_ ABSL_PT_GUARDED_BY(mu_) = nullptr;
  absl::Mutex mu_;
  uint32_t fresh_ ABSL_GUARDED_BY(mu_) = 0;  // slabs past it were never used
  std::vector<uint32_t> open_[kNumClasses] ABSL_GUARDED_BY(mu_);
  uint32_t spare_[kNumClasses] ABSL_GUARDED_BY(mu_) = {};  // index + 1 of an empty slab kept
};

// Whether `ptr` is a page block: page blocks are page-aligned, a cached or malloc'd block (16
// bytes past a header) rarely is, so the common case costs one test.
bool IsPageBlock(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & (PageBlocks::kPage - 1)) == 0 &&
         PageBlocks::Get().Contains(ptr);
}

size_t ClassOf(size_t size) { return size == 0 ? 0 : (size - 1) / kAlign; }

// Capacity of a block that is not a page block.
size_t Capacity(const BlockHeader* header) {
  return header->size_class < kClasses ? ThreadCache::ClassBytes(header->size_class)
                                       : header->large_size;
}

void* Nghttp2Malloc(size_t size, void*) { return SmallAlloc(size); }
void Nghttp2Free(void* ptr, void*) { SmallFree(ptr); }
void* Nghttp2Calloc(size_t count, size_t size, void*) { return SmallCalloc(count, size); }
void* Nghttp2Realloc(void* ptr, size_t size, void*) { return SmallRealloc(ptr, size); }

// The per-session allocator: remembers the frame buffer (the first block of its size).
void NoteBlock(SessionPages* pages, void* ptr, size_t size) {
  if (size >= SessionPages::kFrameBufferMinBytes && pages->frame_buffer == nullptr) {
    pages->frame_buffer = ptr;
  }
}
// A block for a session being created: from the slabs when it is one of theirs (under the stream
// map's 4,096 bytes, which stays a page block).
constexpr size_t kMaxSessionSlabBlock = 3 * 1024;
void* SlabAlloc(const SessionPages& pages, size_t size) {
  return pages.from_slabs && size <= kMaxSessionSlabBlock ? SessionSlabs::Get().Alloc(size)
                                                          : nullptr;
}
void* SessionMalloc(size_t size, void* user) {
  auto* pages = static_cast<SessionPages*>(user);
  if (void* ptr = SlabAlloc(*pages, size)) return ptr;
  void* ptr = SmallAlloc(size);
  NoteBlock(pages, ptr, size);
  return ptr;
}
void* SessionCalloc(size_t count, size_t size, void* user) {
  auto* pages = static_cast<SessionPages*>(user);
  if (pages->from_slabs && size != 0 && count <= SIZE_MAX / size) {
    if (void* ptr = SlabAlloc(*pages, count * size)) return std::memset(ptr, 0, count * size);
  }
  void* ptr = SmallCalloc(count, size);
  if (count * size == SessionPages::kStreamMapBytes && pages->stream_map == nullptr) {
    pages->stream_map = ptr;
  }
  return ptr;
}
void SessionFree(void* ptr, void* user) {
  auto* pages = static_cast<SessionPages*>(user);
  if (ptr != nullptr && ptr == pages->frame_buffer) pages->frame_buffer = nullptr;
  if (ptr != nullptr && ptr == pages->stream_map) pages->stream_map = nullptr;
  if (SessionSlabs::Contains(ptr)) {
    SessionSlabs::Get().Free(ptr);
    return;
  }
  SmallFree(ptr);
}
void* SessionRealloc(void* ptr, size_t size, void* user) {
  auto* pages = static_cast<SessionPages*>(user);
  if (SessionSlabs::Contains(ptr)) {
    const size_t capacity = SessionSlabs::Get().BytesOf(ptr);
    if (size != 0 && size <= capacity) return ptr;
    void* grown = nullptr;
    if (size != 0) {
      grown = SlabAlloc(*pages, size);
      if (grown == nullptr) grown = SmallAlloc(size);
      if (grown == nullptr) return nullptr;
      std::memcpy(grown, ptr, std::min(capacity, size));
    }
    SessionSlabs::Get().Free(ptr);
    return grown;
  }
  if (ptr == nullptr) {
    if (void* block = SlabAlloc(*pages, size)) return block;
  }
  void* grown = SmallRealloc(ptr, size);
  if (ptr == nullptr) {
    NoteBlock(pages, grown, size);  // nghttp2's buffers start as a realloc of null
  } else if (ptr == pages->frame_buffer) {
    pages->frame_buffer = grown;
  } else if (ptr == pages->stream_map) {
    pages->stream_map = grown;
  }
  return grown;
}

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
  if (void* block = PageBlocks::Get().Alloc(size)) return block;
  void* raw = std::malloc(sizeof(BlockHeader) + size);
  if (raw == nullptr) return nullptr;
  auto* header = static_cast<BlockHeader*>(raw);
  header->size_class = kClasses;
  header->large_size = size;
  return header + 1;
}

void SmallFree(void* ptr) {
  if (ptr == nullptr) return;
  if (IsPageBlock(ptr)) {
    PageBlocks::Get().Free(ptr);
    return;
  }
  BlockHeader* header = ThreadCache::HeaderOf(ptr);
  if (header->size_class < kClasses && cache.Push(header->size_class, ptr)) return;
  std::free(header);
}

void* SmallCalloc(size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) return nullptr;
  void* ptr = SmallAlloc(count * size);
  // A page block reads as zeros already: its pages are untouched, and left so.
  if (ptr != nullptr && !IsPageBlock(ptr)) std::memset(ptr, 0, count * size);
  return ptr;
}

void* SmallRealloc(void* ptr, size_t size) {
  if (ptr == nullptr) return SmallAlloc(size);
  if (size == 0) {
    SmallFree(ptr);
    return nullptr;
  }
  const size_t capacity =
      IsPageBlock(ptr) ? PageBlocks::Get().BytesOf(ptr) : Capacity(ThreadCache::HeaderOf(ptr));
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

size_t PageBlockBytes(const void* ptr) {
  return IsPageBlock(ptr) ? PageBlocks::Get().BytesOf(ptr) : 0;
}

nghttp2_mem Nghttp2SessionAlloc(SessionPages* pages) {
  return nghttp2_mem{pages, &SessionMalloc, &SessionFree, &SessionCalloc, &SessionRealloc};
}

void* SessionSlabAlloc(size_t size) {
  if (void* ptr = SessionSlabs::Get().Alloc(size)) return ptr;
  return std::malloc(size);
}

void SessionSlabFree(void* ptr) {
  if (SessionSlabs::Contains(ptr)) {
    SessionSlabs::Get().Free(ptr);
  } else {
    std::free(ptr);
  }
}

size_t SessionSlabResidentBytes() { return SessionSlabs::Get().ResidentBytes(); }

void ReleaseIdlePages(const SessionPages& pages) {
  if (IsPageBlock(pages.frame_buffer)) PageBlocks::Get().Release(pages.frame_buffer);
  if (IsPageBlock(pages.stream_map)) {
    // Read as words: a page never written reads from the kernel's zero page and stays free.
    const auto* words = static_cast<const uint64_t*>(pages.stream_map);
    uint64_t any = 0;
    for (size_t i = 0; i < PageBlocks::Get().BytesOf(pages.stream_map) / sizeof(uint64_t); ++i) {
      any |= words[i];
    }
    if (any == 0) PageBlocks::Get().Release(pages.stream_map);
  }
}

}  // namespace qpool::server
