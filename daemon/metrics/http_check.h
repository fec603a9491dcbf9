// A one-shot HTTP GET for `qpoold healthcheck` (the container image's HEALTHCHECK, which has no
// curl): succeeds when the URL answers 2xx within the timeout.
//
//   absl::Status status = HttpCheck("http://127.0.0.1:6336/readyz", absl::Seconds(2));
//
// Thread-safety: a free function; blocks the calling thread for at most about `timeout`.
#ifndef QPOOL_DAEMON_METRICS_HTTP_CHECK_H_
#define QPOOL_DAEMON_METRICS_HTTP_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace qpool::metrics {

// `url` is http://HOST[:PORT][/PATH], HOST a name, an IPv4 literal or [IPv6]; PORT defaults to
// 80. OK for a 2xx answer; kInvalidArgument for a URL it cannot use (https included),
// kUnavailable when nothing answers, kDeadlineExceeded past `timeout`, kFailedPrecondition for
// any other status (the message holds the status and the body's first line).
absl::Status HttpCheck(const std::string& url, absl::Duration timeout);

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_HTTP_CHECK_H_
