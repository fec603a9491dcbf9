// Small status helpers missing from Abseil 20220623 (Debian 12), under the names later Abseil
// releases use, so that moving to a newer Abseil means deleting this file.
#ifndef QPOOL_DAEMON_COMMON_STATUS_H_
#define QPOOL_DAEMON_COMMON_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the current function when `expr` (an absl::Status) is not OK.
#define QPOOL_RETURN_IF_ERROR(expr)                                   \
  do {                                                                \
    if (::absl::Status _qpool_status = (expr); !_qpool_status.ok()) { \
      return _qpool_status;                                           \
    }                                                                 \
  } while (0)

#define QPOOL_STATUS_CONCAT_INNER_(a, b) a##b
#define QPOOL_STATUS_CONCAT_(a, b) QPOOL_STATUS_CONCAT_INNER_(a, b)

// `QPOOL_ASSIGN_OR_RETURN(auto x, Foo());` assigns the value of an absl::StatusOr or returns its
// error.
#define QPOOL_ASSIGN_OR_RETURN(lhs, rexpr) \
  QPOOL_ASSIGN_OR_RETURN_IMPL_(QPOOL_STATUS_CONCAT_(_qpool_statusor_, __LINE__), lhs, rexpr)

#define QPOOL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace qpool {

// Prefixes `status`'s message with `context` ("context: message"), keeping its code.
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_STATUS_H_
