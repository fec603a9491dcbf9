// Why a TLS connection to a node failed: the `reason` label of
// qpool_upstream_tls_failures_total, carried on the connect failure's absl::Status as a payload.
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_TLS_FAILURE_REASON_H_
#define QPOOL_DAEMON_TLS_FAILURE_REASON_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace qpool::tls {

enum class FailureReason : uint8_t {
  kExpired = 0,
  kUnknownCa = 1,
  kNameMismatch = 2,
  kVerify = 3,
  kClientCert = 4,
  kAlpn = 5,
  kHandshake = 6,
};
inline constexpr size_t kFailureReasonCount = 7;
// "expired", "unknown_ca", "name_mismatch", "verify", "client_cert", "alpn", "handshake".
const char* FailureReasonName(FailureReason reason);
// `status` with `reason` attached (a payload; the message is unchanged).
absl::Status WithFailureReason(absl::Status status, FailureReason reason);
// The reason attached to `status`, if any.
std::optional<FailureReason> FailureReasonOf(const absl::Status& status);

// Why a connect failed before (or without) TLS: the other values of
// qpool_upstream_connect_failures_total{reason}, with the FailureReason names and "other".
enum class ConnectFailure : uint8_t {
  kConnect = 0,  // resolving the name or the TCP connect failed (refused, unreachable)
  kTimeout = 1,  // upstream.connect_timeout passed
};
// `status` with `failure` attached (a payload; the message is unchanged).
absl::Status WithConnectFailure(absl::Status status, ConnectFailure failure);
std::optional<ConnectFailure> ConnectFailureOf(const absl::Status& status);

// The `reason` of a failed connect: a FailureReason (0..kFailureReasonCount-1), then "connect",
// "timeout" and "other" (nothing attached: the HTTP/2 or HTTP handshake broke, the node closed).
inline constexpr size_t kConnectFailureSlots = kFailureReasonCount + 3;
size_t ConnectFailureSlot(const absl::Status& status);
const char* ConnectFailureSlotName(size_t slot);

}  // namespace qpool::tls

#endif  // QPOOL_DAEMON_TLS_FAILURE_REASON_H_
