#include "daemon/metrics/method_class.h"

#include "daemon/common/qdrant_methods.h"

namespace qpool::metrics {
const char* MethodClassName(MethodClass method_class) {
  switch (method_class) {
    case MethodClass::kRead:
      return "read";
    case MethodClass::kWrite:
      return "write";
    case MethodClass::kAdmin:
      return "admin";
    case MethodClass::kOther:
      return "other";
  }
  return "other";
}

namespace {

MethodClass ClassOfKind(MethodKind kind) {
  switch (kind) {
    case MethodKind::kRead:
      return MethodClass::kRead;
    case MethodKind::kSelectorWrite:
    case MethodKind::kFilterWrite:
      return MethodClass::kWrite;
    case MethodKind::kAdmin:
      return MethodClass::kAdmin;
  }
  return MethodClass::kOther;
}

}  // namespace

MethodClass ClassifyRestRoute(const QdrantRestRoute* route) {
  return route == nullptr ? MethodClass::kOther : ClassOfKind(KindOf(*route));
}

MethodClass ClassifyPath(std::string_view path) {
  // Id- and filter-scoped writes are both "write": which one a call is depends on its payload,
  // and labels never come from payloads.
  const QdrantMethod* method = FindQdrantMethod(path);
  return method == nullptr ? MethodClass::kOther : ClassOfKind(method->kind);
}

}  // namespace qpool::metrics
