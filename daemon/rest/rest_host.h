// What a worker's REST side (RestWorker) asks of its worker: what both protocols share.
// Implemented by server::Worker.
//
// Thread-safety: called on the worker's thread only.
#ifndef QPOOL_DAEMON_REST_REST_HOST_H_
#define QPOOL_DAEMON_REST_REST_HOST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace qpool::auth {
struct ApiKeys;
enum class KeyMode : uint8_t;
}  // namespace qpool::auth

namespace qpool::pool {
class NodePool;
}  // namespace qpool::pool

namespace qpool::rest {

class RestHost {
 public:
  virtual ~RestHost() = default;
  // The node for a new REST request: the worker's NodeRouter (health, ejection, connection up,
  // power of two choices) over the REST pools' state (`pools`, by slot).
  virtual size_t PickRestNode(const std::vector<pool::NodePool*>& pools) = 0;
  // For a retry: a healthy, not ejected node other than `except` with a connection up.
  virtual std::optional<size_t> PickRestNodeOtherThan(
      size_t except, const std::vector<pool::NodePool*>& pools) = 0;
  // Passive health: an attempt on `node` ended; `failed` for a lost or refused connection or a
  // 503 (connect failures too).
  virtual void OnRestAttemptEnd(size_t node, bool failed) = 0;
  // A REST app connection closed (the process-wide count of app connections).
  virtual void OnRestSessionClosed() = 0;
  // The REST side has no app connection left (drain bookkeeping).
  virtual void OnRestIdle() = 0;
  // The API keys qpoold puts on REST requests (upstream.api_key_*), as they are now; null when it
  // holds none for the apps' calls. A request keeps the snapshot it started with for all of its
  // attempts.
  virtual std::shared_ptr<const auth::ApiKeys> RestApiKeys() = 0;
  // upstream.api_key_mode.
  virtual auth::KeyMode RestKeyMode() const = 0;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REST_HOST_H_
