#include "emulator/storage.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/common/status.h"
#include "emulator/filter.h"

namespace qpool::emulator {
namespace {

absl::Status DimensionError(uint64_t expected, size_t got) {
  return absl::InvalidArgumentError(
      absl::StrCat("Wrong input: Vector dimension error: expected dim: ", expected, ", got ", got));
}

// The dense vector of an upserted point: the unnamed vector, or the one named "".
absl::StatusOr<std::vector<float>> DenseOf(const qdrant::PointStruct& point) {
  const qdrant::Vector* vector = nullptr;
  if (point.vectors().has_vector()) {
    vector = &point.vectors().vector();
  } else if (point.vectors().has_vectors()) {
    for (const auto& [name, named] : point.vectors().vectors().vectors()) {
      if (!name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Wrong input: Not existing vector name error: ", name));
      }
      vector = &named;
    }
  }
  if (vector == nullptr) return std::vector<float>();
    // Vector.data is deprecated in Qdrant's proto, but old clients still send it: read it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  const auto& data = vector->has_dense() ? vector->dense().data() : vector->data();
#pragma GCC diagnostic pop
  return std::vector<float>(data.begin(), data.end());
}

void Normalize(std::vector<float>& vector) {
  double norm = 0;
  for (float x : vector) norm += static_cast<double>(x) * x;
  norm = std::sqrt(norm);
  if (norm < 1e-30) return;
  for (float& x : vector) x = static_cast<float>(x / norm);
}

}  // namespace

float Score(qdrant::Distance distance, const float* a, const float* b, size_t dim) {
  float sum = 0;
  switch (distance) {
    case qdrant::Euclid:
      for (size_t i = 0; i < dim; ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
      return std::sqrt(sum);
    case qdrant::Manhattan:
      for (size_t i = 0; i < dim; ++i) sum += std::fabs(a[i] - b[i]);
      return sum;
    default:  // Cosine (on normalised vectors) and Dot.
      for (size_t i = 0; i < dim; ++i) sum += a[i] * b[i];
      return sum;
  }
}

bool Closer(qdrant::Distance distance, float a, float b) {
  return (distance == qdrant::Euclid || distance == qdrant::Manhattan) ? a < b : a > b;
}

uint64_t Collection::PointsCount() const {
  absl::ReaderMutexLock lock(&mu_);
  return points_.size();
}

absl::StatusOr<std::vector<float>> Collection::PrepareQuery(std::vector<float> vector) const {
  if (vector.size() != dim_) return DimensionError(dim_, vector.size());
  if (distance_ == qdrant::Cosine) Normalize(vector);
  return vector;
}

absl::StatusOr<uint64_t> Collection::Upsert(
    const google::protobuf::RepeatedPtrField<qdrant::PointStruct>& points) {
  std::vector<std::pair<PointKey, std::vector<float>>> prepared;
  prepared.reserve(points.size());
  for (const qdrant::PointStruct& point : points) {
    QPOOL_ASSIGN_OR_RETURN(PointKey id, ToPointKey(point.id()));
    QPOOL_ASSIGN_OR_RETURN(std::vector<float> vector, DenseOf(point));
    QPOOL_ASSIGN_OR_RETURN(vector, PrepareQuery(std::move(vector)));
    prepared.emplace_back(std::move(id), std::move(vector));
  }
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < points.size(); ++i) {
    auto& [id, vector] = prepared[i];
    auto [it, inserted] = slot_of_.try_emplace(id, points_.size());
    if (inserted) {
      points_.push_back(Point{id, {}});
      vectors_.resize(vectors_.size() + dim_);
    }
    size_t slot = it->second;
    points_[slot].payload.mutable_fields()->clear();
    *points_[slot].payload.mutable_fields() = points[i].payload();
    std::copy(vector.begin(), vector.end(), vectors_.begin() + slot * dim_);
  }
  return next_operation_id_++;
}

void Collection::EraseSlot(size_t slot) {
  size_t last = points_.size() - 1;
  slot_of_.erase(points_[slot].id);
  if (slot != last) {
    points_[slot] = std::move(points_[last]);
    std::copy(vectors_.begin() + last * dim_, vectors_.begin() + (last + 1) * dim_,
              vectors_.begin() + slot * dim_);
    slot_of_[points_[slot].id] = slot;
  }
  points_.pop_back();
  vectors_.resize(last * dim_);
}

absl::StatusOr<uint64_t> Collection::Delete(const qdrant::PointsSelector& selector) {
  if (selector.has_points()) {
    std::vector<PointKey> ids;
    for (const qdrant::PointId& id : selector.points().ids()) {
      QPOOL_ASSIGN_OR_RETURN(PointKey key, ToPointKey(id));
      ids.push_back(std::move(key));
    }
    absl::MutexLock lock(&mu_);
    for (const PointKey& id : ids) {
      auto it = slot_of_.find(id);
      if (it != slot_of_.end()) EraseSlot(it->second);
    }
    return next_operation_id_++;
  }
  if (!selector.has_filter()) {
    return absl::InvalidArgumentError("Wrong input: points selector has neither ids nor filter");
  }
  QPOOL_RETURN_IF_ERROR(ValidateFilter(selector.filter()));
  absl::MutexLock lock(&mu_);
  for (size_t slot = points_.size(); slot-- > 0;) {
    if (FilterMatches(selector.filter(), points_[slot].id, points_[slot].payload)) EraseSlot(slot);
  }
  return next_operation_id_++;
}

bool Collection::SlotMatches(size_t slot, const qdrant::Filter* filter) const {
  return filter == nullptr || FilterMatches(*filter, points_[slot].id, points_[slot].payload);
}

template <typename Out>
void Collection::Project(size_t slot, const Projection& projection, Out* out) const {
  const Point& point = points_[slot];
  *out->mutable_id() = ToPointId(point.id);
  const qdrant::WithPayloadSelector* selector = projection.with_payload;
  auto& payload = *out->mutable_payload();
  if (selector == nullptr ||
      selector->selector_options_case() == qdrant::WithPayloadSelector::SELECTOR_OPTIONS_NOT_SET) {
    if (projection.payload_by_default) payload = point.payload.fields();
  } else if (selector->has_enable()) {
    if (selector->enable()) payload = point.payload.fields();
  } else if (selector->has_include()) {
    for (const std::string& field : selector->include().fields()) {
      auto it = point.payload.fields().find(field);
      if (it != point.payload.fields().end()) payload[field] = it->second;
    }
  } else {
    payload = point.payload.fields();
    for (const std::string& field : selector->exclude().fields()) payload.erase(field);
  }
  if (projection.with_vectors) {
    auto* data = out->mutable_vectors()->mutable_vector()->mutable_dense()->mutable_data();
    data->Add(vectors_.begin() + slot * dim_, vectors_.begin() + (slot + 1) * dim_);
  }
}

absl::Status Collection::Get(
    const google::protobuf::RepeatedPtrField<qdrant::PointId>& ids, const Projection& projection,
    google::protobuf::RepeatedPtrField<qdrant::RetrievedPoint>* out) const {
  std::vector<PointKey> keys;
  for (const qdrant::PointId& id : ids) {
    QPOOL_ASSIGN_OR_RETURN(PointKey key, ToPointKey(id));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  absl::ReaderMutexLock lock(&mu_);
  for (const PointKey& key : keys) {
    auto it = slot_of_.find(key);
    if (it != slot_of_.end()) Project(it->second, projection, out->Add());
  }
  return absl::OkStatus();
}

absl::Status Collection::Scroll(const qdrant::Filter* filter, const std::optional<PointKey>& offset,
                                uint64_t limit, const Projection& projection,
                                google::protobuf::RepeatedPtrField<qdrant::RetrievedPoint>* out,
                                std::optional<PointKey>* next) const {
  if (filter != nullptr) QPOOL_RETURN_IF_ERROR(ValidateFilter(*filter));
  const std::optional<PointKey> start = offset;  // `offset` may alias `*next`.
  next->reset();
  absl::ReaderMutexLock lock(&mu_);
  auto it = start.has_value() ? slot_of_.lower_bound(*start) : slot_of_.begin();
  for (; it != slot_of_.end(); ++it) {
    if (!SlotMatches(it->second, filter)) continue;
    if (static_cast<uint64_t>(out->size()) == limit) {
      *next = it->first;
      break;
    }
    Project(it->second, projection, out->Add());
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Collection::Count(const qdrant::Filter* filter) const {
  if (filter != nullptr) QPOOL_RETURN_IF_ERROR(ValidateFilter(*filter));
  absl::ReaderMutexLock lock(&mu_);
  if (filter == nullptr) return points_.size();
  uint64_t count = 0;
  for (size_t slot = 0; slot < points_.size(); ++slot) count += SlotMatches(slot, filter);
  return count;
}

absl::StatusOr<std::vector<float>> Collection::VectorOf(const PointKey& id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = slot_of_.find(id);
  if (it == slot_of_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "Not found: No point with id ", id.is_uuid() ? id.uuid : absl::StrCat(id.num), " found"));
  }
  return std::vector<float>(vectors_.begin() + it->second * dim_,
                            vectors_.begin() + (it->second + 1) * dim_);
}

absl::Status Collection::Search(
    const SearchParams& params, const Projection& projection,
    google::protobuf::RepeatedPtrField<qdrant::ScoredPoint>* out) const {
  if (params.vector.size() != dim_) return DimensionError(dim_, params.vector.size());
  if (params.filter != nullptr) QPOOL_RETURN_IF_ERROR(ValidateFilter(*params.filter));
  absl::ReaderMutexLock lock(&mu_);
  struct Hit {
    float score;
    size_t slot;
  };
  std::vector<Hit> hits;
  hits.reserve(points_.size());
  for (size_t slot = 0; slot < points_.size(); ++slot) {
    if (!SlotMatches(slot, params.filter)) continue;
    if (params.exclude.has_value() && points_[slot].id == *params.exclude) continue;
    float score = Score(distance_, params.vector.data(), &vectors_[slot * dim_], dim_);
    if (params.score_threshold.has_value() && Closer(distance_, *params.score_threshold, score)) {
      continue;
    }
    hits.push_back(Hit{score, slot});
  }
  // The lambda runs under `lock`, which clang's analysis cannot see into: it reads through a
  // pointer taken here.
  const auto* points = &points_;
  auto before = [&](const Hit& a, const Hit& b) {
    if (a.score != b.score) return Closer(distance_, a.score, b.score);
    return (*points)[a.slot].id < (*points)[b.slot].id;
  };
  size_t wanted = std::min<uint64_t>(hits.size(), params.offset + params.limit);
  std::partial_sort(hits.begin(), hits.begin() + wanted, hits.end(), before);
  for (size_t i = params.offset; i < wanted; ++i) {
    qdrant::ScoredPoint* point = out->Add();
    Project(hits[i].slot, projection, point);
    point->set_score(hits[i].score);
  }
  return absl::OkStatus();
}

absl::Status Storage::CreateCollection(const std::string& name,
                                       const qdrant::VectorsConfig& config) {
  if (name.empty()) return absl::InvalidArgumentError("Wrong input: collection name is empty");
  if (!config.has_params()) {
    return absl::InvalidArgumentError(
        "Wrong input: qdrant-emulator supports collections with one unnamed dense vector only "
        "(vectors_config.params)");
  }
  const qdrant::VectorParams& params = config.params();
  if (params.size() == 0) {
    return absl::InvalidArgumentError("Validation error: vectors size must be 1 or larger");
  }
  if (params.distance() < qdrant::Cosine || params.distance() > qdrant::Manhattan) {
    return absl::InvalidArgumentError("Wrong input: Unknown distance");
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = collections_.try_emplace(name);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("Wrong input: Collection `", name, "` already exists!"));
  }
  it->second = std::make_shared<Collection>(params.size(), params.distance());
  return absl::OkStatus();
}

bool Storage::DeleteCollection(const std::string& name) {
  absl::MutexLock lock(&mu_);
  return collections_.erase(name) > 0;
}

absl::StatusOr<std::shared_ptr<Collection>> Storage::GetCollection(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return absl::NotFoundError(absl::StrCat("Not found: Collection `", name, "` doesn't exist!"));
  }
  return it->second;
}

std::vector<std::string> Storage::ListCollections() const {
  std::vector<std::string> names;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, collection] : collections_) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace qpool::emulator
