#include "emulator/point_id.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace qpool::emulator {

absl::StatusOr<PointKey> ToPointKey(const qdrant::PointId& id) {
  switch (id.point_id_options_case()) {
    case qdrant::PointId::kNum:
      return PointKey{id.num(), ""};
    case qdrant::PointId::kUuid: {
      absl::string_view text = id.uuid();
      if (absl::ConsumePrefix(&text, "urn:uuid:") || absl::StartsWith(text, "{")) {
        if (absl::ConsumePrefix(&text, "{") && !absl::ConsumeSuffix(&text, "}")) text = "";
      }
      std::string hex;
      for (char c : text) {
        if (c != '-') hex.push_back(absl::ascii_tolower(c));
      }
      bool valid = hex.size() == 32 && (text.size() == 32 || text.size() == 36);
      for (char c : hex) valid = valid && std::isxdigit(static_cast<unsigned char>(c));
      if (!valid) {
        return absl::InvalidArgumentError(absl::StrCat("Unable to parse UUID: ", id.uuid()));
      }
      return PointKey{
          0, absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                          hex.substr(16, 4), "-", hex.substr(20))};
    }
    default:
      return absl::InvalidArgumentError("Wrong input: point id has neither num nor uuid");
  }
}

qdrant::PointId ToPointId(const PointKey& key) {
  qdrant::PointId id;
  if (key.is_uuid()) {
    id.set_uuid(key.uuid);
  } else {
    id.set_num(key.num);
  }
  return id;
}

}  // namespace qpool::emulator
