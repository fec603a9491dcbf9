// Builds a Config from YAML text, a YAML file and command-line flags, and validates it.
//
// Errors name the source, the line, the key and the reason, e.g.
//   qpool.yaml:12: upstream.max_connections: must be between 1 and 1024, got 0
//   qpool.yaml:3: server.listn: unknown key (did you mean server.listen?)
// Thread-safety: free functions without shared state.
#ifndef QPOOL_DAEMON_CONFIG_LOADER_H_
#define QPOOL_DAEMON_CONFIG_LOADER_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/config/config.h"

namespace qpool::config {

// Parses YAML text. `source_name` (a file path, or "<flags>") prefixes every message. Unknown
// keys, wrong types and out-of-range values fail with kInvalidArgument. Does not run Validate().
absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source_name);

// Reads and parses a file; kNotFound / kPermissionDenied when it cannot be read.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Cross-field checks (min_connections <= max_connections, workers <= max_connections, at least
// one node, ...). kInvalidArgument naming the keys.
absl::Status Validate(const Config& config);

// Every config key as "section.key", in config.h's order (for docs and drift tests).
std::vector<std::string> ConfigKeyNames();

// Parses "host:port" or "[v6]:port"; kInvalidArgument otherwise.
absl::StatusOr<NodeAddress> ParseNodeAddress(std::string_view text);

// What the command line asked for. Flags override the file's values.
struct CommandLine {
  std::optional<std::string> config_path;   // --config FILE
  bool check_config = false;                // --check-config
  bool version = false;                     // --version
  bool help = false;                        // --help
  std::optional<std::string> log_level;     // --log-level
  std::optional<std::string> log_format;    // --log-format text|json
  std::optional<std::string> listen;        // --listen ADDR
  std::optional<std::string> admin_listen;  // --admin-listen ADDR
  std::optional<std::string> upstream;      // --upstream HOST:PORT[,HOST:PORT...]
  std::optional<uint32_t> max_connections;  // --max-connections N (per node)
  std::optional<uint32_t> workers;          // --workers N
};

// Parses argv (both "--flag value" and "--flag=value"). kInvalidArgument for an unknown flag, a
// missing value or a malformed number.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);

// The usage text printed by --help.
std::string UsageText();

// Loads the file named by --config (if any; defaults otherwise), applies the flag overrides, then
// validates. Messages name the file/line/key or the flag at fault.
absl::StatusOr<Config> BuildConfig(const CommandLine& command_line);

}  // namespace qpool::config

#endif  // QPOOL_DAEMON_CONFIG_LOADER_H_
