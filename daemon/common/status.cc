#include "daemon/common/status.h"

#include "absl/strings/str_cat.h"

namespace qpool {

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  // Debian's Abseil has its own absl::string_view, which StrCat takes; std::string_view is not one.
  return absl::Status(status.code(), absl::StrCat(absl::string_view(context.data(), context.size()),
                                                  ": ", status.message()));
}

}  // namespace qpool
