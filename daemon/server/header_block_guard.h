// The header limits of an app's request header blocks (server.max_header_list_size in RFC 9113
// octets, server.max_headers in fields): counts each block as nghttp2 decodes it and decides what
// a field over a limit means. The connection acts on the verdicts (docs/security.md, "Header
// limits"): the first field over a limit drops the stream's call, is counted and spends the
// header-limit budget (abuse_budget.h); the block is decoded to its end but not stored, and its
// stream is answered RESOURCE_EXHAUSTED with message() once it ends (reset, for trailers); a block
// past kHeaderBlockCloseFactor times either limit closes the connection then and there.
//
//   HeaderBlockGuard guard(server.max_header_list_size, server.max_headers);
//   guard.BeginBlock();                                  // HEADERS begins
//   if (!guard.Add(name.size(), value.size())) {         // each field
//     switch (guard.OnOverLimit(stream_id)) { ... }
//   }
//   if (guard.over_limit(stream_id)) { guard.EndOverLimit(); answer(guard.message()); }
//
// nghttp2 decodes one header block at a time, so one guard serves every stream of a connection.
// On the happy path it costs two adds and two compares per field.
// Thread-safety: none; a guard belongs to one connection, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_HEADER_BLOCK_GUARD_H_
#define QPOOL_DAEMON_SERVER_HEADER_BLOCK_GUARD_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/server/abuse_budget.h"

namespace qpool::server {

class HeaderBlockGuard {
 public:
  // What a field over a limit means (OnOverLimit).
  enum class OverLimit : uint8_t {
    kFirst,  // the block's first field over a limit: drop the stream's call, count it (by
             // over_count()) and spend the header-limit budget
    kRest,   // a later field of that block: decoded (HPACK stays in step), not stored
    kFlood,  // past kHeaderBlockCloseFactor times a limit: close the connection now
  };

  HeaderBlockGuard(uint32_t max_header_list_size, uint32_t max_headers)
      : max_header_list_size_(max_header_list_size), max_headers_(max_headers) {}

  // A header block begins: counting starts over (a block nghttp2 itself rejected may have left an
  // over-limit stream behind).
  void BeginBlock() {
    bytes_ = 0;
    headers_ = 0;
    over_limit_stream_ = 0;
  }
  // Counts one field (RFC 9113 6.5.2: its name and value octets plus 32). True while the block is
  // within both limits: the field may be stored.
  bool Add(size_t name_len, size_t value_len) {
    bytes_ += name_len + value_len + 32;
    return ++headers_ <= max_headers_ && bytes_ <= max_header_list_size_;
  }
  // Add() returned false for a field of stream `stream_id`'s block.
  OverLimit OnOverLimit(int32_t stream_id) {
    if (bytes_ > uint64_t{kHeaderBlockCloseFactor} * max_header_list_size_ ||
        headers_ > kHeaderBlockCloseFactor * max_headers_) {
      // Past this, decoding the rest to keep HPACK in step would cost what the peer decides.
      return OverLimit::kFlood;
    }
    if (over_limit_stream_ == stream_id) return OverLimit::kRest;
    over_limit_stream_ = stream_id;
    over_count_ = headers_ > max_headers_;
    return OverLimit::kFirst;
  }
  // Whether the block of stream `stream_id` (a stream id is never 0) went over a limit.
  bool over_limit(int32_t stream_id) const { return stream_id == over_limit_stream_; }
  // The over-limit block ended (and is answered): forgets it.
  void EndOverLimit() { over_limit_stream_ = 0; }
  // Which limit the last over-limit block broke: server.max_headers (else the size).
  bool over_count() const { return over_count_; }
  // The grpc-message of the answer to the last over-limit block.
  std::string message() const {
    return absl::StrCat("qpool: request headers over ",
                        over_count_ ? absl::StrCat("server.max_headers (", max_headers_, " fields)")
                                    : absl::StrCat("server.max_header_list_size (",
                                                   max_header_list_size_, " bytes)"));
  }

 private:
  const uint32_t max_header_list_size_;
  const uint32_t max_headers_;
  uint64_t bytes_ = 0;             // of the block being decoded, as RFC 9113 counts them
  uint32_t headers_ = 0;           // its fields
  int32_t over_limit_stream_ = 0;  // the stream whose block went over a limit; 0: none
  bool over_count_ = false;        // it went over server.max_headers (else the size)
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_HEADER_BLOCK_GUARD_H_
