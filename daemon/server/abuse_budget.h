// Per-connection budgets for what a well-behaved HTTP/2 client does rarely: resetting streams,
// PINGs without data in between, SETTINGS, PRIORITY, DATA frames that carry nothing, and header
// blocks over server.max_header_list_size. Each is a token bucket: `burst` tokens to start with
// and at most, `per_second` more each second. A connection that runs one dry is told
// GOAWAY(ENHANCE_YOUR_CALM) and closed, and the reason is counted
// (qpool_downstream_abuse_total{reason}, docs/metrics.md). The limits and why they are safe for
// gRPC clients are in docs/security.md.
//
// AbuseGuard holds one connection's budgets and decides; the connection acts on its answers:
//
//   AbuseGuard abuse;
//   if (!abuse.TakeFreePing() && !abuse.Spend(AbuseReason::kPingFlood, loop.Now()) &&
//       abuse.MarkAbusive()) {
//     ...  // count, GOAWAY(ENHANCE_YOUR_CALM), close
//   }
//
// Thread-safety: none; a guard and its buckets belong to one connection, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_ABUSE_BUDGET_H_
#define QPOOL_DAEMON_SERVER_ABUSE_BUDGET_H_

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "daemon/common/event_loop.h"

namespace qpool::server {

// Why qpoold closed an app connection as abusive: the `reason` label of
// qpool_downstream_abuse_total.
enum class AbuseReason : uint8_t {
  kRapidReset,       // RST_STREAM beyond the reset budget (CVE-2023-44487)
  kPingFlood,        // PINGs with no response data sent in between, beyond the budget
  kSettingsFlood,    // SETTINGS frames beyond the budget
  kPriorityFlood,    // PRIORITY frames beyond the budget
  kEmptyFrames,      // DATA frames with no payload and no END_STREAM beyond the budget
  kHeaderLimit,      // request header blocks over the limits, beyond the budget
  kHeaderBlockFlood  // one header block decoding to more than 4x the limits (an HPACK bomb)
};
inline constexpr size_t kAbuseReasonCount = 7;

inline constexpr std::string_view AbuseReasonName(AbuseReason reason) {
  constexpr std::array<std::string_view, kAbuseReasonCount> kNames = {
      "rapid_reset",  "ping_flood",   "settings_flood",    "priority_flood",
      "empty_frames", "header_limit", "header_block_flood"};
  return kNames[static_cast<size_t>(reason)];
}

// A budget: `burst` tokens at most, `per_second` regained each second.
struct BudgetSpec {
  uint32_t burst;
  uint32_t per_second;
};

// The budgets per app connection (docs/security.md says why each is safe for gRPC clients).
// Resets: nghttp2 1.57's own defaults for its rapid-reset limit.
inline constexpr BudgetSpec kResetBudget{1000, 33};
// PINGs that follow a previous PING with no HEADERS or DATA sent in between (keepalive): gRPC
// clients send at most 2 such PINGs before they see data again, at most one per 10 s in grpc-go.
// PINGs after qpoold sent data (BDP probes) cost nothing.
inline constexpr BudgetSpec kPingBudget{100, 10};
// SETTINGS: one at start; gRPC's BDP estimator sends a few more as the window grows.
inline constexpr BudgetSpec kSettingsBudget{100, 5};
// PRIORITY: gRPC sends none; browsers send a handful per connection.
inline constexpr BudgetSpec kPriorityBudget{100, 10};
// DATA frames with no payload and no END_STREAM: no gRPC client sends them.
inline constexpr BudgetSpec kEmptyFrameBudget{100, 10};
// Request header blocks over server.max_header_list_size / server.max_headers (each one is
// answered RESOURCE_EXHAUSTED; a connection that keeps sending them is closed).
inline constexpr BudgetSpec kHeaderLimitBudget{10, 1};
// One header block that decodes to more than this multiple of the limits closes its connection
// at once: nghttp2 must decode a rejected block to its end to keep HPACK state in step, and this
// bounds what that costs.
inline constexpr uint32_t kHeaderBlockCloseFactor = 4;

class TokenBucket {
 public:
  explicit TokenBucket(BudgetSpec spec) : spec_(spec), tokens_(spec.burst) {}

  // Takes one token at `now` (monotonic, never earlier than a previous call's); false when the
  // budget is spent.
  bool Take(MonoTime now) {
    if (tokens_ < spec_.burst && spec_.per_second > 0) {
      if (last_ == MonoTime{}) last_ = now;
      // Whole tokens regained since `last_`; the remainder of the period carries over.
      const auto period = std::chrono::nanoseconds(std::chrono::seconds(1)) / spec_.per_second;
      const int64_t regained = (now - last_) / period;
      if (regained > 0) {
        tokens_ =
            static_cast<uint32_t>(std::min<int64_t>(spec_.burst, int64_t{tokens_} + regained));
        last_ += regained * period;
      }
    }
    if (tokens_ == 0) return false;
    if (tokens_ == spec_.burst) last_ = now;  // full: regaining starts from this take
    tokens_--;
    return true;
  }

  uint32_t tokens() const { return tokens_; }

 private:
  BudgetSpec spec_;
  uint32_t tokens_;
  MonoTime last_{};
};

// One app connection's abuse budgets, one TokenBucket per budgeted AbuseReason (all but
// kHeaderBlockFlood, which closes at once), and the rule that makes a PING after response frames
// free.
class AbuseGuard {
 public:
  // Takes one token from the budget for `reason` (not kHeaderBlockFlood) at `now`; false when it
  // is spent: the connection closes for `reason`.
  bool Spend(AbuseReason reason, MonoTime now) {
    return budgets_[static_cast<size_t>(reason)].Take(now);
  }
  // The app sent a PING (not an ack): true when it is free, as qpoold sent HEADERS or DATA since
  // the app's last PING (gRPC's BDP probes); otherwise it must Spend(kPingFlood). No clock read.
  bool TakeFreePing() { return std::exchange(sent_since_ping_, false); }
  // qpoold sent HEADERS or DATA.
  void OnResponseFrameSent() { sent_since_ping_ = true; }
  // The connection closes as abusive: true the first time only (count it and say GOAWAY then).
  bool MarkAbusive() { return !std::exchange(abusive_, true); }
  bool abusive() const { return abusive_; }

 private:
  static_assert(static_cast<size_t>(AbuseReason::kHeaderBlockFlood) == kAbuseReasonCount - 1,
                "every reason but the last has a budget");
  // By AbuseReason, in its order.
  std::array<TokenBucket, kAbuseReasonCount - 1> budgets_{
      TokenBucket(kResetBudget),      TokenBucket(kPingBudget),
      TokenBucket(kSettingsBudget),   TokenBucket(kPriorityBudget),
      TokenBucket(kEmptyFrameBudget), TokenBucket(kHeaderLimitBudget)};
  bool sent_since_ping_ = false;  // HEADERS or DATA went out since the app's last PING
  bool abusive_ = false;          // closing with GOAWAY(ENHANCE_YOUR_CALM)
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_ABUSE_BUDGET_H_
