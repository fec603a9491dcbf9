// Point ids as the emulator stores them: a number or a canonical UUID, ordered as Qdrant orders
// them (every numeric id before every UUID).
#ifndef QPOOL_EMULATOR_POINT_ID_H_
#define QPOOL_EMULATOR_POINT_ID_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "qdrant/common.pb.h"

namespace qpool::emulator {

// A value type; cheap to copy for numeric ids.
struct PointKey {
  uint64_t num = 0;
  std::string uuid;  // Lowercase, hyphenated 8-4-4-4-12; empty for a numeric id.

  bool is_uuid() const { return !uuid.empty(); }

  friend bool operator<(const PointKey& a, const PointKey& b) {
    if (a.is_uuid() != b.is_uuid()) return !a.is_uuid();
    return a.is_uuid() ? a.uuid < b.uuid : a.num < b.num;
  }
  friend bool operator==(const PointKey& a, const PointKey& b) {
    return a.num == b.num && a.uuid == b.uuid;
  }
  template <typename H>
  friend H AbslHashValue(H h, const PointKey& k) {
    return H::combine(std::move(h), k.num, k.uuid);
  }
};

// Accepts the UUID spellings Qdrant accepts (hyphenated, simple 32 hex digits, braced, urn:uuid:)
// and normalises them. kInvalidArgument for a malformed UUID or an id with neither kind set.
absl::StatusOr<PointKey> ToPointKey(const qdrant::PointId& id);

qdrant::PointId ToPointId(const PointKey& key);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_POINT_ID_H_
