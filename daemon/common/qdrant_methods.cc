#include "daemon/common/qdrant_methods.h"

#include <array>

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

}  // namespace

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
