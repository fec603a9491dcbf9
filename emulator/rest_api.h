// Qdrant's REST API (the routes of Qdrant 1.x's `openapi.json` that qdrant-emulator serves) on top
// of the same Handlers the gRPC front uses: a request's JSON is turned into the gRPC request
// message, the handler runs, its reply is turned into Qdrant's REST JSON. No HTTP here: RestServer
// (rest_server.h) reads requests, applies faults and writes the RestReply.
//
//   RestApi api(handlers);
//   std::optional<RestCall> call = api.Resolve("POST", "/collections/docs/points/count", "{}");
//   if (!call) return RestApi::NoRoute("POST", path);
//   faults.OnCall(call->method);   // "qdrant.Points/Count": REST calls count as their gRPC twin
//   RestReply reply = call->run();
//
// Answers: success `{"result": ..., "status": "ok", "time": seconds}`; errors
// `{"status": {"error": "..."}, "time": seconds}` with Qdrant's HTTP codes (HttpStatusFor).
// Thread-safety: Resolve and the returned RestCall are safe to use from any thread (Handlers is).
#ifndef QPOOL_EMULATOR_REST_API_H_
#define QPOOL_EMULATOR_REST_API_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "emulator/handlers.h"

namespace qpool::emulator {

struct RestReply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  uint32_t retry_after_s = 0;  // > 0: sent as `Retry-After`.
};

// One request matched to its route, ready to run.
struct RestCall {
  // The name the call is counted under and fault rules match: the gRPC method the route mirrors
  // ("qdrant.Points/Delete" for POST .../points/delete), "qdrant.Qdrant/HealthCheck" for GET /,
  // and "rest.Probe/healthz" (livez, readyz) for the probes gRPC has no twin of.
  std::string method;
  // Non-empty for writes (collection create/delete, upsert, points delete): counted per
  // collection when the handler succeeds, as the gRPC front does.
  std::string write_collection;
  // Served without an API key, as Qdrant serves GET / and the probes.
  bool public_route = false;
  // Runs the handler and builds the answer (also for handler errors).
  std::function<RestReply()> run;
};

class RestApi {
 public:
  // `handlers` must outlive the RestApi and every RestCall it returns.
  explicit RestApi(const Handlers& handlers) : handlers_(handlers) {}

  // `target` is the request target (path and query, percent-encoded). nullopt when no route
  // matches the method and path.
  std::optional<RestCall> Resolve(absl::string_view method, absl::string_view target,
                                  std::string body) const;

  // 404 for an unknown route, in Qdrant's error shape.
  static RestReply NoRoute(absl::string_view method, absl::string_view target);
  // Qdrant's error shape with `http_status`.
  static RestReply Error(int http_status, absl::string_view message, double seconds = 0);
  // A handler's (or an injected fault's) status as Qdrant's REST answer; validation errors are
  // worded as Qdrant's REST layer words them.
  static RestReply FromStatus(const absl::Status& status, double seconds = 0);
  // INVALID_ARGUMENT 400 (422 for "Validation error..."), NOT_FOUND 404, ALREADY_EXISTS 409,
  // UNAUTHENTICATED 401, PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503,
  // DEADLINE_EXCEEDED and CANCELLED 408 (Qdrant's timeout), UNIMPLEMENTED 501, ABORTED 409,
  // OUT_OF_RANGE 400, anything else 500.
  static int HttpStatusFor(absl::StatusCode code, absl::string_view message);

 private:
  const Handlers& handlers_;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_REST_API_H_
