// Qdrant's API semantics for the methods qdrant-emulator implements: request message in, response
// message or absl::Status out. No gRPC here; server.cc maps these onto the gRPC services and adds
// fault injection around them.
//
//   Handlers handlers(storage, {.version = "1.19.0"});
//   absl::Status status = handlers.Upsert(request, &response);
//
// Thread-safety: all methods are thread-safe (they only touch the thread-safe Storage).
#ifndef QPOOL_EMULATOR_HANDLERS_H_
#define QPOOL_EMULATOR_HANDLERS_H_

#include <string>

#include "absl/status/status.h"
#include "emulator/storage.h"
#include "qdrant/collections.pb.h"
#include "qdrant/health.pb.h"
#include "qdrant/points.pb.h"
#include "qdrant/qdrant.pb.h"

namespace qpool::emulator {

struct HandlerOptions {
  // What HealthCheck reports. The official JS client warns unless the major version equals its own
  // and the minor differs by at most 1; 1.19.0 matches the pinned @qdrant/js-client-grpc 1.19.0.
  std::string version = "1.19.0";
  std::string title = "qdrant - vector search engine";
  std::string commit = "qdrant-emulator";
};

class Handlers {
 public:
  Handlers(Storage& storage, HandlerOptions options)
      : storage_(storage), options_(std::move(options)) {}

  absl::Status HealthCheck(const qdrant::HealthCheckRequest& request,
                           qdrant::HealthCheckReply* reply) const;
  absl::Status HealthCheckV1(const grpc::health::v1::HealthCheckRequest& request,
                             grpc::health::v1::HealthCheckResponse* reply) const;

  absl::Status CreateCollection(const qdrant::CreateCollection& request,
                                qdrant::CollectionOperationResponse* reply) const;
  absl::Status GetCollection(const qdrant::GetCollectionInfoRequest& request,
                             qdrant::GetCollectionInfoResponse* reply) const;
  absl::Status ListCollections(const qdrant::ListCollectionsRequest& request,
                               qdrant::ListCollectionsResponse* reply) const;
  absl::Status DeleteCollection(const qdrant::DeleteCollection& request,
                                qdrant::CollectionOperationResponse* reply) const;
  absl::Status CollectionExists(const qdrant::CollectionExistsRequest& request,
                                qdrant::CollectionExistsResponse* reply) const;

  absl::Status Upsert(const qdrant::UpsertPoints& request,
                      qdrant::PointsOperationResponse* reply) const;
  absl::Status Delete(const qdrant::DeletePoints& request,
                      qdrant::PointsOperationResponse* reply) const;
  absl::Status Get(const qdrant::GetPoints& request, qdrant::GetResponse* reply) const;
  absl::Status Count(const qdrant::CountPoints& request, qdrant::CountResponse* reply) const;
  absl::Status Search(const qdrant::SearchPoints& request, qdrant::SearchResponse* reply) const;
  absl::Status Query(const qdrant::QueryPoints& request, qdrant::QueryResponse* reply) const;
  absl::Status Scroll(const qdrant::ScrollPoints& request, qdrant::ScrollResponse* reply) const;

 private:
  Storage& storage_;
  const HandlerOptions options_;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_HANDLERS_H_
