// Method classes: a bounded label for calls, decided from the gRPC :path by qpool's one table of
// Qdrant methods (daemon/common/qdrant_methods.h), folded to four values for metrics.
//
//   ClassifyPath("/qdrant.Points/Search")            -> MethodClass::kRead
//   ClassifyPath("/qdrant.Points/Upsert")            -> MethodClass::kWrite
//   ClassifyPath("/qdrant.Collections/Create")       -> MethodClass::kAdmin
//   ClassifyPath("/my.Service/Anything")             -> MethodClass::kOther
//
// Never a label from request content: an unknown path is kOther, whatever it is.
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_METRICS_METHOD_CLASS_H_
#define QPOOL_DAEMON_METRICS_METHOD_CLASS_H_

#include <cstddef>
#include <string_view>

#include "daemon/common/qdrant_methods.h"

namespace qpool::metrics {

enum class MethodClass : uint8_t { kRead = 0, kWrite = 1, kAdmin = 2, kOther = 3 };
inline constexpr size_t kMethodClassCount = 4;

// "read", "write", "admin", "other".
const char* MethodClassName(MethodClass method_class);

// The class of a gRPC method from its :path ("/package.Service/Method"). No allocation.
MethodClass ClassifyPath(std::string_view path);

// The class of a Qdrant method (FindQdrantMethod); kOther for null.
MethodClass ClassifyMethod(const QdrantMethod* method);

// The class of a REST call from its route (daemon/common/qdrant_methods.h): its gRPC twin's, or
// the route's own kind; kOther for an unknown route (null). Never from the raw path.
MethodClass ClassifyRestRoute(const QdrantRestRoute* route);

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_METHOD_CLASS_H_
