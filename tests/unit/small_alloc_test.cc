// The data path's small-block cache (daemon/server/small_alloc): blocks are reused per size
// class on the freeing thread, calloc zeroes and refuses overflow, realloc keeps the bytes, and
// nghttp2's allocator goes through it.
#include "daemon/server/small_alloc.h"

#include <cstdint>
#include <cstring>
#include <thread>
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

}  // namespace
}  // namespace qpool::server
