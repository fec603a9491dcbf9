// gRPC-over-HTTP/2 wire details the proxy reads or writes itself: the grpc-timeout header and the
// trailers of a locally generated answer. Everything else passes through untouched.
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_SERVER_GRPC_WIRE_H_
#define QPOOL_DAEMON_SERVER_GRPC_WIRE_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "daemon/common/event_loop.h"

namespace qpool::server {

// The longest timeout ParseGrpcTimeout returns: 100,000 hours (about 11 years), far past any real
// deadline and far from overflowing a time point it is added to.
inline constexpr Duration kMaxGrpcTimeout = std::chrono::hours(100'000);

// Parses a grpc-timeout value: 1 to 8 ASCII digits and a unit, one of H M S m u n. nullopt when
// malformed (the spec says to treat the call as having no deadline then, as gRPC servers do).
// Values over kMaxGrpcTimeout (up to 99999999H is valid on the wire) read as kMaxGrpcTimeout.
std::optional<Duration> ParseGrpcTimeout(std::string_view value);

// Formats a positive duration as a grpc-timeout value, in the finest unit that fits in 8 digits,
// rounding up so the upstream never sees a later deadline than the client's. Zero or negative
// durations format as "1n".
std::string FormatGrpcTimeout(Duration timeout);

// Percent-encodes a grpc-message value as the gRPC spec asks (bytes outside 0x20-0x7E, and '%').
std::string PercentEncodeGrpcMessage(absl::string_view message);

// The gRPC status code number of an absl::Status (the numbering is the same).
int GrpcCode(const absl::Status& status);

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_GRPC_WIRE_H_
