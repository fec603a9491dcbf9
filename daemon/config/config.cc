#include "daemon/config/config.h"

#include "absl/strings/str_cat.h"

namespace qpool::config {

std::string NodeAddress::ToString() const {
  // An IPv6 literal is bracketed so that the port stays unambiguous: "[::1]:6334".
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

TlsOptions UpstreamTlsConfig::For(const std::string& node) const {
  TlsOptions options = defaults;
  auto it = nodes.find(node);
  if (it != nodes.end()) ApplyTlsOverride(it->second, options);
  return options;
}

void ApplyTlsOverride(const TlsOverride& o, TlsOptions& options) {
  if (o.enabled) options.enabled = *o.enabled;
  if (o.ca_file) options.ca_file = *o.ca_file;
  if (o.server_name) options.server_name = *o.server_name;
  if (o.verify) options.verify = *o.verify;
  if (o.cert_file) options.cert_file = *o.cert_file;
  if (o.key_file) options.key_file = *o.key_file;
}

}  // namespace qpool::config
