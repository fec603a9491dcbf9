// A per-thread cache of small heap blocks for the data path, and an nghttp2_mem that uses it.
//
// Every call makes and frees the same few dozen small objects (nghttp2's stream, frame and header
// records, qpoold's own call state). glibc's per-thread cache keeps only 7 blocks per size, so at
// tens of calls in flight most of them take malloc's slow path. This cache keeps up to
// kMaxCachedBytesPerClass bytes per 16-byte size class, on the thread that frees them; blocks over
// kMaxSmall bytes go straight to malloc.
//
// Thread-safety: each thread has its own cache; a block may be freed on another thread than the
// one that allocated it (it then joins that thread's cache).
#ifndef QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_
#define QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>

namespace qpool::server {

void* SmallAlloc(size_t size);
void SmallFree(void* ptr);
void* SmallCalloc(size_t count, size_t size);
void* SmallRealloc(void* ptr, size_t size);

// An nghttp2 allocator backed by the cache; pass it to nghttp2_session_*_new3.
nghttp2_mem* Nghttp2SmallAlloc();

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_SMALL_ALLOC_H_
