#include "emulator/rest_json.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/common/status.h"

namespace qpool::emulator {
namespace {

// Qdrant's serde names the JSON type it expected; so do these messages.
absl::Status Expected(absl::string_view field, absl::string_view what, const Json& got) {
  return FormatError(
      absl::StrCat(field, ": expected ", what, ", got ", got.type_name(), " ", got.dump()));
}

const Json& Field(const Json& object, const char* name) { return JsonField(object, name); }

absl::Status Unsupported(absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat("qdrant-emulator does not support ", what));
}

// Each element of a condition list (or the single condition given in its place).
absl::Status ConditionsFromJson(const Json& json, absl::string_view field,
                                google::protobuf::RepeatedPtrField<qdrant::Condition>* out);

absl::Status MatchFromJson(const Json& json, qdrant::Match* out) {
  if (!json.is_object()) return Expected("match", "an object", json);
  auto list = [&](const Json& values, qdrant::RepeatedStrings* strings,
                  qdrant::RepeatedIntegers* integers) -> absl::Status {
    if (!values.is_array()) return Expected("match", "a list", values);
    bool all_strings = true, all_integers = true;
    for (const Json& v : values) {
      all_strings = all_strings && v.is_string();
      all_integers = all_integers && v.is_number_integer();
    }
    if (all_strings) {
      for (const Json& v : values) strings->add_strings(v.get<std::string>());
    } else if (all_integers) {
      for (const Json& v : values) integers->add_integers(v.get<int64_t>());
    } else {
      return Expected("match", "a list of strings or of integers", values);
    }
    return absl::OkStatus();
  };
  if (auto it = json.find("value"); it != json.end()) {
    if (it->is_string()) {
      out->set_keyword(it->get<std::string>());
    } else if (it->is_boolean()) {
      out->set_boolean(it->get<bool>());
    } else if (it->is_number_integer()) {
      out->set_integer(it->get<int64_t>());
    } else {
      return Expected("match.value", "a string, an integer or a boolean", *it);
    }
  } else if (auto any = json.find("any"); any != json.end()) {
    // An empty list is a list of keywords, as in Qdrant.
    qdrant::RepeatedStrings strings;
    qdrant::RepeatedIntegers integers;
    QPOOL_RETURN_IF_ERROR(list(*any, &strings, &integers));
    if (integers.integers_size() > 0) {
      *out->mutable_integers() = std::move(integers);
    } else {
      *out->mutable_keywords() = std::move(strings);
    }
  } else if (auto except = json.find("except"); except != json.end()) {
    qdrant::RepeatedStrings strings;
    qdrant::RepeatedIntegers integers;
    QPOOL_RETURN_IF_ERROR(list(*except, &strings, &integers));
    if (integers.integers_size() > 0) {
      *out->mutable_except_integers() = std::move(integers);
    } else {
      *out->mutable_except_keywords() = std::move(strings);
    }
  } else if (auto text = json.find("text"); text != json.end() && text->is_string()) {
    out->set_text(text->get<std::string>());
  } else if (auto phrase = json.find("phrase"); phrase != json.end() && phrase->is_string()) {
    out->set_phrase(phrase->get<std::string>());
  } else if (auto text_any = json.find("text_any");
             text_any != json.end() && text_any->is_string()) {
    out->set_text_any(text_any->get<std::string>());
  } else {
    return FormatError(
        absl::StrCat("match: expected value, any, except, text, phrase or "
                     "text_any, got ",
                     json.dump()));
  }
  return absl::OkStatus();
}

absl::Status RangeFromJson(const Json& json, qdrant::Range* out) {
  if (!json.is_object()) return Expected("range", "an object", json);
  for (const auto& [name, value] : json.items()) {
    if (value.is_null()) continue;
    if (value.is_string()) return Unsupported("datetime ranges");
    if (!value.is_number()) return Expected(absl::StrCat("range.", name), "a number", value);
    double bound = value.get<double>();
    if (name == "lt") {
      out->set_lt(bound);
    } else if (name == "gt") {
      out->set_gt(bound);
    } else if (name == "gte") {
      out->set_gte(bound);
    } else if (name == "lte") {
      out->set_lte(bound);
    } else {
      return FormatError(absl::StrCat("range: unknown field `", name, "`"));
    }
  }
  return absl::OkStatus();
}

absl::Status FieldConditionFromJson(const Json& json, qdrant::FieldCondition* out) {
  const Json& key = Field(json, "key");
  if (!key.is_string()) return Expected("key", "a string", key);
  out->set_key(key.get<std::string>());
  for (const char* unsupported :
       {"geo_bounding_box", "geo_radius", "geo_polygon", "values_count"}) {
    if (!Field(json, unsupported).is_null()) {
      return Unsupported(absl::StrCat("the ", unsupported, " condition"));
    }
  }
  if (auto it = json.find("match"); it != json.end() && !it->is_null()) {
    QPOOL_RETURN_IF_ERROR(MatchFromJson(*it, out->mutable_match()));
  }
  if (auto it = json.find("range"); it != json.end() && !it->is_null()) {
    QPOOL_RETURN_IF_ERROR(RangeFromJson(*it, out->mutable_range()));
  }
  if (auto it = json.find("is_empty"); it != json.end() && !it->is_null()) {
    if (!it->is_boolean()) return Expected("is_empty", "a boolean", *it);
    out->set_is_empty(it->get<bool>());
  }
  if (auto it = json.find("is_null"); it != json.end() && !it->is_null()) {
    if (!it->is_boolean()) return Expected("is_null", "a boolean", *it);
    out->set_is_null(it->get<bool>());
  }
  return absl::OkStatus();
}

// {"key": K} of is_empty / is_null conditions.
absl::StatusOr<std::string> KeyOf(const Json& json, absl::string_view condition) {
  const Json& key = Field(json, "key");
  if (!key.is_string()) return Expected(condition, "{\"key\": string}", json);
  return key.get<std::string>();
}

absl::Status ConditionFromJson(const Json& json, qdrant::Condition* out) {
  if (!json.is_object()) return Expected("condition", "an object", json);
  if (json.contains("key")) return FieldConditionFromJson(json, out->mutable_field());
  if (auto it = json.find("is_empty"); it != json.end()) {
    QPOOL_ASSIGN_OR_RETURN(std::string key, KeyOf(*it, "is_empty"));
    out->mutable_is_empty()->set_key(std::move(key));
    return absl::OkStatus();
  }
  if (auto it = json.find("is_null"); it != json.end()) {
    QPOOL_ASSIGN_OR_RETURN(std::string key, KeyOf(*it, "is_null"));
    out->mutable_is_null()->set_key(std::move(key));
    return absl::OkStatus();
  }
  if (auto it = json.find("has_id"); it != json.end()) {
    if (!it->is_array()) return Expected("has_id", "a list of ids", *it);
    for (const Json& id : *it) {
      QPOOL_ASSIGN_OR_RETURN(*out->mutable_has_id()->add_has_id(), PointIdFromJson(id));
    }
    return absl::OkStatus();
  }
  if (auto it = json.find("has_vector"); it != json.end()) {
    if (!it->is_string()) return Expected("has_vector", "a vector name", *it);
    out->mutable_has_vector()->set_has_vector(it->get<std::string>());
    return absl::OkStatus();
  }
  if (auto it = json.find("nested"); it != json.end()) {
    const Json& key = Field(*it, "key");
    if (!key.is_string()) {
      return Expected("nested", "{\"key\": string, \"filter\": filter}", *it);
    }
    out->mutable_nested()->set_key(key.get<std::string>());
    return FilterFromJson(Field(*it, "filter"), out->mutable_nested()->mutable_filter());
  }
  for (const char* clause : {"must", "should", "must_not", "min_should"}) {
    if (json.contains(clause)) return FilterFromJson(json, out->mutable_filter());
  }
  return FormatError(absl::StrCat("unknown condition ", json.dump()));
}

absl::Status ConditionsFromJson(const Json& json, absl::string_view field,
                                google::protobuf::RepeatedPtrField<qdrant::Condition>* out) {
  if (json.is_null()) return absl::OkStatus();
  if (json.is_object()) return ConditionFromJson(json, out->Add());
  if (!json.is_array()) return Expected(field, "a condition or a list of conditions", json);
  for (const Json& condition : json)
    QPOOL_RETURN_IF_ERROR(ConditionFromJson(condition, out->Add()));
  return absl::OkStatus();
}

Json VectorOutputToJson(const qdrant::VectorOutput& vector) {
  // The store answers with `dense` only (the deprecated `data` is never set on output).
  const auto& data = vector.dense().data();
  return Json(std::vector<float>(data.begin(), data.end()));
}

Json VectorsOutputToJson(const qdrant::VectorsOutput& vectors) {
  if (vectors.has_vector()) return VectorOutputToJson(vectors.vector());
  Json named = Json::object();
  for (const auto& [name, vector] : vectors.vectors().vectors()) {
    named[name] = VectorOutputToJson(vector);
  }
  return named;
}

}  // namespace

const Json& JsonField(const Json& object, const char* name) {
  static const Json* const kNull = new Json(nullptr);
  if (!object.is_object()) return *kNull;
  auto it = object.find(name);
  return it == object.end() ? *kNull : *it;
}

absl::Status FormatError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("Format error in JSON body: ", what));
}

absl::StatusOr<Json> ParseJsonBody(absl::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == absl::string_view::npos) return Json::object();
  Json json = Json::parse(body.begin(), body.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return FormatError("the body is not valid JSON");
  if (!json.is_object()) return Expected("body", "an object", json);
  return json;
}

absl::StatusOr<qdrant::PointId> PointIdFromJson(const Json& json) {
  qdrant::PointId id;
  if (json.is_number_unsigned()) {
    id.set_num(json.get<uint64_t>());
  } else if (json.is_string()) {
    id.set_uuid(json.get<std::string>());
  } else {
    return Expected("point id", "an unsigned integer or a UUID string", json);
  }
  return id;
}

Json PointIdToJson(const qdrant::PointId& id) {
  if (id.has_uuid()) return Json(id.uuid());
  return Json(id.num());
}

absl::StatusOr<qdrant::Value> ValueFromJson(const Json& json) {
  qdrant::Value value;
  switch (json.type()) {
    case Json::value_t::null:
      value.set_null_value(qdrant::NULL_VALUE);
      break;
    case Json::value_t::boolean:
      value.set_bool_value(json.get<bool>());
      break;
    case Json::value_t::number_integer:
      value.set_integer_value(json.get<int64_t>());
      break;
    case Json::value_t::number_unsigned:
      if (json.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        value.set_double_value(json.get<double>());
      } else {
        value.set_integer_value(json.get<int64_t>());
      }
      break;
    case Json::value_t::number_float:
      value.set_double_value(json.get<double>());
      break;
    case Json::value_t::string:
      value.set_string_value(json.get<std::string>());
      break;
    case Json::value_t::array:
      for (const Json& element : json) {
        QPOOL_ASSIGN_OR_RETURN(*value.mutable_list_value()->add_values(), ValueFromJson(element));
      }
      value.mutable_list_value();
      break;
    case Json::value_t::object:
      QPOOL_RETURN_IF_ERROR(PayloadFromJson(json, value.mutable_struct_value()->mutable_fields()));
      break;
    default:
      return Expected("payload value", "JSON data", json);
  }
  return value;
}

Json ValueToJson(const qdrant::Value& value) {
  switch (value.kind_case()) {
    case qdrant::Value::kDoubleValue:
      return Json(value.double_value());
    case qdrant::Value::kIntegerValue:
      return Json(value.integer_value());
    case qdrant::Value::kStringValue:
      return Json(value.string_value());
    case qdrant::Value::kBoolValue:
      return Json(value.bool_value());
    case qdrant::Value::kStructValue:
      return PayloadToJson(value.struct_value().fields());
    case qdrant::Value::kListValue: {
      Json list = Json::array();
      for (const qdrant::Value& element : value.list_value().values()) {
        list.push_back(ValueToJson(element));
      }
      return list;
    }
    default:
      return Json(nullptr);
  }
}

absl::Status PayloadFromJson(const Json& json,
                             google::protobuf::Map<std::string, qdrant::Value>* out) {
  if (json.is_null()) return absl::OkStatus();
  if (!json.is_object()) return Expected("payload", "an object", json);
  for (const auto& [key, value] : json.items()) {
    QPOOL_ASSIGN_OR_RETURN((*out)[key], ValueFromJson(value));
  }
  return absl::OkStatus();
}

Json PayloadToJson(const google::protobuf::Map<std::string, qdrant::Value>& payload) {
  Json object = Json::object();
  for (const auto& [key, value] : payload) object[key] = ValueToJson(value);
  return object;
}

absl::Status FilterFromJson(const Json& json, qdrant::Filter* out) {
  if (json.is_null()) return absl::OkStatus();
  if (!json.is_object()) return Expected("filter", "an object", json);
  for (const auto& [name, value] : json.items()) {
    if (name == "must") {
      QPOOL_RETURN_IF_ERROR(ConditionsFromJson(value, name, out->mutable_must()));
    } else if (name == "should") {
      QPOOL_RETURN_IF_ERROR(ConditionsFromJson(value, name, out->mutable_should()));
    } else if (name == "must_not") {
      QPOOL_RETURN_IF_ERROR(ConditionsFromJson(value, name, out->mutable_must_not()));
    } else if (name == "min_should") {
      if (value.is_null()) continue;
      const Json& min_count = Field(value, "min_count");
      if (!value.is_object() || !value.contains("conditions") || !min_count.is_number_unsigned()) {
        return Expected("min_should", "{\"conditions\": [...], \"min_count\": N}", value);
      }
      qdrant::MinShould* min_should = out->mutable_min_should();
      QPOOL_RETURN_IF_ERROR(ConditionsFromJson(Field(value, "conditions"), "min_should",
                                               min_should->mutable_conditions()));
      min_should->set_min_count(min_count.get<uint64_t>());
    } else {
      return FormatError(absl::StrCat("filter: unknown field `", name, "`"));
    }
  }
  return absl::OkStatus();
}

absl::Status WithPayloadFromJson(const Json& json, qdrant::WithPayloadSelector* out) {
  auto fields = [](const Json& list, google::protobuf::RepeatedPtrField<std::string>* names) {
    if (!list.is_array()) return Expected("with_payload", "a list of fields", list);
    for (const Json& name : list) {
      if (!name.is_string()) return Expected("with_payload", "a field name", name);
      names->Add(name.get<std::string>());
    }
    return absl::OkStatus();
  };
  if (json.is_null()) return absl::OkStatus();
  if (json.is_boolean()) {
    out->set_enable(json.get<bool>());
  } else if (json.is_array()) {
    return fields(json, out->mutable_include()->mutable_fields());
  } else if (json.is_object() && json.contains("include")) {
    return fields(Field(json, "include"), out->mutable_include()->mutable_fields());
  } else if (json.is_object() && json.contains("exclude")) {
    return fields(Field(json, "exclude"), out->mutable_exclude()->mutable_fields());
  } else {
    return Expected("with_payload", "a boolean, a list of fields, include or exclude", json);
  }
  return absl::OkStatus();
}

absl::Status WithVectorsFromJson(const Json& json, qdrant::WithVectorsSelector* out) {
  if (json.is_null()) return absl::OkStatus();
  if (json.is_boolean()) {
    out->set_enable(json.get<bool>());
    return absl::OkStatus();
  }
  if (!json.is_array()) return Expected("with_vector", "a boolean or a list of names", json);
  auto* names = out->mutable_include()->mutable_names();
  for (const Json& name : json) {
    if (!name.is_string()) return Expected("with_vector", "a vector name", name);
    names->Add(name.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status DenseFromJson(const Json& json, google::protobuf::RepeatedField<float>* out) {
  if (!json.is_array()) return Expected("vector", "a list of numbers", json);
  out->Reserve(static_cast<int>(json.size()));
  for (const Json& x : json) {
    if (!x.is_number()) return Expected("vector", "a number", x);
    out->Add(x.get<float>());
  }
  return absl::OkStatus();
}

absl::Status PointFromJson(const Json& json, qdrant::PointStruct* out) {
  if (!json.is_object()) return Expected("point", "an object", json);
  if (!json.contains("id")) return FormatError("point: missing field `id`");
  QPOOL_ASSIGN_OR_RETURN(*out->mutable_id(), PointIdFromJson(Field(json, "id")));
  auto vector = json.find("vector");
  if (vector == json.end()) vector = json.find("vectors");
  if (vector != json.end() && vector->is_array()) {
    QPOOL_RETURN_IF_ERROR(DenseFromJson(
        *vector, out->mutable_vectors()->mutable_vector()->mutable_dense()->mutable_data()));
  } else if (vector != json.end() && vector->is_object()) {
    auto& named = *out->mutable_vectors()->mutable_vectors()->mutable_vectors();
    for (const auto& [name, data] : vector->items()) {
      if (!data.is_array()) return Unsupported("sparse, multi or inferred vectors");
      QPOOL_RETURN_IF_ERROR(DenseFromJson(data, named[name].mutable_dense()->mutable_data()));
    }
  } else if (vector != json.end() && !vector->is_null()) {
    return Expected("vector", "a list of numbers or named vectors", *vector);
  }
  if (auto payload = json.find("payload"); payload != json.end()) {
    QPOOL_RETURN_IF_ERROR(PayloadFromJson(*payload, out->mutable_payload()));
  }
  return absl::OkStatus();
}

absl::Status VectorsConfigFromJson(const Json& json, qdrant::VectorsConfig* out) {
  auto params = [](const Json& json, qdrant::VectorParams* out) -> absl::Status {
    if (!json.is_object()) return Expected("vectors", "{\"size\", \"distance\"}", json);
    const Json& size = Field(json, "size");
    if (!size.is_number_unsigned()) return Expected("vectors.size", "an unsigned integer", size);
    out->set_size(size.get<uint64_t>());
    const Json& distance = Field(json, "distance");
    std::string name = distance.is_string() ? distance.get<std::string>() : "";
    for (qdrant::Distance d : {qdrant::Cosine, qdrant::Euclid, qdrant::Dot, qdrant::Manhattan}) {
      if (name == DistanceName(d)) out->set_distance(d);
    }
    if (out->distance() == qdrant::UnknownDistance) {
      return Expected("vectors.distance", "one of Cosine, Euclid, Dot, Manhattan", distance);
    }
    return absl::OkStatus();
  };
  if (json.is_object() && json.contains("size")) return params(json, out->mutable_params());
  if (!json.is_object()) return Expected("vectors", "vector params or named vector params", json);
  auto& map = *out->mutable_params_map()->mutable_map();
  for (const auto& [name, value] : json.items()) {
    QPOOL_RETURN_IF_ERROR(params(value, &map[name]));
  }
  return absl::OkStatus();
}

Json RetrievedPointToJson(const qdrant::RetrievedPoint& point, bool with_payload) {
  Json out = {{"id", PointIdToJson(point.id())}};
  if (with_payload) out["payload"] = PayloadToJson(point.payload());
  if (point.has_vectors()) out["vector"] = VectorsOutputToJson(point.vectors());
  return out;
}

Json ScoredPointToJson(const qdrant::ScoredPoint& point, bool with_payload) {
  Json out = {
      {"id", PointIdToJson(point.id())}, {"version", point.version()}, {"score", point.score()}};
  if (with_payload) out["payload"] = PayloadToJson(point.payload());
  if (point.has_vectors()) out["vector"] = VectorsOutputToJson(point.vectors());
  return out;
}

Json UpdateResultToJson(const qdrant::UpdateResult& result) {
  return {{"operation_id", result.operation_id()},
          {"status", result.status() == qdrant::Completed ? "completed" : "acknowledged"}};
}

Json CollectionInfoToJson(const qdrant::CollectionInfo& info) {
  const qdrant::CollectionParams& params = info.config().params();
  Json vectors;
  if (params.vectors_config().has_params()) {
    vectors = {{"size", params.vectors_config().params().size()},
               {"distance", DistanceName(params.vectors_config().params().distance())}};
  } else {
    vectors = Json::object();
    for (const auto& [name, p] : params.vectors_config().params_map().map()) {
      vectors[name] = {{"size", p.size()}, {"distance", DistanceName(p.distance())}};
    }
  }
  const char* status = info.status() == qdrant::Green    ? "green"
                       : info.status() == qdrant::Yellow ? "yellow"
                       : info.status() == qdrant::Grey   ? "grey"
                                                         : "red";
  Json optimizer_status = info.optimizer_status().ok()
                              ? Json("ok")
                              : Json({{"error", info.optimizer_status().error()}});
  return {{"status", status},
          {"optimizer_status", optimizer_status},
          {"indexed_vectors_count", info.indexed_vectors_count()},
          {"points_count", info.points_count()},
          {"segments_count", info.segments_count()},
          {"config",
           {{"params",
             {{"vectors", vectors},
              {"shard_number", params.shard_number()},
              {"replication_factor", params.replication_factor()},
              {"write_consistency_factor", params.write_consistency_factor()},
              {"on_disk_payload", params.on_disk_payload()}}}}},
          {"payload_schema", Json::object()}};
}

const char* DistanceName(qdrant::Distance distance) {
  switch (distance) {
    case qdrant::Cosine:
      return "Cosine";
    case qdrant::Euclid:
      return "Euclid";
    case qdrant::Dot:
      return "Dot";
    case qdrant::Manhattan:
      return "Manhattan";
    default:
      return "Unknown";
  }
}

}  // namespace qpool::emulator
