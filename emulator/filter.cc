#include "emulator/filter.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "daemon/common/status.h"

namespace qpool::emulator {
namespace {

absl::Status Unsupported(absl::string_view what) {
  return absl::UnimplementedError(
      absl::StrCat("qdrant-emulator does not support filter condition `", what, "`"));
}

absl::Status ValidateCondition(const qdrant::Condition& condition) {
  switch (condition.condition_one_of_case()) {
    case qdrant::Condition::kField: {
      const qdrant::FieldCondition& field = condition.field();
      if (field.key().empty()) return absl::InvalidArgumentError("Wrong input: empty filter key");
      if (!qdrant::FieldCondition::GetReflection()->GetUnknownFields(field).empty()) {
        return Unsupported("field condition other than match/range/is_empty/is_null");
      }
      if (field.has_match()) {
        switch (field.match().match_value_case()) {
          case qdrant::Match::kPhrase:
            return Unsupported("match.phrase");
          case qdrant::Match::kTextAny:
            return Unsupported("match.text_any");
          case qdrant::Match::MATCH_VALUE_NOT_SET:
            return absl::InvalidArgumentError("Wrong input: match without a value");
          default:
            break;
        }
      }
      if (!field.has_match() && !field.has_range() && !field.has_is_empty() &&
          !field.has_is_null()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Wrong input: field condition on `", field.key(), "` has no condition"));
      }
      return absl::OkStatus();
    }
    case qdrant::Condition::kIsEmpty:
    case qdrant::Condition::kIsNull:
      return absl::OkStatus();
    case qdrant::Condition::kHasId:
      for (const qdrant::PointId& id : condition.has_id().has_id()) {
        QPOOL_RETURN_IF_ERROR(ToPointKey(id).status());
      }
      return absl::OkStatus();
    case qdrant::Condition::kFilter:
      return ValidateFilter(condition.filter());
    case qdrant::Condition::kNested:
      return Unsupported("nested");
    case qdrant::Condition::kHasVector:
      return Unsupported("has_vector");
    default:
      return Unsupported("unknown condition");
  }
}

// Appends the values at `path` (arrays flattened) below `value`.
void CollectValues(const qdrant::Value& value, const std::vector<std::string>& path, size_t depth,
                   std::vector<const qdrant::Value*>* out) {
  if (value.has_list_value()) {
    for (const qdrant::Value& item : value.list_value().values()) {
      CollectValues(item, path, depth, out);
    }
    return;
  }
  if (depth == path.size()) {
    out->push_back(&value);
    return;
  }
  if (!value.has_struct_value()) return;
  auto it = value.struct_value().fields().find(path[depth]);
  if (it != value.struct_value().fields().end()) CollectValues(it->second, path, depth + 1, out);
}

// The values at a dotted key ("a.b", "a[].b"); empty when the key is absent.
std::vector<const qdrant::Value*> ValuesAt(const qdrant::Struct& payload, absl::string_view key) {
  std::vector<std::string> path =
      absl::StrSplit(absl::StrReplaceAll(key, {{"[]", ""}}), '.', absl::SkipEmpty());
  std::vector<const qdrant::Value*> values;
  if (path.empty()) return values;
  auto it = payload.fields().find(path[0]);
  if (it != payload.fields().end()) CollectValues(it->second, path, 1, &values);
  return values;
}

// Whether the key is absent, null, or an empty array (Qdrant's is_empty).
bool IsEmpty(const qdrant::Struct& payload, absl::string_view key) {
  for (const qdrant::Value* value : ValuesAt(payload, key)) {
    if (!value->has_null_value()) return false;
  }
  return true;
}

bool IsNull(const qdrant::Struct& payload, absl::string_view key) {
  std::vector<std::string> path = absl::StrSplit(key, '.', absl::SkipEmpty());
  const qdrant::Struct* object = &payload;
  for (size_t i = 0; i < path.size(); ++i) {
    auto it = object->fields().find(path[i]);
    if (it == object->fields().end()) return false;
    if (i + 1 == path.size()) return it->second.has_null_value();
    if (!it->second.has_struct_value()) return false;
    object = &it->second.struct_value();
  }
  return false;
}

bool MatchValue(const qdrant::Match& match, const qdrant::Value& value) {
  switch (match.match_value_case()) {
    case qdrant::Match::kKeyword:
      return value.has_string_value() && value.string_value() == match.keyword();
    case qdrant::Match::kInteger:
      return value.has_integer_value() && value.integer_value() == match.integer();
    case qdrant::Match::kBoolean:
      return value.has_bool_value() && value.bool_value() == match.boolean();
    case qdrant::Match::kText:
      return value.has_string_value() && absl::StrContains(value.string_value(), match.text());
    case qdrant::Match::kKeywords:
      if (!value.has_string_value()) return false;
      for (const std::string& s : match.keywords().strings()) {
        if (s == value.string_value()) return true;
      }
      return false;
    case qdrant::Match::kIntegers:
      if (!value.has_integer_value()) return false;
      for (int64_t i : match.integers().integers()) {
        if (i == value.integer_value()) return true;
      }
      return false;
    case qdrant::Match::kExceptKeywords:
      if (!value.has_string_value()) return true;
      for (const std::string& s : match.except_keywords().strings()) {
        if (s == value.string_value()) return false;
      }
      return true;
    case qdrant::Match::kExceptIntegers:
      if (!value.has_integer_value()) return true;
      for (int64_t i : match.except_integers().integers()) {
        if (i == value.integer_value()) return false;
      }
      return true;
    default:
      return false;
  }
}

bool InRange(const qdrant::Range& range, const qdrant::Value& value) {
  double x;
  if (value.has_integer_value()) {
    x = static_cast<double>(value.integer_value());
  } else if (value.has_double_value()) {
    x = value.double_value();
  } else {
    return false;
  }
  return (!range.has_lt() || x < range.lt()) && (!range.has_gt() || x > range.gt()) &&
         (!range.has_lte() || x <= range.lte()) && (!range.has_gte() || x >= range.gte());
}

bool FieldMatches(const qdrant::FieldCondition& field, const qdrant::Struct& payload) {
  if (field.has_is_empty() && IsEmpty(payload, field.key()) != field.is_empty()) return false;
  if (field.has_is_null() && IsNull(payload, field.key()) != field.is_null()) return false;
  if (!field.has_match() && !field.has_range()) return true;
  for (const qdrant::Value* value : ValuesAt(payload, field.key())) {
    if (field.has_match() && !MatchValue(field.match(), *value)) continue;
    if (field.has_range() && !InRange(field.range(), *value)) continue;
    return true;
  }
  return false;
}

bool ConditionMatches(const qdrant::Condition& condition, const PointKey& id,
                      const qdrant::Struct& payload) {
  switch (condition.condition_one_of_case()) {
    case qdrant::Condition::kField:
      return FieldMatches(condition.field(), payload);
    case qdrant::Condition::kIsEmpty:
      return IsEmpty(payload, condition.is_empty().key());
    case qdrant::Condition::kIsNull:
      return IsNull(payload, condition.is_null().key());
    case qdrant::Condition::kHasId:
      for (const qdrant::PointId& candidate : condition.has_id().has_id()) {
        absl::StatusOr<PointKey> key = ToPointKey(candidate);
        if (key.ok() && *key == id) return true;
      }
      return false;
    case qdrant::Condition::kFilter:
      return FilterMatches(condition.filter(), id, payload);
    default:
      return false;
  }
}

}  // namespace

absl::Status ValidateFilter(const qdrant::Filter& filter) {
  for (const auto* list :
       {&filter.must(), &filter.should(), &filter.must_not(), &filter.min_should().conditions()}) {
    for (const qdrant::Condition& condition : *list) {
      QPOOL_RETURN_IF_ERROR(ValidateCondition(condition));
    }
  }
  return absl::OkStatus();
}

bool FilterMatches(const qdrant::Filter& filter, const PointKey& id,
                   const qdrant::Struct& payload) {
  for (const qdrant::Condition& condition : filter.must()) {
    if (!ConditionMatches(condition, id, payload)) return false;
  }
  for (const qdrant::Condition& condition : filter.must_not()) {
    if (ConditionMatches(condition, id, payload)) return false;
  }
  if (!filter.should().empty()) {
    bool any = false;
    for (const qdrant::Condition& condition : filter.should()) {
      if (ConditionMatches(condition, id, payload)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (filter.has_min_should()) {
    uint64_t matched = 0;
    for (const qdrant::Condition& condition : filter.min_should().conditions()) {
      if (ConditionMatches(condition, id, payload)) ++matched;
    }
    if (matched < filter.min_should().min_count()) return false;
  }
  return true;
}

}  // namespace qpool::emulator
