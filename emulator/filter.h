// Evaluates Qdrant payload filters (qdrant.Filter) against one point, without indexes.
//
// Supported: must / should / must_not / min_should, nested `filter` conditions, `has_id`,
// `is_empty`, `is_null`, and field conditions with match keyword / integer / boolean / keywords /
// integers / except_keywords / except_integers / text (substring), `range`, and the
// is_empty / is_null flags. Keys are dotted paths ("a.b"); arrays on the path are flattened, and a
// condition holds when any of the values satisfies it, as in Qdrant.
//
//   QPOOL_RETURN_IF_ERROR(ValidateFilter(request.filter()));
//   if (FilterMatches(request.filter(), key, payload)) ...
#ifndef QPOOL_EMULATOR_FILTER_H_
#define QPOOL_EMULATOR_FILTER_H_

#include "absl/status/status.h"
#include "emulator/point_id.h"
#include "qdrant/common.pb.h"
#include "qdrant/json_with_int.pb.h"

namespace qpool::emulator {

// kUnimplemented for a condition the emulator does not evaluate (nested, has_vector, geo, ...),
// naming it; kInvalidArgument for a malformed one (a condition with nothing set, a bad id).
absl::Status ValidateFilter(const qdrant::Filter& filter);

// Whether the point matches. `filter` must have passed ValidateFilter.
bool FilterMatches(const qdrant::Filter& filter, const PointKey& id, const qdrant::Struct& payload);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_FILTER_H_
