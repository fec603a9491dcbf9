#include "daemon/common/qdrant_methods.h"

#include <algorithm>
#include <array>
#include <functional>

namespace qpool {
namespace {

constexpr MethodKind kRead = MethodKind::kRead;
constexpr MethodKind kAdmin = MethodKind::kAdmin;

constexpr QdrantMethod Read(std::string_view service, std::string_view method) {
  return {service, method, kRead, {}};
}
constexpr QdrantMethod Admin(std::string_view service, std::string_view method) {
  return {service, method, kAdmin, {}};
}
constexpr QdrantMethod Write(std::string_view method, SelectorRule rule) {
  return {"qdrant.Points", method, MethodKind::kSelectorWrite, rule};
}

// DeletePoints.points = 3, SetPayloadPoints/DeletePayloadPoints .points_selector = 5,
// ClearPayloadPoints.points = 3, DeletePointVectors.points_selector = 3; UpsertPoints.update_filter
// = 6 makes an upsert conditional, and UpdatePointVectors is treated alike.
constexpr std::array<QdrantMethod, 52> kMethods = {{
    Read("qdrant.Points", "Search"),
    Read("qdrant.Points", "SearchBatch"),
    Read("qdrant.Points", "SearchGroups"),
    Read("qdrant.Points", "SearchMatrixPairs"),
    Read("qdrant.Points", "SearchMatrixOffsets"),
    Read("qdrant.Points", "Query"),
    Read("qdrant.Points", "QueryBatch"),
    Read("qdrant.Points", "QueryGroups"),
    Read("qdrant.Points", "Recommend"),
    Read("qdrant.Points", "RecommendBatch"),
    Read("qdrant.Points", "RecommendGroups"),
    Read("qdrant.Points", "Discover"),
    Read("qdrant.Points", "DiscoverBatch"),
    Read("qdrant.Points", "Get"),
    Read("qdrant.Points", "Scroll"),
    Read("qdrant.Points", "Count"),
    Read("qdrant.Points", "Facet"),
    Write("Upsert", {0, 6, false}),
    Write("UpdateVectors", {0, 6, false}),
    Write("Delete", {3, 0, true}),
    Write("SetPayload", {5, 0, true}),
    Write("OverwritePayload", {5, 0, true}),
    Write("DeletePayload", {5, 0, true}),
    Write("ClearPayload", {3, 0, true}),
    Write("DeleteVectors", {3, 0, true}),
    {"qdrant.Points", "UpdateBatch", MethodKind::kFilterWrite, {}},
    Admin("qdrant.Points", "CreateFieldIndex"),
    Admin("qdrant.Points", "DeleteFieldIndex"),
    Read("qdrant.Collections", "Get"),
    Read("qdrant.Collections", "List"),
    Read("qdrant.Collections", "CollectionExists"),
    Read("qdrant.Collections", "ListCollectionAliases"),
    Read("qdrant.Collections", "ListAliases"),
    Read("qdrant.Collections", "CollectionClusterInfo"),
    Read("qdrant.Collections", "ListShardKeys"),
    Admin("qdrant.Collections", "Create"),
    Admin("qdrant.Collections", "Update"),
    Admin("qdrant.Collections", "Delete"),
    Admin("qdrant.Collections", "UpdateAliases"),
    Admin("qdrant.Collections", "UpdateCollectionClusterSetup"),
    Admin("qdrant.Collections", "CreateShardKey"),
    Admin("qdrant.Collections", "DeleteShardKey"),
    Read("qdrant.Snapshots", "List"),
    Read("qdrant.Snapshots", "ListFull"),
    Admin("qdrant.Snapshots", "Create"),
    Admin("qdrant.Snapshots", "CreateFull"),
    Admin("qdrant.Snapshots", "Delete"),
    Admin("qdrant.Snapshots", "DeleteFull"),
    Read("qdrant.Qdrant", "HealthCheck"),
    Read("grpc.health.v1.Health", "Check"),
    Read("grpc.health.v1.Health", "Watch"),
    Read("grpc.health.v1.Health", "List"),
}};

constexpr QdrantRestRoute Rest(std::string_view verb, std::string_view pattern,
                               std::string_view grpc_method) {
  return {verb, pattern, grpc_method, kAdmin};
}
constexpr QdrantRestRoute RestOnly(std::string_view verb, std::string_view pattern,
                                   MethodKind kind) {
  return {verb, pattern, "", kind};
}

// Qdrant 1.19's REST routes (/work/shared/QDRANT.md). Order matters only where two patterns match
// the same path: the first wins (".../points/search" before ".../points/{id}" is not needed since
// the verbs differ, but "/collections/aliases" comes before "/collections/{}").
constexpr QdrantRestRoute kRestRoutes[] = {
    RestOnly("GET", "/", kRead),
    RestOnly("GET", "/healthz", kRead),
    RestOnly("GET", "/livez", kRead),
    RestOnly("GET", "/readyz", kRead),
    RestOnly("GET", "/telemetry", kRead),
    RestOnly("GET", "/metrics", kRead),
    RestOnly("GET", "/cluster", kRead),
    RestOnly("GET", "/issues", kRead),
    RestOnly("DELETE", "/issues", kAdmin),
    RestOnly("PUT", "/quotas", kAdmin),
    Rest("GET", "/collections", "/qdrant.Collections/List"),
    Rest("GET", "/aliases", "/qdrant.Collections/ListAliases"),
    Rest("POST", "/collections/aliases", "/qdrant.Collections/UpdateAliases"),
    Rest("GET", "/collections/{}", "/qdrant.Collections/Get"),
    Rest("PUT", "/collections/{}", "/qdrant.Collections/Create"),
    Rest("PATCH", "/collections/{}", "/qdrant.Collections/Update"),
    Rest("DELETE", "/collections/{}", "/qdrant.Collections/Delete"),
    Rest("GET", "/collections/{}/exists", "/qdrant.Collections/CollectionExists"),
    Rest("GET", "/collections/{}/aliases", "/qdrant.Collections/ListCollectionAliases"),
    Rest("GET", "/collections/{}/cluster", "/qdrant.Collections/CollectionClusterInfo"),
    Rest("POST", "/collections/{}/cluster", "/qdrant.Collections/UpdateCollectionClusterSetup"),
    Rest("GET", "/collections/{}/shards", "/qdrant.Collections/ListShardKeys"),
    Rest("PUT", "/collections/{}/shards", "/qdrant.Collections/CreateShardKey"),
    Rest("POST", "/collections/{}/shards/delete", "/qdrant.Collections/DeleteShardKey"),
    Rest("PUT", "/collections/{}/index", "/qdrant.Points/CreateFieldIndex"),
    Rest("DELETE", "/collections/{}/index/{}", "/qdrant.Points/DeleteFieldIndex"),
    Rest("GET", "/collections/{}/snapshots", "/qdrant.Snapshots/List"),
    Rest("POST", "/collections/{}/snapshots", "/qdrant.Snapshots/Create"),
    Rest("DELETE", "/collections/{}/snapshots/{}", "/qdrant.Snapshots/Delete"),
    Rest("GET", "/snapshots", "/qdrant.Snapshots/ListFull"),
    Rest("POST", "/snapshots", "/qdrant.Snapshots/CreateFull"),
    Rest("DELETE", "/snapshots/{}", "/qdrant.Snapshots/DeleteFull"),
    Rest("GET", "/collections/{}/points/{}", "/qdrant.Points/Get"),
    Rest("POST", "/collections/{}/points", "/qdrant.Points/Get"),
    Rest("PUT", "/collections/{}/points", "/qdrant.Points/Upsert"),
    Rest("POST", "/collections/{}/points/scroll", "/qdrant.Points/Scroll"),
    Rest("POST", "/collections/{}/points/count", "/qdrant.Points/Count"),
    Rest("POST", "/collections/{}/facet", "/qdrant.Points/Facet"),
    Rest("POST", "/collections/{}/points/search", "/qdrant.Points/Search"),
    Rest("POST", "/collections/{}/points/search/batch", "/qdrant.Points/SearchBatch"),
    Rest("POST", "/collections/{}/points/search/groups", "/qdrant.Points/SearchGroups"),
    Rest("POST", "/collections/{}/points/search/matrix/pairs", "/qdrant.Points/SearchMatrixPairs"),
    Rest("POST", "/collections/{}/points/search/matrix/offsets",
         "/qdrant.Points/SearchMatrixOffsets"),
    Rest("POST", "/collections/{}/points/query", "/qdrant.Points/Query"),
    Rest("POST", "/collections/{}/points/query/batch", "/qdrant.Points/QueryBatch"),
    Rest("POST", "/collections/{}/points/query/groups", "/qdrant.Points/QueryGroups"),
    Rest("POST", "/collections/{}/points/recommend", "/qdrant.Points/Recommend"),
    Rest("POST", "/collections/{}/points/recommend/batch", "/qdrant.Points/RecommendBatch"),
    Rest("POST", "/collections/{}/points/recommend/groups", "/qdrant.Points/RecommendGroups"),
    Rest("POST", "/collections/{}/points/discover", "/qdrant.Points/Discover"),
    Rest("POST", "/collections/{}/points/discover/batch", "/qdrant.Points/DiscoverBatch"),
    Rest("POST", "/collections/{}/points/delete", "/qdrant.Points/Delete"),
    Rest("PUT", "/collections/{}/points/vectors", "/qdrant.Points/UpdateVectors"),
    Rest("POST", "/collections/{}/points/vectors/delete", "/qdrant.Points/DeleteVectors"),
    Rest("POST", "/collections/{}/points/payload", "/qdrant.Points/SetPayload"),
    Rest("PUT", "/collections/{}/points/payload", "/qdrant.Points/OverwritePayload"),
    Rest("POST", "/collections/{}/points/payload/delete", "/qdrant.Points/DeletePayload"),
    Rest("POST", "/collections/{}/points/payload/clear", "/qdrant.Points/ClearPayload"),
    Rest("POST", "/collections/{}/points/batch", "/qdrant.Points/UpdateBatch"),
    RestOnly("PUT", "/collections/{}/snapshots/recover", kAdmin),
    RestOnly("POST", "/collections/{}/snapshots/upload", kAdmin),
    RestOnly("POST", "/cluster/recover", kAdmin),
    RestOnly("DELETE", "/cluster/peer/{}", kAdmin),
};

// True when `path` matches `pattern` segment by segment ("{}" matches any one non-empty segment).
// Character by character: most routes differ from a path within its first few bytes.
bool PathMatches(std::string_view pattern, std::string_view path) {
  size_t i = 0;
  size_t j = 0;
  while (i < pattern.size() && j < path.size()) {
    if (pattern[i] == '{') {             // "{}", a whole segment of the pattern
      if (path[j] == '/') return false;  // an empty segment
      while (j < path.size() && path[j] != '/') ++j;
      i += 2;
      continue;
    }
    if (pattern[i] != path[j]) return false;
    ++i;
    ++j;
  }
  return i == pattern.size() && j == path.size();
}

}  // namespace

absl::Span<const QdrantRestRoute> QdrantRestRoutes() { return kRestRoutes; }

const QdrantRestRoute* FindQdrantRestRoute(std::string_view verb, std::string_view path) {
  // A trailing slash is the same route to actix ("/collections/" = "/collections").
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  for (const QdrantRestRoute& route : kRestRoutes) {
    if (route.verb == verb && PathMatches(route.pattern, path)) return &route;
  }
  return nullptr;
}

const QdrantMethod* GrpcTwinOf(const QdrantRestRoute& route) {
  // Looked up once per table route (every REST request asks, for its metrics label and retry
  // class); a route from elsewhere is looked up each time.
  constexpr size_t kCount = sizeof(kRestRoutes) / sizeof(kRestRoutes[0]);
  static const std::array<const QdrantMethod*, kCount> kTwins = [] {
    std::array<const QdrantMethod*, kCount> twins{};
    for (size_t i = 0; i < kCount; ++i) {
      const std::string_view method = kRestRoutes[i].grpc_method;
      twins[i] = method.empty() ? nullptr : FindQdrantMethod(method);
    }
    return twins;
  }();
  const std::less<const QdrantRestRoute*> before;
  if (!before(&route, kRestRoutes) && before(&route, kRestRoutes + kCount)) {
    return kTwins[static_cast<size_t>(&route - kRestRoutes)];
  }
  return route.grpc_method.empty() ? nullptr : FindQdrantMethod(route.grpc_method);
}

MethodKind KindOf(const QdrantRestRoute& route) {
  const QdrantMethod* twin = GrpcTwinOf(route);
  return twin != nullptr ? twin->kind : route.kind;
}

absl::Span<const QdrantMethod> QdrantMethods() { return kMethods; }

const QdrantMethod* FindQdrantMethod(std::string_view path) {
  if (path.size() < 3 || path.front() != '/') return nullptr;
  path.remove_prefix(1);
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) return nullptr;
  const std::string_view service = path.substr(0, slash);
  const std::string_view method = path.substr(slash + 1);
  for (const QdrantMethod& entry : kMethods) {
    if (entry.method == method && entry.service == service) return &entry;
  }
  return nullptr;
}

}  // namespace qpool
