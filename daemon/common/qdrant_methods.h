// Qdrant's gRPC methods as qpool sees them: one table, read by the metrics module (the bounded
// `class` label: read, write, admin, other) and by the retry module (which calls may be sent
// again). A method not in the table is "other" for metrics and never repeated.
//
//   const QdrantMethod* m = FindQdrantMethod("/qdrant.Points/Delete");
//   m->kind == MethodKind::kSelectorWrite;  m->selector.selector_field == 3
//
// Field numbers come from Qdrant's points.proto (/work/shared/QDRANT.md).
// Thread-safety: immutable data and pure functions.
#ifndef QPOOL_DAEMON_COMMON_QDRANT_METHODS_H_
#define QPOOL_DAEMON_COMMON_QDRANT_METHODS_H_

#include <cstdint>
#include <string_view>

#include "absl/types/span.h"

namespace qpool {

enum class MethodKind : uint8_t {
  kRead,           // reads: repeatable
  kSelectorWrite,  // a points write whose effect depends on how the request names its points
  kFilterWrite,    // a points write that may touch other points when repeated (UpdateBatch)
  kAdmin,          // collection, alias, snapshot, shard key, index changes: never repeated
};

// How a kSelectorWrite names its points in its request message.
struct SelectorRule {
  int selector_field = 0;     // field number of its PointsSelector; 0: names ids by construction
  int conditional_field = 0;  // a field that makes the write conditional (update_filter); 0: none
  bool absent_selector_is_filter = true;  // a request without a selector counts as a filter
};

struct QdrantMethod {
  std::string_view service;  // "qdrant.Points"
  std::string_view method;   // "Delete"
  MethodKind kind;
  SelectorRule selector;  // kSelectorWrite only
};

// Every method qpool knows.
absl::Span<const QdrantMethod> QdrantMethods();

// A route of Qdrant's REST API and the gRPC method it is the REST form of: REST calls get their
// metrics class and retry class from that method's row above, so both protocols are declared once.
// A route with no gRPC twin (GET /, /healthz, /telemetry, ...) names none and carries its kind.
//
//   const QdrantRestRoute* r = FindQdrantRestRoute("POST", "/collections/c/points/delete");
//   r->grpc_method == "/qdrant.Points/Delete"
//
// For a kSelectorWrite the JSON body names the points as the gRPC message does: "points": [ids]
// (id-scoped) or "filter": {...} (filter-scoped); "update_filter" makes an upsert conditional.
struct QdrantRestRoute {
  std::string_view verb;         // "POST"
  std::string_view pattern;      // "/collections/{}/points/delete"; "{}" matches one segment
  std::string_view grpc_method;  // "/qdrant.Points/Delete" (a :path); empty: the route has no twin
  MethodKind kind;               // used only when grpc_method is empty
};

absl::Span<const QdrantRestRoute> QdrantRestRoutes();

// The route `verb` and `path` (no query string) match; null for a route qpool does not know. No
// allocation.
const QdrantRestRoute* FindQdrantRestRoute(std::string_view verb, std::string_view path);

// The gRPC method a route is the REST form of; null when it has none.
const QdrantMethod* GrpcTwinOf(const QdrantRestRoute& route);

// The route's kind: its gRPC twin's, or its own.
MethodKind KindOf(const QdrantRestRoute& route);

// The method `path` ("/qdrant.Points/Search", as in :path) names; null when it is not a method of
// the table (or not a method path at all). No allocation.
const QdrantMethod* FindQdrantMethod(std::string_view path);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_QDRANT_METHODS_H_
