// Fault injection and call accounting for qdrant-emulator: decides, per received call, whether to
// delay it, park it (hang), fail it (before or after its handler) and whether to close connections
// after it; counts calls per method and applied writes per collection.
//
//   FaultInjector faults(/*seed=*/1);
//   QPOOL_RETURN_IF_ERROR(faults.SetConfigJson(R"({"methods": {"Upsert": {"error_rate": 1}}})"));
//   CallPlan plan = faults.OnCall("qdrant.Points/Upsert");   // counts the call
//
// The configuration is the JSON form of qpool.emulator.FaultConfig (proto/qdrant/
// emulator_control.proto); docs/emulator.md lists every knob.
// Thread-safety: all methods are thread-safe; one short critical section per call.
#ifndef QPOOL_EMULATOR_FAULTS_H_
#define QPOOL_EMULATOR_FAULTS_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "qdrant/emulator_control.pb.h"

namespace qpool::emulator {

enum class CloseMode { kNone, kGoaway, kAbrupt };

struct InjectedError {
  absl::StatusCode code = absl::StatusCode::kUnavailable;
  std::string message;
  uint32_t retry_after_s = 0;  // 0: no retry-after trailer.
  bool after_handler = false;  // Run the handler first ("processed then failed").
};

// What to do with one call.
struct CallPlan {
  absl::Duration delay;  // Before the handler runs.
  bool hang = false;     // Park until the hang is lifted.
  std::optional<InjectedError> error;
  CloseMode close_after = CloseMode::kNone;  // Close connections once this call is handled.
};

class FaultInjector {
 public:
  explicit FaultInjector(uint64_t seed) : random_(seed) {}

  // Replaces the whole configuration. kInvalidArgument (naming the field) when it does not parse or
  // a value is out of range; the previous configuration stays then.
  absl::Status SetConfig(const FaultConfig& config) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SetConfigJson(absl::string_view json) ABSL_LOCKS_EXCLUDED(mu_);
  FaultConfig config() const ABSL_LOCKS_EXCLUDED(mu_);
  std::string ConfigJson() const ABSL_LOCKS_EXCLUDED(mu_);

  // Parks every call (of every method) while on; independent of per-method `hang` rules.
  void SetHangAll(bool hang) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a call of `method` received now would be parked.
  bool ShouldHang(absl::string_view method) const ABSL_LOCKS_EXCLUDED(mu_);

  // Counts a received call of `method` ("qdrant.Points/Upsert") and plans its faults.
  CallPlan OnCall(absl::string_view method) ABSL_LOCKS_EXCLUDED(mu_);

  void CountWrite(absl::string_view collection) ABSL_LOCKS_EXCLUDED(mu_);
  void CountInjectedError() ABSL_LOCKS_EXCLUDED(mu_);
  void CountGoaway() ABSL_LOCKS_EXCLUDED(mu_);
  void CountAbruptCloses(uint64_t connections) ABSL_LOCKS_EXCLUDED(mu_);
  void CountConnection() ABSL_LOCKS_EXCLUDED(mu_);
  // REST port accounting: a connection accepted / closed, a request read.
  void CountRestConnectionOpened() ABSL_LOCKS_EXCLUDED(mu_);
  void CountRestConnectionClosed() ABSL_LOCKS_EXCLUDED(mu_);
  void CountRestRequest() ABSL_LOCKS_EXCLUDED(mu_);
  // A call authenticated as `label` ("full", "read_only", "none", "refused").
  void CountKey(absl::string_view label) ABSL_LOCKS_EXCLUDED(mu_);
  // REST TLS: a handshake done, presenting the certificate named `common_name` (a full one) or
  // resuming a session (`resumed`; the name is not used then).
  void CountRestTlsHandshake(absl::string_view common_name, bool resumed) ABSL_LOCKS_EXCLUDED(mu_);
  // REST TLS: a client ended its connection, with a close_notify first or without.
  void CountRestTlsClientClose(bool close_notify) ABSL_LOCKS_EXCLUDED(mu_);
  // REST TLS: changed certificate files were taken (`loaded`) or refused.
  void CountRestTlsReload(bool loaded) ABSL_LOCKS_EXCLUDED(mu_);

  Counters counters() const ABSL_LOCKS_EXCLUDED(mu_);
  std::string CountersJson() const ABSL_LOCKS_EXCLUDED(mu_);
  void ResetCounters() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Rule {
    absl::Duration latency;
    absl::Duration jitter;
    double error_rate = 0;
    InjectedError error;
    bool hang = false;
  };

  const Rule* FindRule(absl::string_view method) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  FaultConfig config_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Rule> rules_ ABSL_GUARDED_BY(mu_);  // Keyed as in config_.
  CloseMode close_mode_ ABSL_GUARDED_BY(mu_) = CloseMode::kGoaway;
  bool hang_all_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 random_ ABSL_GUARDED_BY(mu_);
  uint64_t calls_since_close_ ABSL_GUARDED_BY(mu_) = 0;
  Counters counters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> calls_ ABSL_GUARDED_BY(mu_);
  uint32_t rest_connections_open_ ABSL_GUARDED_BY(mu_) = 0;  // Not zeroed by ResetCounters.
};

// "UNAVAILABLE", "unavailable", "14" -> kUnavailable; kInvalidArgument for anything else.
absl::StatusOr<absl::StatusCode> ParseStatusCode(absl::string_view text);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_FAULTS_H_
