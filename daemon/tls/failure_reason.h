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

}  // namespace qpool::tls

#endif  // QPOOL_DAEMON_TLS_FAILURE_REASON_H_
