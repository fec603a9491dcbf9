// A medium or deep health probe of one node, run on the I/O worker that owns a pool for it: a
// unary gRPC call qpoold makes itself, on a stream of the pool's own connections. It asks the
// node's NodePool for a stream like an app's Call (so a node with no connection gets one opened,
// within max_connections), sends one request message, and judges the answer.
//
//   ProbeSpec spec = ProbeSpec::QdrantHealthCheck();
//   // on the worker's thread:
//   worker.probes().StartProbe(node, spec, timeout, [](health::ProbeResult r) { ... });
//
// Ownership: the worker's NodeProbes owns its probes (StartProbe / OnProbeDone). A probe reports
// once through its callback, then asks the worker to delete it on a later turn.
// Thread-safety: none; a probe lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_HEALTH_PROBE_H_
#define QPOOL_DAEMON_SERVER_HEALTH_PROBE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/common/event_loop.h"
#include "daemon/health/health_scheduler.h"
#include "daemon/pool/node_pool.h"
#include "daemon/server/upstream_connection.h"

namespace qpool::server {

class Worker;

// What to call and how to judge the answer.
struct ProbeSpec {
  enum class Check : uint8_t {
    kStatusOk,          // grpc-status 0
    kQdrantHealth,      // grpc-status 0; HealthCheckReply.version (field 2) is reported
    kGrpcHealth,        // grpc-status 0 and HealthCheckResponse.status (field 1) == SERVING (1)
    kCollectionExists,  // grpc-status 0 and CollectionExistsResponse.result.exists == true
  };
  std::string path;     // "/qdrant.Qdrant/HealthCheck"
  std::string message;  // the request message, serialized (without the gRPC frame prefix)
  Check check = Check::kStatusOk;
  std::string description;  // for messages: "collection docs"
  std::string api_key;      // sent as metadata `api-key` when not empty

  static ProbeSpec QdrantHealthCheck();
  static ProbeSpec GrpcHealthCheck();
  static ProbeSpec ListCollections();
  static ProbeSpec CollectionExists(const std::string& collection);
};

// Judges a finished probe's answer: `grpc_status` (-1: none) and the response body (gRPC framed).
// Exposed for unit tests.
health::ProbeResult JudgeProbeAnswer(const ProbeSpec& spec, int grpc_status,
                                     std::string_view grpc_message, std::string_view body);

class HealthProbe : public pool::StreamWaiter, public ProbeStream {
 public:
  using Done = std::function<void(health::ProbeResult)>;

  HealthProbe(Worker& worker, pool::NodePool& pool, std::string authority, ProbeSpec spec,
              Duration timeout, Done done);
  ~HealthProbe() override;

  HealthProbe(const HealthProbe&) = delete;
  HealthProbe& operator=(const HealthProbe&) = delete;

  void Start();

  // pool::StreamWaiter.
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;

  // ProbeStream.
  void OnProbeHeader(std::string_view name, std::string_view value) override;
  void OnProbeData(const uint8_t* data, size_t len) override;
  void OnProbeClosed(uint32_t h2_error_code, bool connection_lost) override;

 private:
  static constexpr size_t kMaxBody = 64 * 1024;

  void Submit(UpstreamConnection& conn);
  void OnTimeout();
  void Finish(health::ProbeResult result);

  Worker& worker_;
  pool::NodePool& pool_;
  const std::string authority_;
  ProbeSpec spec_;  // api_key filled in from the worker at Submit() when empty
  const Duration timeout_;
  Done done_;
  std::unique_ptr<Timer> timer_;
  std::shared_ptr<H2Transport> conn_;  // while the stream is open
  int32_t stream_id_ = -1;
  int grpc_status_ = -1;
  std::string grpc_message_;
  std::string body_;
  bool finished_ = false;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_HEALTH_PROBE_H_
