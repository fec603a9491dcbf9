// libFuzzer target: qpoold's config loader fed arbitrary YAML text. Every input must come back as
// a Config or an absl::Status (never an exception, crash, hang or sanitizer report); a Config that
// parses is validated too, and its text form of every node address parses back.
//
//   cmake --preset fuzz && cmake --build --preset fuzz --target config_fuzz
//   build/fuzz/bin/config_fuzz -max_total_time=60 tests/fuzz/corpus/config_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "daemon/config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qpool::config::Config> config = qpool::config::ParseConfig(text, "<fuzz>");
  if (!config.ok()) {
    // An error always says what is wrong.
    if (config.status().message().empty()) std::abort();
    return 0;
  }
  (void)qpool::config::Validate(*config);
  for (const qpool::config::NodeAddress& node : config->upstream.nodes) {
    absl::StatusOr<qpool::config::NodeAddress> again =
        qpool::config::ParseNodeAddress(node.ToString());
    if (!again.ok() || again->ToString() != node.ToString()) std::abort();
  }
  return 0;
}
