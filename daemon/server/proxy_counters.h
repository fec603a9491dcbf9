// The process-wide downstream counters: app connections, calls, local answers, buffered bytes and
// the hostile-client limits, summed over every worker and both front doors (gRPC and REST).
// The Proxy owns one; each Worker writes it, Proxy::stats() and the scrape read it.
//
// Thread-safety: relaxed atomics, written by the workers and read from any thread; a reader sees
// each counter on its own, not a consistent set.
#ifndef QPOOL_DAEMON_SERVER_PROXY_COUNTERS_H_
#define QPOOL_DAEMON_SERVER_PROXY_COUNTERS_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "daemon/server/abuse_budget.h"
#include "daemon/server/stream_guard.h"

namespace qpool::server {

struct ProxyCounters {
  std::atomic<uint64_t> downstream_accepted{0};
  std::atomic<uint64_t> downstream_refused{0};          // over server.max_client_connections
  std::atomic<uint64_t> downstream_protocol_errors{0};  // garbage, HTTP/1.1, bad preface
  std::atomic<int64_t> downstream_open{0};
  std::atomic<uint64_t> calls_started{0};
  std::atomic<uint64_t> local_replies{0};  // answered by qpoold itself (limits, deadlines, errors)
  std::atomic<int64_t> buffered_bytes{0};  // message bytes held in calls, both directions
  std::atomic<uint64_t> transparent_retries{0};  // refused by Qdrant unprocessed, sent again
  std::atomic<int64_t> replay_bytes{0};  // request copies kept for transparent replay, all calls
  // Hostile clients (docs/security.md): connections closed with GOAWAY(ENHANCE_YOUR_CALM), by
  // AbuseReason; streams answered RESOURCE_EXHAUSTED for [0] server.max_header_list_size,
  // [1] server.max_headers; connections closed by server.handshake_timeout and
  // server.idle_timeout.
  std::array<std::atomic<uint64_t>, kAbuseReasonCount> downstream_abuse{};
  std::array<std::atomic<uint64_t>, 2> downstream_header_limit_rejections{};
  std::atomic<uint64_t> downstream_handshake_timeouts{0};
  std::atomic<uint64_t> downstream_idle_timeouts{0};
  // App streams reset on both sides, by StreamResetReason (stream_guard.h).
  std::array<std::atomic<uint64_t>, kStreamResetReasonCount> downstream_stream_resets{};
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_PROXY_COUNTERS_H_
