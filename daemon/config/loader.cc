// The config loader. Every key lives in one table, kKeys() below: its name, how its YAML value is
// parsed, and the single-key check (range, format) that both the parser and Validate() apply, so a
// limit is written once whether the value came from the file or from a flag.
#include "daemon/config/loader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon/common/status.h"
#include "yaml-cpp/yaml.h"

namespace qpool::config {
namespace {

constexpr int64_t kNoUpperBound = std::numeric_limits<uint32_t>::max();
constexpr int64_t kMaxInt31 = std::numeric_limits<int32_t>::max();

// A value the parser refuses: where (the offending node's position) and why.
struct Problem {
  YAML::Mark mark;
  std::string reason;
};

// A Validate() failure: the key at fault and why; the caller adds where the key came from.
struct Violation {
  std::string key;
  std::string reason;
};

using Reason = std::optional<std::string>;  // nullopt when the value is fine

// One config key. `parse` reads the YAML value into the config (type and format errors);
// `check` applies the key's own limits to the value now in the config (range errors). Cross-key
// rules live in ValidateConfig().
// `print` writes the value back as YAML (flow style), for --print-config and for telling what a
// reload changed. `shape` says how an environment variable's text is read; `secret` keys are
// never printed (--print-config shows them redacted).
enum class Shape {
  kScalar,  // the text as is: "4", "250ms", "[::1]:6334"
  kList,    // "a,b" or a YAML flow list "[a, b]"
  kMap,     // a YAML flow map "{a: b}"
};
struct Key {
  absl::string_view name;  // "section.key"
  std::function<std::optional<Problem>(const YAML::Node&, Config&)> parse;
  std::function<Reason(const Config&)> check;
  std::function<std::string(const Config&)> print;
  Shape shape = Shape::kScalar;
  bool secret = false;
};

// A YAML double-quoted scalar.
std::string Quoted(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, "\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

std::string_view StdView(absl::string_view text) { return {text.data(), text.size()}; }

absl::string_view SectionOf(absl::string_view key) { return key.substr(0, key.find('.')); }
absl::string_view LeafOf(absl::string_view key) { return key.substr(key.find('.') + 1); }

std::string KindOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return absl::StrCat("\"", node.Scalar(), "\"");
    default:
      return "an undefined value";
  }
}

std::optional<Problem> ProblemAt(const YAML::Node& node, std::string reason) {
  return Problem{node.Mark(), std::move(reason)};
}

// --- value kinds ---------------------------------------------------------------------------

Reason RangeReason(int64_t value, int64_t min, int64_t max) {
  if (value >= min && value <= max) return std::nullopt;
  if (max >= kNoUpperBound) return absl::StrCat("must be at least ", min, ", got ", value);
  return absl::StrCat("must be between ", min, " and ", max, ", got ", value);
}

// A plain (unquoted) YAML integer.
Reason ParseInteger(const YAML::Node& node, int64_t& out) {
  if (!node.IsScalar()) return absl::StrCat("expected an integer, got ", KindOf(node));
  if (node.Tag() == "!")
    return absl::StrCat("expected an integer, got the quoted string ", KindOf(node));
  if (!absl::SimpleAtoi(node.Scalar(), &out)) {
    return absl::StrCat("expected an integer, got ", KindOf(node));
  }
  return std::nullopt;
}

// Bytes: an integer, or an integer with a binary suffix ("64KiB", "1MiB", "1GiB").
Reason ParseSize(const YAML::Node& node, int64_t& out) {
  constexpr absl::string_view kHint =
      "expected a size in bytes such as 65536, \"64KiB\" or \"1MiB\"";
  if (!node.IsScalar()) return absl::StrCat(kHint, ", got ", KindOf(node));
  absl::string_view text = absl::StripAsciiWhitespace(node.Scalar());
  int64_t multiplier = 1;
  for (const auto& [suffix, factor] :
       {std::pair<absl::string_view, int64_t>{"KiB", int64_t{1} << 10},
        {"MiB", int64_t{1} << 20},
        {"GiB", int64_t{1} << 30}}) {
    if (absl::ConsumeSuffix(&text, suffix)) {
      multiplier = factor;
      break;
    }
  }
  text = absl::StripTrailingAsciiWhitespace(text);
  int64_t number = 0;
  if (!absl::SimpleAtoi(text, &number) || text.empty() || !absl::ascii_isdigit(text.back())) {
    return absl::StrCat(kHint, ", got ", KindOf(node));
  }
  if (number < 0) return absl::StrCat("must not be negative, got ", node.Scalar());
  if (number > (int64_t{1} << 40) / multiplier) return absl::StrCat("too large: ", node.Scalar());
  out = number * multiplier;
  return std::nullopt;
}

Reason DurationReason(absl::Duration value, bool allow_zero) {
  if (value == absl::InfiniteDuration()) return std::string("must be finite");
  if (value < absl::ZeroDuration()) {
    return absl::StrCat("must not be negative, got ", absl::FormatDuration(value));
  }
  if (value == absl::ZeroDuration() && !allow_zero) return std::string("must be greater than 0");
  return std::nullopt;
}

Reason ParseDurationValue(const YAML::Node& node, absl::Duration& out) {
  constexpr absl::string_view kHint = "expected a duration such as \"250ms\", \"1s\" or \"2m\"";
  if (!node.IsScalar()) return absl::StrCat(kHint, ", got ", KindOf(node));
  if (!absl::ParseDuration(std::string(absl::StripAsciiWhitespace(node.Scalar())), &out)) {
    return absl::StrCat(kHint, ", got ", KindOf(node));
  }
  return std::nullopt;
}

Reason OneOfReason(absl::string_view value, const std::vector<absl::string_view>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return std::nullopt;
  return absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), ", got \"", value, "\"");
}

// --- key builders --------------------------------------------------------------------------
// `field` is a generic lambda `[](auto& c) -> auto& { return c.section.key; }` so that the same
// accessor reads a const Config and writes a mutable one.

// An integer in [min, max], read by `parse` (a plain integer, or a size with a unit).
template <typename Field>
Key RangedKey(absl::string_view name, Field field, int64_t min, int64_t max,
              Reason (*parse)(const YAML::Node&, int64_t&)) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               int64_t value = 0;
               if (Reason reason = parse(node, value)) return ProblemAt(node, *reason);
               if (Reason reason = RangeReason(value, min, max)) return ProblemAt(node, *reason);
               field(config) = static_cast<uint32_t>(value);
               return std::nullopt;
             },
             [=](const Config& config) { return RangeReason(field(config), min, max); },
             [=](const Config& config) { return absl::StrCat(field(config)); }};
}

template <typename Field>
Key IntegerKey(absl::string_view name, Field field, int64_t min, int64_t max) {
  return RangedKey(name, field, min, max, ParseInteger);
}

template <typename Field>
Key SizeKey(absl::string_view name, Field field, int64_t min, int64_t max) {
  return RangedKey(name, field, min, max, ParseSize);
}

template <typename Field>
Key DurationKey(absl::string_view name, Field field, bool allow_zero) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               absl::Duration value;
               if (Reason reason = ParseDurationValue(node, value)) return ProblemAt(node, *reason);
               if (Reason reason = DurationReason(value, allow_zero)) {
                 return ProblemAt(node, *reason);
               }
               field(config) = value;
               return std::nullopt;
             },
             [=](const Config& config) { return DurationReason(field(config), allow_zero); },
             [=](const Config& config) {
               // "0s" rather than FormatDuration's bare "0", which a duration key refuses.
               if (field(config) == absl::ZeroDuration()) return std::string("\"0s\"");
               return Quoted(absl::FormatDuration(field(config)));
             }};
}

template <typename Field>
Key OneOfKey(absl::string_view name, Field field, std::vector<absl::string_view> allowed) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               if (!node.IsScalar()) {
                 return ProblemAt(
                     node, absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), ", got ",
                                        KindOf(node)));
               }
               if (Reason reason = OneOfReason(node.Scalar(), allowed)) {
                 return ProblemAt(node, *reason);
               }
               field(config) = node.Scalar();
               return std::nullopt;
             },
             [=](const Config& config) { return OneOfReason(field(config), allowed); },
             [=](const Config& config) { return Quoted(field(config)); }};
}

template <typename Field>
Key BoolKey(absl::string_view name, Field field) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               const std::string text = node.IsScalar() ? node.Scalar() : "";
               if (node.IsScalar() && node.Tag() != "!" && (text == "true" || text == "false")) {
                 field(config) = text == "true";
                 return std::nullopt;
               }
               return ProblemAt(node, absl::StrCat("expected true or false, got ", KindOf(node)));
             },
             [](const Config&) -> Reason { return std::nullopt; },
             [=](const Config& config) { return std::string(field(config) ? "true" : "false"); }};
}

Reason FractionReason(double value, bool allow_zero) {
  if (value > 0 && value <= 1) return std::nullopt;
  if (value == 0 && allow_zero) return std::nullopt;
  return absl::StrCat("must be ", allow_zero ? "between 0" : "above 0", " and at most 1, got ",
                      value);
}

// A number in (0, 1] ("0.1"); in [0, 1] when `allow_zero`.
template <typename Field>
Key FractionKey(absl::string_view name, Field field, bool allow_zero = false) {
  return Key{
      name,
      [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
        double value = 0;
        if (!node.IsScalar() || node.Tag() == "!" || !absl::SimpleAtod(node.Scalar(), &value)) {
          return ProblemAt(node, absl::StrCat("expected a number such as 0.1, got ", KindOf(node)));
        }
        if (Reason reason = FractionReason(value, allow_zero)) return ProblemAt(node, *reason);
        field(config) = value;
        return std::nullopt;
      },
      [=](const Config& config) { return FractionReason(field(config), allow_zero); },
      [=](const Config& config) { return absl::StrCat(field(config)); }};
}

Reason SubsetReason(const std::vector<std::string>& values,
                    const std::vector<absl::string_view>& allowed) {
  for (const std::string& value : values) {
    if (Reason reason = OneOfReason(value, allowed)) return reason;
  }
  return std::nullopt;
}

// A list of names from `allowed` ("[unavailable, resource_exhausted]"); may be empty.
template <typename Field>
Key NameListKey(absl::string_view name, Field field, std::vector<absl::string_view> allowed) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               const std::string hint =
                   absl::StrCat("expected a list of ", absl::StrJoin(allowed, ", "));
               if (!node.IsSequence()) {
                 return ProblemAt(node, absl::StrCat(hint, ", got ", KindOf(node)));
               }
               std::vector<std::string> values;
               for (const YAML::Node& item : node) {
                 if (!item.IsScalar()) {
                   return ProblemAt(item, absl::StrCat(hint, ", got ", KindOf(item)));
                 }
                 if (Reason reason = OneOfReason(item.Scalar(), allowed)) {
                   return ProblemAt(item, *reason);
                 }
                 values.push_back(item.Scalar());
               }
               field(config) = std::move(values);
               return std::nullopt;
             },
             [=](const Config& config) { return SubsetReason(field(config), allowed); },
             [=](const Config& config) {
               return absl::StrCat("[", absl::StrJoin(field(config), ", "), "]");
             },
             Shape::kList};
}

constexpr std::initializer_list<absl::string_view> kRetryClasses = {"read", "id_scoped_write",
                                                                    "filter_scoped_write", "never"};

Reason MethodPathReason(absl::string_view path) {
  // "/package.Service/Method": what gRPC puts in :path.
  const bool shaped = absl::StartsWith(path, "/") && path.size() > 3 &&
                      path.find('/', 1) != absl::string_view::npos &&
                      path.find('/', 1) != path.size() - 1 && path.find('/', 1) > 1;
  if (shaped) return std::nullopt;
  return absl::StrCat("expected a gRPC method path such as \"/qdrant.Points/Search\", got \"", path,
                      "\"");
}

Reason MethodMapReason(const std::map<std::string, std::string>& methods) {
  for (const auto& [path, retry_class] : methods) {
    if (Reason reason = MethodPathReason(path)) return reason;
    if (Reason reason = OneOfReason(retry_class, kRetryClasses)) {
      return absl::StrCat(path, ": ", *reason);
    }
  }
  return std::nullopt;
}

Key MethodClassesKey() {
  return Key{"retry.methods",
             [](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               if (!node.IsMap()) {
                 return ProblemAt(node,
                                  absl::StrCat("expected a map such as {\"/qdrant.Points/Delete\": "
                                               "never}, got ",
                                               KindOf(node)));
               }
               std::map<std::string, std::string> methods;
               for (const auto& entry : node) {
                 if (!entry.first.IsScalar() || !entry.second.IsScalar()) {
                   return ProblemAt(entry.first, "expected \"/package.Service/Method\": CLASS");
                 }
                 const std::string& path = entry.first.Scalar();
                 if (Reason reason = MethodPathReason(path)) return ProblemAt(entry.first, *reason);
                 if (Reason reason = OneOfReason(entry.second.Scalar(), kRetryClasses)) {
                   return ProblemAt(entry.second, absl::StrCat(path, ": ", *reason));
                 }
                 if (!methods.emplace(path, entry.second.Scalar()).second) {
                   return ProblemAt(entry.first, absl::StrCat("duplicate method ", path));
                 }
               }
               config.retry.methods = std::move(methods);
               return std::nullopt;
             },
             [](const Config& config) { return MethodMapReason(config.retry.methods); },
             [](const Config& config) {
               return absl::StrCat("{",
                                   absl::StrJoin(config.retry.methods, ", ",
                                                 [](std::string* out, const auto& entry) {
                                                   absl::StrAppend(out, Quoted(entry.first), ": ",
                                                                   entry.second);
                                                 }),
                                   "}");
             },
             Shape::kMap};
}

// A free-form string key, checked by `check` (which returns why a value is refused).
template <typename Field>
Key StringKey(absl::string_view name, Field field,
              std::function<Reason(const std::string&)> check) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               if (!node.IsScalar()) {
                 return ProblemAt(node, absl::StrCat("expected a string, got ", KindOf(node)));
               }
               if (Reason reason = check(node.Scalar())) return ProblemAt(node, *reason);
               field(config) = node.Scalar();
               return std::nullopt;
             },
             [=](const Config& config) { return check(field(config)); },
             [=](const Config& config) { return Quoted(field(config)); }};
}

// A Qdrant collection name as a probe may send it: empty (none), or up to 255 printable ASCII
// characters without '/' (Qdrant refuses such names anyway).
Reason CollectionNameReason(const std::string& name) {
  if (name.size() > 255) return std::string("must be at most 255 characters");
  for (char c : name) {
    if (c < 0x20 || c > 0x7e || c == '/') {
      return absl::StrCat("invalid character in collection name \"", name, "\"");
    }
  }
  return std::nullopt;
}

// The name of an environment variable: empty (none), or letters, digits and '_', not starting
// with a digit.
Reason EnvVarNameReason(const std::string& name) {
  if (name.empty()) return std::nullopt;
  const bool valid = !absl::ascii_isdigit(name[0]) &&
                     std::all_of(name.begin(), name.end(),
                                 [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
  if (valid) return std::nullopt;
  return absl::StrCat("expected an environment variable name such as QDRANT_API_KEY, got \"", name,
                      "\"");
}

// An address key ("HOST:PORT"); `field` as for the builders above.
template <typename Field>
Key AddressKey(absl::string_view name, Field field) {
  return Key{name,
             [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               if (!node.IsScalar()) {
                 return ProblemAt(node, absl::StrCat("expected \"HOST:PORT\", got ", KindOf(node)));
               }
               absl::StatusOr<NodeAddress> address = ParseNodeAddress(node.Scalar());
               if (!address.ok()) return ProblemAt(node, std::string(address.status().message()));
               field(config) = *std::move(address);
               return std::nullopt;
             },
             [](const Config&) -> Reason { return std::nullopt; },
             [=](const Config& config) { return Quoted(field(config).ToString()); }};
}

Reason NodesReason(const std::vector<NodeAddress>& nodes) {
  if (nodes.empty()) {
    return std::string(
        "at least one Qdrant node is required: pass --upstream HOST:PORT[,HOST:PORT...] or set "
        "upstream.nodes in a config file (--config FILE)");
  }
  std::set<std::string> seen;
  for (const NodeAddress& node : nodes) {
    if (node.port == 0)
      return absl::StrCat("port must be between 1 and 65535 in ", node.ToString());
    if (!seen.insert(node.ToString()).second) {
      return absl::StrCat("duplicate node ", node.ToString());
    }
  }
  return std::nullopt;
}

// A YAML list of "HOST:PORT" into `nodes` (upstream.nodes, upstream.rest_nodes). `example` is a
// valid entry for the message. `check`, when given, runs after each item, so that its message
// points at the offending line.
std::optional<Problem> ParseNodeList(const YAML::Node& node, absl::string_view example,
                                     Reason (*check)(const std::vector<NodeAddress>&),
                                     std::vector<NodeAddress>& nodes) {
  if (!node.IsSequence()) {
    return ProblemAt(
        node, absl::StrCat("expected a list such as [\"", example, "\"], got ", KindOf(node)));
  }
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) {
      return ProblemAt(item, absl::StrCat("expected \"HOST:PORT\", got ", KindOf(item)));
    }
    absl::StatusOr<NodeAddress> address = ParseNodeAddress(item.Scalar());
    if (!address.ok()) return ProblemAt(item, std::string(address.status().message()));
    nodes.push_back(*std::move(address));
    if (check != nullptr) {
      if (Reason reason = check(nodes)) return ProblemAt(item, *reason);
    }
  }
  return std::nullopt;
}

Key NodesKey() {
  return Key{"upstream.nodes",
             [](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               std::vector<NodeAddress> nodes;
               if (auto problem = ParseNodeList(node, "10.0.0.1:6334", NodesReason, nodes)) {
                 return problem;
               }
               config.upstream.nodes = std::move(nodes);
               return std::nullopt;
             },
             [](const Config& config) -> Reason {
               // REST-only: REST endpoints and rest.listen, and no gRPC node.
               if (config.upstream.nodes.empty() && !config.upstream.rest_nodes.empty() &&
                   !config.rest.listen.host.empty()) {
                 return std::nullopt;
               }
               return NodesReason(config.upstream.nodes);
             },
             [](const Config& config) {
               return absl::StrCat("[",
                                   absl::StrJoin(config.upstream.nodes, ", ",
                                                 [](std::string* out, const NodeAddress& node) {
                                                   out->append(Quoted(node.ToString()));
                                                 }),
                                   "]");
             },
             Shape::kList};
}

// An address key that may be "" (off): rest.listen.
template <typename Field>
Key OptionalAddressKey(absl::string_view name, Field field) {
  return Key{
      name,
      [=](const YAML::Node& node, Config& config) -> std::optional<Problem> {
        if (!node.IsScalar()) {
          return ProblemAt(
              node, absl::StrCat("expected \"HOST:PORT\" or \"\" (off), got ", KindOf(node)));
        }
        if (node.Scalar().empty()) {
          field(config) = NodeAddress{};
          return std::nullopt;
        }
        absl::StatusOr<NodeAddress> address = ParseNodeAddress(node.Scalar());
        if (!address.ok()) return ProblemAt(node, std::string(address.status().message()));
        field(config) = *std::move(address);
        return std::nullopt;
      },
      [](const Config&) -> Reason { return std::nullopt; },
      [=](const Config& config) {
        return field(config).host.empty() ? std::string("\"\"") : Quoted(field(config).ToString());
      }};
}

Reason RestNodesReason(const Config& config) {
  const std::vector<NodeAddress>& rest_nodes = config.upstream.rest_nodes;
  if (rest_nodes.empty()) return std::nullopt;
  if (!config.upstream.nodes.empty() && rest_nodes.size() != config.upstream.nodes.size()) {
    return absl::StrCat("lists ", rest_nodes.size(), " REST endpoints for ",
                        config.upstream.nodes.size(),
                        " nodes in upstream.nodes: give one per node, in the same order");
  }
  std::set<std::string> seen;
  for (const NodeAddress& node : rest_nodes) {
    if (node.port == 0)
      return absl::StrCat("port must be between 1 and 65535 in ", node.ToString());
    if (!seen.insert(node.ToString()).second) {
      return absl::StrCat("duplicate node ", node.ToString());
    }
  }
  return std::nullopt;
}

size_t EditDistance(absl::string_view a, absl::string_view b);
std::string DidYouMean(absl::string_view wanted,
                       const std::vector<std::pair<std::string, size_t>>& candidates);

// upstream.tls: a map of TlsOptions keys, plus `nodes` (per-node overrides of the same keys).
constexpr std::initializer_list<absl::string_view> kTlsKeys = {
    "enabled", "ca_file", "server_name", "verify", "cert_file", "key_file"};

std::optional<Problem> ParseTlsField(const YAML::Node& key_node, const YAML::Node& value,
                                     TlsOverride& out) {
  const std::string& name = key_node.Scalar();
  if (value.IsNull()) return ProblemAt(key_node, absl::StrCat(name, ": missing value"));
  if (name == "enabled" || name == "verify") {
    const std::string text = value.IsScalar() ? value.Scalar() : "";
    if (!value.IsScalar() || value.Tag() == "!" || (text != "true" && text != "false")) {
      return ProblemAt(value, absl::StrCat(name, ": expected true or false, got ", KindOf(value)));
    }
    (name == "enabled" ? out.enabled : out.verify) = text == "true";
    return std::nullopt;
  }
  if (!value.IsScalar()) {
    return ProblemAt(value, absl::StrCat(name, ": expected a string, got ", KindOf(value)));
  }
  const std::string& text = value.Scalar();
  if (name == "server_name") {
    const bool valid = std::all_of(text.begin(), text.end(), [](char c) {
      return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == ':';
    });
    if (!valid || text.size() > 253) {
      return ProblemAt(value, absl::StrCat("server_name: expected a DNS name or an IP address, "
                                           "got \"",
                                           text, "\""));
    }
    out.server_name = text;
  } else if (name == "ca_file") {
    out.ca_file = text;
  } else if (name == "cert_file") {
    out.cert_file = text;
  } else {
    out.key_file = text;
  }
  return std::nullopt;
}

std::optional<Problem> ParseTlsMap(const YAML::Node& node, TlsOverride& out, bool allow_nodes,
                                   std::map<std::string, TlsOverride>* nodes) {
  if (!node.IsMap()) {
    return ProblemAt(node,
                     absl::StrCat("expected a map such as {enabled: true}, got ", KindOf(node)));
  }
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& key_node = entry.first;
    if (!key_node.IsScalar()) return ProblemAt(key_node, "keys must be plain names");
    const std::string& name = key_node.Scalar();
    if (!seen.insert(name).second)
      return ProblemAt(key_node, absl::StrCat(name, ": duplicate key"));
    if (allow_nodes && name == "nodes") {
      if (!entry.second.IsMap()) {
        return ProblemAt(entry.second,
                         absl::StrCat("nodes: expected a map from \"HOST:PORT\" (as in "
                                      "upstream.nodes) to TLS keys, got ",
                                      KindOf(entry.second)));
      }
      for (const auto& node_entry : entry.second) {
        if (!node_entry.first.IsScalar()) return ProblemAt(node_entry.first, "expected HOST:PORT");
        absl::StatusOr<NodeAddress> address = ParseNodeAddress(node_entry.first.Scalar());
        if (!address.ok()) {
          return ProblemAt(node_entry.first, absl::StrCat("nodes: ", address.status().message()));
        }
        TlsOverride node_override;
        if (auto problem = ParseTlsMap(node_entry.second, node_override, false, nullptr)) {
          return problem;
        }
        (*nodes)[address->ToString()] = node_override;
      }
      continue;
    }
    if (std::find(kTlsKeys.begin(), kTlsKeys.end(), name) == kTlsKeys.end()) {
      std::vector<std::pair<std::string, size_t>> candidates;
      for (absl::string_view known : kTlsKeys) {
        candidates.emplace_back(std::string(known), EditDistance(name, known));
      }
      if (allow_nodes) candidates.emplace_back("nodes", EditDistance(name, "nodes"));
      return ProblemAt(key_node, absl::StrCat(name, ": unknown key", DidYouMean(name, candidates)));
    }
    if (auto problem = ParseTlsField(key_node, entry.second, out)) return problem;
  }
  return std::nullopt;
}

Reason TlsReason(const UpstreamConfig& upstream) {
  auto check = [](const TlsOptions& o, const std::string& where) -> Reason {
    if (o.cert_file.empty() != o.key_file.empty()) {
      return absl::StrCat(where, "cert_file and key_file go together (mTLS): set both or neither");
    }
    return std::nullopt;
  };
  if (Reason reason = check(upstream.tls.defaults, "")) return reason;
  for (const auto& entry : upstream.tls.nodes) {
    const std::string& node = entry.first;  // a named variable: clang 14 lambdas cannot capture
                                            // structured bindings
    const bool known = std::any_of(upstream.nodes.begin(), upstream.nodes.end(),
                                   [&](const NodeAddress& n) { return n.ToString() == node; });
    if (!known) {
      return absl::StrCat("nodes: ", node, " is not in upstream.nodes");
    }
    if (Reason reason = check(upstream.tls.For(node), absl::StrCat("nodes: ", node, ": "))) {
      return reason;
    }
  }
  return std::nullopt;
}

Key RestNodesKey() {
  return Key{"upstream.rest_nodes",
             [](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               std::vector<NodeAddress> nodes;
               if (auto problem = ParseNodeList(node, "10.0.0.1:6333", /*check=*/nullptr, nodes)) {
                 return problem;
               }
               config.upstream.rest_nodes = std::move(nodes);
               return std::nullopt;
             },
             // Checked against upstream.nodes in FindViolation, once both are known.
             [](const Config&) -> Reason { return std::nullopt; },
             [](const Config& config) {
               return absl::StrCat("[",
                                   absl::StrJoin(config.upstream.rest_nodes, ", ",
                                                 [](std::string* out, const NodeAddress& node) {
                                                   out->append(Quoted(node.ToString()));
                                                 }),
                                   "]");
             },
             Shape::kList};
}

// upstream.tls as a YAML flow map that parses back to the same settings (file paths, not secrets).
std::string PrintTlsOverride(const TlsOverride& o) {
  std::vector<std::string> parts;
  if (o.enabled) parts.push_back(absl::StrCat("enabled: ", *o.enabled ? "true" : "false"));
  if (o.ca_file) parts.push_back(absl::StrCat("ca_file: ", Quoted(*o.ca_file)));
  if (o.server_name) parts.push_back(absl::StrCat("server_name: ", Quoted(*o.server_name)));
  if (o.verify) parts.push_back(absl::StrCat("verify: ", *o.verify ? "true" : "false"));
  if (o.cert_file) parts.push_back(absl::StrCat("cert_file: ", Quoted(*o.cert_file)));
  if (o.key_file) parts.push_back(absl::StrCat("key_file: ", Quoted(*o.key_file)));
  return absl::StrJoin(parts, ", ");
}

std::string PrintTls(const UpstreamTlsConfig& tls) {
  const TlsOptions& d = tls.defaults;
  TlsOverride all{d.enabled, d.ca_file, d.server_name, d.verify, d.cert_file, d.key_file};
  std::string out = absl::StrCat("{", PrintTlsOverride(all));
  if (!tls.nodes.empty()) {
    absl::StrAppend(&out, ", nodes: {",
                    absl::StrJoin(tls.nodes, ", ",
                                  [](std::string* text, const auto& entry) {
                                    absl::StrAppend(text, Quoted(entry.first), ": {",
                                                    PrintTlsOverride(entry.second), "}");
                                  }),
                    "}");
  }
  return absl::StrCat(out, "}");
}

Key TlsKey() {
  return Key{"upstream.tls",
             [](const YAML::Node& node, Config& config) -> std::optional<Problem> {
               TlsOverride top;
               std::map<std::string, TlsOverride> nodes;
               if (auto problem = ParseTlsMap(node, top, true, &nodes)) return problem;
               UpstreamTlsConfig tls;
               tls.nodes = std::move(nodes);
               ApplyTlsOverride(top, tls.defaults);
               config.upstream.tls = std::move(tls);
               return std::nullopt;
             },
             [](const Config&) -> Reason { return std::nullopt; },
             [](const Config& config) { return PrintTls(config.upstream.tls); }, Shape::kMap};
}

// A path to a file qpoold reads (empty: none). Existence is checked when qpoold starts.
Reason PathReason(const std::string& path) {
  if (path.find('\0') != std::string::npos) return std::string("must not contain a NUL byte");
  return std::nullopt;
}

// The one table of keys, in config.h's order. Defaults live in config.h; units and ranges here.
const std::vector<Key>& Keys() {
  static const std::vector<Key>* const keys = new std::vector<Key>{
      AddressKey(
          "server.listen", [](auto& c) -> auto& { return c.server.listen; }),
      IntegerKey(
          "server.max_client_connections",
          [](auto& c) -> auto& { return c.server.max_client_connections; }, 1, kNoUpperBound),
      IntegerKey(
          "server.max_concurrent_streams",
          [](auto& c) -> auto& { return c.server.max_concurrent_streams; }, 1, kMaxInt31),
      SizeKey(
          "server.stream_window", [](auto& c) -> auto& { return c.server.stream_window; }, 65535,
          kMaxInt31),
      IntegerKey(
          "server.workers", [](auto& c) -> auto& { return c.server.workers; }, 1, 64),
      DurationKey(
          "server.drain_timeout", [](auto& c) -> auto& { return c.server.drain_timeout; },
          /*allow_zero=*/true),
      DurationKey(
          "server.drain_delay", [](auto& c) -> auto& { return c.server.drain_delay; },
          /*allow_zero=*/true),
      SizeKey(
          "server.max_header_list_size",
          [](auto& c) -> auto& { return c.server.max_header_list_size; }, 1024, 1 << 20),
      IntegerKey(
          "server.max_headers", [](auto& c) -> auto& { return c.server.max_headers; }, 8, 10000),
      DurationKey(
          "server.handshake_timeout", [](auto& c) -> auto& { return c.server.handshake_timeout; },
          /*allow_zero=*/true),
      DurationKey(
          "server.idle_timeout", [](auto& c) -> auto& { return c.server.idle_timeout; },
          /*allow_zero=*/true),
      SizeKey(
          "server.connection_buffer_limit",
          [](auto& c) -> auto& { return c.server.connection_buffer_limit; }, 0, kMaxInt31),
      DurationKey(
          "server.stream_idle_timeout",
          [](auto& c) -> auto& { return c.server.stream_idle_timeout; }, /*allow_zero=*/true),
      SizeKey(
          "server.max_message_size", [](auto& c) -> auto& { return c.server.max_message_size; }, 0,
          kMaxInt31),
      NodesKey(),
      IntegerKey(
          "upstream.min_connections", [](auto& c) -> auto& { return c.upstream.min_connections; },
          0, 1024),
      IntegerKey(
          "upstream.max_connections", [](auto& c) -> auto& { return c.upstream.max_connections; },
          1, 1024),
      IntegerKey(
          "upstream.max_streams_per_connection",
          [](auto& c) -> auto& { return c.upstream.max_streams_per_connection; }, 1, kMaxInt31),
      IntegerKey(
          "upstream.max_pending", [](auto& c) -> auto& { return c.upstream.max_pending; }, 0,
          kNoUpperBound),
      DurationKey(
          "upstream.acquire_timeout", [](auto& c) -> auto& { return c.upstream.acquire_timeout; },
          /*allow_zero=*/false),
      FractionKey(
          "upstream.max_connection_share",
          [](auto& c) -> auto& { return c.upstream.max_connection_share; }),
      DurationKey(
          "upstream.connect_timeout", [](auto& c) -> auto& { return c.upstream.connect_timeout; },
          /*allow_zero=*/false),
      DurationKey(
          "upstream.connect_backoff_base",
          [](auto& c) -> auto& { return c.upstream.connect_backoff_base; }, /*allow_zero=*/false),
      DurationKey(
          "upstream.connect_backoff_max",
          [](auto& c) -> auto& { return c.upstream.connect_backoff_max; }, /*allow_zero=*/false),
      DurationKey(
          "upstream.max_connection_age",
          [](auto& c) -> auto& { return c.upstream.max_connection_age; }, /*allow_zero=*/true),
      IntegerKey(
          "upstream.max_requests_per_connection",
          [](auto& c) -> auto& { return c.upstream.max_requests_per_connection; }, 0,
          kNoUpperBound),
      DurationKey(
          "upstream.idle_timeout", [](auto& c) -> auto& { return c.upstream.idle_timeout; },
          /*allow_zero=*/true),
      TlsKey(),
      StringKey(
          "upstream.api_key_file", [](auto& c) -> auto& { return c.upstream.api_key_file; },
          PathReason),
      StringKey(
          "upstream.api_key_env", [](auto& c) -> auto& { return c.upstream.api_key_env; },
          EnvVarNameReason),
      OneOfKey("upstream.api_key_mode", [](auto& c) -> auto& { return c.upstream.api_key_mode; },
               {"if_absent", "override"}),
      StringKey(
          "upstream.read_only_api_key_file",
          [](auto& c) -> auto& { return c.upstream.read_only_api_key_file; }, PathReason),
      StringKey(
          "upstream.read_only_api_key_env",
          [](auto& c) -> auto& { return c.upstream.read_only_api_key_env; }, EnvVarNameReason),
      DurationKey(
          "upstream.secrets_poll_interval",
          [](auto& c) -> auto& { return c.upstream.secrets_poll_interval; }, /*allow_zero=*/false),
      DurationKey(
          "upstream.dns_refresh", [](auto& c) -> auto& { return c.upstream.dns_refresh; },
          /*allow_zero=*/true),
      RestNodesKey(),
      OptionalAddressKey(
          "rest.listen", [](auto& c) -> auto& { return c.rest.listen; }),
      IntegerKey(
          "rest.max_connections", [](auto& c) -> auto& { return c.rest.max_connections; }, 1, 1024),
      IntegerKey(
          "rest.min_connections", [](auto& c) -> auto& { return c.rest.min_connections; }, 0, 1024),
      DurationKey(
          "rest.idle_timeout", [](auto& c) -> auto& { return c.rest.idle_timeout; },
          /*allow_zero=*/true),
      DurationKey(
          "rest.request_timeout", [](auto& c) -> auto& { return c.rest.request_timeout; },
          /*allow_zero=*/true),
      DurationKey(
          "rest.header_timeout", [](auto& c) -> auto& { return c.rest.header_timeout; },
          /*allow_zero=*/false),
      DurationKey(
          "rest.keepalive_timeout", [](auto& c) -> auto& { return c.rest.keepalive_timeout; },
          /*allow_zero=*/false),
      SizeKey(
          "rest.max_header_bytes", [](auto& c) -> auto& { return c.rest.max_header_bytes; }, 1024,
          16 << 20),
      IntegerKey(
          "rest.max_headers", [](auto& c) -> auto& { return c.rest.max_headers; }, 1, 10000),
      SizeKey(
          "rest.max_body_bytes", [](auto& c) -> auto& { return c.rest.max_body_bytes; }, 0,
          kMaxInt31),
      BoolKey(
          "retry.enabled", [](auto& c) -> auto& { return c.retry.enabled; }),
      IntegerKey(
          "retry.max_attempts", [](auto& c) -> auto& { return c.retry.max_attempts; }, 1, 10),
      DurationKey(
          "retry.backoff_base", [](auto& c) -> auto& { return c.retry.backoff_base; },
          /*allow_zero=*/false),
      DurationKey(
          "retry.backoff_max", [](auto& c) -> auto& { return c.retry.backoff_max; },
          /*allow_zero=*/false),
      NameListKey("retry.on", [](auto& c) -> auto& { return c.retry.on; },
                  {"unavailable", "resource_exhausted", "per_try_timeout"}),
      DurationKey(
          "retry.per_try_timeout", [](auto& c) -> auto& { return c.retry.per_try_timeout; },
          /*allow_zero=*/true),
      DurationKey(
          "retry.hedge_delay", [](auto& c) -> auto& { return c.retry.hedge_delay; },
          /*allow_zero=*/true),
      DurationKey(
          "retry.unreachable_wait", [](auto& c) -> auto& { return c.retry.unreachable_wait; },
          /*allow_zero=*/true),
      SizeKey(
          "retry.replay_buffer_per_call",
          [](auto& c) -> auto& { return c.retry.replay_buffer_per_call; }, 0, kMaxInt31),
      SizeKey(
          "retry.replay_buffer_total", [](auto& c) -> auto& { return c.retry.replay_buffer_total; },
          0, kMaxInt31),
      IntegerKey(
          "retry.budget_max_tokens", [](auto& c) -> auto& { return c.retry.budget_max_tokens; }, 1,
          1000),
      FractionKey(
          "retry.budget_token_ratio", [](auto& c) -> auto& { return c.retry.budget_token_ratio; }),
      IntegerKey(
          "retry.min_retries_in_flight",
          [](auto& c) -> auto& { return c.retry.min_retries_in_flight; }, 0, kNoUpperBound),
      IntegerKey(
          "retry.retries_in_flight_percent",
          [](auto& c) -> auto& { return c.retry.retries_in_flight_percent; }, 0, 100),
      MethodClassesKey(),
      OneOfKey("log.level", [](auto& c) -> auto& { return c.log.level; },
               {"trace", "debug", "info", "warn", "error", "off"}),
      OneOfKey("log.format", [](auto& c) -> auto& { return c.log.format; }, {"text", "json"}),
      FractionKey(
          "log.access_log_sample", [](auto& c) -> auto& { return c.log.access_log_sample; },
          /*allow_zero=*/true),
      AddressKey(
          "admin.listen", [](auto& c) -> auto& { return c.admin.listen; }),
      BoolKey(
          "admin.readiness_includes_upstream",
          [](auto& c) -> auto& { return c.admin.readiness_includes_upstream; }),
      BoolKey(
          "health.enabled", [](auto& c) -> auto& { return c.health.enabled; }),
      IntegerKey(
          "health.jitter_percent", [](auto& c) -> auto& { return c.health.jitter_percent; }, 0, 50),
      IntegerKey(
          "health.unhealthy_threshold",
          [](auto& c) -> auto& { return c.health.unhealthy_threshold; }, 1, 1000),
      IntegerKey(
          "health.healthy_threshold", [](auto& c) -> auto& { return c.health.healthy_threshold; },
          1, 1000),
      BoolKey(
          "health.fast_enabled", [](auto& c) -> auto& { return c.health.fast_enabled; }),
      DurationKey(
          "health.fast_interval", [](auto& c) -> auto& { return c.health.fast_interval; },
          /*allow_zero=*/false),
      DurationKey(
          "health.fast_timeout", [](auto& c) -> auto& { return c.health.fast_timeout; },
          /*allow_zero=*/false),
      BoolKey(
          "health.medium_enabled", [](auto& c) -> auto& { return c.health.medium_enabled; }),
      DurationKey(
          "health.medium_interval", [](auto& c) -> auto& { return c.health.medium_interval; },
          /*allow_zero=*/false),
      DurationKey(
          "health.medium_timeout", [](auto& c) -> auto& { return c.health.medium_timeout; },
          /*allow_zero=*/false),
      OneOfKey("health.medium_method", [](auto& c) -> auto& { return c.health.medium_method; },
               {"qdrant", "grpc"}),
      BoolKey(
          "health.deep_enabled", [](auto& c) -> auto& { return c.health.deep_enabled; }),
      DurationKey(
          "health.deep_interval", [](auto& c) -> auto& { return c.health.deep_interval; },
          /*allow_zero=*/false),
      DurationKey(
          "health.deep_timeout", [](auto& c) -> auto& { return c.health.deep_timeout; },
          /*allow_zero=*/false),
      StringKey(
          "health.deep_collection", [](auto& c) -> auto& { return c.health.deep_collection; },
          CollectionNameReason),
      StringKey(
          "health.api_key_env", [](auto& c) -> auto& { return c.health.api_key_env; },
          EnvVarNameReason),
      BoolKey(
          "health.passive_enabled", [](auto& c) -> auto& { return c.health.passive_enabled; }),
      IntegerKey(
          "health.consecutive_failures",
          [](auto& c) -> auto& { return c.health.consecutive_failures; }, 1, 1000),
      DurationKey(
          "health.base_ejection_time", [](auto& c) -> auto& { return c.health.base_ejection_time; },
          /*allow_zero=*/false),
      DurationKey(
          "health.max_ejection_time", [](auto& c) -> auto& { return c.health.max_ejection_time; },
          /*allow_zero=*/false),
      IntegerKey(
          "health.max_ejection_percent",
          [](auto& c) -> auto& { return c.health.max_ejection_percent; }, 0, 100),
      DurationKey(
          "config.watch_interval", [](auto& c) -> auto& { return c.config.watch_interval; },
          /*allow_zero=*/true),
  };
  return *keys;
}

const Key* FindKey(absl::string_view name) {
  for (const Key& key : Keys()) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

bool IsSection(absl::string_view name) {
  for (const Key& key : Keys()) {
    if (SectionOf(key.name) == name) return true;
  }
  return false;
}

// --- suggestions ---------------------------------------------------------------------------

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The closest of `candidates` (name, distance) when it is close enough to be a typo.
std::string DidYouMean(absl::string_view wanted,
                       const std::vector<std::pair<std::string, size_t>>& candidates) {
  const size_t threshold = std::max<size_t>(1, std::min<size_t>(3, wanted.size() / 3));
  const std::pair<std::string, size_t>* best = nullptr;
  for (const auto& candidate : candidates) {
    if (best == nullptr || candidate.second < best->second) best = &candidate;
  }
  if (best == nullptr || best->second > threshold) return "";
  return absl::StrCat(" (did you mean ", best->first, "?)");
}

// `section` is empty for a top-level key. A key from another section costs one more edit, so
// "server.max_connections" suggests "upstream.max_connections".
std::string SuggestKey(absl::string_view section, absl::string_view leaf) {
  std::vector<std::pair<std::string, size_t>> candidates;
  std::set<absl::string_view> sections;
  for (const Key& key : Keys()) {
    size_t distance = EditDistance(leaf, LeafOf(key.name));
    if (SectionOf(key.name) != section) ++distance;
    candidates.emplace_back(std::string(key.name), distance);
    sections.insert(SectionOf(key.name));
  }
  if (section.empty()) {
    for (absl::string_view name : sections) {
      candidates.emplace_back(std::string(name), EditDistance(leaf, name));
    }
  }
  return DidYouMean(leaf, candidates);
}

// --- YAML walk -----------------------------------------------------------------------------

// Line of each key the file set, for messages about cross-key rules.
using KeyLines = std::map<std::string, int, std::less<>>;

std::string Where(absl::string_view source, const YAML::Mark& mark) {
  if (mark.is_null()) return std::string(source);
  return absl::StrCat(source, ":", mark.line + 1);
}

absl::Status Refuse(absl::string_view source, const YAML::Mark& mark, absl::string_view key,
                    absl::string_view reason) {
  if (key.empty())
    return absl::InvalidArgumentError(absl::StrCat(Where(source, mark), ": ", reason));
  return absl::InvalidArgumentError(absl::StrCat(Where(source, mark), ": ", key, ": ", reason));
}

absl::Status WalkSection(const YAML::Node& section_node, absl::string_view section,
                         absl::string_view source, Config& config, KeyLines& lines) {
  std::set<std::string> seen;
  for (const auto& entry : section_node) {
    const YAML::Node& key_node = entry.first;
    const YAML::Node& value = entry.second;
    if (!key_node.IsScalar()) {
      return Refuse(source, key_node.Mark(), section, "keys must be plain names");
    }
    const std::string name = absl::StrCat(section, ".", key_node.Scalar());
    if (!seen.insert(name).second) return Refuse(source, key_node.Mark(), name, "duplicate key");
    const Key* key = FindKey(name);
    if (key == nullptr) {
      return Refuse(source, key_node.Mark(), name,
                    absl::StrCat("unknown key", SuggestKey(section, key_node.Scalar())));
    }
    if (value.IsNull()) return Refuse(source, key_node.Mark(), name, "missing value");
    if (std::optional<Problem> problem = key->parse(value, config)) {
      return Refuse(source, problem->mark, name, problem->reason);
    }
    lines[name] = key_node.Mark().line + 1;
  }
  return absl::OkStatus();
}

absl::Status WalkDocument(const YAML::Node& root, absl::string_view source, Config& config,
                          KeyLines& lines) {
  if (root.IsNull()) return absl::OkStatus();  // an empty file: every default
  if (!root.IsMap()) {
    return Refuse(
        source, root.Mark(), "",
        absl::StrCat("expected a map of sections (server, upstream, log), got ", KindOf(root)));
  }
  std::set<std::string> seen;
  for (const auto& entry : root) {
    const YAML::Node& key_node = entry.first;
    const YAML::Node& value = entry.second;
    if (!key_node.IsScalar())
      return Refuse(source, key_node.Mark(), "", "keys must be plain names");
    const std::string& section = key_node.Scalar();
    if (!seen.insert(section).second) {
      return Refuse(source, key_node.Mark(), section, "duplicate section");
    }
    if (!IsSection(section)) {
      return Refuse(source, key_node.Mark(), section,
                    absl::StrCat("unknown key", SuggestKey("", section)));
    }
    if (value.IsNull()) continue;  // "server:" with nothing under it
    if (!value.IsMap()) {
      return Refuse(source, value.Mark(), section,
                    absl::StrCat("expected a map of keys, got ", KindOf(value)));
    }
    QPOOL_RETURN_IF_ERROR(WalkSection(value, section, source, config, lines));
  }
  return absl::OkStatus();
}

// Parses into `config` (which holds the defaults), recording the line of each key set.
absl::Status ParseInto(absl::string_view yaml_text, absl::string_view source, Config& config,
                       KeyLines& lines) {
  // yaml-cpp reports errors by throwing; nothing past this function sees an exception.
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    return WalkDocument(root, source, config, lines);
  } catch (const YAML::Exception& e) {
    return Refuse(source, e.mark, "", absl::StrCat("invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::Status LoadInto(const std::string& path, Config& config, KeyLines& lines) {
  struct stat info;
  if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot read ", path, ": ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::UnavailableError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  return ParseInto(text.str(), path, config, lines);
}

std::optional<Violation> FindViolation(const Config& config) {
  for (const Key& key : Keys()) {
    if (Reason reason = key.check(config)) return Violation{std::string(key.name), *reason};
  }
  const UpstreamConfig& upstream = config.upstream;
  if (upstream.min_connections > upstream.max_connections) {
    return Violation{"upstream.min_connections",
                     absl::StrCat("must not exceed upstream.max_connections (",
                                  upstream.min_connections, " > ", upstream.max_connections, ")")};
  }
  if (config.server.workers > upstream.max_connections) {
    return Violation{
        "server.workers",
        absl::StrCat("must not exceed upstream.max_connections (", config.server.workers, " > ",
                     upstream.max_connections, "): each worker owns a share of the pool")};
  }
  if (Reason reason = RestNodesReason(config)) return Violation{"upstream.rest_nodes", *reason};
  const RestConfig& rest = config.rest;
  if (rest.min_connections > rest.max_connections) {
    return Violation{"rest.min_connections",
                     absl::StrCat("must not exceed rest.max_connections (", rest.min_connections,
                                  " > ", rest.max_connections, ")")};
  }
  if (!rest.listen.host.empty() && config.server.workers > rest.max_connections) {
    return Violation{
        "server.workers",
        absl::StrCat("must not exceed rest.max_connections (", config.server.workers, " > ",
                     rest.max_connections, "): each worker owns a share of the REST pool")};
  }
  if (upstream.connect_backoff_base > upstream.connect_backoff_max) {
    return Violation{"upstream.connect_backoff_base",
                     absl::StrCat("must not exceed upstream.connect_backoff_max (",
                                  absl::FormatDuration(upstream.connect_backoff_base), " > ",
                                  absl::FormatDuration(upstream.connect_backoff_max), ")")};
  }
  if (Reason reason = TlsReason(upstream)) return Violation{"upstream.tls", *reason};
  if (!upstream.api_key_file.empty() && !upstream.api_key_env.empty()) {
    return Violation{"upstream.api_key_file",
                     "set upstream.api_key_file or upstream.api_key_env, not both"};
  }
  if (!upstream.read_only_api_key_file.empty() && !upstream.read_only_api_key_env.empty()) {
    return Violation{"upstream.read_only_api_key_file",
                     "set upstream.read_only_api_key_file or upstream.read_only_api_key_env, not "
                     "both"};
  }
  const RetryConfig& retry = config.retry;
  if (retry.backoff_base > retry.backoff_max) {
    return Violation{"retry.backoff_base",
                     absl::StrCat("must not exceed retry.backoff_max (",
                                  absl::FormatDuration(retry.backoff_base), " > ",
                                  absl::FormatDuration(retry.backoff_max), ")")};
  }
  if (retry.replay_buffer_per_call > retry.replay_buffer_total) {
    return Violation{
        "retry.replay_buffer_per_call",
        absl::StrCat("must not exceed retry.replay_buffer_total (", retry.replay_buffer_per_call,
                     " > ", retry.replay_buffer_total, ")")};
  }
  const HealthConfig& health = config.health;
  const struct {
    const char* timeout_key;
    const char* interval_key;
    absl::Duration timeout;
    absl::Duration interval;
  } tiers[] = {
      {"health.medium_timeout", "health.medium_interval", health.medium_timeout,
       health.medium_interval},
      {"health.deep_timeout", "health.deep_interval", health.deep_timeout, health.deep_interval},
  };
  for (const auto& tier : tiers) {
    if (tier.timeout > tier.interval) {
      return Violation{tier.timeout_key, absl::StrCat("must not exceed ", tier.interval_key, " (",
                                                      absl::FormatDuration(tier.timeout), " > ",
                                                      absl::FormatDuration(tier.interval), ")")};
    }
  }
  if (health.base_ejection_time > health.max_ejection_time) {
    return Violation{"health.base_ejection_time",
                     absl::StrCat("must not exceed health.max_ejection_time (",
                                  absl::FormatDuration(health.base_ejection_time), " > ",
                                  absl::FormatDuration(health.max_ejection_time), ")")};
  }
  return std::nullopt;
}

// --- command line --------------------------------------------------------------------------

struct Flag {
  absl::string_view name;        // "--config"
  absl::string_view value_name;  // "FILE"; empty for a switch
  absl::string_view help;
  std::function<absl::Status(absl::string_view value, CommandLine&)> set;
};

absl::StatusOr<uint32_t> ParseFlagNumber(absl::string_view value) {
  uint32_t number = 0;
  if (!absl::SimpleAtoi(value, &number)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a non-negative integer, got \"", value, "\""));
  }
  return number;
}

const std::vector<Flag>& Flags() {
  static const std::vector<Flag>* const flags = new std::vector<Flag>{
      {"--config", "FILE", "read the YAML config FILE (flags override its values)",
       [](absl::string_view v, CommandLine& c) {
         c.config_path = std::string(v);
         return absl::OkStatus();
       }},
      {"--check-config", "", "validate the configuration, print the result and exit 0 or 1",
       [](absl::string_view, CommandLine& c) {
         c.check_config = true;
         return absl::OkStatus();
       }},
      {"--print-config", "",
       "print the effective configuration (defaults < file < QPOOL_* environment < flags) as "
       "YAML, secrets redacted, and exit",
       [](absl::string_view, CommandLine& c) {
         c.print_config = true;
         return absl::OkStatus();
       }},
      {"--listen", "ADDR", "address the apps connect to (server.listen), e.g. 127.0.0.1:6334",
       [](absl::string_view v, CommandLine& c) {
         c.listen = std::string(v);
         return absl::OkStatus();
       }},
      {"--admin-listen", "ADDR",
       "address of the admin HTTP endpoint: /metrics, /livez, /readyz, /startupz, /pool "
       "(admin.listen), e.g. 127.0.0.1:6336",
       [](absl::string_view v, CommandLine& c) {
         c.admin_listen = std::string(v);
         return absl::OkStatus();
       }},
      {"--upstream", "HOST:PORT[,HOST:PORT...]", "the Qdrant gRPC nodes (upstream.nodes)",
       [](absl::string_view v, CommandLine& c) {
         c.upstream = std::string(v);
         return absl::OkStatus();
       }},
      {"--rest-listen", "ADDR",
       "address REST apps connect to (rest.listen), e.g. 127.0.0.1:6333; \"\" turns REST off",
       [](absl::string_view v, CommandLine& c) {
         c.rest_listen = std::string(v);
         return absl::OkStatus();
       }},
      {"--rest-upstream", "HOST:PORT[,HOST:PORT...]",
       "the Qdrant REST endpoints, one per --upstream node (upstream.rest_nodes)",
       [](absl::string_view v, CommandLine& c) {
         c.rest_upstream = std::string(v);
         return absl::OkStatus();
       }},
      {"--max-connections", "N", "connections per Qdrant node (upstream.max_connections)",
       [](absl::string_view v, CommandLine& c) -> absl::Status {
         QPOOL_ASSIGN_OR_RETURN(c.max_connections, ParseFlagNumber(v));
         return absl::OkStatus();
       }},
      {"--workers", "N", "I/O threads (server.workers)",
       [](absl::string_view v, CommandLine& c) -> absl::Status {
         QPOOL_ASSIGN_OR_RETURN(c.workers, ParseFlagNumber(v));
         return absl::OkStatus();
       }},
      {"--log-level", "LEVEL", "trace, debug, info, warn, error or off (log.level)",
       [](absl::string_view v, CommandLine& c) {
         c.log_level = std::string(v);
         return absl::OkStatus();
       }},
      {"--log-format", "FORMAT", "text or json (log.format)",
       [](absl::string_view v, CommandLine& c) {
         c.log_format = std::string(v);
         return absl::OkStatus();
       }},
      {"--version", "", "print the version and exit",
       [](absl::string_view, CommandLine& c) {
         c.version = true;
         return absl::OkStatus();
       }},
      {"--help", "", "print this help and exit",
       [](absl::string_view, CommandLine& c) {
         c.help = true;
         return absl::OkStatus();
       }},
  };
  return *flags;
}

// --- environment ---------------------------------------------------------------------------

constexpr absl::string_view kEnvPrefix = "QPOOL_";

// Kubernetes injects "docker link" variables for every Service in the namespace: a Service named
// "qpool" gives QPOOL_SERVICE_HOST, QPOOL_SERVICE_PORT, QPOOL_SERVICE_PORT_<NAME>,
// QPOOL_PORT=tcp://..., QPOOL_PORT_6334_TCP=tcp://..., QPOOL_PORT_6334_TCP_ADDR, ...
// They are not meant for qpoold, so they are neither applied nor refused. The shapes are matched
// closely (a _PORT variable must hold a tcp://, udp:// or sctp:// URL) so that a typo such as
// QPOOL_SERVER_LISTEN_PORT=6334 is still refused.
bool IsKubernetesServiceVariable(absl::string_view name, absl::string_view value) {
  const bool url = absl::StartsWith(value, "tcp://") || absl::StartsWith(value, "udp://") ||
                   absl::StartsWith(value, "sctp://");
  if (absl::EndsWith(name, "_SERVICE_HOST") || absl::EndsWith(name, "_SERVICE_PORT") ||
      absl::StrContains(name, "_SERVICE_PORT_")) {
    return true;
  }
  if (absl::EndsWith(name, "_PORT")) return url;
  // ..._PORT_<number>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]
  const size_t port = name.rfind("_PORT_");
  if (port == absl::string_view::npos) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(name.substr(port + 6), '_');
  if (parts.size() < 2 || parts.size() > 3) return false;
  if (parts[0].empty() || !std::all_of(parts[0].begin(), parts[0].end(), absl::ascii_isdigit)) {
    return false;
  }
  if (parts[1] != "TCP" && parts[1] != "UDP" && parts[1] != "SCTP") return false;
  if (parts.size() == 2) return url;
  return parts[2] == "PROTO" || parts[2] == "PORT" || parts[2] == "ADDR";
}

// The YAML node an environment value stands for: for scalar keys the text itself ("4", "250ms",
// "[::1]:6334"); for list keys "a,b" or "[a, b]"; for map keys a YAML flow map.
absl::StatusOr<YAML::Node> EnvValueNode(const Key& key, const std::string& value) {
  if (key.shape == Shape::kScalar) return YAML::Node(value);
  const absl::string_view text = absl::StripAsciiWhitespace(value);
  if (key.shape == Shape::kList && !absl::StartsWith(text, "[")) {
    YAML::Node list(YAML::NodeType::Sequence);
    if (text.empty()) return list;
    for (absl::string_view item : absl::StrSplit(text, ',')) {
      list.push_back(std::string(absl::StripAsciiWhitespace(item)));
    }
    return list;
  }
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML value: ", e.msg));
  }
}

// Applies every QPOOL_SECTION_KEY variable of `env` to `config`, recording which variable set
// which key. Unknown QPOOL_* variables are refused (a typo must not pass silently), except
// Kubernetes service links and the variable health.api_key_env names.
absl::Status ApplyEnvironment(const Environment& env, Config& config,
                              std::map<std::string, std::string, std::less<>>& set_by) {
  std::vector<std::pair<std::string, size_t>> known;
  for (const Key& key : Keys()) {
    const std::string variable = EnvVarName(StdView(key.name));
    known.emplace_back(variable, 0);
    auto it = env.find(variable);
    if (it == env.end()) continue;
    absl::StatusOr<YAML::Node> node = EnvValueNode(key, it->second);
    std::optional<Problem> problem;
    if (node.ok()) {
      problem = key.parse(*node, config);
    } else {
      problem = Problem{YAML::Mark::null_mark(), std::string(node.status().message())};
    }
    if (problem) {
      return absl::InvalidArgumentError(
          absl::StrCat(variable, " (", key.name, "): ", problem->reason));
    }
    set_by[std::string(key.name)] = variable;
  }
  for (const auto& [name, value] : env) {
    const absl::string_view variable = name;
    if (!absl::StartsWith(variable, kEnvPrefix)) continue;
    if (std::any_of(known.begin(), known.end(),
                    [&](const auto& candidate) { return candidate.first == variable; })) {
      continue;
    }
    if (IsKubernetesServiceVariable(variable, value) || name == config.health.api_key_env) continue;
    for (auto& candidate : known) candidate.second = EditDistance(variable, candidate.first);
    return absl::InvalidArgumentError(absl::StrCat(
        "environment variable ", variable, ": not a qpoold setting", DidYouMean(variable, known),
        "; qpoold reads QPOOL_<SECTION>_<KEY> for each key in "
        "docs/configuration.md"));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> ConfigKeyNames() {
  std::vector<std::string> names;
  for (const Key& key : Keys()) names.emplace_back(key.name);
  return names;
}

absl::StatusOr<NodeAddress> ParseNodeAddress(std::string_view std_text) {
  // Abseil 20220623 on Debian has its own absl::string_view, distinct from std::string_view.
  const absl::string_view text(std_text.data(), std_text.size());
  auto refuse = [text](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected HOST:PORT or [IPV6]:PORT, got \"", text, "\": ", why));
  };
  absl::string_view host;
  absl::string_view port;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos) return refuse("missing ']'");
    host = text.substr(1, close - 1);
    absl::string_view rest = text.substr(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) return refuse("missing :PORT");
    port = rest;
    const bool v6_chars = std::all_of(host.begin(), host.end(), [](char c) {
      return absl::ascii_isxdigit(c) || c == ':' || c == '.' || c == '%';
    });
    if (host.find(':') == absl::string_view::npos || !v6_chars) {
      return refuse("brackets hold an IPv6 address");
    }
  } else {
    const size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return refuse("missing :PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return refuse("write an IPv6 address in brackets, e.g. [::1]:6334");
    }
    const bool name_chars = std::all_of(host.begin(), host.end(), [](char c) {
      return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_';
    });
    if (!name_chars) return refuse("invalid character in host");
  }
  if (host.empty()) return refuse("missing host");
  uint32_t port_number = 0;
  const bool digits = !port.empty() && port.size() <= 5 &&
                      std::all_of(port.begin(), port.end(), absl::ascii_isdigit);
  if (!digits || !absl::SimpleAtoi(port, &port_number) || port_number > 65535) {
    return refuse("port must be a number between 0 and 65535");
  }
  return NodeAddress{std::string(host), static_cast<uint16_t>(port_number)};
}

absl::StatusOr<Config> ParseConfig(std::string_view yaml_text, std::string_view source_name) {
  Config config;
  KeyLines lines;
  QPOOL_RETURN_IF_ERROR(ParseInto(absl::string_view(yaml_text.data(), yaml_text.size()),
                                  absl::string_view(source_name.data(), source_name.size()), config,
                                  lines));
  return config;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  Config config;
  KeyLines lines;
  QPOOL_RETURN_IF_ERROR(LoadInto(path, config, lines));
  return config;
}

absl::Status Validate(const Config& config) {
  if (std::optional<Violation> violation = FindViolation(config)) {
    return absl::InvalidArgumentError(absl::StrCat(violation->key, ": ", violation->reason));
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv) {
  CommandLine command_line;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    absl::string_view name = arg;
    std::optional<absl::string_view> value;
    if (size_t equals = arg.find('='); equals != absl::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
    }
    const Flag* flag = nullptr;
    for (const Flag& candidate : Flags()) {
      if (candidate.name == name) flag = &candidate;
    }
    if (flag == nullptr) {
      std::vector<std::pair<std::string, size_t>> candidates;
      for (const Flag& candidate : Flags()) {
        candidates.emplace_back(std::string(candidate.name), EditDistance(name, candidate.name));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", name, DidYouMean(name, candidates)));
    }
    if (flag->value_name.empty()) {
      if (value) return absl::InvalidArgumentError(absl::StrCat(name, ": takes no value"));
    } else if (!value) {
      // "--config --check-config" is a forgotten value, not a file named "--check-config".
      if (i + 1 >= argc || absl::StartsWith(argv[i + 1], "--")) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": missing value (", name, " ", flag->value_name, ")"));
      }
      value = argv[++i];
    }
    if (absl::Status status = flag->set(value.value_or(""), command_line); !status.ok()) {
      return Annotate(status, StdView(name));
    }
  }
  return command_line;
}

std::string UsageText() {
  std::string text =
      "Usage: qpoold [--config FILE] [flags]\n"
      "       qpoold healthcheck [--url http://127.0.0.1:6336/readyz] [--timeout 2s]\n"
      "A connection-pooling sidecar for Qdrant: apps send their gRPC calls to qpoold, which\n"
      "multiplexes them onto a bounded pool of HTTP/2 connections to the Qdrant nodes.\n"
      "Flags override QPOOL_<SECTION>_<KEY> environment variables (QPOOL_UPSTREAM_MAX_CONNECTIONS\n"
      "for upstream.max_connections), which override the config file, which overrides the\n"
      "built-in defaults. SIGHUP reloads the configuration.\n\nFlags:\n";
  for (const Flag& flag : Flags()) {
    std::string usage = std::string(flag.name);
    if (!flag.value_name.empty()) absl::StrAppend(&usage, " ", flag.value_name);
    if (usage.size() < 36) usage.resize(36, ' ');
    absl::StrAppend(&text, "  ", usage, " ", flag.help, "\n");
  }
  absl::StrAppend(&text,
                  "\nExample:\n  qpoold --upstream 127.0.0.1:6335 --listen 127.0.0.1:6334\n");
  return text;
}

std::string EnvVarName(std::string_view key) {
  std::string name = absl::StrCat(kEnvPrefix, absl::string_view(key.data(), key.size()));
  for (char& c : name) c = c == '.' ? '_' : absl::ascii_toupper(c);
  return name;
}

Environment ProcessEnvironment() {
  Environment env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const absl::string_view text = *entry;
    const size_t equals = text.find('=');
    if (equals == absl::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, equals)), std::string(text.substr(equals + 1)));
  }
  return env;
}

std::string PrintConfig(const Config& config) {
  std::string out = absl::StrCat("# qpoold ", "effective configuration (--print-config)\n");
  absl::string_view section;
  for (const Key& key : Keys()) {
    if (SectionOf(key.name) != section) {
      section = SectionOf(key.name);
      absl::StrAppend(&out, section, ":\n");
    }
    absl::StrAppend(&out, "  ", LeafOf(key.name), ": ",
                    key.secret ? std::string("\"<redacted>\"") : key.print(config), "\n");
  }
  return out;
}

std::vector<std::string> ChangedKeys(const Config& before, const Config& after) {
  std::vector<std::string> changed;
  for (const Key& key : Keys()) {
    if (key.print(before) != key.print(after)) changed.emplace_back(key.name);
  }
  return changed;
}

std::string DescribeChange(const Config& before, const Config& after, std::string_view key_name) {
  const Key* key = FindKey(absl::string_view(key_name.data(), key_name.size()));
  if (key == nullptr) return std::string(key_name);
  if (key->secret) return absl::StrCat(key->name, " (changed)");
  return absl::StrCat(key->name, ": ", key->print(before), " -> ", key->print(after));
}

bool ReloadableKey(std::string_view key) {
  // What qpoold cannot apply while it runs (main.cc's reload): the sockets it listens on and its
  // threads. Every other key applies live (docs/operations.md, "Reload").
  static constexpr absl::string_view kRestart[] = {"server.listen", "server.workers", "rest.listen",
                                                   "admin.listen"};
  return std::find(std::begin(kRestart), std::end(kRestart),
                   absl::string_view(key.data(), key.size())) == std::end(kRestart);
}

namespace {

// A flag's comma-separated HOST:PORT list (--upstream, --rest-upstream).
absl::StatusOr<std::vector<NodeAddress>> ParseNodeListFlag(absl::string_view flag,
                                                           absl::string_view value) {
  std::vector<NodeAddress> nodes;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": empty entry in \"", value, "\""));
    }
    absl::StatusOr<NodeAddress> address = ParseNodeAddress(StdView(item));
    if (!address.ok()) return Annotate(address.status(), StdView(flag));
    nodes.push_back(*std::move(address));
  }
  return nodes;
}

}  // namespace

absl::StatusOr<Config> BuildConfig(const CommandLine& command_line) {
  return BuildConfig(command_line, ProcessEnvironment());
}

absl::StatusOr<Config> BuildConfig(const CommandLine& command_line, const Environment& env) {
  Config config;
  KeyLines lines;
  if (command_line.config_path) {
    QPOOL_RETURN_IF_ERROR(LoadInto(*command_line.config_path, config, lines));
  }
  // Which keys an environment variable or a flag set, and which, for messages. Flags come last,
  // so they win.
  std::map<std::string, std::string, std::less<>> set_by_flag;
  QPOOL_RETURN_IF_ERROR(ApplyEnvironment(env, config, set_by_flag));
  if (command_line.listen) {
    absl::StatusOr<NodeAddress> address = ParseNodeAddress(*command_line.listen);
    if (!address.ok()) return Annotate(address.status(), "--listen");
    config.server.listen = *std::move(address);
    set_by_flag["server.listen"] = "--listen";
  }
  if (command_line.admin_listen) {
    absl::StatusOr<NodeAddress> address = ParseNodeAddress(*command_line.admin_listen);
    if (!address.ok()) return Annotate(address.status(), "--admin-listen");
    config.admin.listen = *std::move(address);
    set_by_flag["admin.listen"] = "--admin-listen";
  }
  if (command_line.upstream) {
    absl::StatusOr<std::vector<NodeAddress>> nodes =
        ParseNodeListFlag("--upstream", *command_line.upstream);
    if (!nodes.ok()) return nodes.status();
    config.upstream.nodes = *std::move(nodes);
    set_by_flag["upstream.nodes"] = "--upstream";
  }
  if (command_line.rest_listen) {
    if (command_line.rest_listen->empty()) {
      config.rest.listen = NodeAddress{};
    } else {
      absl::StatusOr<NodeAddress> address = ParseNodeAddress(*command_line.rest_listen);
      if (!address.ok()) return Annotate(address.status(), "--rest-listen");
      config.rest.listen = *std::move(address);
    }
    set_by_flag["rest.listen"] = "--rest-listen";
  }
  if (command_line.rest_upstream) {
    absl::StatusOr<std::vector<NodeAddress>> nodes =
        ParseNodeListFlag("--rest-upstream", *command_line.rest_upstream);
    if (!nodes.ok()) return nodes.status();
    config.upstream.rest_nodes = *std::move(nodes);
    set_by_flag["upstream.rest_nodes"] = "--rest-upstream";
  }
  if (command_line.max_connections) {
    config.upstream.max_connections = *command_line.max_connections;
    set_by_flag["upstream.max_connections"] = "--max-connections";
  }
  if (command_line.workers) {
    config.server.workers = *command_line.workers;
    set_by_flag["server.workers"] = "--workers";
  }
  if (command_line.log_level) {
    config.log.level = *command_line.log_level;
    set_by_flag["log.level"] = "--log-level";
  }
  if (command_line.log_format) {
    config.log.format = *command_line.log_format;
    set_by_flag["log.format"] = "--log-format";
  }
  if (std::optional<Violation> violation = FindViolation(config)) {
    // Name where the offending value came from: the flag, the file's line, or the defaults.
    std::string origin;
    if (auto flag = set_by_flag.find(violation->key); flag != set_by_flag.end()) {
      origin = flag->second;
    } else if (auto line = lines.find(violation->key); line != lines.end()) {
      origin = absl::StrCat(*command_line.config_path, ":", line->second);
    } else if (command_line.config_path) {
      origin = *command_line.config_path;
    }
    std::string message = absl::StrCat(violation->key, ": ", violation->reason);
    if (!origin.empty()) message = absl::StrCat(origin, ": ", message);
    return absl::InvalidArgumentError(message);
  }
  return config;
}

size_t NodeCount(const Config& config) {
  return config.upstream.nodes.empty() ? config.upstream.rest_nodes.size()
                                       : config.upstream.nodes.size();
}

std::string NodeName(const Config& config, size_t i) {
  if (i < config.upstream.nodes.size()) return config.upstream.nodes[i].ToString();
  if (i < config.upstream.rest_nodes.size()) return config.upstream.rest_nodes[i].ToString();
  return "?";
}

}  // namespace qpool::config
