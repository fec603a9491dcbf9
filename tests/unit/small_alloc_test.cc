// The data path's small-block cache (daemon/server/small_alloc): blocks are reused per size
// class on the freeing thread, calloc zeroes and refuses overflow, realloc keeps the bytes, and
// nghttp2's allocator goes through it. Page blocks: nghttp2's stream map and frame buffer on
// pages of their own, zero and not resident until written, handed back when freed or idle; an
// idle handshaked server session stays under kIdleSessionBound (docs/security.md).
#include "daemon/server/small_alloc.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

TEST(SmallAllocTest, AFreedBlockIsReusedForTheSameSizeClass) {
  void* first = SmallAlloc(40);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 16, 0u);
  SmallFree(first);
  // 33..48 bytes share one class: the cached block comes back.
  void* second = SmallAlloc(48);
  EXPECT_EQ(second, first);
  SmallFree(second);
}

TEST(SmallAllocTest, ZeroBytesIsASmallBlockToo) {
  void* block = SmallAlloc(0);
  ASSERT_NE(block, nullptr);
  SmallFree(block);
  EXPECT_EQ(SmallAlloc(16), block);  // class 0
  SmallFree(block);
  SmallFree(nullptr);  // no-op
}

TEST(SmallAllocTest, LargeBlocksAreNotCached) {
  char* large = static_cast<char*>(SmallAlloc(4096));
  ASSERT_NE(large, nullptr);
  std::memset(large, 'x', 4096);
  SmallFree(large);
  // Large blocks go back to malloc; a small request never gets one.
  void* small = SmallAlloc(1024);
  ASSERT_NE(small, nullptr);
  SmallFree(small);
}

TEST(SmallAllocTest, TheCacheHoldsAtMost64KiBPerClass) {
  // 1024-byte blocks: 64 of them fill the class; the 65th free goes to malloc.
  std::vector<void*> blocks;
  for (int i = 0; i < 65; ++i) blocks.push_back(SmallAlloc(1024));
  for (void* block : blocks) SmallFree(block);
  std::vector<void*> again;
  for (int i = 0; i < 65; ++i) again.push_back(SmallAlloc(1024));
  // The 64 cached blocks come back last-freed first; the 65th is fresh from malloc.
  for (int i = 0; i < 64; ++i) EXPECT_EQ(again[i], blocks[63 - i]) << i;
  for (void* block : again) SmallFree(block);
}

TEST(SmallAllocTest, CallocZeroesAndRefusesAnOverflowingSize) {
  unsigned char* block = static_cast<unsigned char*>(SmallAlloc(64));
  std::memset(block, 0xAB, 64);
  SmallFree(block);
  unsigned char* zeroed = static_cast<unsigned char*>(SmallCalloc(8, 8));
  ASSERT_EQ(zeroed, block);  // the dirty cached block, cleared
  for (int i = 0; i < 64; ++i) ASSERT_EQ(zeroed[i], 0) << i;
  SmallFree(zeroed);
  EXPECT_EQ(SmallCalloc(SIZE_MAX / 16 + 1, 16), nullptr);  // 2^64 bytes: wraps to 0
  void* nothing = SmallCalloc(0, 8);
  EXPECT_NE(nothing, nullptr);
  SmallFree(nothing);
}

TEST(SmallAllocTest, ReallocKeepsTheBlockWhileItFitsAndCopiesWhenItGrows) {
  void* fresh = SmallRealloc(nullptr, 10);  // acts as SmallAlloc
  ASSERT_NE(fresh, nullptr);
  SmallFree(fresh);
  char* block = static_cast<char*>(SmallAlloc(20));  // class of 32 bytes
  std::memcpy(block, "0123456789abcdefghi", 20);
  EXPECT_EQ(SmallRealloc(block, 32), block);  // still fits its class
  EXPECT_EQ(SmallRealloc(block, 5), block);   // shrinking never moves
  char* grown = static_cast<char*>(SmallRealloc(block, 100));
  ASSERT_NE(grown, nullptr);
  EXPECT_NE(grown, block);
  EXPECT_STREQ(grown, "0123456789abcdefghi");
  char* large = static_cast<char*>(SmallRealloc(grown, 5000));
  ASSERT_NE(large, nullptr);
  EXPECT_STREQ(large, "0123456789abcdefghi");
  EXPECT_EQ(SmallRealloc(large, 4000), large);  // a large block's capacity is its size
  EXPECT_EQ(SmallRealloc(large, 0), nullptr);   // frees
}

TEST(SmallAllocTest, ABlockFreedOnAnotherThreadJoinsThatThreadsCache) {
  void* block = SmallAlloc(200);
  void* reused_there = nullptr;
  std::thread([&] {
    SmallFree(block);
    reused_there = SmallAlloc(200);
    SmallFree(reused_there);
  }).join();
  EXPECT_EQ(reused_there, block);
}

TEST(SmallAllocTest, Nghttp2AllocatorUsesTheCache) {
  nghttp2_mem* mem = Nghttp2SmallAlloc();
  ASSERT_NE(mem, nullptr);
  EXPECT_EQ(Nghttp2SmallAlloc(), mem);
  void* block = mem->malloc(24, mem->mem_user_data);
  ASSERT_NE(block, nullptr);
  mem->free(block, mem->mem_user_data);
  void* zeroed = mem->calloc(3, 8, mem->mem_user_data);
  EXPECT_EQ(zeroed, block);
  void* grown = mem->realloc(zeroed, 2000, mem->mem_user_data);
  ASSERT_NE(grown, nullptr);
  mem->free(grown, mem->mem_user_data);
  // A real session runs on it.
  nghttp2_session_callbacks* callbacks = nullptr;
  ASSERT_EQ(nghttp2_session_callbacks_new(&callbacks), 0);
  nghttp2_session* session = nullptr;
  ASSERT_EQ(nghttp2_session_client_new3(&session, callbacks, nullptr, nullptr, mem), 0);
  nghttp2_session_del(session);
  nghttp2_session_callbacks_del(callbacks);
}

// Resident bytes of the page-aligned range [ptr, ptr + bytes), by mincore.
size_t ResidentBytes(void* ptr, size_t bytes) {
  const size_t page = 4096;
  std::vector<unsigned char> vec((bytes + page - 1) / page);
  if (mincore(ptr, bytes, vec.data()) != 0) return bytes;
  size_t resident = 0;
  for (unsigned char v : vec) resident += (v & 1) ? page : 0;
  return resident;
}

TEST(SmallAllocTest, PageBlocksArePageAlignedZeroedAndReused) {
  // nghttp2's stream map (4,096 bytes) and frame buffer (16,394 bytes) sizes.
  char* map = static_cast<char*>(SmallCalloc(256, 16));
  ASSERT_NE(map, nullptr);
  ASSERT_EQ(PageBlockBytes(map), 4096u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(map) % 4096, 0u);
  EXPECT_EQ(ResidentBytes(map, 4096), 0u) << "calloc touched the page";
  std::memset(map, 'x', 4096);
  EXPECT_EQ(ResidentBytes(map, 4096), 4096u);
  SmallFree(map);
  EXPECT_EQ(ResidentBytes(map, 4096), 0u) << "a freed page block stayed resident";
  char* again = static_cast<char*>(SmallCalloc(1, 4096));
  EXPECT_EQ(again, map);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(again[i], 0) << i;
  SmallFree(again);

  char* frame_buffer = static_cast<char*>(SmallAlloc(16394));
  ASSERT_NE(frame_buffer, nullptr);
  EXPECT_EQ(PageBlockBytes(frame_buffer), 20480u);
  frame_buffer[0] = 'x';
  EXPECT_EQ(SmallRealloc(frame_buffer, 20000), frame_buffer);  // fits its pages
  char* grown = static_cast<char*>(SmallRealloc(frame_buffer, 40000));
  ASSERT_NE(grown, nullptr);
  EXPECT_EQ(PageBlockBytes(grown), 0u);  // over 20 KiB: malloc's
  EXPECT_EQ(grown[0], 'x');
  SmallFree(grown);
  // Other sizes are not page blocks.
  for (size_t size : {size_t{1024}, size_t{2928}, size_t{5000}, size_t{12288}, size_t{20481}}) {
    void* block = SmallAlloc(size);
    EXPECT_EQ(PageBlockBytes(block), 0u) << size;
    SmallFree(block);
  }
}

// ReleaseIdlePages on a session whose stream map still holds a stream (an open call while nothing
// is queued to send): the frame buffer's pages go, the stream map keeps its bytes; once it holds
// zeros only, its page goes too.
TEST(SmallAllocTest, ReleaseIdlePagesKeepsAStreamMapThatHoldsStreams) {
  SessionPages pages;
  nghttp2_mem mem = Nghttp2SessionAlloc(&pages);
  void* const user = mem.mem_user_data;
  auto* frame_buffer = static_cast<char*>(mem.malloc(16394, user));
  auto* map = static_cast<uint64_t*>(mem.calloc(256, 16, user));
  ASSERT_EQ(pages.frame_buffer, frame_buffer);
  ASSERT_EQ(pages.stream_map, map);
  ASSERT_EQ(PageBlockBytes(frame_buffer), 20480u);
  ASSERT_EQ(PageBlockBytes(map), 4096u);
  std::memset(frame_buffer, 'f', 16394);
  map[300] = 0x1234;  // one entry in the middle of the page
  ReleaseIdlePages(pages);
  EXPECT_EQ(ResidentBytes(frame_buffer, 20480), 0u) << "the idle frame buffer stayed resident";
  EXPECT_EQ(frame_buffer[0], 0);
  EXPECT_EQ(map[300], 0x1234u) << "a stream map holding a stream was handed back";
  EXPECT_EQ(ResidentBytes(map, 4096), 4096u);
  map[300] = 0;
  ReleaseIdlePages(pages);
  EXPECT_EQ(ResidentBytes(map, 4096), 0u) << "an all-zero stream map stayed resident";
  mem.free(map, user);
  mem.free(frame_buffer, user);
  EXPECT_EQ(pages.stream_map, nullptr);
  EXPECT_EQ(pages.frame_buffer, nullptr);
}

// The resident bytes (smaps' Rss: pages written, not the zero page mapped by a read) of the
// mapping that holds `ptr`: for a page block, all page blocks of the process.
size_t RegionRss(const void* ptr) {
  std::FILE* smaps = std::fopen("/proc/self/smaps", "r");
  if (smaps == nullptr) return SIZE_MAX;
  char line[512];
  bool inside = false;
  size_t rss = SIZE_MAX;
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  while (std::fgets(line, sizeof(line), smaps) != nullptr) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line, "%lx-%lx ", &start, &end) == 2 && std::strchr(line, ':') != nullptr &&
        std::strchr(line, '-') < std::strchr(line, ' ')) {
      inside = address >= start && address < end;
      continue;
    }
    size_t kib = 0;
    if (inside && std::sscanf(line, "Rss: %zu kB", &kib) == 1) {
      rss = kib * 1024;
      break;
    }
  }
  std::fclose(smaps);
  return rss;
}

// A counting nghttp2_mem in front of the session allocator: the blocks a session holds.
struct CountingAlloc {
  nghttp2_mem inner;
  std::map<void*, size_t> live;

  static CountingAlloc& Of(void* user) { return *static_cast<CountingAlloc*>(user); }
  static void* Malloc(size_t n, void* user) {
    CountingAlloc& c = Of(user);
    void* ptr = c.inner.malloc(n, c.inner.mem_user_data);
    if (ptr != nullptr) c.live[ptr] = n;
    return ptr;
  }
  static void Free(void* ptr, void* user) {
    CountingAlloc& c = Of(user);
    c.live.erase(ptr);
    c.inner.free(ptr, c.inner.mem_user_data);
  }
  static void* Calloc(size_t count, size_t n, void* user) {
    CountingAlloc& c = Of(user);
    void* ptr = c.inner.calloc(count, n, c.inner.mem_user_data);
    if (ptr != nullptr) c.live[ptr] = count * n;
    return ptr;
  }
  static void* Realloc(void* ptr, size_t n, void* user) {
    CountingAlloc& c = Of(user);
    void* grown = c.inner.realloc(ptr, n, c.inner.mem_user_data);
    c.live.erase(ptr);
    if (grown != nullptr) c.live[grown] = n;
    return grown;
  }

  // What the blocks cost in RSS at most: any block but a page block its whole size (malloc's
  // heap is written through); the page blocks are counted by RegionRss().
  size_t HeapBytes() const {
    size_t total = 0;
    for (const auto& [ptr, n] : live) total += PageBlockBytes(ptr) > 0 ? 0 : n;
    return total;
  }
};

// docs/security.md, "Memory per connection": what nghttp2's session of an idle app connection
// that finished the handshake holds once qpoold trimmed it (26 KB allocated before page blocks,
// all of it but the frame buffer's untouched pages resident).
constexpr size_t kIdleSessionBound = 7 * 1024;

void SendAll(nghttp2_session* session) {
  const uint8_t* out = nullptr;
  while (nghttp2_session_mem_send(session, &out) > 0) {
  }
}

TEST(SmallAllocTest, AnIdleHandshakedServerSessionHoldsAtMostTheBound) {
  SessionPages pages;
  CountingAlloc counting{Nghttp2SessionAlloc(&pages), {}};
  nghttp2_mem mem{&counting, &CountingAlloc::Malloc, &CountingAlloc::Free, &CountingAlloc::Calloc,
                  &CountingAlloc::Realloc};
  nghttp2_session_callbacks* callbacks = nullptr;
  ASSERT_EQ(nghttp2_session_callbacks_new(&callbacks), 0);
  nghttp2_option* option = nullptr;
  ASSERT_EQ(nghttp2_option_new(&option), 0);
  nghttp2_option_set_no_auto_window_update(option, 1);
  // Page blocks of earlier tests were handed back when freed: the region holds only this
  // session's from here on.
  void* probe = SmallAlloc(4096);
  ASSERT_NE(PageBlockBytes(probe), 0u);
  SmallFree(probe);
  const size_t region_before = RegionRss(probe);
  nghttp2_session* session = nullptr;
  ASSERT_EQ(nghttp2_session_server_new3(&session, callbacks, nullptr, option, &mem), 0);
  nghttp2_option_del(option);
  // As DownstreamSession::CreateSessionLate sets it up.
  const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                             {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                             {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
                                             {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384}};
  ASSERT_EQ(nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings)), 0);
  ASSERT_EQ(nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, 1 << 30), 0);
  SendAll(session);
  // The client's preface and an empty SETTINGS frame.
  const std::string preface =
      std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\4\0\0\0\0\0", 9);
  ASSERT_EQ(nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(preface.data()),
                                     preface.size()),
            static_cast<ssize_t>(preface.size()));
  SendAll(session);  // the SETTINGS ack
  ASSERT_EQ(nghttp2_session_want_write(session), 0);
  ASSERT_NE(pages.frame_buffer, nullptr);
  EXPECT_EQ(PageBlockBytes(pages.frame_buffer), 20480u);
  EXPECT_GT(RegionRss(probe), region_before);  // frames were written in the frame buffer

  ReleaseIdlePages(pages);
  const size_t held = counting.HeapBytes() + (RegionRss(probe) - region_before);
  std::printf(
      "an idle handshaked session holds %zu bytes: %zu in malloc's heap, %zu in page "
      "blocks (bound %zu)\n",
      held, counting.HeapBytes(), RegionRss(probe) - region_before, kIdleSessionBound);
  EXPECT_LE(held, kIdleSessionBound);

  // The session goes on after the release: a PING is answered from the zeroed buffer.
  const std::string ping = std::string("\0\0\x08\x06\0\0\0\0\0", 9) + "pingpong";
  ASSERT_EQ(
      nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(ping.data()), ping.size()),
      static_cast<ssize_t>(ping.size()));
  const uint8_t* out = nullptr;
  const ssize_t n = nghttp2_session_mem_send(session, &out);
  ASSERT_EQ(n, 17);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out) + 9, 8), "pingpong");
  EXPECT_EQ(out[4], 1);  // ACK

  // After a call, the stream map reads as zeros again and its page goes back too.
  std::string block;
  for (const auto& [name, value] : {std::pair<std::string, std::string>{":method", "POST"},
                                    {":scheme", "http"},
                                    {":path", "/qdrant.Qdrant/HealthCheck"},
                                    {":authority", "q"}}) {
    block += '\0';  // a literal field without indexing, lengths under 127
    block += static_cast<char>(name.size()) + name + static_cast<char>(value.size()) + value;
  }
  const std::string headers =
      std::string{0, 0, static_cast<char>(block.size()), 1, 5, 0, 0, 0, 1} + block;
  ASSERT_EQ(nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(headers.data()),
                                     headers.size()),
            static_cast<ssize_t>(headers.size()));
  const nghttp2_nv status = {const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(":status")),
                             const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>("200")), 7, 3,
                             NGHTTP2_NV_FLAG_NONE};
  ASSERT_EQ(nghttp2_submit_response(session, 1, &status, 1, nullptr), 0);
  ASSERT_NE(pages.stream_map, nullptr);
  EXPECT_GT(RegionRss(probe), region_before);  // the stream was in the map
  SendAll(session);
  ASSERT_EQ(nghttp2_session_find_stream(session, 1), nullptr);  // closed
  ASSERT_EQ(nghttp2_session_want_write(session), 0);
  ReleaseIdlePages(pages);
  EXPECT_EQ(RegionRss(probe), region_before) << "a page block stayed resident after a call";
  nghttp2_session_del(session);
  nghttp2_session_callbacks_del(callbacks);
  EXPECT_TRUE(counting.live.empty());
  EXPECT_EQ(pages.frame_buffer, nullptr);
  EXPECT_EQ(pages.stream_map, nullptr);
}

// The session allocator's slab blocks (made while a session is created, from_slabs set): realloc
// keeps a block while it fits its 16-byte class, moves it with its bytes when it grows (to another
// slab block while from_slabs is set, to the cache or malloc after), and frees it at size 0; calloc
// clears a reused slab block. 2,390 bytes: a class (2,400) no session block of nghttp2's uses.
TEST(SmallAllocTest, SessionSlabBlocksReallocInPlaceWhileTheyFitTheirClassAndCopyWhenTheyGrow) {
  SessionPages pages;
  pages.from_slabs = true;
  nghttp2_mem mem = Nghttp2SessionAlloc(&pages);
  void* const user = mem.mem_user_data;
  // A slab block's capacity is its class's 2,400 bytes; a block from malloc would have 2,390.
  char* block = static_cast<char*>(mem.malloc(2390, user));
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(PageBlockBytes(block), 0u);
  std::memset(block, 'a', 2390);
  EXPECT_EQ(mem.realloc(block, 2400, user), block) << "a slab block moved within its class";
  EXPECT_EQ(mem.realloc(block, 100, user), block) << "shrinking moved a slab block";
  // Grown while the session is being created: another slab block (class 3,008), bytes kept.
  char* grown = static_cast<char*>(mem.realloc(block, 3000, user));
  ASSERT_NE(grown, nullptr);
  EXPECT_NE(grown, block);
  EXPECT_EQ(std::string(grown, 2390).find_first_not_of('a'), std::string::npos);
  EXPECT_EQ(mem.realloc(grown, 3008, user), grown);
  // Grown after: malloc's (5,000 bytes: no page block), the slab's 3,008 bytes copied.
  pages.from_slabs = false;
  std::memset(grown, 'b', 3008);
  char* large = static_cast<char*>(mem.realloc(grown, 5000, user));
  ASSERT_NE(large, nullptr);
  EXPECT_NE(large, grown);
  EXPECT_EQ(std::string(large, 3008).find_first_not_of('b'), std::string::npos);
  mem.free(large, user);

  // calloc of a slab block freed dirty: the block comes back (its slab's free list), cleared. A
  // second block keeps the slab from emptying (an empty slab's pages would read as zeros anyway).
  pages.from_slabs = true;
  void* keeper = mem.malloc(2390, user);
  char* dirty = static_cast<char*>(mem.malloc(2390, user));
  ASSERT_NE(keeper, nullptr);
  ASSERT_NE(dirty, nullptr);
  std::memset(dirty, 0xAB, 2390);
  mem.free(dirty, user);
  char* cleared = static_cast<char*>(mem.calloc(239, 10, user));
  ASSERT_EQ(cleared, dirty);
  for (int i = 0; i < 2390; ++i) ASSERT_EQ(cleared[i], 0) << i;
  EXPECT_EQ(mem.realloc(cleared, 0, user), nullptr);  // frees
  mem.free(keeper, user);
}

// Objects that live as long as their connection (SessionSlabAllocator, as Worker makes each
// DownstreamSession): up to kSessionSlabMaxBytes from the slabs, larger from malloc, each freed
// where it came from.
TEST(SmallAllocTest, SessionSlabAllocatorTakesObjectsOverTheSlabLimitFromMalloc) {
  struct Small {
    char bytes[4000];
  };
  struct Large {
    char bytes[kSessionSlabMaxBytes + 1];
  };
  const size_t before = SessionSlabResidentBytes();
  {
    std::shared_ptr<Large> large = std::allocate_shared<Large>(SessionSlabAllocator<Large>());
    std::memset(large->bytes, 'x', sizeof(large->bytes));
    EXPECT_EQ(SessionSlabResidentBytes(), before) << "a block over the limit came from a slab";
  }
  std::vector<std::shared_ptr<Small>> smalls;
  for (int i = 0; i < 16; ++i) {
    smalls.push_back(std::allocate_shared<Small>(SessionSlabAllocator<Small>()));
    std::memset(smalls.back()->bytes, 'y', sizeof(Small::bytes));
  }
  // 16 blocks of ~4 KB written: at least 15 pages of slabs newly resident.
  EXPECT_GE(SessionSlabResidentBytes(), before + 15 * 4096);
  for (const std::shared_ptr<Small>& small : smalls) {
    EXPECT_EQ(small->bytes[0], 'y');
    EXPECT_EQ(small->bytes[sizeof(Small::bytes) - 1], 'y');
  }
}

// The process's resident bytes (VmRSS).
size_t ProcessRss() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return 0;
  char line[256];
  size_t kib = 0;
  while (std::fgets(line, sizeof(line), status) != nullptr) {
    if (std::sscanf(line, "VmRSS: %zu kB", &kib) == 1) break;
  }
  std::fclose(status);
  return kib * 1024;
}

// docs/security.md, "Measured: 10,000 idle connections": a crowd of sessions leaves and its memory
// goes back, although a small block made next to each session (as Boost.Asio's reactor state is
// next to each socket's) stays allocated, which in malloc's heap pins the gaps the sessions left.
TEST(SmallAllocTest, ACrowdOfSessionsGoesBackToTheKernelWhenItLeaves) {
  constexpr int kSessions = 3000;
  constexpr size_t kPinBytes = 320;
  nghttp2_session_callbacks* callbacks = nullptr;
  ASSERT_EQ(nghttp2_session_callbacks_new(&callbacks), 0);
  struct Crowd {
    SessionPages pages;
    nghttp2_session* session = nullptr;
  };
  std::vector<Crowd> crowd(kSessions);
  std::vector<void*> pins;
  pins.reserve(kSessions);
  malloc_trim(0);
  const size_t before = ProcessRss();
  for (Crowd& member : crowd) {
    // As H2Transport::session_allocator() and DownstreamSession::CreateSessionLate do it.
    member.pages.from_slabs = true;
    nghttp2_mem mem = Nghttp2SessionAlloc(&member.pages);
    ASSERT_EQ(nghttp2_session_server_new3(&member.session, callbacks, nullptr, nullptr, &mem), 0);
    member.pages.from_slabs = false;
    void* pin = std::malloc(kPinBytes);
    std::memset(pin, 1, kPinBytes);
    pins.push_back(pin);
  }
  const size_t held = ProcessRss();
  // They leave in interleaved order: every other one, then the rest.
  for (int start : {0, 1}) {
    for (int i = start; i < kSessions; i += 2) nghttp2_session_del(crowd[i].session);
  }
  malloc_trim(0);
  const size_t after = ProcessRss();
  std::printf("%d sessions: RSS %zu -> %zu -> %zu KiB; session slabs hold %zu KiB\n", kSessions,
              before / 1024, held / 1024, after / 1024, SessionSlabResidentBytes() / 1024);
  ASSERT_GT(held, before + kSessions * size_t{2048});  // the crowd cost its ~3 KB each
  // What stays is the pins (~1 MB) and at most one spare slab per size class; in malloc's heap it
  // was 3.5 KB per session (10.3 MB).
  EXPECT_LE(after, before + kSessions * size_t{1024}) << "the crowd's memory did not go back";
  EXPECT_LE(SessionSlabResidentBytes(), size_t{512} << 10);
  for (void* pin : pins) std::free(pin);
  nghttp2_session_callbacks_del(callbacks);
}

}  // namespace
}  // namespace qpool::server
