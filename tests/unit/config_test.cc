#include "daemon/config/config.h"

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "daemon/config/loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool::config {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Field-by-field comparison; a new key in config.h needs a line here, in the loader's table and
// in config/qpool.yaml (ExampleFileMentionsEveryKey catches the last two).
void ExpectSameSettings(const Config& actual, const Config& expected) {
  EXPECT_EQ(actual.server.listen.ToString(), expected.server.listen.ToString());
  EXPECT_EQ(actual.server.max_client_connections, expected.server.max_client_connections);
  EXPECT_EQ(actual.server.max_concurrent_streams, expected.server.max_concurrent_streams);
  EXPECT_EQ(actual.server.stream_window, expected.server.stream_window);
  EXPECT_EQ(actual.server.workers, expected.server.workers);
  EXPECT_EQ(actual.server.drain_timeout, expected.server.drain_timeout);
  EXPECT_EQ(actual.server.drain_delay, expected.server.drain_delay);
  EXPECT_EQ(actual.admin.readiness_includes_upstream, expected.admin.readiness_includes_upstream);
  EXPECT_EQ(actual.config.watch_interval, expected.config.watch_interval);
  EXPECT_EQ(actual.server.max_header_list_size, expected.server.max_header_list_size);
  EXPECT_EQ(actual.server.max_headers, expected.server.max_headers);
  EXPECT_EQ(actual.server.handshake_timeout, expected.server.handshake_timeout);
  EXPECT_EQ(actual.server.idle_timeout, expected.server.idle_timeout);
  EXPECT_EQ(actual.server.connection_buffer_limit, expected.server.connection_buffer_limit);
  EXPECT_EQ(actual.server.stream_idle_timeout, expected.server.stream_idle_timeout);
  EXPECT_EQ(actual.server.max_message_size, expected.server.max_message_size);
  EXPECT_EQ(actual.upstream.max_connection_share, expected.upstream.max_connection_share);
  EXPECT_EQ(actual.upstream.min_connections, expected.upstream.min_connections);
  EXPECT_EQ(actual.upstream.max_connections, expected.upstream.max_connections);
  EXPECT_EQ(actual.upstream.max_streams_per_connection,
            expected.upstream.max_streams_per_connection);
  EXPECT_EQ(actual.upstream.max_pending, expected.upstream.max_pending);
  EXPECT_EQ(actual.upstream.acquire_timeout, expected.upstream.acquire_timeout);
  EXPECT_EQ(actual.upstream.connect_timeout, expected.upstream.connect_timeout);
  EXPECT_EQ(actual.upstream.connect_backoff_base, expected.upstream.connect_backoff_base);
  EXPECT_EQ(actual.upstream.connect_backoff_max, expected.upstream.connect_backoff_max);
  EXPECT_EQ(actual.upstream.max_connection_age, expected.upstream.max_connection_age);
  EXPECT_EQ(actual.upstream.max_requests_per_connection,
            expected.upstream.max_requests_per_connection);
  EXPECT_EQ(actual.upstream.idle_timeout, expected.upstream.idle_timeout);
  EXPECT_EQ(actual.upstream.rest_nodes.size(), expected.upstream.rest_nodes.size());
  EXPECT_EQ(actual.rest.listen.ToString(), expected.rest.listen.ToString());
  EXPECT_EQ(actual.rest.max_connections, expected.rest.max_connections);
  EXPECT_EQ(actual.rest.min_connections, expected.rest.min_connections);
  EXPECT_EQ(actual.rest.idle_timeout, expected.rest.idle_timeout);
  EXPECT_EQ(actual.rest.request_timeout, expected.rest.request_timeout);
  EXPECT_EQ(actual.rest.header_timeout, expected.rest.header_timeout);
  EXPECT_EQ(actual.rest.keepalive_timeout, expected.rest.keepalive_timeout);
  EXPECT_EQ(actual.rest.max_header_bytes, expected.rest.max_header_bytes);
  EXPECT_EQ(actual.rest.max_headers, expected.rest.max_headers);
  EXPECT_EQ(actual.rest.max_body_bytes, expected.rest.max_body_bytes);
  EXPECT_EQ(actual.upstream.tls.defaults.enabled, expected.upstream.tls.defaults.enabled);
  EXPECT_EQ(actual.upstream.tls.defaults.ca_file, expected.upstream.tls.defaults.ca_file);
  EXPECT_EQ(actual.upstream.tls.defaults.server_name, expected.upstream.tls.defaults.server_name);
  EXPECT_EQ(actual.upstream.tls.defaults.verify, expected.upstream.tls.defaults.verify);
  EXPECT_EQ(actual.upstream.tls.defaults.cert_file, expected.upstream.tls.defaults.cert_file);
  EXPECT_EQ(actual.upstream.tls.defaults.key_file, expected.upstream.tls.defaults.key_file);
  EXPECT_EQ(actual.upstream.tls.nodes.size(), expected.upstream.tls.nodes.size());
  EXPECT_EQ(actual.upstream.api_key_file, expected.upstream.api_key_file);
  EXPECT_EQ(actual.upstream.api_key_env, expected.upstream.api_key_env);
  EXPECT_EQ(actual.upstream.api_key_mode, expected.upstream.api_key_mode);
  EXPECT_EQ(actual.upstream.read_only_api_key_file, expected.upstream.read_only_api_key_file);
  EXPECT_EQ(actual.upstream.read_only_api_key_env, expected.upstream.read_only_api_key_env);
  EXPECT_EQ(actual.upstream.secrets_poll_interval, expected.upstream.secrets_poll_interval);
  EXPECT_EQ(actual.retry.enabled, expected.retry.enabled);
  EXPECT_EQ(actual.retry.max_attempts, expected.retry.max_attempts);
  EXPECT_EQ(actual.retry.backoff_base, expected.retry.backoff_base);
  EXPECT_EQ(actual.retry.backoff_max, expected.retry.backoff_max);
  EXPECT_EQ(actual.retry.on, expected.retry.on);
  EXPECT_EQ(actual.retry.per_try_timeout, expected.retry.per_try_timeout);
  EXPECT_EQ(actual.retry.hedge_delay, expected.retry.hedge_delay);
  EXPECT_EQ(actual.retry.replay_buffer_per_call, expected.retry.replay_buffer_per_call);
  EXPECT_EQ(actual.retry.replay_buffer_total, expected.retry.replay_buffer_total);
  EXPECT_EQ(actual.retry.budget_max_tokens, expected.retry.budget_max_tokens);
  EXPECT_EQ(actual.retry.budget_token_ratio, expected.retry.budget_token_ratio);
  EXPECT_EQ(actual.retry.min_retries_in_flight, expected.retry.min_retries_in_flight);
  EXPECT_EQ(actual.retry.retries_in_flight_percent, expected.retry.retries_in_flight_percent);
  EXPECT_EQ(actual.retry.methods, expected.retry.methods);
  EXPECT_EQ(actual.log.level, expected.log.level);
  EXPECT_EQ(actual.log.format, expected.log.format);
  EXPECT_EQ(actual.log.access_log_sample, expected.log.access_log_sample);
  const HealthConfig& a = actual.health;
  const HealthConfig& e = expected.health;
  EXPECT_EQ(a.enabled, e.enabled);
  EXPECT_EQ(a.jitter_percent, e.jitter_percent);
  EXPECT_EQ(a.unhealthy_threshold, e.unhealthy_threshold);
  EXPECT_EQ(a.healthy_threshold, e.healthy_threshold);
  EXPECT_EQ(a.fast_enabled, e.fast_enabled);
  EXPECT_EQ(a.fast_interval, e.fast_interval);
  EXPECT_EQ(a.fast_timeout, e.fast_timeout);
  EXPECT_EQ(a.medium_enabled, e.medium_enabled);
  EXPECT_EQ(a.medium_interval, e.medium_interval);
  EXPECT_EQ(a.medium_timeout, e.medium_timeout);
  EXPECT_EQ(a.medium_method, e.medium_method);
  EXPECT_EQ(a.deep_enabled, e.deep_enabled);
  EXPECT_EQ(a.deep_interval, e.deep_interval);
  EXPECT_EQ(a.deep_timeout, e.deep_timeout);
  EXPECT_EQ(a.deep_collection, e.deep_collection);
  EXPECT_EQ(a.api_key_env, e.api_key_env);
  EXPECT_EQ(a.passive_enabled, e.passive_enabled);
  EXPECT_EQ(a.consecutive_failures, e.consecutive_failures);
  EXPECT_EQ(a.base_ejection_time, e.base_ejection_time);
  EXPECT_EQ(a.max_ejection_time, e.max_ejection_time);
  EXPECT_EQ(a.max_ejection_percent, e.max_ejection_percent);
}

std::vector<std::string> NodeNames(const Config& config) {
  std::vector<std::string> names;
  for (const NodeAddress& node : config.upstream.nodes) names.push_back(node.ToString());
  return names;
}

// The message of a ParseConfig failure on `yaml` read as "test.yaml".
std::string ParseError(const std::string& yaml) {
  absl::StatusOr<Config> config = ParseConfig(yaml, "test.yaml");
  EXPECT_FALSE(config.ok()) << "expected an error for:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file under the test's temp dir holding `text`, removed when the object goes.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_(testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

absl::StatusOr<CommandLine> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "qpoold");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

// --- YAML ----------------------------------------------------------------------------------

TEST(ConfigTest, EmptyFileGivesDefaults) {
  absl::StatusOr<Config> config = ParseConfig("", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameSettings(*config, Config{});
  EXPECT_TRUE(config->upstream.nodes.empty());
}

TEST(ConfigTest, DefaultsAreTheDocumentedOnes) {
  const Config config;
  EXPECT_EQ(config.server.listen.ToString(), "127.0.0.1:6334");
  EXPECT_EQ(config.server.max_client_connections, 10000u);
  EXPECT_EQ(config.server.max_concurrent_streams, 1000u);
  EXPECT_EQ(config.server.stream_window, 1u << 20);
  EXPECT_EQ(config.server.workers, 1u);
  EXPECT_EQ(config.server.drain_timeout, absl::Seconds(30));
  EXPECT_EQ(config.server.drain_delay, absl::ZeroDuration());
  EXPECT_FALSE(config.admin.readiness_includes_upstream);
  EXPECT_EQ(config.server.max_header_list_size, 16u * 1024);
  EXPECT_EQ(config.server.max_headers, 100u);
  EXPECT_EQ(config.server.handshake_timeout, absl::Seconds(10));
  EXPECT_EQ(config.server.idle_timeout, absl::Minutes(10));
  EXPECT_EQ(config.upstream.min_connections, 1u);
  EXPECT_EQ(config.upstream.max_connections, 4u);
  EXPECT_EQ(config.upstream.max_streams_per_connection, 100u);
  EXPECT_EQ(config.upstream.max_pending, 1024u);
  EXPECT_EQ(config.upstream.acquire_timeout, absl::Seconds(1));
  EXPECT_EQ(config.upstream.connect_timeout, absl::Seconds(2));
  EXPECT_EQ(config.upstream.connect_backoff_base, absl::Milliseconds(100));
  EXPECT_EQ(config.upstream.connect_backoff_max, absl::Seconds(1));
  EXPECT_EQ(config.upstream.max_connection_age, absl::Minutes(30));
  EXPECT_EQ(config.upstream.max_requests_per_connection, 0u);
  EXPECT_EQ(config.upstream.idle_timeout, absl::Minutes(5));
  EXPECT_EQ(config.log.level, "info");
  EXPECT_EQ(config.log.format, "text");
  EXPECT_EQ(config.log.access_log_sample, 0);
}

TEST(ConfigTest, EveryKeyParses) {
  absl::StatusOr<Config> config = ParseConfig(R"(
server:
  listen: "[::1]:7000"
  max_client_connections: 50
  max_concurrent_streams: 20
  stream_window: 64KiB
  workers: 2
  drain_timeout: 2m
  max_header_list_size: 32KiB
  max_headers: 64
  handshake_timeout: 3s
  idle_timeout: 0s
  connection_buffer_limit: 8MiB
  stream_idle_timeout: 45s
  max_message_size: 64MiB
upstream:
  nodes: ["10.0.0.1:6334", "qdrant-2:6334"]
  min_connections: 2
  max_connections: 8
  max_streams_per_connection: 10
  max_pending: 0
  acquire_timeout: 250ms
  max_connection_share: 0.25
  connect_timeout: 3s
  connect_backoff_base: 50ms
  connect_backoff_max: 1m
  max_connection_age: 1s
  max_requests_per_connection: 1000
  idle_timeout: 250ms
log:
  level: debug
  format: json
  access_log_sample: 0.01
)",
                                              "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.listen.host, "::1");
  EXPECT_EQ(config->server.listen.port, 7000);
  EXPECT_EQ(config->server.max_client_connections, 50u);
  EXPECT_EQ(config->server.max_concurrent_streams, 20u);
  EXPECT_EQ(config->server.stream_window, 65536u);
  EXPECT_EQ(config->server.workers, 2u);
  EXPECT_EQ(config->server.drain_timeout, absl::Minutes(2));
  EXPECT_EQ(config->server.max_header_list_size, 32u * 1024);
  EXPECT_EQ(config->server.max_headers, 64u);
  EXPECT_EQ(config->server.handshake_timeout, absl::Seconds(3));
  EXPECT_EQ(config->server.idle_timeout, absl::ZeroDuration());
  EXPECT_EQ(config->server.connection_buffer_limit, 8u << 20);
  EXPECT_EQ(config->server.stream_idle_timeout, absl::Seconds(45));
  EXPECT_EQ(config->server.max_message_size, 64u << 20);
  EXPECT_THAT(NodeNames(*config), testing::ElementsAre("10.0.0.1:6334", "qdrant-2:6334"));
  EXPECT_EQ(config->upstream.min_connections, 2u);
  EXPECT_EQ(config->upstream.max_connections, 8u);
  EXPECT_EQ(config->upstream.max_streams_per_connection, 10u);
  EXPECT_EQ(config->upstream.max_pending, 0u);
  EXPECT_EQ(config->upstream.acquire_timeout, absl::Milliseconds(250));
  EXPECT_EQ(config->upstream.max_connection_share, 0.25);
  EXPECT_EQ(config->upstream.connect_timeout, absl::Seconds(3));
  EXPECT_EQ(config->upstream.connect_backoff_base, absl::Milliseconds(50));
  EXPECT_EQ(config->upstream.connect_backoff_max, absl::Minutes(1));
  EXPECT_EQ(config->upstream.max_connection_age, absl::Seconds(1));
  EXPECT_EQ(config->upstream.max_requests_per_connection, 1000u);
  EXPECT_EQ(config->upstream.idle_timeout, absl::Milliseconds(250));
  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->log.format, "json");
  EXPECT_EQ(config->log.access_log_sample, 0.01);
  EXPECT_TRUE(Validate(*config).ok()) << Validate(*config);
}

TEST(ConfigTest, UpstreamTlsAndKeysParseWithPerNodeOverrides) {
  absl::StatusOr<Config> config = ParseConfig(R"(
upstream:
  nodes: ["qdrant-0:6334", "10.0.0.7:6334"]
  tls:
    enabled: true
    ca_file: /etc/ca.crt
    cert_file: /etc/client.crt
    key_file: /etc/client.key
    nodes:
      "10.0.0.7:6334": {server_name: qdrant-1.internal, verify: false}
  api_key_file: /etc/qpool/api-key
  api_key_mode: override
  read_only_api_key_env: QDRANT_READ_ONLY_KEY
  secrets_poll_interval: 1s
)",
                                              "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(Validate(*config).ok()) << Validate(*config);
  const UpstreamConfig& u = config->upstream;
  const TlsOptions first = u.tls.For("qdrant-0:6334");
  EXPECT_TRUE(first.enabled);
  EXPECT_EQ(first.ca_file, "/etc/ca.crt");
  EXPECT_EQ(first.server_name, "");
  EXPECT_TRUE(first.verify);
  EXPECT_EQ(first.cert_file, "/etc/client.crt");
  const TlsOptions second = u.tls.For("10.0.0.7:6334");
  EXPECT_TRUE(second.enabled);  // inherited
  EXPECT_EQ(second.ca_file, "/etc/ca.crt");
  EXPECT_EQ(second.server_name, "qdrant-1.internal");
  EXPECT_FALSE(second.verify);
  EXPECT_EQ(u.api_key_file, "/etc/qpool/api-key");
  EXPECT_EQ(u.api_key_mode, "override");
  EXPECT_EQ(u.read_only_api_key_env, "QDRANT_READ_ONLY_KEY");
  EXPECT_EQ(u.secrets_poll_interval, absl::Seconds(1));
}

TEST(ConfigTest, UpstreamTlsMistakesAreNamed) {
  EXPECT_THAT(ParseError("upstream:\n  tls:\n    enabeld: true\n"),
              HasSubstr("enabeld: unknown key (did you mean enabled?)"));
  EXPECT_THAT(ParseError("upstream:\n  tls:\n    verify: yes\n"),
              HasSubstr("verify: expected true or false"));
  EXPECT_THAT(ParseError("upstream:\n  tls: true\n"), HasSubstr("expected a map"));
  EXPECT_THAT(ParseError("upstream:\n  api_key_mode: always\n"),
              HasSubstr("must be one of if_absent, override"));
  absl::StatusOr<Config> half =
      ParseConfig("upstream:\n  nodes: [\"a:1\"]\n  tls:\n    cert_file: /c.pem\n", "test.yaml");
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_THAT(std::string(Validate(*half).message()),
              HasSubstr("cert_file and key_file go together"));
  absl::StatusOr<Config> stranger = ParseConfig(
      "upstream:\n  nodes: [\"a:1\"]\n  tls:\n    nodes:\n      \"b:2\": {enabled: true}\n",
      "test.yaml");
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  EXPECT_THAT(std::string(Validate(*stranger).message()),
              HasSubstr("b:2 is not in upstream.nodes"));
  absl::StatusOr<Config> both = ParseConfig(
      "upstream:\n  nodes: [\"a:1\"]\n  api_key_file: /k\n  api_key_env: K\n", "test.yaml");
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_THAT(std::string(Validate(*both).message()), HasSubstr("not both"));
}

TEST(ConfigTest, EmptySectionKeepsDefaults) {
  absl::StatusOr<Config> config = ParseConfig("server:\nlog:\n", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameSettings(*config, Config{});
}

TEST(ConfigTest, UnknownKeyNamesLineAndSuggestion) {
  EXPECT_EQ(ParseError("server:\n  workers: 1\n  listn: 127.0.0.1:1\n"),
            "test.yaml:3: server.listn: unknown key (did you mean server.listen?)");
}

TEST(ConfigTest, UnknownKeySuggestsTheKeyInAnotherSection) {
  EXPECT_EQ(ParseError("server:\n  max_connections: 2\n"),
            "test.yaml:2: server.max_connections: unknown key (did you mean "
            "upstream.max_connections?)");
}

TEST(ConfigTest, UnknownSectionSuggestsSection) {
  EXPECT_EQ(ParseError("sever:\n  workers: 1\n"),
            "test.yaml:1: sever: unknown key (did you mean server?)");
}

TEST(ConfigTest, UnknownKeyFarFromEveryKeyHasNoSuggestion) {
  EXPECT_EQ(ParseError("log:\n  colour_scheme: dark\n"),
            "test.yaml:2: log.colour_scheme: unknown key");
}

TEST(ConfigTest, WrongTypeIsRefused) {
  EXPECT_EQ(ParseError("upstream:\n  max_connections: [1, 2]\n"),
            "test.yaml:2: upstream.max_connections: expected an integer, got a list");
  EXPECT_EQ(ParseError("upstream:\n  max_connections: lots\n"),
            "test.yaml:2: upstream.max_connections: expected an integer, got \"lots\"");
  EXPECT_EQ(ParseError("upstream:\n  nodes: \"127.0.0.1:6334\"\n"),
            "test.yaml:2: upstream.nodes: expected a list such as [\"10.0.0.1:6334\"], got "
            "\"127.0.0.1:6334\"");
  EXPECT_EQ(ParseError("server: 5\n"), "test.yaml:1: server: expected a map of keys, got \"5\"");
}

TEST(ConfigTest, WrongTypeMessagesNameMapsAndListsForEveryKind) {
  EXPECT_EQ(ParseError("upstream:\n  max_connections: {a: 1}\n"),
            "test.yaml:2: upstream.max_connections: expected an integer, got a map");
  EXPECT_EQ(ParseError("upstream:\n  connect_timeout: [1s]\n"),
            "test.yaml:2: upstream.connect_timeout: expected a duration such as \"250ms\", "
            "\"1s\" or \"2m\", got a list");
  EXPECT_EQ(ParseError("server:\n  stream_window: {}\n"),
            "test.yaml:2: server.stream_window: expected a size in bytes such as 65536, "
            "\"64KiB\" or \"1MiB\", got a map");
}

TEST(ConfigTest, QuotedNumberIsRefused) {
  EXPECT_THAT(ParseError("server:\n  workers: \"2\"\n"),
              StartsWith("test.yaml:2: server.workers: expected an integer, got the quoted"));
}

TEST(ConfigTest, MissingValueIsRefused) {
  EXPECT_EQ(ParseError("server:\n  workers:\n"), "test.yaml:2: server.workers: missing value");
}

TEST(ConfigTest, BadDurationIsRefused) {
  EXPECT_EQ(ParseError("upstream:\n  acquire_timeout: 5\n"),
            "test.yaml:2: upstream.acquire_timeout: expected a duration such as \"250ms\", "
            "\"1s\" or \"2m\", got \"5\"");
  EXPECT_THAT(ParseError("upstream:\n  acquire_timeout: 1 sec\n"),
              HasSubstr("expected a duration"));
}

TEST(ConfigTest, NegativeDurationIsRefused) {
  EXPECT_EQ(ParseError("server:\n  drain_timeout: -1s\n"),
            "test.yaml:2: server.drain_timeout: must not be negative, got -1s");
  EXPECT_THAT(ParseError("server:\n  max_header_list_size: 100\n"),
              StartsWith("test.yaml:2: server.max_header_list_size: "));
  EXPECT_THAT(ParseError("server:\n  max_headers: 2\n"),
              StartsWith("test.yaml:2: server.max_headers: "));
}

TEST(ConfigTest, ZeroTimeoutIsRefusedWhereMeaningless) {
  EXPECT_EQ(ParseError("upstream:\n  acquire_timeout: 0s\n"),
            "test.yaml:2: upstream.acquire_timeout: must be greater than 0");
  EXPECT_EQ(ParseError("upstream:\n  connect_backoff_base: 0ms\n"),
            "test.yaml:2: upstream.connect_backoff_base: must be greater than 0");
}

TEST(ConfigTest, ZeroDrainTimeoutIsAllowed) {
  absl::StatusOr<Config> config = ParseConfig("server:\n  drain_timeout: 0s\n", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.drain_timeout, absl::ZeroDuration());
}

TEST(ConfigTest, ZeroTurnsRecyclingOff) {
  absl::StatusOr<Config> config = ParseConfig(
      "upstream:\n  max_connection_age: 0s\n  max_requests_per_connection: 0\n  idle_timeout: 0\n",
      "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->upstream.max_connection_age, absl::ZeroDuration());
  EXPECT_EQ(config->upstream.max_requests_per_connection, 0u);
  EXPECT_EQ(config->upstream.idle_timeout, absl::ZeroDuration());
}

TEST(ConfigTest, NegativeRecyclingLimitsAreRefused) {
  EXPECT_EQ(ParseError("upstream:\n  max_connection_age: -1s\n"),
            "test.yaml:2: upstream.max_connection_age: must not be negative, got -1s");
  EXPECT_EQ(ParseError("upstream:\n  idle_timeout: -250ms\n"),
            "test.yaml:2: upstream.idle_timeout: must not be negative, got -250ms");
  EXPECT_EQ(ParseError("upstream:\n  max_requests_per_connection: -1\n"),
            "test.yaml:2: upstream.max_requests_per_connection: must be at least 0, got -1");
  EXPECT_EQ(ParseError("upstream:\n  max_connection_age: inf\n"),
            "test.yaml:2: upstream.max_connection_age: must be finite");
}

TEST(ConfigTest, InfiniteDurationIsRefused) {
  EXPECT_EQ(ParseError("server:\n  drain_timeout: inf\n"),
            "test.yaml:2: server.drain_timeout: must be finite");
}

TEST(ConfigTest, SizeAcceptsBytesAndBinarySuffixes) {
  for (const auto& [text, bytes] : std::vector<std::pair<std::string, uint32_t>>{
           {"65535", 65535}, {"64KiB", 65536}, {"1MiB", 1 << 20}, {"1 GiB", 1 << 30}}) {
    absl::StatusOr<Config> config =
        ParseConfig("server:\n  stream_window: " + text + "\n", "test.yaml");
    ASSERT_TRUE(config.ok()) << text << ": " << config.status();
    EXPECT_EQ(config->server.stream_window, bytes) << text;
  }
}

TEST(ConfigTest, BadSizeIsRefused) {
  EXPECT_EQ(ParseError("server:\n  stream_window: 64KB\n"),
            "test.yaml:2: server.stream_window: expected a size in bytes such as 65536, "
            "\"64KiB\" or \"1MiB\", got \"64KB\"");
  EXPECT_THAT(ParseError("server:\n  stream_window: MiB\n"), HasSubstr("expected a size"));
  EXPECT_THAT(ParseError("server:\n  stream_window: 1.5MiB\n"), HasSubstr("expected a size"));
}

TEST(ConfigTest, OutOfRangeIsRefused) {
  EXPECT_EQ(ParseError("upstream:\n  max_connections: 0\n"),
            "test.yaml:2: upstream.max_connections: must be between 1 and 1024, got 0");
  EXPECT_EQ(ParseError("upstream:\n  max_connections: 5000\n"),
            "test.yaml:2: upstream.max_connections: must be between 1 and 1024, got 5000");
  EXPECT_EQ(ParseError("server:\n  stream_window: 1000\n"),
            "test.yaml:2: server.stream_window: must be between 65535 and 2147483647, got 1000");
  EXPECT_EQ(ParseError("server:\n  stream_window: 2GiB\n"),
            "test.yaml:2: server.stream_window: must be between 65535 and 2147483647, got "
            "2147483648");
  EXPECT_EQ(ParseError("server:\n  workers: 65\n"),
            "test.yaml:2: server.workers: must be between 1 and 64, got 65");
  EXPECT_EQ(ParseError("server:\n  max_client_connections: 0\n"),
            "test.yaml:2: server.max_client_connections: must be at least 1, got 0");
  EXPECT_EQ(ParseError("upstream:\n  max_pending: -1\n"),
            "test.yaml:2: upstream.max_pending: must be at least 0, got -1");
  EXPECT_EQ(ParseError("upstream:\n  max_streams_per_connection: 0\n"),
            "test.yaml:2: upstream.max_streams_per_connection: must be between 1 and 2147483647, "
            "got 0");
}

TEST(ConfigTest, BadEnumIsRefused) {
  EXPECT_EQ(ParseError("log:\n  level: loud\n"),
            "test.yaml:2: log.level: must be one of trace, debug, info, warn, error, off, got "
            "\"loud\"");
  EXPECT_EQ(ParseError("log:\n  format: xml\n"),
            "test.yaml:2: log.format: must be one of text, json, got \"xml\"");
  EXPECT_EQ(ParseError("log:\n  access_log_sample: 1.5\n"),
            "test.yaml:2: log.access_log_sample: must be between 0 and at most 1, got 1.5");
  EXPECT_EQ(ParseError("log:\n  access_log_sample: -0.1\n"),
            "test.yaml:2: log.access_log_sample: must be between 0 and at most 1, got -0.1");
}

TEST(ConfigTest, DuplicateKeyIsRefused) {
  EXPECT_EQ(ParseError("server:\n  workers: 1\n  workers: 2\n"),
            "test.yaml:3: server.workers: duplicate key");
}

TEST(ConfigTest, DuplicateNodeIsRefusedAtItsLine) {
  EXPECT_EQ(ParseError("upstream:\n  nodes:\n    - 10.0.0.1:6334\n    - 10.0.0.1:6334\n"),
            "test.yaml:4: upstream.nodes: duplicate node 10.0.0.1:6334");
}

TEST(ConfigTest, BadNodeIsRefusedAtItsLine) {
  EXPECT_EQ(ParseError("upstream:\n  nodes:\n    - 10.0.0.1:6334\n    - 10.0.0.2\n"),
            "test.yaml:4: upstream.nodes: expected HOST:PORT or [IPV6]:PORT, got \"10.0.0.2\": "
            "missing :PORT");
  EXPECT_THAT(ParseError("upstream:\n  nodes: [\"10.0.0.1:0\"]\n"),
              HasSubstr("port must be between 1 and 65535"));
}

TEST(ConfigTest, YamlSyntaxErrorHasLine) {
  EXPECT_THAT(ParseError("server:\n  workers: 1\n  listen: [oops\n"), StartsWith("test.yaml:"));
  EXPECT_THAT(ParseError("server:\n  workers: 1\n  listen: [oops\n"), HasSubstr("invalid YAML"));
}

TEST(ConfigTest, TopLevelMustBeAMap) {
  EXPECT_EQ(ParseError("- server\n"),
            "test.yaml:1: expected a map of sections (server, upstream, log), got a list");
}

TEST(ConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<Config> config = LoadConfigFile("/nonexistent/qpool.yaml");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("/nonexistent/qpool.yaml"));
}

TEST(ConfigTest, FileErrorsNameThePath) {
  const TempFile file("bad.yaml", "upstream:\n  max_connections: 0\n");
  absl::StatusOr<Config> config = LoadConfigFile(file.path());
  EXPECT_EQ(std::string(config.status().message()),
            file.path() + ":2: upstream.max_connections: must be between 1 and 1024, got 0");
}

// --- Validate: rules across keys -----------------------------------------------------------

Config ValidConfig() {
  Config config;
  config.upstream.nodes.push_back(NodeAddress{"127.0.0.1", 6335});
  return config;
}

TEST(ValidateTest, DefaultsWithOneNodeAreValid) { EXPECT_TRUE(Validate(ValidConfig()).ok()); }

TEST(ValidateTest, RequiresANode) {
  absl::Status status = Validate(Config{});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("upstream.nodes: at least one Qdrant node"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("--upstream"));
}

TEST(ValidateTest, MinConnectionsMustNotExceedMax) {
  Config config = ValidConfig();
  config.upstream.min_connections = 5;
  EXPECT_EQ(std::string(Validate(config).message()),
            "upstream.min_connections: must not exceed upstream.max_connections (5 > 4)");
}

TEST(ValidateTest, WorkersMustNotExceedMaxConnections) {
  Config config = ValidConfig();
  config.server.workers = 8;
  EXPECT_THAT(std::string(Validate(config).message()),
              StartsWith("server.workers: must not exceed upstream.max_connections (8 > 4)"));
}

TEST(ValidateTest, BackoffBaseMustNotExceedMax) {
  Config config = ValidConfig();
  config.upstream.connect_backoff_base = absl::Seconds(10);
  EXPECT_EQ(std::string(Validate(config).message()),
            "upstream.connect_backoff_base: must not exceed upstream.connect_backoff_max (10s > "
            "1s)");
}

TEST(ValidateTest, RefusesANegativeRecyclingDuration) {
  Config config = ValidConfig();
  config.upstream.idle_timeout = absl::Seconds(-1);
  EXPECT_EQ(std::string(Validate(config).message()),
            "upstream.idle_timeout: must not be negative, got -1s");
}

TEST(ConfigTest, HealthKeysParse) {
  absl::StatusOr<Config> config = ParseConfig(R"(
health:
  enabled: false
  jitter_percent: 20
  unhealthy_threshold: 4
  healthy_threshold: 1
  fast_enabled: false
  fast_interval: 2s
  fast_timeout: 300ms
  medium_enabled: true
  medium_interval: 200ms
  medium_timeout: 100ms
  medium_method: grpc
  deep_enabled: false
  deep_interval: 1m
  deep_timeout: 5s
  deep_collection: docs
  api_key_env: QDRANT_API_KEY
  passive_enabled: false
  consecutive_failures: 7
  base_ejection_time: 1s
  max_ejection_time: 20s
  max_ejection_percent: 100
)",
                                              "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  const HealthConfig& h = config->health;
  EXPECT_FALSE(h.enabled);
  EXPECT_EQ(h.jitter_percent, 20u);
  EXPECT_EQ(h.unhealthy_threshold, 4u);
  EXPECT_EQ(h.healthy_threshold, 1u);
  EXPECT_FALSE(h.fast_enabled);
  EXPECT_EQ(h.fast_interval, absl::Seconds(2));
  EXPECT_EQ(h.fast_timeout, absl::Milliseconds(300));
  EXPECT_TRUE(h.medium_enabled);
  EXPECT_EQ(h.medium_interval, absl::Milliseconds(200));
  EXPECT_EQ(h.medium_timeout, absl::Milliseconds(100));
  EXPECT_EQ(h.medium_method, "grpc");
  EXPECT_FALSE(h.deep_enabled);
  EXPECT_EQ(h.deep_interval, absl::Minutes(1));
  EXPECT_EQ(h.deep_timeout, absl::Seconds(5));
  EXPECT_EQ(h.deep_collection, "docs");
  EXPECT_EQ(h.api_key_env, "QDRANT_API_KEY");
  EXPECT_FALSE(h.passive_enabled);
  EXPECT_EQ(h.consecutive_failures, 7u);
  EXPECT_EQ(h.base_ejection_time, absl::Seconds(1));
  EXPECT_EQ(h.max_ejection_time, absl::Seconds(20));
  EXPECT_EQ(h.max_ejection_percent, 100u);
}

TEST(ConfigTest, HealthBadValuesAreRefused) {
  EXPECT_EQ(std::string(ParseConfig("health:\n  enabled: maybe\n", "t.yaml").status().message()),
            "t.yaml:2: health.enabled: expected true or false, got \"maybe\"");
  EXPECT_EQ(
      std::string(ParseConfig("health:\n  medium_method: http\n", "t.yaml").status().message()),
      "t.yaml:2: health.medium_method: must be one of qdrant, grpc, got \"http\"");
  EXPECT_EQ(
      std::string(ParseConfig("health:\n  jitter_percent: 60\n", "t.yaml").status().message()),
      "t.yaml:2: health.jitter_percent: must be between 0 and 50, got 60");
  EXPECT_EQ(std::string(
                ParseConfig("health:\n  deep_collection: \"a/b\"\n", "t.yaml").status().message()),
            "t.yaml:2: health.deep_collection: invalid character in collection name \"a/b\"");
  EXPECT_EQ(
      std::string(ParseConfig("health:\n  api_key_env: \"1KEY\"\n", "t.yaml").status().message()),
      "t.yaml:2: health.api_key_env: expected an environment variable name such as "
      "QDRANT_API_KEY, got \"1KEY\"");
}

TEST(ValidateTest, ProbeTimeoutMustNotExceedItsInterval) {
  Config config = ValidConfig();
  config.health.medium_timeout = absl::Seconds(6);
  EXPECT_EQ(std::string(Validate(config).message()),
            "health.medium_timeout: must not exceed health.medium_interval (6s > 5s)");
}

TEST(ValidateTest, BaseEjectionTimeMustNotExceedMax) {
  Config config = ValidConfig();
  config.health.base_ejection_time = absl::Seconds(400);
  EXPECT_EQ(std::string(Validate(config).message()),
            "health.base_ejection_time: must not exceed health.max_ejection_time (6m40s > 5m)");
}

TEST(ValidateTest, AppliesSingleKeyLimitsToo) {
  Config config = ValidConfig();
  config.server.stream_window = 100;
  EXPECT_EQ(std::string(Validate(config).message()),
            "server.stream_window: must be between 65535 and 2147483647, got 100");
}

TEST(ValidateTest, DuplicateNodesAreRefused) {
  Config config = ValidConfig();
  config.upstream.nodes.push_back(NodeAddress{"127.0.0.1", 6335});
  EXPECT_EQ(std::string(Validate(config).message()),
            "upstream.nodes: duplicate node 127.0.0.1:6335");
}

TEST(ValidateTest, CrossKeyErrorFromFileNamesTheLine) {
  const TempFile file("workers.yaml",
                      "upstream:\n  nodes: [\"127.0.0.1:6335\"]\nserver:\n  workers: 8\n");
  CommandLine command_line;
  command_line.config_path = file.path();
  absl::StatusOr<Config> config = BuildConfig(command_line);
  EXPECT_THAT(
      std::string(config.status().message()),
      StartsWith(file.path() + ":4: server.workers: must not exceed upstream.max_connections"));
}

// --- addresses -----------------------------------------------------------------------------

TEST(NodeAddressTest, ParsesHostAndPort) {
  absl::StatusOr<NodeAddress> address = ParseNodeAddress("qdrant.local:6334");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->host, "qdrant.local");
  EXPECT_EQ(address->port, 6334);
}

TEST(NodeAddressTest, ParsesBracketedIpv6) {
  absl::StatusOr<NodeAddress> address = ParseNodeAddress("[::1]:6334");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->host, "::1");
  EXPECT_EQ(address->port, 6334);
  EXPECT_EQ(address->ToString(), "[::1]:6334");
}

TEST(NodeAddressTest, RefusesMalformedAddresses) {
  EXPECT_THAT(std::string(ParseNodeAddress("::1:6334").status().message()),
              HasSubstr("in brackets"));
  EXPECT_THAT(std::string(ParseNodeAddress("localhost").status().message()),
              HasSubstr("missing :PORT"));
  EXPECT_THAT(std::string(ParseNodeAddress(":6334").status().message()), HasSubstr("missing host"));
  EXPECT_THAT(std::string(ParseNodeAddress("localhost:65536").status().message()),
              HasSubstr("port"));
  EXPECT_THAT(std::string(ParseNodeAddress("localhost:http").status().message()),
              HasSubstr("port"));
  EXPECT_THAT(std::string(ParseNodeAddress("[::1:6334").status().message()),
              HasSubstr("missing ']'"));
  EXPECT_THAT(std::string(ParseNodeAddress("[qdrant]:6334").status().message()), HasSubstr("IPv6"));
  EXPECT_THAT(std::string(ParseNodeAddress("bad host:6334").status().message()), HasSubstr("host"));
}

// --- command line --------------------------------------------------------------------------

TEST(CommandLineTest, FlagTakesTheNextArgumentAsValue) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--config", "q.yaml", "--workers", "2", "--check-config"});
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  EXPECT_EQ(command_line->config_path, "q.yaml");
  EXPECT_EQ(command_line->workers, 2u);
  EXPECT_TRUE(command_line->check_config);
  EXPECT_FALSE(command_line->version);
}

TEST(CommandLineTest, FlagEqualsValue) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--max-connections=7", "--log-format=json", "--upstream=a:1,b:2", "--log-level=debug",
             "--listen=0.0.0.0:0"});
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  EXPECT_EQ(command_line->max_connections, 7u);
  EXPECT_EQ(command_line->log_format, "json");
  EXPECT_EQ(command_line->upstream, "a:1,b:2");
  EXPECT_EQ(command_line->log_level, "debug");
  EXPECT_EQ(command_line->listen, "0.0.0.0:0");
}

TEST(CommandLineTest, SwitchesParse) {
  absl::StatusOr<CommandLine> command_line = Parse({"--version", "--help"});
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  EXPECT_TRUE(command_line->version);
  EXPECT_TRUE(command_line->help);
}

TEST(CommandLineTest, UnknownFlagIsRefusedWithSuggestion) {
  EXPECT_EQ(std::string(Parse({"--worker", "2"}).status().message()),
            "unknown flag --worker (did you mean --workers?)");
  EXPECT_EQ(std::string(Parse({"--frobnicate"}).status().message()), "unknown flag --frobnicate");
}

TEST(CommandLineTest, MissingValueNamesTheFlag) {
  EXPECT_EQ(std::string(Parse({"--config"}).status().message()),
            "--config: missing value (--config FILE)");
}

TEST(CommandLineTest, FlagAsValueIsAMissingValue) {
  EXPECT_EQ(std::string(Parse({"--config", "--check-config"}).status().message()),
            "--config: missing value (--config FILE)");
}

TEST(CommandLineTest, SwitchWithValueIsRefused) {
  EXPECT_EQ(std::string(Parse({"--check-config=yes"}).status().message()),
            "--check-config: takes no value");
}

TEST(CommandLineTest, MalformedNumberNamesTheFlag) {
  EXPECT_EQ(std::string(Parse({"--workers", "two"}).status().message()),
            "--workers: expected a non-negative integer, got \"two\"");
  EXPECT_THAT(std::string(Parse({"--max-connections=-1"}).status().message()),
              StartsWith("--max-connections: "));
}

TEST(CommandLineTest, PositionalArgumentIsRefused) {
  EXPECT_EQ(std::string(Parse({"qpool.yaml"}).status().message()),
            "unexpected argument \"qpool.yaml\"");
}

TEST(CommandLineTest, UsageTextListsEveryFlag) {
  const std::string usage = UsageText();
  for (const char* flag :
       {"--config", "--check-config", "--version", "--help", "--log-level", "--log-format",
        "--listen", "--upstream", "--max-connections", "--workers"}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
}

// --- BuildConfig: flags > file > defaults --------------------------------------------------

TEST(BuildConfigTest, FlagsAloneRunOnDefaults) {
  absl::StatusOr<CommandLine> command_line = Parse({"--upstream", "127.0.0.1:6335"});
  ASSERT_TRUE(command_line.ok());
  absl::StatusOr<Config> config = BuildConfig(*command_line);
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameSettings(*config, Config{});
  EXPECT_THAT(NodeNames(*config), testing::ElementsAre("127.0.0.1:6335"));
}

TEST(BuildConfigTest, NoUpstreamAnywhereSaysWhereToSetIt) {
  absl::StatusOr<Config> config = BuildConfig(CommandLine{});
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("--upstream"));
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("upstream.nodes"));
}

TEST(BuildConfigTest, FlagsOverrideFile) {
  const TempFile file("override.yaml", R"(
server:
  listen: 127.0.0.1:7000
  workers: 2
upstream:
  nodes: ["10.0.0.1:6334"]
  max_connections: 2
  max_pending: 5
log:
  level: warn
  format: text
)");
  absl::StatusOr<CommandLine> command_line =
      Parse({"--config", file.path().c_str(), "--listen", "[::1]:0", "--upstream",
             "[::1]:6334, 10.0.0.2:6334", "--max-connections", "16", "--workers=4", "--log-level",
             "debug", "--log-format", "json"});
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  absl::StatusOr<Config> config = BuildConfig(*command_line);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.listen.ToString(), "[::1]:0");
  EXPECT_THAT(NodeNames(*config), testing::ElementsAre("[::1]:6334", "10.0.0.2:6334"));
  EXPECT_EQ(config->upstream.max_connections, 16u);
  EXPECT_EQ(config->server.workers, 4u);
  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->log.format, "json");
  EXPECT_EQ(config->upstream.max_pending, 5u);  // from the file, no flag
}

TEST(BuildConfigTest, UpstreamFlagParsesAList) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--upstream", "10.0.0.1:6334,[::1]:6334,qdrant:6334"});
  ASSERT_TRUE(command_line.ok());
  absl::StatusOr<Config> config = BuildConfig(*command_line);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(NodeNames(*config),
              testing::ElementsAre("10.0.0.1:6334", "[::1]:6334", "qdrant:6334"));
}

TEST(BuildConfigTest, BadUpstreamFlagNamesTheFlag) {
  CommandLine command_line;
  command_line.upstream = "10.0.0.1:6334,,10.0.0.2:6334";
  EXPECT_THAT(std::string(BuildConfig(command_line).status().message()),
              StartsWith("--upstream: empty entry"));
  command_line.upstream = "10.0.0.1";
  EXPECT_THAT(std::string(BuildConfig(command_line).status().message()),
              StartsWith("--upstream: expected"));
  command_line.upstream = "10.0.0.1:1,10.0.0.1:1";
  EXPECT_EQ(std::string(BuildConfig(command_line).status().message()),
            "--upstream: upstream.nodes: duplicate node 10.0.0.1:1");
}

TEST(BuildConfigTest, OutOfRangeFlagNamesTheFlag) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--upstream", "127.0.0.1:6335", "--max-connections", "0"});
  ASSERT_TRUE(command_line.ok());
  EXPECT_EQ(std::string(BuildConfig(*command_line).status().message()),
            "--max-connections: upstream.max_connections: must be between 1 and 1024, got 0");
}

TEST(BuildConfigTest, BadLogLevelFlagNamesTheFlag) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--upstream", "127.0.0.1:6335", "--log-level", "loud"});
  ASSERT_TRUE(command_line.ok());
  EXPECT_THAT(std::string(BuildConfig(*command_line).status().message()),
              StartsWith("--log-level: log.level: must be one of"));
}

TEST(BuildConfigTest, BadListenFlagNamesTheFlag) {
  absl::StatusOr<CommandLine> command_line =
      Parse({"--upstream", "127.0.0.1:6335", "--listen", "localhost"});
  ASSERT_TRUE(command_line.ok());
  EXPECT_THAT(std::string(BuildConfig(*command_line).status().message()),
              StartsWith("--listen: expected"));
}

// --- the example file and the docs never drift from the code -------------------------------

TEST(RetryConfigTest, ParsesEveryRetryKey) {
  absl::StatusOr<Config> config = ParseConfig(R"(
retry:
  enabled: false
  max_attempts: 5
  backoff_base: 10ms
  backoff_max: 2s
  on: [unavailable]
  per_try_timeout: 300ms
  hedge_delay: 50ms
  replay_buffer_per_call: 1MiB
  replay_buffer_total: 8MiB
  budget_max_tokens: 10
  budget_token_ratio: 0.5
  min_retries_in_flight: 7
  retries_in_flight_percent: 50
  methods: {"/qdrant.Points/Search": never, "/my.Service/Get": read}
)",
                                              "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  const RetryConfig& retry = config->retry;
  EXPECT_FALSE(retry.enabled);
  EXPECT_EQ(retry.max_attempts, 5u);
  EXPECT_EQ(retry.backoff_base, absl::Milliseconds(10));
  EXPECT_EQ(retry.backoff_max, absl::Seconds(2));
  EXPECT_EQ(retry.on, std::vector<std::string>{"unavailable"});
  EXPECT_EQ(retry.per_try_timeout, absl::Milliseconds(300));
  EXPECT_EQ(retry.hedge_delay, absl::Milliseconds(50));
  EXPECT_EQ(retry.replay_buffer_per_call, 1u << 20);
  EXPECT_EQ(retry.replay_buffer_total, 8u << 20);
  EXPECT_EQ(retry.budget_max_tokens, 10u);
  EXPECT_EQ(retry.budget_token_ratio, 0.5);
  EXPECT_EQ(retry.min_retries_in_flight, 7u);
  EXPECT_EQ(retry.retries_in_flight_percent, 50u);
  EXPECT_EQ(retry.methods.at("/qdrant.Points/Search"), "never");
  EXPECT_EQ(retry.methods.at("/my.Service/Get"), "read");
}

TEST(RetryConfigTest, RefusesBadRetryValues) {
  EXPECT_EQ(ParseError("retry:\n  enabled: yes\n"),
            "test.yaml:2: retry.enabled: expected true or false, got \"yes\"");
  EXPECT_EQ(ParseError("retry:\n  max_attempts: 0\n"),
            "test.yaml:2: retry.max_attempts: must be between 1 and 10, got 0");
  EXPECT_EQ(ParseError("retry:\n  on: [unavailable, internal]\n"),
            "test.yaml:2: retry.on: must be one of unavailable, resource_exhausted, "
            "per_try_timeout, got \"internal\"");
  EXPECT_EQ(ParseError("retry:\n  budget_token_ratio: 0\n"),
            "test.yaml:2: retry.budget_token_ratio: must be above 0 and at most 1, got 0");
  EXPECT_EQ(ParseError("retry:\n  budget_token_ratio: lots\n"),
            "test.yaml:2: retry.budget_token_ratio: expected a number such as 0.1, got \"lots\"");
  EXPECT_EQ(ParseError("retry:\n  methods: {Search: never}\n"),
            "test.yaml:2: retry.methods: expected a gRPC method path such as "
            "\"/qdrant.Points/Search\", got \"Search\"");
  EXPECT_EQ(ParseError("retry:\n  methods: {\"/qdrant.Points/Search\": sometimes}\n"),
            "test.yaml:2: retry.methods: /qdrant.Points/Search: must be one of read, "
            "id_scoped_write, filter_scoped_write, never, got \"sometimes\"");
  Config config;
  config.upstream.nodes = {{"127.0.0.1", 6335}};
  config.retry.backoff_base = absl::Seconds(2);
  EXPECT_EQ(Validate(config).message(),
            "retry.backoff_base: must not exceed retry.backoff_max (2s > 1s)");
  config.retry.backoff_base = absl::Milliseconds(25);
  config.retry.replay_buffer_per_call = 128 << 20;
  EXPECT_EQ(Validate(config).message(),
            "retry.replay_buffer_per_call: must not exceed retry.replay_buffer_total (134217728 > "
            "67108864)");
}

TEST(RestConfigTest, EmptyListenTurnsRestOffAndRestNodesMatchTheNodes) {
  absl::StatusOr<Config> config = ParseConfig(
      "upstream:\n  nodes: [\"a:6334\", \"b:6334\"]\n  rest_nodes: [\"a:7333\"]\nrest:\n"
      "  listen: \"\"\n",
      "t.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->rest.listen.host.empty());
  EXPECT_EQ(Validate(*config).message(),
            "upstream.rest_nodes: lists 1 REST endpoints for 2 nodes in upstream.nodes: give one "
            "per node, in the same order");
}

TEST(RestConfigTest, RestOnlyNeedsRestNodesAndTheListener) {
  Config config;
  config.upstream.rest_nodes = {{"a", 6333}, {"b", 6333}};
  EXPECT_TRUE(Validate(config).ok()) << Validate(config);
  EXPECT_EQ(NodeCount(config), 2u);
  EXPECT_EQ(NodeName(config, 1), "b:6333");
  config.rest.listen = {};
  EXPECT_THAT(std::string(Validate(config).message()),
              HasSubstr("upstream.nodes: at least one Qdrant node is required"));
}

TEST(RestConfigTest, RestFlagsOverride) {
  const char* argv[] = {"qpoold",        "--upstream",    "a:6334,b:6334", "--rest-upstream",
                        "a:7333,b:7333", "--rest-listen", "127.0.0.1:0"};
  absl::StatusOr<CommandLine> command_line = ParseCommandLine(7, argv);
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  absl::StatusOr<Config> config = BuildConfig(*command_line);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->upstream.rest_nodes.size(), 2u);
  EXPECT_EQ(config->upstream.rest_nodes[1].ToString(), "b:7333");
  EXPECT_EQ(config->rest.listen.ToString(), "127.0.0.1:0");
  const char* off[] = {"qpoold", "--upstream", "a:6334", "--rest-listen", ""};
  command_line = ParseCommandLine(5, off);
  ASSERT_TRUE(command_line.ok()) << command_line.status();
  config = BuildConfig(*command_line);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->rest.listen.host.empty());
}

TEST(RestConfigTest, WorkersMayNotExceedRestMaxConnections) {
  Config config;
  config.upstream.nodes = {{"a", 6334}};
  config.upstream.max_connections = 8;
  config.server.workers = 4;
  config.rest.max_connections = 2;
  EXPECT_THAT(std::string(Validate(config).message()),
              HasSubstr("server.workers: must not exceed rest.max_connections (4 > 2)"));
  config.rest.listen = {};
  EXPECT_TRUE(Validate(config).ok());
}

TEST(ExampleConfigTest, ExampleFileEqualsDefaults) {
  absl::StatusOr<Config> config = LoadConfigFile(QPOOL_SOURCE_DIR "/config/qpool.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameSettings(*config, Config{});
  EXPECT_THAT(NodeNames(*config), testing::ElementsAre("127.0.0.1:6335"));
  EXPECT_TRUE(Validate(*config).ok()) << Validate(*config);
}

TEST(ExampleConfigTest, ExampleFileMentionsEveryKey) {
  const std::string example = ReadFile(QPOOL_SOURCE_DIR "/config/qpool.yaml");
  for (const std::string& key : ConfigKeyNames()) {
    const std::string section = key.substr(0, key.find('.'));
    const std::string leaf = key.substr(key.find('.') + 1);
    EXPECT_THAT(example, HasSubstr("\n" + section + ":\n")) << key;
    EXPECT_THAT(example, HasSubstr("\n  " + leaf + ": ")) << key;
  }
}

// The secure sidecar example's files live in a Secret mount, so --check-config cannot load them
// here; its YAML must still parse and validate.
TEST(ExampleConfigTest, SecureSidecarExampleIsValid) {
  absl::StatusOr<Config> config = LoadConfigFile(
      QPOOL_SOURCE_DIR "/deploy/kubernetes/components/qpool-secrets/qpool-secure.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(Validate(*config).ok()) << Validate(*config);
  EXPECT_TRUE(config->upstream.tls.defaults.enabled);
  EXPECT_FALSE(config->upstream.api_key_file.empty());
}

TEST(ExampleConfigTest, DocsDescribeEveryKey) {
  const std::string docs = ReadFile(QPOOL_SOURCE_DIR "/docs/configuration.md");
  for (const std::string& key : ConfigKeyNames()) {
    EXPECT_THAT(docs, HasSubstr("`" + key + "`")) << key;
  }
}

// --- environment overrides, --print-config, reload diff ------------------------------------

// A config file written at run time, removed by the destructor.
class TempConfigFile {
 public:
  explicit TempConfigFile(const std::string& text) {
    std::string path = ::testing::TempDir() + "/qpool_env_XXXXXX";
    const int fd = mkstemp(path.data());
    EXPECT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << text;
    path_ = path;
  }
  ~TempConfigFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(EnvironmentTest, VariableNamesDeriveFromTheKeyTable) {
  EXPECT_EQ(EnvVarName("upstream.max_connections"), "QPOOL_UPSTREAM_MAX_CONNECTIONS");
  EXPECT_EQ(EnvVarName("admin.readiness_includes_upstream"),
            "QPOOL_ADMIN_READINESS_INCLUDES_UPSTREAM");
  // Every key can be set from the environment: its own variable, at a value that round-trips.
  const Config defaults;
  for (const std::string& key : ConfigKeyNames()) {
    CommandLine command_line;
    command_line.upstream = "127.0.0.1:6335";
    Environment env;
    // The printed default, read back through the variable: same config.
    const std::string printed = PrintConfig(defaults);
    const size_t leaf_at = printed.find("\n  " + key.substr(key.find('.') + 1) + ": ");
    ASSERT_NE(leaf_at, std::string::npos) << key;
    const size_t value_at = printed.find(": ", leaf_at) + 2;
    std::string value = printed.substr(value_at, printed.find('\n', value_at) - value_at);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    if (key == "upstream.nodes") value = "127.0.0.1:6335";
    env[EnvVarName(key)] = value;
    absl::StatusOr<Config> config = BuildConfig(command_line, env);
    EXPECT_TRUE(config.ok()) << key << " from " << EnvVarName(key) << "=" << value << ": "
                             << config.status();
  }
}

TEST(EnvironmentTest, FlagsBeatEnvironmentWhichBeatsTheFileWhichBeatsDefaults) {
  TempConfigFile file(
      "upstream:\n  nodes: [\"10.0.0.1:6334\"]\n  max_connections: 8\n  max_pending: 10\n"
      "log:\n  level: warn\n");
  CommandLine command_line;
  command_line.config_path = file.path();
  command_line.max_connections = 16;
  Environment env = {{"QPOOL_UPSTREAM_MAX_CONNECTIONS", "12"},
                     {"QPOOL_UPSTREAM_MAX_PENDING", "20"},
                     {"QPOOL_UPSTREAM_NODES", "10.0.0.2:6334, [::1]:6334"},
                     {"QPOOL_SERVER_LISTEN", "[::1]:7000"},
                     {"QPOOL_SERVER_DRAIN_DELAY", "5s"},
                     {"QPOOL_ADMIN_READINESS_INCLUDES_UPSTREAM", "true"},
                     {"QPOOL_RETRY_ON", "[unavailable]"},
                     {"QPOOL_LOG_ACCESS_LOG_SAMPLE", "0.25"},
                     {"PATH", "/usr/bin"}};
  absl::StatusOr<Config> config = BuildConfig(command_line, env);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->upstream.max_connections, 16u);  // flag over variable over file
  EXPECT_EQ(config->upstream.max_pending, 20u);      // variable over file
  EXPECT_EQ(config->log.level, "warn");              // file over default
  EXPECT_EQ(config->upstream.min_connections, 1u);   // default
  EXPECT_THAT(NodeNames(*config), testing::ElementsAre("10.0.0.2:6334", "[::1]:6334"));
  EXPECT_EQ(config->server.listen.ToString(), "[::1]:7000");
  EXPECT_EQ(config->server.drain_delay, absl::Seconds(5));
  EXPECT_TRUE(config->admin.readiness_includes_upstream);
  EXPECT_THAT(config->retry.on, testing::ElementsAre("unavailable"));
  EXPECT_EQ(config->log.access_log_sample, 0.25);
}

TEST(EnvironmentTest, ABadValueNamesTheVariableAndTheKey) {
  CommandLine command_line;
  command_line.upstream = "127.0.0.1:6335";
  absl::StatusOr<Config> config =
      BuildConfig(command_line, {{"QPOOL_UPSTREAM_MAX_CONNECTIONS", "0"}});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(std::string(config.status().message()),
            "QPOOL_UPSTREAM_MAX_CONNECTIONS (upstream.max_connections): must be between 1 and "
            "1024, got 0");
  config = BuildConfig(command_line, {{"QPOOL_SERVER_DRAIN_DELAY", "5"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              StartsWith("QPOOL_SERVER_DRAIN_DELAY (server.drain_delay)"));
}

TEST(EnvironmentTest, ACrossKeyViolationNamesTheVariable) {
  CommandLine command_line;
  command_line.upstream = "127.0.0.1:6335";
  absl::StatusOr<Config> config = BuildConfig(command_line, {{"QPOOL_SERVER_WORKERS", "8"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              StartsWith("QPOOL_SERVER_WORKERS: server.workers"));
}

TEST(EnvironmentTest, AnUnknownQpoolVariableIsAnErrorThatNamesIt) {
  CommandLine command_line;
  command_line.upstream = "127.0.0.1:6335";
  absl::StatusOr<Config> config =
      BuildConfig(command_line, {{"QPOOL_UPSTREAM_MAX_CONECTIONS", "8"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("environment variable QPOOL_UPSTREAM_MAX_CONECTIONS: not a qpoold setting "
                        "(did you mean QPOOL_UPSTREAM_MAX_CONNECTIONS?)"));
}

TEST(EnvironmentTest, KubernetesServiceLinksAndTheApiKeyVariableAreLeftAlone) {
  CommandLine command_line;
  command_line.upstream = "127.0.0.1:6335";
  Environment env = {{"QPOOL_SERVICE_HOST", "10.0.0.9"},
                     {"QPOOL_SERVICE_PORT", "6334"},
                     {"QPOOL_SERVICE_PORT_GRPC", "6334"},
                     {"QPOOL_PORT", "tcp://10.0.0.9:6334"},
                     {"QPOOL_PORT_6334_TCP", "tcp://10.0.0.9:6334"},
                     {"QPOOL_PORT_6334_TCP_ADDR", "10.0.0.9"},
                     {"QPOOL_HEALTH_API_KEY_ENV", "QPOOL_QDRANT_KEY"},
                     {"QPOOL_QDRANT_KEY", "s3cret"}};
  absl::StatusOr<Config> config = BuildConfig(command_line, env);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->health.api_key_env, "QPOOL_QDRANT_KEY");
  // A look-alike that is not a service link is still a typo.
  config = BuildConfig(command_line, {{"QPOOL_SERVER_LISTEN_PORT", "6334"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("QPOOL_SERVER_LISTEN_PORT"));
}

TEST(PrintConfigTest, PrintsEveryKeyAndLoadsBackToTheSameConfig) {
  CommandLine command_line;
  command_line.upstream = "10.0.0.1:6334,[::1]:6334";
  Environment env = {{"QPOOL_RETRY_METHODS", "{\"/qdrant.Points/Delete\": never}"},
                     {"QPOOL_UPSTREAM_ACQUIRE_TIMEOUT", "1500ms"},
                     {"QPOOL_RETRY_BUDGET_TOKEN_RATIO", "0.25"},
                     {"QPOOL_HEALTH_DEEP_COLLECTION", "my \"quoted\" \\ name"}};
  absl::StatusOr<Config> config = BuildConfig(command_line, env);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string printed = PrintConfig(*config);
  for (const std::string& key : ConfigKeyNames()) {
    EXPECT_THAT(printed, HasSubstr("\n  " + key.substr(key.find('.') + 1) + ": ")) << key;
  }
  absl::StatusOr<Config> again = ParseConfig(printed, "printed");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << printed;
  ExpectSameSettings(*again, *config);
  EXPECT_THAT(NodeNames(*again), testing::ElementsAre("10.0.0.1:6334", "[::1]:6334"));
  EXPECT_EQ(again->health.deep_collection, "my \"quoted\" \\ name");
  EXPECT_TRUE(ChangedKeys(*config, *again).empty());
}

TEST(PrintConfigTest, TheApiKeyVariableIsNamedButItsValueNeverPrinted) {
  CommandLine command_line;
  command_line.upstream = "127.0.0.1:6335";
  Environment env = {{"QPOOL_HEALTH_API_KEY_ENV", "QDRANT_API_KEY"},
                     {"QDRANT_API_KEY", "very-secret-key-value"}};
  absl::StatusOr<Config> config = BuildConfig(command_line, env);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string printed = PrintConfig(*config);
  EXPECT_THAT(printed, HasSubstr("api_key_env: \"QDRANT_API_KEY\""));
  EXPECT_EQ(printed.find("very-secret-key-value"), std::string::npos);
}

TEST(ReloadTest, ChangedKeysNamesWhatDiffersAndWhichCanChangeLive) {
  Config before;
  before.upstream.nodes = {{"127.0.0.1", 6335}};
  Config after = before;
  EXPECT_TRUE(ChangedKeys(before, after).empty());
  after.log.level = "debug";
  after.server.listen.port = 7000;
  after.upstream.nodes.push_back({"127.0.0.2", 6335});
  EXPECT_THAT(ChangedKeys(before, after),
              testing::ElementsAre("server.listen", "upstream.nodes", "log.level"));
  EXPECT_EQ(DescribeChange(before, after, "log.level"), "log.level: \"info\" -> \"debug\"");
  EXPECT_TRUE(ReloadableKey("log.level"));
  EXPECT_TRUE(ReloadableKey("log.format"));
  EXPECT_TRUE(ReloadableKey("log.access_log_sample"));
  EXPECT_TRUE(ReloadableKey("server.drain_delay"));
  EXPECT_TRUE(ReloadableKey("admin.readiness_includes_upstream"));
  EXPECT_TRUE(ReloadableKey("config.watch_interval"));
  EXPECT_FALSE(ReloadableKey("server.listen"));
  EXPECT_FALSE(ReloadableKey("server.workers"));
  EXPECT_FALSE(ReloadableKey("rest.listen"));
  EXPECT_FALSE(ReloadableKey("admin.listen"));
  EXPECT_TRUE(ReloadableKey("upstream.nodes"));
  EXPECT_TRUE(ReloadableKey("upstream.max_connections"));
  EXPECT_TRUE(ReloadableKey("upstream.tls"));
  EXPECT_TRUE(ReloadableKey("retry.max_attempts"));
  EXPECT_TRUE(ReloadableKey("health.medium_interval"));
}

}  // namespace
}  // namespace qpool::config
