// Conversions between Qdrant's REST JSON shapes (Qdrant 1.x `openapi.json`) and the protobuf
// messages the emulator's Handlers take and return, so that the REST front reuses the gRPC
// front's semantics (ids, payloads, filters, scoring) instead of re-implementing them.
//
//   QPOOL_ASSIGN_OR_RETURN(qdrant::PointId id, PointIdFromJson(body["offset"]));
//   QPOOL_RETURN_IF_ERROR(FilterFromJson(body["filter"], request.mutable_filter()));
//   nlohmann::json out = ScoredPointToJson(reply.result(0));
//
// A JSON value of the wrong type is kInvalidArgument "Format error in JSON body: ..." (Qdrant
// answers those 400); a condition or field the emulator does not serve is kUnimplemented, naming
// it. Thread-safety: plain functions without shared state.
#ifndef QPOOL_EMULATOR_REST_JSON_H_
#define QPOOL_EMULATOR_REST_JSON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "qdrant/collections.pb.h"
#include "qdrant/common.pb.h"
#include "qdrant/json_with_int.pb.h"
#include "qdrant/points.pb.h"

namespace qpool::emulator {

using Json = nlohmann::json;

// kInvalidArgument "Format error in JSON body: <what>", the message Qdrant uses for a body that
// does not deserialize.
absl::Status FormatError(absl::string_view what);

// `object[name]`, or null when `object` is not an object or lacks `name` (nlohmann's const
// operator[] must not be used for a missing key).
const Json& JsonField(const Json& object, const char* name);

// Parses a request body; an empty body is `{}`.
absl::StatusOr<Json> ParseJsonBody(absl::string_view body);

// A point id: a non-negative integer or a UUID string (any spelling; checked by the store).
absl::StatusOr<qdrant::PointId> PointIdFromJson(const Json& json);
Json PointIdToJson(const qdrant::PointId& id);

// Payload values: integers stay integers, other numbers become doubles.
absl::StatusOr<qdrant::Value> ValueFromJson(const Json& json);
Json ValueToJson(const qdrant::Value& value);
// A payload object (or null: empty) into `out`.
absl::Status PayloadFromJson(const Json& json,
                             google::protobuf::Map<std::string, qdrant::Value>* out);
Json PayloadToJson(const google::protobuf::Map<std::string, qdrant::Value>& payload);

// Qdrant's filter: must / should / must_not (a condition or a list), min_should, and the
// conditions key+match/range/is_empty/is_null, is_empty, is_null, has_id, has_vector, nested and
// a nested filter. Geo, values_count and datetime ranges are kUnimplemented.
absl::Status FilterFromJson(const Json& json, qdrant::Filter* out);

// `with_payload`: true/false, a list of fields, {"include": [...]} or {"exclude": [...]}.
absl::Status WithPayloadFromJson(const Json& json, qdrant::WithPayloadSelector* out);
// `with_vector`: true/false or a list of vector names.
absl::Status WithVectorsFromJson(const Json& json, qdrant::WithVectorsSelector* out);

// A dense vector: a list of numbers.
absl::Status DenseFromJson(const Json& json, google::protobuf::RepeatedField<float>* out);

// A point of an upsert: {"id", "vector": [..] or {"name": [..]}, "payload"}.
absl::Status PointFromJson(const Json& json, qdrant::PointStruct* out);

// `vectors` of a collection create: {"size", "distance"} or {"name": {"size", "distance"}}.
absl::Status VectorsConfigFromJson(const Json& json, qdrant::VectorsConfig* out);

// Records and scored points as Qdrant's REST answers them: `payload` only when `with_payload`
// (the request asked for it), `vector` when the point carries one (the unnamed vector as a list,
// named vectors as an object).
Json RetrievedPointToJson(const qdrant::RetrievedPoint& point, bool with_payload);
Json ScoredPointToJson(const qdrant::ScoredPoint& point, bool with_payload);
// {"operation_id": N, "status": "completed" | "acknowledged"}.
Json UpdateResultToJson(const qdrant::UpdateResult& result);
// CollectionInfo (status, optimizer_status, counts, config.params).
Json CollectionInfoToJson(const qdrant::CollectionInfo& info);

const char* DistanceName(qdrant::Distance distance);  // "Cosine", ...

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_REST_JSON_H_
