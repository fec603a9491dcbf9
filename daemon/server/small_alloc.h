// A per-thread cache of small heap blocks for the data path, and an nghttp2_mem that uses it.
//
// Every call makes and frees the same few dozen small objects (nghttp2's stream, frame and header
// records, qpoold's own call state). glibc's per-thread cache keeps only 7 blocks per size, so at
// tens of calls in flight most of them take malloc's slow path. This cache keeps up to
// kMaxCachedBytesPerClass bytes per 16-byte size class, on the thread that frees them; blocks over
// kMaxSmall bytes go straight to malloc.
//
// Page blocks: the two large blocks every nghttp2 session keeps for its lifetime, its stream map
// (4 KiB) and its frame buffer (16 KiB), are served page-aligned from a reserved range instead of
// malloc, so that (1) calloc needs no memset (the pages are fresh or were handed back, so they read
// as zeros) and a map no stream ever touched costs no RSS, (2) a freed block's pages go back to the
// kernel at once (madvise), not into malloc's arenas, and (3) an idle session's frame buffer can be
// handed back while it holds nothing (ReleaseIdlePages). Page blocks are shared by all threads
// (one mutex, taken once per session created or destroyed); when the range is used up, or could
// not be reserved, such blocks come from malloc as before.
//
// Session slabs: the blocks an nghttp2 session makes while it is created (its 2.9 KB state, its two
// HPACK tables, a few small blocks), which it keeps for its lifetime, come from slabs of 64 KiB
// cut from a reserved range of their own, one size class per slab, not from malloc's heap. When a
// crowd of connections leaves, its sessions' slabs empty and their pages go back to the kernel
// (madvise) at once; in malloc's heap the same blocks left free gaps pinned between small blocks
// that stay allocated (Boost.Asio keeps every socket's reactor state for reuse), which
// malloc_trim could not hand back. Shared by all threads (one mutex, taken a few times per session
// created or destroyed); when the range is used up, such blocks come from the cache as before.
//
// Thread-safety: each thread has its own cache; a block may be freed on another thread than the
// one that allocated it (it then joins that thread's cache, or the shared page-block lists).
#ifndef QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_
#define QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <new>

namespace qpool::server {

void* SmallAlloc(size_t size);
void SmallFree(void* ptr);
void* SmallCalloc(size_t count, size_t size);
void* SmallRealloc(void* ptr, size_t size);

// An nghttp2 allocator backed by the cache; pass it to nghttp2_session_*_new3.
nghttp2_mem* Nghttp2SmallAlloc();

// The bytes of the page block `ptr` points to (a whole number of pages); 0 when it is not one.
size_t PageBlockBytes(const void* ptr);

// What one nghttp2 session keeps that can be handed back while it is idle: its frame buffer (the
// first block of kFrameBufferMinBytes or more it allocates: nghttp2 keeps that one chunk of its
// outbound buffer for the session's lifetime and writes every frame there), and its stream map
// (the first block of kStreamMapBytes it callocs), which reads as zeros again once its streams
// are gone.
struct SessionPages {
  static constexpr size_t kFrameBufferMinBytes = 16384;
  static constexpr size_t kStreamMapBytes = 4096;
  void* frame_buffer = nullptr;
  void* stream_map = nullptr;
  // While true, the session's new blocks come from the session slabs: set it around
  // nghttp2_session_*_new3 (the blocks made then live as long as the session), not after (a
  // call's blocks come and go: the cache serves them without the slabs' mutex).
  bool from_slabs = false;
};

// Like Nghttp2SmallAlloc(), and also remembers the session's frame buffer and stream map in
// `pages` (which must outlive the session). nghttp2 copies the struct: pass its address to
// nghttp2_session_*_new3.
nghttp2_mem Nghttp2SessionAlloc(SessionPages* pages);

// A block from the session slabs for an object that lives as long as its connection (up to
// kSessionSlabMaxBytes; larger, or with the slabs used up, from malloc). Free it with
// SessionSlabFree, on any thread.
inline constexpr size_t kSessionSlabMaxBytes = 8 * 1024;
void* SessionSlabAlloc(size_t size);
void SessionSlabFree(void* ptr);

// For std::allocate_shared: the object and its control block in a session slab.
template <typename T>
struct SessionSlabAllocator {
  using value_type = T;
  SessionSlabAllocator() = default;
  template <typename U>
  explicit SessionSlabAllocator(const SessionSlabAllocator<U>& /*other*/) {}
  T* allocate(size_t n) {
    void* ptr = SessionSlabAlloc(n * sizeof(T));
    if (ptr == nullptr) throw std::bad_alloc();
    return static_cast<T*>(ptr);
  }
  void deallocate(T* ptr, size_t /*n*/) { SessionSlabFree(ptr); }
  template <typename U>
  bool operator==(const SessionSlabAllocator<U>& /*other*/) const {
    return true;
  }
};

// The bytes of the session slabs' pages that are resident (mincore), for tests and diagnostics.
size_t SessionSlabResidentBytes();

// Hands the pages of the session's frame buffer back to the kernel (they read as zeros when next
// touched). Only while nghttp2 holds nothing in it: no frame queued or half sent
// (nghttp2_session_want_write() is 0 and what nghttp2_session_mem_send() returned was copied out).
// The stream map's page goes back too when it holds only zeros (then nothing changes for
// nghttp2: it reads the same zeros). A no-op for blocks that are not page blocks.
void ReleaseIdlePages(const SessionPages& pages);

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_
