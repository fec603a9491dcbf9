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

// The method `path` ("/qdrant.Points/Search", as in :path) names; null when it is not a method of
// the table (or not a method path at all). No allocation.
const QdrantMethod* FindQdrantMethod(std::string_view path);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_QDRANT_METHODS_H_
