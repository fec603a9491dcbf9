// What a worker's REST side (RestWorker) asks of its worker: app connection bookkeeping and the API
// keys. (Node picks and passive health go to the worker's pool::Balancer, which the RestWorker is
// handed directly.) Implemented by server::Worker.
//
// Thread-safety: called on the worker's thread only.
#ifndef QPOOL_DAEMON_REST_REST_HOST_H_
#define QPOOL_DAEMON_REST_REST_HOST_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace qpool::auth {
struct ApiKeys;
enum class KeyMode : uint8_t;
}  // namespace qpool::auth

namespace qpool::rest {

class RestHost {
 public:
  virtual ~RestHost() = default;
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
