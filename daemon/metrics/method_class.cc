#include "daemon/metrics/method_class.h"

#include <array>
#include <cstdint>

namespace qpool::metrics {
namespace {

struct Entry {
  std::string_view service;  // fully qualified, e.g. "qdrant.Points"
  std::string_view method;   // exact, or a prefix when it ends with '*'
  MethodClass method_class;
};

// Qdrant's methods (QDRANT.md "Method classes"): read, write (id- and filter-scoped writes alike:
// the payload decides which, and metrics never read payloads), admin (the "never repeat" schema and
// snapshot operations). Anything else, including unknown Qdrant methods, is "other".
constexpr std::array<Entry, 39> kTable = {{
    {"qdrant.Points", "Search*", MethodClass::kRead},  // also SearchMatrix*
    {"qdrant.Points", "Query*", MethodClass::kRead},
    {"qdrant.Points", "Recommend*", MethodClass::kRead},
    {"qdrant.Points", "Discover*", MethodClass::kRead},
    {"qdrant.Points", "Get", MethodClass::kRead},
    {"qdrant.Points", "Scroll", MethodClass::kRead},
    {"qdrant.Points", "Count", MethodClass::kRead},
    {"qdrant.Points", "Facet", MethodClass::kRead},
    {"qdrant.Points", "Upsert", MethodClass::kWrite},
    {"qdrant.Points", "Delete", MethodClass::kWrite},
    {"qdrant.Points", "SetPayload", MethodClass::kWrite},
    {"qdrant.Points", "OverwritePayload", MethodClass::kWrite},
    {"qdrant.Points", "DeletePayload", MethodClass::kWrite},
    {"qdrant.Points", "ClearPayload", MethodClass::kWrite},
    {"qdrant.Points", "UpdateVectors", MethodClass::kWrite},
    {"qdrant.Points", "DeleteVectors", MethodClass::kWrite},
    {"qdrant.Points", "UpdateBatch", MethodClass::kWrite},
    {"qdrant.Points", "CreateFieldIndex", MethodClass::kAdmin},
    {"qdrant.Points", "DeleteFieldIndex", MethodClass::kAdmin},
    {"qdrant.Collections", "Get", MethodClass::kRead},
    {"qdrant.Collections", "List", MethodClass::kRead},
    {"qdrant.Collections", "CollectionExists", MethodClass::kRead},
    {"qdrant.Collections", "ListCollectionAliases", MethodClass::kRead},
    {"qdrant.Collections", "ListAliases", MethodClass::kRead},
    {"qdrant.Collections", "CollectionClusterInfo", MethodClass::kRead},
    {"qdrant.Collections", "ListShardKeys", MethodClass::kRead},
    {"qdrant.Collections", "Create", MethodClass::kAdmin},
    {"qdrant.Collections", "Update", MethodClass::kAdmin},
    {"qdrant.Collections", "Delete", MethodClass::kAdmin},
    {"qdrant.Collections", "UpdateAliases", MethodClass::kAdmin},
    {"qdrant.Collections", "UpdateCollectionClusterSetup", MethodClass::kAdmin},
    {"qdrant.Collections", "CreateShardKey", MethodClass::kAdmin},
    {"qdrant.Collections", "DeleteShardKey", MethodClass::kAdmin},
    {"qdrant.Snapshots", "List*", MethodClass::kRead},
    {"qdrant.Snapshots", "Create*", MethodClass::kAdmin},
    {"qdrant.Snapshots", "Delete*", MethodClass::kAdmin},
    {"qdrant.Qdrant", "HealthCheck", MethodClass::kRead},
    {"grpc.health.v1.Health", "Check", MethodClass::kRead},
    {"grpc.health.v1.Health", "Watch", MethodClass::kRead},
}};

bool Matches(std::string_view pattern, std::string_view method) {
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    return method.substr(0, pattern.size()) == pattern;
  }
  return method == pattern;
}

}  // namespace

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

MethodClass ClassifyPath(std::string_view path) {
  if (path.size() < 3 || path.front() != '/') return MethodClass::kOther;
  path.remove_prefix(1);
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) return MethodClass::kOther;
  const std::string_view service = path.substr(0, slash);
  const std::string_view method = path.substr(slash + 1);
  for (const Entry& entry : kTable) {
    if (entry.service == service && Matches(entry.method, method)) return entry.method_class;
  }
  return MethodClass::kOther;
}

}  // namespace qpool::metrics
