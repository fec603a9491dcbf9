// The access log: one line per finished call (gRPC or REST) for a sampled fraction of the calls,
// off by default (log.access_log_sample, docs/operations.md "Access log"). Written to stderr in
// log.format, whatever log.level is:
//   2026-11-27T03:20:56.123Z info access protocol=grpc method=/qdrant.Points/Search
//     retry_class=read status=0 duration_ms=0.412 node=10.0.0.7:6334 attempts=1
//     peer=127.0.0.1:51234                                         (one line)
//   {"time":"...","severity":"INFO","msg":"access","logger":"access","protocol":"rest",
//    "method":"POST","route":"/collections/{}/points/search","retry_class":"read",
//    "status":200,"duration_ms":1.250,"node":"10.0.0.7:6333","attempts":1,
//    "peer":"127.0.0.1:40112"}
// Only bounded names go in a line: a Qdrant method or REST route template from qpool's table
// (daemon/common/qdrant_methods.h), never a raw path (REST paths carry collection names and ids).
//
// The front doors ask AccessLogSampled() once per finished call, where they count it into the
// metrics (Call::RecordCallEnd, RestSession::FinishRequest); while the log is off that is one
// relaxed load and a branch, and nothing is formatted.
//
// Thread-safety: SetAccessLogSample from any thread (a config reload) while workers call
// AccessLogSampled and WriteAccessLine concurrently.
#ifndef QPOOL_DAEMON_COMMON_ACCESS_LOG_H_
#define QPOOL_DAEMON_COMMON_ACCESS_LOG_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/optimization.h"
#include "daemon/common/event_loop.h"

namespace qpool {

// What one finished call was.
struct AccessRecord {
  std::string_view protocol;  // "grpc" or "rest"
  // gRPC: the :path of a Qdrant method ("/qdrant.Points/Search"), "other" for a path not in the
  // table; REST: the request method ("POST").
  std::string_view method;
  // REST: the route template ("/collections/{}/points/search"), "other" for a path no route
  // matches; gRPC: empty (the line has no route field).
  std::string_view route;
  // The retry class (read, id_scoped_write, filter_scoped_write, never); "-" when qpool never had
  // to decide it (a gRPC write whose class depends on its body, answered at its first attempt).
  std::string_view retry_class;
  // gRPC: the grpc-status the app got (-1: none, the stream was reset); REST: the HTTP status (499:
  // the app closed its connection before the answer).
  int status = 0;
  Duration duration{};    // from the request's headers to the end of the answer
  std::string_view node;  // the node of the last attempt ("host:port"); empty: none was sent
  uint32_t attempts = 0;  // upstream attempts sent, retries included, hedges not
  std::string_view peer;  // the app's address, "ip:port"
};

namespace access_log_internal {
// The fraction of calls logged; 0: off.
inline std::atomic<double> sample{0};
}  // namespace access_log_internal

// Sets the fraction of finished calls written: 0 (off, the default) to 1 (every call). Any
// thread; calls that finish from now on see it.
void SetAccessLogSample(double fraction);

// Whether the call finishing now gets a line: false at once while the log is off (no draw), else
// when a draw from `random` (uniform in [0, 1)) is below the fraction.
inline bool AccessLogSampled(Random& random) {
  const double fraction = access_log_internal::sample.load(std::memory_order_relaxed);
  if (ABSL_PREDICT_TRUE(fraction <= 0)) return false;
  return random.Uniform01() < fraction;
}

// The line of `record` in `format` (text|json) at `time` (logging.h's FormatFieldsLine, logger
// "access"; field order as above; duration_ms with three decimals; an empty node is "-").
std::string FormatAccessLine(const AccessRecord& record, std::string_view format,
                             std::chrono::system_clock::time_point time);

// Writes the line of `record` to stderr in the current log.format (WriteFieldsLine).
void WriteAccessLine(const AccessRecord& record);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_ACCESS_LOG_H_
