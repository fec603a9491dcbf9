// Which Qdrant calls qpool may send again, decided from the method (qpool's one table of Qdrant
// methods, daemon/common/qdrant_methods.h) and, for writes whose effect depends on how they name
// their points, from the request itself.
//
//   read                 Search*, Query*, Recommend*, Discover*, Get, Scroll, Count, Facet,
//                        SearchMatrix*, Collections Get/List/CollectionExists/alias and shard-key
//                        listings/CollectionClusterInfo, HealthCheck, Snapshots List*: repeatable.
//   id-scoped write      Upsert; Delete, SetPayload, OverwritePayload, DeletePayload, ClearPayload,
//                        DeleteVectors whose points selector names ids; UpdateVectors (it names
//                        ids): repeating them leaves the same end state.
//   filter-scoped write  the same calls with a filter selector (or none), a conditional Upsert or
//                        UpdateVectors (update_filter), UpdateBatch: a repeat may touch other
//                        points.
//   never repeat         collection create/update/delete, aliases, snapshots, shard keys, cluster
//                        setup, field indexes, and anything unknown.
//
// The request is read, never changed: a gzip-compressed message is inflated for the inspection
// only. A request that cannot be read (truncated, corrupt, over the inspection limit) is treated as
// a filter-scoped write, the safe side.
//
// Thread-safety: a MethodClassifier is immutable after construction; share it freely.
#ifndef QPOOL_DAEMON_RETRY_METHOD_CLASS_H_
#define QPOOL_DAEMON_RETRY_METHOD_CLASS_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "daemon/common/qdrant_methods.h"

namespace qpool::retry {

enum class RetryClass { kRead, kIdScopedWrite, kFilterScopedWrite, kNeverRepeat };

// "read", "id_scoped_write", "filter_scoped_write", "never".
const char* RetryClassName(RetryClass retry_class);

class MethodClassifier {
 public:
  // The built-in table above.
  MethodClassifier();

  // Overrides (from config): `path` ("/qdrant.Points/Search") gets `retry_class` whatever its body.
  void Override(std::string path, RetryClass retry_class);

  // True when Classify() needs the call's first request message.
  bool NeedsFirstMessage(std::string_view path) const;

  // The class of a call to `path`. `first_message` is the first gRPC message as framed on the
  // wire (1-byte compressed flag, 4-byte length, bytes); `grpc_encoding` is the request's
  // grpc-encoding header ("" when absent). Both are ignored for methods that do not need them.
  RetryClass Classify(std::string_view path, std::string_view first_message,
                      std::string_view grpc_encoding) const;

  // REST (daemon/common/qdrant_methods.h, QdrantRestRoute): a route takes its gRPC twin's class,
  // overrides included; a twin that depends on the request is decided from the JSON body's
  // top-level keys ("points" = ids, "filter", "update_filter"). A route with no twin is read or
  // never by its kind; an unknown route (null) is never.
  //
  // True when ClassifyRest() needs the request body.
  bool RestNeedsBody(const QdrantRestRoute* route) const;
  // `body` is the request body as sent; `content_encoding` its Content-Encoding ("" when absent;
  // gzip and deflate are inflated for the inspection only). An unreadable body counts as a filter.
  RetryClass ClassifyRest(const QdrantRestRoute* route, std::string_view body,
                          std::string_view content_encoding) const;

  // How much of a compressed message is inflated for inspection at most; a larger message is
  // treated as unreadable. 4 MiB, the per-call replay buffer's default.
  static constexpr size_t kMaxInflatedBytes = 4 << 20;

 private:
  absl::flat_hash_map<std::string, RetryClass> fixed_;
  absl::flat_hash_map<std::string, SelectorRule> by_selector_;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_METHOD_CLASS_H_
