// Builds a Config from YAML text, a YAML file and command-line flags, and validates it.
//
// Errors name the source, the line, the key and the reason, e.g.
//   qpool.yaml:12: upstream.max_connections: must be between 1 and 1024, got 0
//   qpool.yaml:3: server.listn: unknown key (did you mean server.listen?)
// Thread-safety: free functions without shared state.
#ifndef QPOOL_DAEMON_CONFIG_LOADER_H_
#define QPOOL_DAEMON_CONFIG_LOADER_H_

#include <map>
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

// How many upstream nodes the pools serve: upstream.nodes, or in a REST-only setup (no gRPC nodes,
// rest.listen on) upstream.rest_nodes. Per-node state (metrics, health, retry budgets, the
// router) is sized by it.
size_t NodeCount(const Config& config);
// "host:port" of node `i` as logs name it: its gRPC endpoint, or its REST endpoint in a REST-only
// setup.
std::string NodeName(const Config& config, size_t i);

// Parses "host:port" or "[v6]:port"; kInvalidArgument otherwise.
absl::StatusOr<NodeAddress> ParseNodeAddress(std::string_view text);

// What the command line asked for. Flags override the file's values.
struct CommandLine {
  std::optional<std::string> config_path;    // --config FILE
  bool check_config = false;                 // --check-config
  bool version = false;                      // --version
  bool help = false;                         // --help
  bool print_config = false;                 // --print-config
  std::optional<std::string> log_level;      // --log-level
  std::optional<std::string> log_format;     // --log-format text|json
  std::optional<std::string> listen;         // --listen ADDR
  std::optional<std::string> admin_listen;   // --admin-listen ADDR
  std::optional<std::string> upstream;       // --upstream HOST:PORT[,HOST:PORT...]
  std::optional<std::string> rest_listen;    // --rest-listen ADDR ("" turns REST off)
  std::optional<std::string> rest_upstream;  // --rest-upstream HOST:PORT[,HOST:PORT...]
  std::optional<uint32_t> max_connections;   // --max-connections N (per node)
  std::optional<uint32_t> workers;           // --workers N
};

// Parses argv (both "--flag value" and "--flag=value"). kInvalidArgument for an unknown flag, a
// missing value or a malformed number.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);

// The usage text printed by --help.
std::string UsageText();

// Environment variables, name -> value.
using Environment = std::map<std::string, std::string>;

// The process's environment (environ).
Environment ProcessEnvironment();

// The variable that overrides `key`: "upstream.max_connections" ->
// "QPOOL_UPSTREAM_MAX_CONNECTIONS". Derived from the key table; there is no second list.
std::string EnvVarName(std::string_view key);

// Loads the file named by --config (if any; defaults otherwise), applies QPOOL_<SECTION>_<KEY>
// variables from `env`, then the flags, then validates: flags > environment > file > defaults.
// A variable's value is read as a YAML value of the key's type ("4", "250ms", "true"); list keys
// also take "a,b". An unknown QPOOL_* variable fails, naming it, except Kubernetes service links
// (QPOOL_SERVICE_HOST, QPOOL_PORT_6334_TCP, ...) and the variable health.api_key_env names.
// Messages name the file/line/key, the variable or the flag at fault.
absl::StatusOr<Config> BuildConfig(const CommandLine& command_line, const Environment& env);
// The same with ProcessEnvironment().
absl::StatusOr<Config> BuildConfig(const CommandLine& command_line);

// The configuration as YAML, every key in config.h's order, loadable again by ParseConfig; keys
// marked secret print as "<redacted>" (health.api_key_env is a variable's name and prints; the
// key it names is never in a Config).
std::string PrintConfig(const Config& config);

// Keys whose values differ, as "section.key", in config.h's order.
std::vector<std::string> ChangedKeys(const Config& before, const Config& after);

// "log.level: \"info\" -> \"debug\"" (secret keys: "<key> (changed)").
std::string DescribeChange(const Config& before, const Config& after, std::string_view key);

// True for keys a running qpoold applies on reload (SIGHUP, config.watch_interval): all but
// server.listen, server.workers, rest.listen and admin.listen, which need a restart.
bool ReloadableKey(std::string_view key);

}  // namespace qpool::config

#endif  // QPOOL_DAEMON_CONFIG_LOADER_H_
