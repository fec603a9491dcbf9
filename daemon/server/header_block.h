// Header name/value pairs as received, in order (pseudo-headers first, as HTTP/2 requires), kept
// in one buffer so a call's headers cost two allocations however many there are.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_HEADER_BLOCK_H_
#define QPOOL_DAEMON_SERVER_HEADER_BLOCK_H_

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/inlined_vector.h"

namespace qpool::server {

// nghttp2 header arrays: on the stack for the usual gRPC header count.
using NvArray = absl::InlinedVector<nghttp2_nv, 16>;

inline nghttp2_nv MakeNv(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

// The `api-key` header qpoold adds: never put in the HPACK dynamic table (RFC 7541 7.1.3), so a
// secret is neither kept per connection nor guessable from compressed sizes.
inline nghttp2_nv ApiKeyNv(std::string_view key) {
  nghttp2_nv nv = MakeNv("api-key", key);
  nv.flags = NGHTTP2_NV_FLAG_NO_INDEX;
  return nv;
}

class HeaderBlock {
 public:
  void Add(std::string_view name, std::string_view value) {
    if (bytes_.empty()) bytes_.reserve(512);
    const auto offset = static_cast<uint32_t>(bytes_.size());
    bytes_.append(name).append(value);
    entries_.push_back(
        Entry{offset, static_cast<uint32_t>(name.size()), static_cast<uint32_t>(value.size())});
  }

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  // Calls fn(name, value) for each header in order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const Entry& e : entries_) {
      fn(std::string_view(bytes_.data() + e.offset, e.name_len),
         std::string_view(bytes_.data() + e.offset + e.name_len, e.value_len));
    }
  }

  // nghttp2 entries pointing into this block; valid until the block changes.
  NvArray ToNv() const {
    NvArray nva;
    ForEach([&nva](std::string_view name, std::string_view value) {
      nva.push_back(MakeNv(name, value));
    });
    return nva;
  }

  void Clear() {
    std::string().swap(bytes_);
    entries_.clear();
  }

 private:
  struct Entry {
    uint32_t offset;
    uint32_t name_len;
    uint32_t value_len;
  };
  std::string bytes_;
  absl::InlinedVector<Entry, 12> entries_;
};

// Headers as nghttp2 decoded them, held by reference (nghttp2_rcbuf) instead of copied: the
// cheap way to forward a header block from one session to another. The references belong to the
// session that decoded them and must be released (Clear) before that session is deleted.
class HeaderRefs {
 public:
  HeaderRefs() = default;
  ~HeaderRefs() { Clear(); }
  HeaderRefs(const HeaderRefs&) = delete;
  HeaderRefs& operator=(const HeaderRefs&) = delete;

  void Add(nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    refs_.push_back({name, value});
  }

  bool empty() const { return refs_.empty(); }

  // Takes over `other`'s references (this block's own are released first); `other` ends empty.
  void TakeFrom(HeaderRefs& other) {
    Clear();
    refs_.swap(other.refs_);
  }

  // Calls fn(name, value) for each header in order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [name, value] : refs_) fn(View(name), View(value));
  }

  // The value of the first header called `name`; empty when there is none.
  std::string_view Find(std::string_view name) const {
    for (const auto& [n, value] : refs_) {
      if (View(n) == name) return View(value);
    }
    return {};
  }

  NvArray ToNv() const {
    NvArray nva;
    ForEach([&nva](std::string_view name, std::string_view value) {
      nva.push_back(MakeNv(name, value));
    });
    return nva;
  }

  void Clear() {
    for (const auto& [name, value] : refs_) {
      nghttp2_rcbuf_decref(name);
      nghttp2_rcbuf_decref(value);
    }
    refs_.clear();
  }

  static std::string_view View(nghttp2_rcbuf* buf) {
    const nghttp2_vec vec = nghttp2_rcbuf_get_buf(buf);
    return std::string_view(reinterpret_cast<const char*>(vec.base), vec.len);
  }

 private:
  absl::InlinedVector<std::pair<nghttp2_rcbuf*, nghttp2_rcbuf*>, 12> refs_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_HEADER_BLOCK_H_
