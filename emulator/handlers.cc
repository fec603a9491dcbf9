#include "emulator/handlers.h"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/common/status.h"

namespace qpool::emulator {
namespace {

// Seconds since `start`, for the `time` field of every answer.
double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

absl::Status CheckVectorName(const std::string& name) {
  if (name.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("Wrong input: Not existing vector name error: ", name));
}

absl::Status CheckLimit(uint64_t limit) {
  if (limit > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "Validation error: limit: value 0 invalid, must be 1 or larger");
}

bool WantsVectors(bool has, const qdrant::WithVectorsSelector& selector) {
  if (!has) return false;
  return selector.has_enable() ? selector.enable() : selector.has_include();
}

void FillUpdateResult(uint64_t operation_id, bool wait, qdrant::PointsOperationResponse* reply) {
  reply->mutable_result()->set_operation_id(operation_id);
  reply->mutable_result()->set_status(wait ? qdrant::Completed : qdrant::Acknowledged);
}

}  // namespace

absl::Status Handlers::HealthCheck(const qdrant::HealthCheckRequest&,
                                   qdrant::HealthCheckReply* reply) const {
  reply->set_title(options_.title);
  reply->set_version(options_.version);
  reply->set_commit(options_.commit);
  return absl::OkStatus();
}

absl::Status Handlers::HealthCheckV1(const grpc::health::v1::HealthCheckRequest&,
                                     grpc::health::v1::HealthCheckResponse* reply) const {
  reply->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
  return absl::OkStatus();
}

absl::Status Handlers::CreateCollection(const qdrant::CreateCollection& request,
                                        qdrant::CollectionOperationResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_RETURN_IF_ERROR(
      storage_.CreateCollection(request.collection_name(), request.vectors_config()));
  reply->set_result(true);
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::GetCollection(const qdrant::GetCollectionInfoRequest& request,
                                     qdrant::GetCollectionInfoResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  qdrant::CollectionInfo* info = reply->mutable_result();
  info->set_status(qdrant::Green);
  info->mutable_optimizer_status()->set_ok(true);
  info->set_segments_count(1);
  uint64_t points = collection->PointsCount();
  info->set_points_count(points);
  info->set_indexed_vectors_count(0);
  qdrant::CollectionParams* params = info->mutable_config()->mutable_params();
  params->set_shard_number(1);
  params->set_replication_factor(1);
  params->set_write_consistency_factor(1);
  qdrant::VectorParams* vectors = params->mutable_vectors_config()->mutable_params();
  vectors->set_size(collection->dim());
  vectors->set_distance(collection->distance());
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::ListCollections(const qdrant::ListCollectionsRequest&,
                                       qdrant::ListCollectionsResponse* reply) const {
  absl::Time start = absl::Now();
  for (std::string& name : storage_.ListCollections()) {
    reply->add_collections()->set_name(std::move(name));
  }
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::DeleteCollection(const qdrant::DeleteCollection& request,
                                        qdrant::CollectionOperationResponse* reply) const {
  absl::Time start = absl::Now();
  reply->set_result(storage_.DeleteCollection(request.collection_name()));
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::CollectionExists(const qdrant::CollectionExistsRequest& request,
                                        qdrant::CollectionExistsResponse* reply) const {
  absl::Time start = absl::Now();
  reply->mutable_result()->set_exists(storage_.GetCollection(request.collection_name()).ok());
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Upsert(const qdrant::UpsertPoints& request,
                              qdrant::PointsOperationResponse* reply) const {
  absl::Time start = absl::Now();
  if (request.has_update_filter()) {
    return absl::UnimplementedError("qdrant-emulator does not support upsert update_filter");
  }
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  QPOOL_ASSIGN_OR_RETURN(uint64_t operation_id, collection->Upsert(request.points()));
  FillUpdateResult(operation_id, request.wait(), reply);
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Delete(const qdrant::DeletePoints& request,
                              qdrant::PointsOperationResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  QPOOL_ASSIGN_OR_RETURN(uint64_t operation_id, collection->Delete(request.points()));
  FillUpdateResult(operation_id, request.wait(), reply);
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Get(const qdrant::GetPoints& request, qdrant::GetResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  Projection projection{&request.with_payload(), /*payload_by_default=*/true,
                        WantsVectors(request.has_with_vectors(), request.with_vectors())};
  QPOOL_RETURN_IF_ERROR(collection->Get(request.ids(), projection, reply->mutable_result()));
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Count(const qdrant::CountPoints& request,
                             qdrant::CountResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  QPOOL_ASSIGN_OR_RETURN(uint64_t count,
                         collection->Count(request.has_filter() ? &request.filter() : nullptr));
  reply->mutable_result()->set_count(count);
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Search(const qdrant::SearchPoints& request,
                              qdrant::SearchResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  QPOOL_RETURN_IF_ERROR(CheckVectorName(request.vector_name()));
  QPOOL_RETURN_IF_ERROR(CheckLimit(request.limit()));
  SearchParams params;
  QPOOL_ASSIGN_OR_RETURN(params.vector, collection->PrepareQuery(std::vector<float>(
                                            request.vector().begin(), request.vector().end())));
  params.filter = request.has_filter() ? &request.filter() : nullptr;
  params.limit = request.limit();
  params.offset = request.offset();
  if (request.has_score_threshold()) params.score_threshold = request.score_threshold();
  Projection projection{&request.with_payload(), /*payload_by_default=*/false,
                        WantsVectors(request.has_with_vectors(), request.with_vectors())};
  QPOOL_RETURN_IF_ERROR(collection->Search(params, projection, reply->mutable_result()));
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Query(const qdrant::QueryPoints& request,
                             qdrant::QueryResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  if (!request.prefetch().empty()) {
    return absl::UnimplementedError("qdrant-emulator does not support query prefetch");
  }
  QPOOL_RETURN_IF_ERROR(CheckVectorName(request.using_()));
  uint64_t limit = request.has_limit() ? request.limit() : 10;
  QPOOL_RETURN_IF_ERROR(CheckLimit(limit));
  const qdrant::Filter* filter = request.has_filter() ? &request.filter() : nullptr;
  Projection projection{&request.with_payload(), /*payload_by_default=*/false,
                        WantsVectors(request.has_with_vectors(), request.with_vectors())};
  if (!request.has_query()) {
    // No query: points in id order, as Qdrant answers a query without `query`.
    google::protobuf::RepeatedPtrField<qdrant::RetrievedPoint> points;
    std::optional<PointKey> next;
    QPOOL_RETURN_IF_ERROR(collection->Scroll(filter, std::nullopt, request.offset() + limit,
                                             projection, &points, &next));
    for (int i = request.offset(); i < points.size(); ++i) {
      qdrant::ScoredPoint* point = reply->add_result();
      *point->mutable_id() = points[i].id();
      *point->mutable_payload() = points[i].payload();
      if (points[i].has_vectors()) *point->mutable_vectors() = points[i].vectors();
    }
    reply->set_time(SecondsSince(start));
    return absl::OkStatus();
  }
  const qdrant::Query& query = request.query();
  if (!query.has_nearest()) {
    return absl::UnimplementedError("qdrant-emulator supports only query.nearest");
  }
  SearchParams params;
  const qdrant::VectorInput& nearest = query.nearest();
  if (nearest.has_dense()) {
    QPOOL_ASSIGN_OR_RETURN(
        params.vector, collection->PrepareQuery(std::vector<float>(nearest.dense().data().begin(),
                                                                   nearest.dense().data().end())));
  } else if (nearest.has_id()) {
    QPOOL_ASSIGN_OR_RETURN(PointKey id, ToPointKey(nearest.id()));
    QPOOL_ASSIGN_OR_RETURN(params.vector, collection->VectorOf(id));
    params.exclude = id;
  } else {
    return absl::UnimplementedError(
        "qdrant-emulator supports query.nearest with a dense vector or a point id only");
  }
  params.filter = filter;
  params.limit = limit;
  params.offset = request.offset();
  if (request.has_score_threshold()) params.score_threshold = request.score_threshold();
  QPOOL_RETURN_IF_ERROR(collection->Search(params, projection, reply->mutable_result()));
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

absl::Status Handlers::Scroll(const qdrant::ScrollPoints& request,
                              qdrant::ScrollResponse* reply) const {
  absl::Time start = absl::Now();
  QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> collection,
                         storage_.GetCollection(request.collection_name()));
  std::optional<PointKey> offset;
  if (request.has_offset()) {
    QPOOL_ASSIGN_OR_RETURN(offset, ToPointKey(request.offset()));
  }
  uint64_t limit = request.has_limit() ? request.limit() : 10;
  QPOOL_RETURN_IF_ERROR(CheckLimit(limit));
  Projection projection{&request.with_payload(), /*payload_by_default=*/true,
                        WantsVectors(request.has_with_vectors(), request.with_vectors())};
  std::optional<PointKey> next;
  QPOOL_RETURN_IF_ERROR(collection->Scroll(request.has_filter() ? &request.filter() : nullptr,
                                           offset, limit, projection, reply->mutable_result(),
                                           &next));
  if (next.has_value()) *reply->mutable_next_page_offset() = ToPointId(*next);
  reply->set_time(SecondsSince(start));
  return absl::OkStatus();
}

}  // namespace qpool::emulator
