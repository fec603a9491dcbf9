// qpoold's configuration: a validated, immutable snapshot built from YAML and command-line flags.
//
// Every key, its default and its unit is listed once, here, next to its field; config/qpool.yaml
// is the commented example of the same keys. Durations are written in YAML as "250ms", "1s",
// "2m"; sizes as integers in bytes or with a binary suffix ("64KiB", "1MiB").
//
// Thread-safety: a Config is immutable once built; share it as std::shared_ptr<const Config>.
#ifndef QPOOL_DAEMON_CONFIG_CONFIG_H_
#define QPOOL_DAEMON_CONFIG_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace qpool::config {

// One upstream Qdrant node, "host:port" in config.
struct NodeAddress {
  std::string host;  // a name or an IPv4/IPv6 literal (written "[::1]:6334" in config)
  uint16_t port = 0;
  std::string ToString() const;  // "host:port", the name used in logs and metrics
};

// YAML section `server`: the downstream (app-facing) side.
struct ServerConfig {
  // server.listen: address the apps connect to. Default "127.0.0.1:6334" (Qdrant's gRPC port).
  NodeAddress listen{"127.0.0.1", 6334};
  // server.max_client_connections: app connections held at once; one more is answered with a
  // GOAWAY and closed, and counted. Default 10000.
  uint32_t max_client_connections = 10000;
  // server.max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS advertised to each app
  // connection (calls in flight per app connection). Default 1000.
  uint32_t max_concurrent_streams = 1000;
  // server.stream_window: HTTP/2 flow-control window per stream, both sides, bytes. It bounds what
  // qpoold buffers for one call in each direction. Default 1MiB.
  uint32_t stream_window = 1 << 20;
  // server.workers: I/O threads; each owns a share of the app connections and of the upstream
  // pool. Must not exceed upstream.max_connections. Default 1.
  uint32_t workers = 1;
  // server.drain_timeout: after SIGTERM/SIGINT, how long in-flight calls may take to finish.
  // Default 30s.
  absl::Duration drain_timeout = absl::Seconds(30);
  // server.drain_delay: after SIGTERM/SIGINT (or POST /quitquitquit), keep serving normally for
  // this long before the drain starts; /readyz answers 503 from the signal on, so Kubernetes stops
  // sending new traffic meanwhile. For qpool in `containers:` (classic sidecar), where the app and
  // qpool get SIGTERM together and the app's last calls still need qpool. Counts against the
  // pod's terminationGracePeriodSeconds with drain_timeout. Default 0 (drain at once).
  absl::Duration drain_delay = absl::ZeroDuration();
  // server.max_header_list_size: the largest request header block qpoold takes from an app, in
  // bytes as RFC 9113 counts them (name + value + 32 per header, after HPACK decoding). Advertised
  // in SETTINGS_MAX_HEADER_LIST_SIZE and enforced while decoding: a stream over it is answered
  // RESOURCE_EXHAUSTED (docs/security.md). Default 16KiB, the upper end of gRPC clients' own
  // defaults (8 KiB..16 KiB); Qdrant clients send a few hundred bytes.
  uint32_t max_header_list_size = 16 * 1024;
  // server.max_headers: the most header fields one request header block may carry; a stream over
  // it is answered RESOURCE_EXHAUSTED. Default 100.
  uint32_t max_headers = 100;
  // server.handshake_timeout: an app connection whose client preface and first SETTINGS frame
  // have not both arrived this long after accept is closed, and counted. 0 turns it off.
  // Default 10s.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // server.idle_timeout: an app connection with no stream open for this long is closed with
  // GOAWAY(NO_ERROR) (gRPC clients reconnect on their next call), and counted. 0 turns it off.
  // Default 10m.
  absl::Duration idle_timeout = absl::Minutes(10);
  // server.connection_buffer_limit: response bytes qpoold holds for one app connection (all its
  // streams together) that the app has not read yet. An upstream chunk that takes a connection
  // over it resets the connection's stream holding the most, on both sides, and is counted
  // (qpool_downstream_stream_resets_total{reason="buffer_limit"}); the per-stream bound is
  // server.stream_window. 0 turns it off. Default 32MiB.
  uint32_t connection_buffer_limit = 32u << 20;
  // server.stream_idle_timeout: a stream that waits on the app (its request is not complete and
  // the app may send, or qpoold holds response bytes for it) and sees no progress from the app
  // (no request bytes in, no response bytes out) for this long is reset on both sides, freeing
  // its upstream stream and its buffers, and counted ({reason="stream_idle"}). Time qpoold or
  // Qdrant spends on the call does not count. 0 turns it off. Default 30s.
  absl::Duration stream_idle_timeout = absl::Seconds(30);
  // server.max_message_size: the largest request message (gRPC length prefix) qpoold passes on.
  // A request declaring more is answered RESOURCE_EXHAUSTED (reset, if the response has started)
  // as soon as its 5-byte prefix arrives, without its body going upstream, and counted
  // ({reason="message_size"}). 0 (the default): no limit, like Qdrant's own clients.
  uint32_t max_message_size = 0;
};

// TLS settings for connections to a node (YAML `upstream.tls`, docs/configuration.md). The
// top-level values apply to every node; `upstream.tls.nodes` overrides some of them per node.
struct TlsOptions {
  // enabled: connect to the node over TLS (ALPN h2). Default false (cleartext HTTP/2).
  bool enabled = false;
  // ca_file: PEM bundle of the CAs that may sign the node's certificate. Default "" (the system
  // store, Debian's /etc/ssl/certs).
  std::string ca_file;
  // server_name: the name sent as SNI and checked against the certificate. Default "" (the node's
  // host; an IP address is checked against the certificate's IP entries and sends no SNI).
  std::string server_name;
  // verify: check the node's certificate chain and name. false connects to anything that speaks
  // TLS: logged as a warning at start and counted (qpool_upstream_tls_unverified_connects_total).
  // Default true.
  bool verify = true;
  // cert_file / key_file: PEM client certificate (chain) and its key, for nodes that require a
  // client certificate (mTLS). Both or neither. Default "" (none).
  std::string cert_file;
  std::string key_file;
};

// A per-node override of TlsOptions: only the keys the node's entry sets.
struct TlsOverride {
  std::optional<bool> enabled;
  std::optional<std::string> ca_file;
  std::optional<std::string> server_name;
  std::optional<bool> verify;
  std::optional<std::string> cert_file;
  std::optional<std::string> key_file;
};

// Sets in `options` every key `o` has.
void ApplyTlsOverride(const TlsOverride& o, TlsOptions& options);

// YAML `upstream.tls`: TlsOptions for every node, plus `nodes`, a map from a node as written in
// upstream.nodes ("qdrant-0.qdrant:6334") to the keys that differ for it.
struct UpstreamTlsConfig {
  TlsOptions defaults;
  std::map<std::string, TlsOverride> nodes;
  // The options in force for `node` ("host:port" as NodeAddress::ToString()).
  TlsOptions For(const std::string& node) const;
};

// YAML section `upstream`: the Qdrant nodes and the pool of connections to each.
struct UpstreamConfig {
  // upstream.nodes: Qdrant gRPC endpoints, "host:port". At least one is required (no default).
  std::vector<NodeAddress> nodes;
  // upstream.min_connections: connections per node kept open even when idle. Default 1.
  uint32_t min_connections = 1;
  // upstream.max_connections: hard bound on connections per node, whatever the load. Default 4.
  uint32_t max_connections = 4;
  // upstream.max_streams_per_connection: calls in flight on one connection; the peer's
  // SETTINGS_MAX_CONCURRENT_STREAMS lowers it further. Default 100.
  uint32_t max_streams_per_connection = 100;
  // upstream.max_pending: calls that may wait for a free stream at once (per qpoold); one more is
  // answered RESOURCE_EXHAUSTED. Default 1024.
  uint32_t max_pending = 1024;
  // upstream.acquire_timeout: longest wait for a free stream before UNAVAILABLE. Default 1s.
  absl::Duration acquire_timeout = absl::Seconds(1);
  // upstream.max_connection_share: fair sharing between app connections (docs/security.md). One
  // app connection holds at most this share of a node's stream slots (this worker's
  // max_connections x max_streams_per_connection) and of max_pending; past it its calls wait
  // (for slots) or are answered RESOURCE_EXHAUSTED (for the queue), whatever the others do. The
  // queue serves app connections in turn either way. 1 turns the shares off. Default 0.5.
  double max_connection_share = 0.5;
  // upstream.connect_timeout: TCP connect plus HTTP/2 SETTINGS exchange. Default 2s.
  absl::Duration connect_timeout = absl::Seconds(2);
  // upstream.connect_backoff_base / connect_backoff_max: after a failed connect, the next attempt
  // waits a random time in [0, min(max, base * 2^failures)] (full jitter). Defaults 100ms / 1s:
  // a node back from a restart is reconnected within a second, at the cost of one connect per
  // second per pool while it is down.
  absl::Duration connect_backoff_base = absl::Milliseconds(100);
  absl::Duration connect_backoff_max = absl::Seconds(1);
  // upstream.max_connection_age: a connection older than this, +-10% jitter per connection, is
  // recycled: drained (its in-flight calls finish) and replaced when needed. 0 turns it off.
  // Default 30m.
  absl::Duration max_connection_age = absl::Minutes(30);
  // upstream.max_requests_per_connection: a connection that has carried this many calls is
  // recycled the same way. 0 means unlimited. Default 0.
  uint32_t max_requests_per_connection = 0;
  // upstream.idle_timeout: a connection with no call in flight for this long is closed (drained)
  // while the node has more than min_connections. 0 turns it off. Default 5m.
  absl::Duration idle_timeout = absl::Minutes(5);
  // upstream.tls: see UpstreamTlsConfig. Default off.
  UpstreamTlsConfig tls;
  // upstream.api_key_file / upstream.api_key_env: where qpoold finds the Qdrant API key it sends
  // as `api-key` on the apps' calls and its own probes: a file (re-read when it changes, e.g. a
  // Kubernetes Secret mount; one trailing newline is trimmed) or an environment variable (read
  // at start). At most one of the two. Default "" (no key: apps' own keys pass through).
  std::string api_key_file;
  std::string api_key_env;
  // upstream.api_key_mode: if_absent (an app's own api-key passes through; calls without one get
  // qpoold's) or override (qpoold's key replaces the app's). Default if_absent.
  std::string api_key_mode = "if_absent";
  // upstream.read_only_api_key_file / upstream.read_only_api_key_env: a read-only Qdrant key for
  // calls of the read class (daemon/common/qdrant_methods); everything else gets the full key.
  // Default "" (reads use the full key).
  std::string read_only_api_key_file;
  std::string read_only_api_key_env;
  // upstream.secrets_poll_interval: how often key and certificate files are checked for a change
  // (on a thread of their own; a Secret mount swaps a symlink, so the resolved target, its size
  // and mtime are compared). Default 5s.
  absl::Duration secrets_poll_interval = absl::Seconds(5);
  // upstream.dns_refresh: DNS discovery. Above 0, a node given by name (not an IP literal) is one
  // node per address the name resolves to, re-resolved this often (and about a second after a
  // connect fails), nodes joining and draining as the answer changes (docs/operations.md, "DNS
  // discovery"). 0: off, a name is one node, resolved at each connect. Default 0.
  absl::Duration dns_refresh = absl::ZeroDuration();
  // upstream.rest_nodes: Qdrant REST endpoints, "host:port", one per node of upstream.nodes and in
  // the same order. Default: each gRPC node's host with port 6333.
  std::vector<NodeAddress> rest_nodes;
};

// YAML section `rest`: the HTTP/1.1 front door for Qdrant's REST API (docs/architecture.md,
// "REST"). Upstream REST connections use the pool's other keys (upstream.max_pending,
// acquire_timeout, connect_timeout, connect_backoff_*, max_connection_age,
// max_requests_per_connection) as the gRPC pool does.
struct RestConfig {
  // rest.listen: address REST apps connect to; an empty host ("") turns REST off. Default
  // "127.0.0.1:6333" (Qdrant's REST port).
  NodeAddress listen{"127.0.0.1", 6333};
  // rest.max_connections: hard bound on REST connections per node. An HTTP/1.1 connection carries
  // one request at a time, so this is also the node's REST concurrency. Default 16.
  uint32_t max_connections = 16;
  // rest.min_connections: REST connections per node kept open when idle. Default 0: Qdrant
  // (actix-web) closes an idle keep-alive connection after 5s, so warm idle ones would churn.
  uint32_t min_connections = 0;
  // rest.idle_timeout: an upstream REST connection idle this long is closed by qpoold (while more
  // than rest.min_connections are up). Default 4s: below actix-web's 5s keep-alive, so qpoold
  // closes first and rarely sends a request into a connection the server is closing. 0: never.
  absl::Duration idle_timeout = absl::Seconds(4);
  // rest.request_timeout: the REST deadline: from the request's headers to the first byte of the
  // answer's headers, queueing and retries included; past it qpoold answers 504. A request whose
  // query asks Qdrant for a longer `timeout=N` (seconds) gets N+1s instead. 0: none. Default 60s.
  absl::Duration request_timeout = absl::Seconds(60);
  // rest.header_timeout: an app connection must deliver a request's headers within this long of
  // their first byte, else it is closed (slowloris). Default 10s.
  absl::Duration header_timeout = absl::Seconds(10);
  // rest.keepalive_timeout: an idle app keep-alive connection (no request begun) is closed after
  // this long. Default 60s.
  absl::Duration keepalive_timeout = absl::Seconds(60);
  // rest.max_header_bytes: request line plus headers, bytes; more is answered 431. Default 64KiB.
  uint32_t max_header_bytes = 64 << 10;
  // rest.max_headers: header fields per request; more is answered 431. Default 100.
  uint32_t max_headers = 100;
  // rest.max_body_bytes: request body, bytes (Qdrant's own max_request_size_mb is 32); more is
  // answered 413. Default 32MiB.
  uint32_t max_body_bytes = 32 << 20;
};

// YAML section `retry`: which failed calls qpoold sends again, how often and how soon
// (docs/retries.md). A request Qdrant provably never processed (REFUSED_STREAM, above a GOAWAY's
// last stream id, no connection to the node) is replayed whatever these say, within the replay
// buffer and the caller's deadline.
struct RetryConfig {
  // retry.enabled: policy retries (the request reached Qdrant and failed with a retryable status)
  // for reads and id-scoped writes. Default true.
  bool enabled = true;
  // retry.max_attempts: attempts per call, the first included. Default 3. 1 to 10.
  uint32_t max_attempts = 3;
  // retry.backoff_base / retry.backoff_max: before retry n the call waits a random time in
  // [0, min(backoff_max, backoff_base * 2^(n-1))] (full jitter). Defaults 25ms / 1s.
  absl::Duration backoff_base = absl::Milliseconds(25);
  absl::Duration backoff_max = absl::Seconds(1);
  // retry.on: which failures are retried: unavailable (UNAVAILABLE, or the connection lost before
  // the answer), resource_exhausted (only when Qdrant sent retry-after or grpc-retry-pushback-ms;
  // the retry waits that long), per_try_timeout (reads only, needs retry.per_try_timeout).
  // Default all three.
  std::vector<std::string> on = {"unavailable", "resource_exhausted", "per_try_timeout"};
  // retry.per_try_timeout: a read attempt without an answer after this long is cancelled and
  // retried. Default 0: off (the caller's deadline is the only limit).
  absl::Duration per_try_timeout = absl::ZeroDuration();
  // retry.hedge_delay: a read with no answer after this long gets a second attempt on another
  // node (hedged read); the first answer wins and the other attempt is cancelled. Needs two nodes
  // or more, and counts against the retry budget. Default 0: off.
  absl::Duration hedge_delay = absl::ZeroDuration();
  // retry.unreachable_wait: a call without a deadline of its own (no grpc-timeout, no REST
  // ?timeout=) whose node cannot be reached (nothing sent: no connection and the connect failed)
  // waits for one, like a gRPC wait-for-ready call, up to this long from its start, trying again
  // after jittered backoffs; the waiting calls count against upstream.max_pending. Default 10s:
  // about what a restarting Qdrant process needs, and far below an app's own timeouts. 0: give
  // up after retry.max_attempts tries, as before.
  absl::Duration unreachable_wait = absl::Seconds(10);
  // retry.replay_buffer_per_call / retry.replay_buffer_total: a copy of each request is kept
  // until the first response headers, for a retry; a call whose request would take more than
  // the per-call limit, or push all calls' copies past the total, goes on without one (no retry,
  // counted). Defaults 4MiB / 64MiB. 0 turns replay off.
  uint32_t replay_buffer_per_call = 4 << 20;
  uint32_t replay_buffer_total = 64 << 20;
  // retry.budget_max_tokens / retry.budget_token_ratio: per node, gRPC's retryThrottling: each
  // failed attempt takes a token, each success gives back token_ratio, and retries stop while
  // half the tokens or fewer remain. Defaults 100 / 0.1.
  uint32_t budget_max_tokens = 100;
  double budget_token_ratio = 0.1;
  // retry.min_retries_in_flight / retry.retries_in_flight_percent: retries running at once, per
  // node, at most max(min_retries_in_flight, percent of calls in flight); a retry past it waits
  // for a place within the call's deadline or unreachable_wait. Defaults 3 / 20.
  uint32_t min_retries_in_flight = 3;
  uint32_t retries_in_flight_percent = 20;
  // retry.methods: overrides of the built-in method classes, by gRPC path:
  //   "/qdrant.Points/Delete": never
  // Classes: read, id_scoped_write, filter_scoped_write, never. Default none.
  std::map<std::string, std::string> methods;
};

// YAML section `log`.
struct LogConfig {
  // log.level: trace, debug, info, warn, error, off. Default info.
  std::string level = "info";
  // log.format: text or json (one JSON object per line). Default text.
  std::string format = "text";
  // log.access_log_sample: the fraction of finished calls (gRPC and REST) that get an access log
  // line (method, retry class, status, duration, node, attempts, app address), 0 to 1; written
  // whatever log.level is (docs/operations.md, "Access log"). Default 0: off.
  double access_log_sample = 0;
};

// YAML section `admin`: the admin HTTP endpoint (/metrics, /livez, /readyz, /startupz, /pool).
struct AdminConfig {
  // admin.listen: address of the admin HTTP endpoint, separate from the data port. Default
  // "127.0.0.1:6336": loopback only, next to Qdrant's 6333-6335 and clear of Prometheus
  // (9090/9091/9093) and the OpenTelemetry exporter (9464). A Prometheus in another pod needs
  // "[::]:6336" (dual-stack: IPv4 and IPv6; deploy/kubernetes/example sets it) or "0.0.0.0:6336".
  NodeAddress listen{"127.0.0.1", 6336};
  // admin.readiness_includes_upstream: when true, /readyz also answers 503 while no upstream node
  // is both usable and healthy. Default false: /readyz means "qpoold can serve" (started,
  // listening, not draining), so a Qdrant outage does not take every app pod out of its Service at
  // once (docs/operations.md, "Readiness").
  bool readiness_includes_upstream = false;
};

// YAML section `health`: active probes in three tiers, node health thresholds, and passive
// ejection from live traffic (docs/architecture.md, "Health"). Keys are flat (`fast_interval`,
// not `fast: {interval}`), one row each in the loader's table.
struct HealthConfig {
  // health.enabled: master switch; false turns off every probe tier and passive ejection (calls
  // then go to any node with a connection up, as without health checking). Default true.
  bool enabled = true;
  // health.jitter_percent: each probe interval is spread uniformly by +-this percent, so probes
  // of many sidecars do not align. Default 10. 0 to 50.
  uint32_t jitter_percent = 10;
  // health.unhealthy_threshold: consecutive failed medium/deep probes that mark a node unhealthy
  // (no new calls go there unless every node is out). Default 3. At least 1.
  uint32_t unhealthy_threshold = 3;
  // health.healthy_threshold: consecutive successful probes that bring it back. Default 2.
  uint32_t healthy_threshold = 2;
  // health.fast_enabled / fast_interval / fast_timeout: HTTP/2 PING on every pooled connection
  // that received no frame for fast_interval; a PING not acknowledged within fast_timeout closes
  // the connection (the pool replaces it). Runs on the I/O workers. Defaults true, 10s, 1s.
  bool fast_enabled = true;
  absl::Duration fast_interval = absl::Seconds(10);
  absl::Duration fast_timeout = absl::Seconds(1);
  // health.medium_enabled / medium_interval / medium_timeout: one health call per node on the
  // pool's own connections. Defaults true, 5s, 1s.
  bool medium_enabled = true;
  absl::Duration medium_interval = absl::Seconds(5);
  absl::Duration medium_timeout = absl::Seconds(1);
  // health.medium_method: "qdrant" (/qdrant.Qdrant/HealthCheck: grpc-status OK; its version is
  // exported as qpool_upstream_info) or "grpc" (/grpc.health.v1.Health/Check: SERVING).
  // Default qdrant.
  std::string medium_method = "qdrant";
  // health.deep_enabled / deep_interval / deep_timeout: a read probe per node: List collections,
  // or CollectionExists(deep_collection) == true when deep_collection is set. Defaults true, 30s,
  // 2s.
  bool deep_enabled = true;
  absl::Duration deep_interval = absl::Seconds(30);
  absl::Duration deep_timeout = absl::Seconds(2);
  // health.deep_collection: collection the deep probe asks about; empty lists collections.
  // Default "" (empty).
  std::string deep_collection;
  // health.api_key_env: the environment variable holding the Qdrant API key qpoold's own probes
  // send (metadata `api-key`); the deep read needs it when Qdrant has service.api_key set, the
  // two health methods do not. Default "" (no key). Read at start; an unset variable is logged
  // as a warning. Deprecated: use upstream.api_key_env or upstream.api_key_file, which also cover
  // the apps' calls; when one of those is set, the probes use that key and this one is ignored.
  std::string api_key_env;
  // health.passive_enabled: eject nodes on live-traffic failures. Default true.
  bool passive_enabled = true;
  // health.consecutive_failures: connect failures, upstream resets, lost connections or
  // UNAVAILABLE answers in a row (per I/O worker) that eject a node. Default 5. At least 1.
  uint32_t consecutive_failures = 5;
  // health.base_ejection_time / max_ejection_time: an ejection lasts base x (times ejected), at
  // most max, +-jitter_percent. Defaults 10s and 300s.
  absl::Duration base_ejection_time = absl::Seconds(10);
  absl::Duration max_ejection_time = absl::Seconds(300);
  // health.max_ejection_percent: at most this percent of the nodes are ejected at once (at least
  // one may be). When no node is left healthy and not ejected, calls go to every node (panic
  // mode, counted in qpool_upstream_panic_total). Default 50. 0 to 100.
  uint32_t max_ejection_percent = 50;
};

// YAML section `config`: how qpoold follows its own configuration file.
struct ConfigFileConfig {
  // config.watch_interval: when above 0, qpoold reads the --config file this often and reloads
  // (as on SIGHUP) when its content changed, e.g. after the kubelet updated a mounted ConfigMap.
  // Default 0: off (reload with SIGHUP). Changes live on reload.
  absl::Duration watch_interval = absl::ZeroDuration();
};

struct Config {
  ServerConfig server;
  UpstreamConfig upstream;
  RestConfig rest;
  RetryConfig retry;
  LogConfig log;
  AdminConfig admin;
  HealthConfig health;
  ConfigFileConfig config;
};

}  // namespace qpool::config

#endif  // QPOOL_DAEMON_CONFIG_CONFIG_H_
