#include "daemon/config/config.h"

#include "absl/strings/str_cat.h"

namespace qpool::config {

std::string NodeAddress::ToString() const {
  // An IPv6 literal is bracketed so that the port stays unambiguous: "[::1]:6334".
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

}  // namespace qpool::config
