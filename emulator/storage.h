// In-memory collections of dense-vector points with exact (brute-force) nearest-neighbour search,
// as qdrant-emulator serves them. Independent of gRPC: requests and results are Qdrant's own
// protobuf messages, errors are absl::Status with Qdrant's codes and message shapes.
//
//   Storage storage;
//   QPOOL_RETURN_IF_ERROR(storage.CreateCollection("docs", params));
//   QPOOL_ASSIGN_OR_RETURN(std::shared_ptr<Collection> docs, storage.GetCollection("docs"));
//   QPOOL_RETURN_IF_ERROR(docs->Upsert(request.points()).status());
//
// Scores follow Qdrant: Cosine and Dot are similarities (higher is closer; Cosine vectors are
// normalised on insert), Euclid and Manhattan are distances (lower is closer). Results are ordered
// closest first, ties by ascending point id.
// Thread-safety: all public methods are thread-safe. A Collection stays usable after it has been
// deleted from the Storage (callers holding it finish their call on the old data).
#ifndef QPOOL_EMULATOR_STORAGE_H_
#define QPOOL_EMULATOR_STORAGE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "emulator/point_id.h"
#include "qdrant/collections.pb.h"
#include "qdrant/points.pb.h"

namespace qpool::emulator {

// What to return with each point.
struct Projection {
  // Unset selector: `payload_by_default` decides (Qdrant: true for Get/Scroll, false for search).
  const qdrant::WithPayloadSelector* with_payload = nullptr;
  bool payload_by_default = false;
  bool with_vectors = false;
};

struct SearchParams {
  std::vector<float> vector;               // Must have the collection's dimension.
  const qdrant::Filter* filter = nullptr;  // Optional; must pass ValidateFilter.
  uint64_t limit = 10;
  uint64_t offset = 0;
  std::optional<float> score_threshold;  // Similarity >= it, or distance <= it.
  std::optional<PointKey> exclude;       // Point left out of the results (query by id).
};

// Similarity or distance between two vectors of the same size, for `distance`; Cosine expects
// vectors that are already normalised (so it equals Dot).
float Score(qdrant::Distance distance, const float* a, const float* b, size_t dim);
// Whether score `a` ranks before score `b` for `distance`.
bool Closer(qdrant::Distance distance, float a, float b);

class Collection {
 public:
  Collection(uint64_t dim, qdrant::Distance distance) : dim_(dim), distance_(distance) {}

  uint64_t dim() const { return dim_; }
  qdrant::Distance distance() const { return distance_; }
  uint64_t PointsCount() const ABSL_LOCKS_EXCLUDED(mu_);

  // Inserts or overwrites every point, or none: kInvalidArgument when an id or a vector is bad
  // ("Wrong input: Vector dimension error: expected dim: 4, got 3"). Returns the operation id.
  absl::StatusOr<uint64_t> Upsert(
      const google::protobuf::RepeatedPtrField<qdrant::PointStruct>& points)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Deletes the named ids (missing ones are ignored) or every point matching the filter.
  absl::StatusOr<uint64_t> Delete(const qdrant::PointsSelector& selector) ABSL_LOCKS_EXCLUDED(mu_);

  // The points that exist among `ids`, in request order, each once.
  absl::Status Get(const google::protobuf::RepeatedPtrField<qdrant::PointId>& ids,
                   const Projection& projection,
                   google::protobuf::RepeatedPtrField<qdrant::RetrievedPoint>* out) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Up to `limit` points in id order starting at `offset` (inclusive); `next` is the id of the
  // following point, if any.
  absl::Status Scroll(const qdrant::Filter* filter, const std::optional<PointKey>& offset,
                      uint64_t limit, const Projection& projection,
                      google::protobuf::RepeatedPtrField<qdrant::RetrievedPoint>* out,
                      std::optional<PointKey>* next) const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint64_t> Count(const qdrant::Filter* filter) const ABSL_LOCKS_EXCLUDED(mu_);
  // Exact search over every point matching the filter.
  absl::Status Search(const SearchParams& params, const Projection& projection,
                      google::protobuf::RepeatedPtrField<qdrant::ScoredPoint>* out) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The stored (for Cosine: normalised) vector of a point; kNotFound if absent.
  absl::StatusOr<std::vector<float>> VectorOf(const PointKey& id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Checks the size of a query vector and normalises it for Cosine.
  absl::StatusOr<std::vector<float>> PrepareQuery(std::vector<float> vector) const;

 private:
  struct Point {
    PointKey id;
    qdrant::Struct payload;
  };

  // Copies payload and vector of the point in `slot` into `out` (RetrievedPoint or ScoredPoint).
  template <typename Out>
  void Project(size_t slot, const Projection& projection, Out* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool SlotMatches(size_t slot, const qdrant::Filter* filter) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void EraseSlot(size_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t dim_;
  const qdrant::Distance distance_;
  mutable absl::Mutex mu_;
  // Dense storage: slot i holds points_[i] and vectors_[i * dim_, (i + 1) * dim_).
  std::vector<Point> points_ ABSL_GUARDED_BY(mu_);
  std::vector<float> vectors_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<PointKey, size_t> slot_of_ ABSL_GUARDED_BY(mu_);  // Ordered for Scroll.
  uint64_t next_operation_id_ ABSL_GUARDED_BY(mu_) = 0;
};

class Storage {
 public:
  // kAlreadyExists "Wrong input: Collection `x` already exists!"; kInvalidArgument for a
  // configuration the emulator cannot serve (named vectors, size 0, unknown distance).
  absl::Status CreateCollection(const std::string& name, const qdrant::VectorsConfig& config)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Whether it existed.
  bool DeleteCollection(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // kNotFound "Not found: Collection `x` doesn't exist!".
  absl::StatusOr<std::shared_ptr<Collection>> GetCollection(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::string> ListCollections() const ABSL_LOCKS_EXCLUDED(mu_);  // Sorted.

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Collection>> collections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_STORAGE_H_
