#include "daemon/metrics/scrape.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>

#include "daemon/metrics/process_metrics.h"
#include "daemon/metrics/reload_metrics.h"
#include "daemon/metrics/scrape_families.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"
#include "prometheus/text_serializer.h"

namespace qpool::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// What a family's reader sees: the scrape input, and what only /metrics adds.
struct Sources {
  const ScrapeInput& input;
  const std::string* version = nullptr;          // null: no qpool_build_info
  const ConfigReloadMetrics* reloads = nullptr;  // null: no config reload families
};

// The samples of one family. Label values come in the order of the family's label names.
class Samples {
 public:
  Samples(MetricFamily& family, const std::vector<std::string>& names)
      : family_(family), names_(names) {}

  // One counter or gauge sample (the family's type decides which).
  void Add(std::vector<std::string> values, double value) {
    ClientMetric metric;
    metric.label = LabelsOf(std::move(values));
    if (family_.type == MetricType::Counter) {
      metric.counter.value = value;
    } else {
      metric.gauge.value = value;
    }
    family_.metric.push_back(std::move(metric));
  }

  // One histogram series: the sum over `parts` (same bounds), made cumulative. No parts: none.
  void AddHistogram(std::vector<std::string> values,
                    const std::vector<const DurationHistogram*>& parts) {
    if (parts.empty()) return;
    ClientMetric metric;
    metric.label = LabelsOf(std::move(values));
    const BucketBounds& bounds = parts.front()->bounds();
    uint64_t cumulative = 0;
    double sum = 0;
    for (const DurationHistogram* part : parts) sum += part->SumSeconds();
    for (size_t i = 0; i <= bounds.size(); ++i) {
      for (const DurationHistogram* part : parts) cumulative += part->BucketCount(i);
      ClientMetric::Bucket bucket;
      bucket.upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
      bucket.cumulative_count = cumulative;
      metric.histogram.bucket.push_back(bucket);
    }
    metric.histogram.sample_count = cumulative;
    metric.histogram.sample_sum = sum;
    family_.metric.push_back(std::move(metric));
  }

 private:
  // A count that does not match the names is a bug in the table; monitoring_test catches it.
  std::vector<ClientMetric::Label> LabelsOf(std::vector<std::string> values) const {
    std::vector<ClientMetric::Label> labels;
    for (size_t i = 0; i < values.size(); ++i) {
      labels.push_back({i < names_.size() ? names_[i] : std::string(), std::move(values[i])});
    }
    return labels;
  }

  MetricFamily& family_;
  const std::vector<std::string>& names_;
};

using Reader = std::function<void(const Sources&, Samples&)>;

// One family of /metrics, declared once: docs/metrics.md lists each (tests/unit/monitoring_test).
struct FamilyDef {
  const char* name;
  MetricType type;
  const char* help;
  std::vector<std::string> labels;
  Reader read;  // adds the samples
  // Whether the scrape shows the family at all (REST pools while rest.listen is on); null: always.
  bool (*shown)(const Sources&) = nullptr;
};

FamilyDef Def(const char* name, MetricType type, const char* help, std::vector<std::string> labels,
              Reader read, bool (*shown)(const Sources&) = nullptr) {
  return {name, type, help, std::move(labels), std::move(read), shown};
}

constexpr MetricType kCounter = MetricType::Counter;
constexpr MetricType kGauge = MetricType::Gauge;
constexpr MetricType kHistogram = MetricType::Histogram;

bool RestOn(const Sources& s) { return !s.input.rest_node_names.empty(); }

// --- readers: how the value of a family is read ---------------------------------------------

template <typename Fn>
uint64_t SumWorkers(const ScrapeInput& input, Fn fn) {
  uint64_t total = 0;
  for (const WorkerMetrics* worker : input.workers) total += fn(*worker);
  return total;
}

template <typename Fn>
std::vector<const DurationHistogram*> Parts(const ScrapeInput& input, Fn fn) {
  std::vector<const DurationHistogram*> parts;
  for (const WorkerMetrics* worker : input.workers) parts.push_back(&fn(*worker));
  return parts;
}

// One unlabelled sample read from the input.
Reader Value(double (*get)(const ScrapeInput&)) {
  return [get](const Sources& s, Samples& out) { out.Add({}, get(s.input)); };
}

// One unlabelled sample: a downstream counter or gauge.
template <typename T>
Reader Downstream(T DownstreamCounts::*field) {
  return [field](const Sources& s, Samples& out) {
    out.Add({}, static_cast<double>(s.input.downstream.*field));
  };
}

// A downstream family with one sample per (label value, count) the proxy reported.
Reader DownstreamByReason(std::vector<std::pair<std::string, uint64_t>> DownstreamCounts::*field) {
  return [field](const Sources& s, Samples& out) {
    for (const auto& [reason, count] : s.input.downstream.*field) {
      out.Add({reason}, static_cast<double>(count));
    }
  };
}

// A downstream family with one sample per (label value, counter field).
Reader DownstreamByLabel(std::vector<std::pair<const char*, uint64_t DownstreamCounts::*>> parts) {
  return [parts](const Sources& s, Samples& out) {
    for (const auto& [label, field] : parts) {
      out.Add({label}, static_cast<double>(s.input.downstream.*field));
    }
  };
}

// One unlabelled sample: a worker counter, summed over workers.
Reader WorkerTotal(uint64_t (WorkerMetrics::*get)() const) {
  return [get](const Sources& s, Samples& out) {
    out.Add({}, static_cast<double>(
                    SumWorkers(s.input, [get](const WorkerMetrics& w) { return (w.*get)(); })));
  };
}

// A counter array indexed by an enum, labelled by its name table: one sample per value, summed
// over workers.
template <typename Enum>
Reader WorkerByEnum(size_t count, const char* (*name)(Enum),
                    uint64_t (WorkerMetrics::*get)(Enum) const) {
  return [count, name, get](const Sources& s, Samples& out) {
    for (size_t i = 0; i < count; ++i) {
      const auto value = static_cast<Enum>(i);
      out.Add({name(value)}, static_cast<double>(SumWorkers(s.input, [&](const WorkerMetrics& w) {
                return (w.*get)(value);
              })));
    }
  };
}

// Which upstream endpoints a per-node family shows: the gRPC nodes, the REST endpoints
// (rest.listen on), or both (each REST endpoint is a `node` of its own).
enum class Scope : uint8_t { kNodes, kRestNodes, kEndpoints };

struct Endpoint {
  const std::string* name;  // the `node` label
  size_t slot;              // its node slot in WorkerMetrics
  bool rest;
};

std::vector<Endpoint> EndpointsOf(const ScrapeInput& input, Scope scope) {
  std::vector<Endpoint> out;
  if (scope != Scope::kRestNodes) {
    for (size_t n = 0; n < input.node_names.size(); ++n) {
      out.push_back({&input.node_names[n], input.slot(n), false});
    }
  }
  if (scope != Scope::kNodes) {
    for (size_t n = 0; n < input.rest_node_names.size(); ++n) {
      out.push_back({&input.rest_node_names[n], input.rest_slot(n), true});
    }
  }
  return out;
}

const NodeMetrics& CountersOf(const WorkerMetrics& w, const Endpoint& e) {
  return e.rest ? w.rest_node(e.slot) : w.node(e.slot);
}

// The workers' counters for `e`, summed. A worker without counters for its slot (a slot newer than
// the worker's metrics) adds nothing.
template <typename Get>
double EndpointSum(const ScrapeInput& input, const Endpoint& e, Get get) {
  decltype(get(std::declval<const NodeMetrics&>())) total{};
  for (const WorkerMetrics* w : input.workers) {
    if (e.slot < w->node_count()) total += get(CountersOf(*w, e));
  }
  return static_cast<double>(total);
}

// One sample per endpoint of `scope`: get(NodeMetrics), summed over workers.
template <typename Get>
Reader PerNode(Scope scope, Get get) {
  return [scope, get](const Sources& s, Samples& out) {
    for (const Endpoint& e : EndpointsOf(s.input, scope)) {
      out.Add({*e.name}, EndpointSum(s.input, e, get));
    }
  };
}

Reader NodeCounter(Scope scope, RelaxedCounter NodeMetrics::*field) {
  return PerNode(scope, [field](const NodeMetrics& m) { return (m.*field).Get(); });
}

// A per-node counter array indexed by an enum (or a slot), labelled {node, reason} by its name
// table.
template <typename Enum, size_t N>
Reader NodeCounterByReason(Scope scope, std::array<RelaxedCounter, N> NodeMetrics::*field,
                           const char* (*name)(Enum)) {
  return [scope, field, name](const Sources& s, Samples& out) {
    for (const Endpoint& e : EndpointsOf(s.input, scope)) {
      for (size_t r = 0; r < N; ++r) {
        out.Add({*e.name, name(static_cast<Enum>(r))},
                EndpointSum(s.input, e, [&](const NodeMetrics& m) { return (m.*field)[r].Get(); }));
      }
    }
  };
}

Reader NodeHistogram(Scope scope, DurationHistogram NodeMetrics::*field) {
  return [scope, field](const Sources& s, Samples& out) {
    for (const Endpoint& e : EndpointsOf(s.input, scope)) {
      std::vector<const DurationHistogram*> parts;
      for (const WorkerMetrics* w : s.input.workers) {
        if (e.slot < w->node_count()) parts.push_back(&(CountersOf(*w, e).*field));
      }
      out.AddHistogram({*e.name}, parts);
    }
  };
}

// Pool gauges for node `n`, summed over the workers that answered.
using WorkerPools = ScrapeInput::WorkerPools;

NodePoolGauges PoolTotals(const WorkerPools& pools, size_t n, uint32_t* answered) {
  NodePoolGauges total;
  total.usable = false;
  *answered = 0;
  for (const auto& worker : pools) {
    if (!worker || n >= worker->size()) continue;
    const NodePoolGauges& g = (*worker)[n];
    (*answered)++;
    total.connecting += g.connecting;
    total.ready += g.ready;
    total.busy += g.busy;
    total.draining += g.draining;
    total.streams_in_flight += g.streams_in_flight;
    total.waiting += g.waiting;
    total.consecutive_connect_failures =
        std::max(total.consecutive_connect_failures, g.consecutive_connect_failures);
    total.usable = total.usable || g.usable;
    total.removed = total.removed || g.removed;
    total.longest_wait_seconds = std::max(total.longest_wait_seconds, g.longest_wait_seconds);
  }
  return total;
}

// Pool gauges of the gRPC pools, or (`rest`) the REST pools, per node; a node no worker answered
// for has no samples. `add` gets the node's name and its totals.
template <typename Add>
void ForEachPool(const ScrapeInput& input, bool rest, Add add) {
  const std::vector<std::string>& names = rest ? input.rest_node_names : input.node_names;
  const WorkerPools& pools = rest ? input.rest_pools : input.pools;
  for (size_t n = 0; n < names.size(); ++n) {
    uint32_t answered = 0;
    const NodePoolGauges g = PoolTotals(pools, n, &answered);
    if (answered > 0) add(names[n], g);
  }
}

// {node, state}: connections by state.
Reader PoolConnections(bool rest) {
  return [rest](const Sources& s, Samples& out) {
    ForEachPool(s.input, rest, [&](const std::string& node, const NodePoolGauges& g) {
      out.Add({node, "connecting"}, g.connecting);
      out.Add({node, "ready"}, g.ready);
      out.Add({node, "busy"}, g.busy);
      out.Add({node, "draining"}, g.draining);
    });
  };
}

// {node}: one pool gauge.
Reader PoolGauge(bool rest, uint32_t NodePoolGauges::*field) {
  return [rest, field](const Sources& s, Samples& out) {
    ForEachPool(s.input, rest, [&](const std::string& node, const NodePoolGauges& g) {
      out.Add({node}, g.*field);
    });
  };
}

// --- readers of one family each ----------------------------------------------------------------

void ReadCalls(const Sources& s, Samples& out) {
  for (size_t c = 0; c < kMethodClassCount; ++c) {
    const auto klass = static_cast<MethodClass>(c);
    for (size_t slot = 0; slot < kCodeSlots; ++slot) {
      const uint64_t value =
          SumWorkers(s.input, [&](const WorkerMetrics& w) { return w.calls(klass, slot); });
      if (value == 0 && slot != 0) continue;  // OK always; other codes once they happen
      out.Add({"grpc", MethodClassName(klass), CodeSlotName(slot)}, static_cast<double>(value));
    }
  }
  for (size_t c = 0; c < kMethodClassCount; ++c) {
    const auto klass = static_cast<MethodClass>(c);
    for (size_t slot = 0; slot < kHttpStatusSlots; ++slot) {
      const uint64_t value =
          SumWorkers(s.input, [&](const WorkerMetrics& w) { return w.rest_calls(klass, slot); });
      if (value == 0) continue;  // REST series appear once they happen
      out.Add({"rest", MethodClassName(klass), HttpStatusSlotName(slot)},
              static_cast<double>(value));
    }
  }
}

void ReadCallDurations(const Sources& s, Samples& out) {
  for (size_t c = 0; c < kMethodClassCount; ++c) {
    const auto klass = static_cast<MethodClass>(c);
    out.AddHistogram({"grpc", MethodClassName(klass)},
                     Parts(s.input, [&](const WorkerMetrics& w) -> const DurationHistogram& {
                       return w.call_duration(klass);
                     }));
  }
  if (!RestOn(s)) return;
  for (size_t c = 0; c < kMethodClassCount; ++c) {
    const auto klass = static_cast<MethodClass>(c);
    out.AddHistogram({"rest", MethodClassName(klass)},
                     Parts(s.input, [&](const WorkerMetrics& w) -> const DurationHistogram& {
                       return w.rest_call_duration(klass);
                     }));
  }
}

void ReadRetries(const Sources& s, Samples& out) {
  for (size_t c = 0; c < kRetryClassCount; ++c) {
    const auto klass = static_cast<retry::RetryClass>(c);
    for (size_t r = 1; r < kRetryReasonCount; ++r) {
      const auto reason = static_cast<retry::RetryReason>(r);
      const uint64_t value =
          SumWorkers(s.input, [&](const WorkerMetrics& w) { return w.retries(klass, reason); });
      const bool policy_class =
          klass == retry::RetryClass::kRead || klass == retry::RetryClass::kIdScopedWrite;
      // Every series a class can have is shown from the start; others once they happen.
      if (value == 0 && !policy_class && reason != retry::RetryReason::kTransparent) continue;
      out.Add({retry::RetryClassName(klass), retry::RetryReasonName(reason)},
              static_cast<double>(value));
    }
  }
}

void ReadNodeUsable(const Sources& s, Samples& out) {
  for (size_t n = 0; n < s.input.node_names.size(); ++n) {
    out.Add({s.input.node_names[n]}, NodeUsable(s.input.workers, s.input.slot(n)) ? 1 : 0);
  }
}

void ReadHealthy(const Sources& s, Samples& out) {
  if (s.input.health == nullptr) return;
  for (size_t n = 0; n < s.input.node_names.size(); ++n) {
    out.Add({s.input.node_names[n]}, s.input.health->healthy(s.input.slot(n)));
  }
}

void ReadHealthChecks(const Sources& s, Samples& out) {
  const HealthMetrics* health = s.input.health;
  for (const Endpoint& e : EndpointsOf(s.input, Scope::kNodes)) {
    for (bool success : {true, false}) {
      const char* result = success ? "success" : "failure";
      out.Add({*e.name, "fast", result}, EndpointSum(s.input, e, [&](const NodeMetrics& m) {
                return success ? m.pings_ok.Get() : m.pings_failed.Get();
              }));
      if (health == nullptr) continue;
      out.Add({*e.name, "medium", result},
              static_cast<double>(health->checks(e.slot, kMediumTier, success)));
      out.Add({*e.name, "deep", result},
              static_cast<double>(health->checks(e.slot, kDeepTier, success)));
    }
  }
}

void ReadHealthCheckDurations(const Sources& s, Samples& out) {
  out.AddHistogram({"fast"}, Parts(s.input, [](const WorkerMetrics& w) -> const DurationHistogram& {
                     return w.ping_duration();
                   }));
  if (s.input.health == nullptr) return;
  out.AddHistogram({"medium"}, {&s.input.health->check_duration(kMediumTier)});
  out.AddHistogram({"deep"}, {&s.input.health->check_duration(kDeepTier)});
}

void ReadUpstreamInfo(const Sources& s, Samples& out) {
  if (s.input.health == nullptr) return;
  for (size_t n = 0; n < s.input.node_names.size(); ++n) {
    const std::string version = s.input.health->version(s.input.slot(n));
    if (!version.empty()) out.Add({s.input.node_names[n], version}, 1);
  }
}

// --- the table ---------------------------------------------------------------------------------

// Every family of /metrics but process_* (CollectProcessMetrics), in the order of the exposition.
const std::vector<FamilyDef>& Table() {
  using D = DownstreamCounts;
  using N = NodeMetrics;
  using G = NodePoolGauges;
  static const std::vector<FamilyDef>* const table = new std::vector<FamilyDef>{
      // --- downstream (apps) ---
      Def("qpool_downstream_connections", kGauge, "App connections open now.", {},
          Downstream(&D::open)),
      Def("qpool_downstream_connections_accepted_total", kCounter,
          "App connections accepted since start.", {}, Downstream(&D::accepted)),
      Def("qpool_downstream_connections_refused_total", kCounter,
          "App connections refused because server.max_client_connections was reached.", {},
          Downstream(&D::refused)),
      Def("qpool_downstream_protocol_errors_total", kCounter,
          "App connections closed for bad input: garbage, HTTP/1.1, a bad preface or broken "
          "HTTP/2.",
          {}, Downstream(&D::protocol_errors)),
      Def("qpool_downstream_abuse_total", kCounter,
          "App connections closed with GOAWAY(ENHANCE_YOUR_CALM), by the budget they overran "
          "(docs/security.md).",
          {"reason"}, DownstreamByReason(&D::abuse)),
      Def("qpool_downstream_header_limit_rejections_total", kCounter,
          "Requests answered RESOURCE_EXHAUSTED because their headers were over "
          "server.max_header_list_size or server.max_headers.",
          {"limit"},
          DownstreamByLabel({{"max_header_list_size", &D::header_list_size_rejections},
                             {"max_headers", &D::header_count_rejections}})),
      Def("qpool_downstream_timeouts_total", kCounter,
          "App connections closed by server.handshake_timeout (no preface and SETTINGS in time) or "
          "server.idle_timeout (no stream for that long).",
          {"reason"},
          DownstreamByLabel({{"handshake", &D::handshake_timeouts}, {"idle", &D::idle_timeouts}})),
      Def("qpool_downstream_stream_resets_total", kCounter,
          "App streams reset on both sides: buffer_limit (the connection held more unread response "
          "bytes than server.connection_buffer_limit), stream_idle (no progress from the app for "
          "server.stream_idle_timeout), message_size (a request message over "
          "server.max_message_size after the response had started).",
          {"reason"}, DownstreamByReason(&D::stream_resets)),
      // --- calls ---
      Def("qpool_calls_started_total", kCounter, "Calls whose request headers arrived.", {},
          Downstream(&D::calls_started)),
      Def("qpool_calls_total", kCounter,
          "Calls finished, by protocol, method class and status: the gRPC status (RESET: ended by "
          "RST_STREAM or a lost connection, with no status) or the HTTP status of a REST call "
          "(none: no answer completed).",
          {"protocol", "class", "code"}, ReadCalls),
      Def("qpool_local_replies_total", kCounter,
          "Calls answered by qpoold itself (pool limits, unreachable node, deadline, upstream "
          "connection lost).",
          {}, Downstream(&D::local_replies)),
      // --- retries and hedges (docs/retries.md) ---
      Def("qpool_transparent_retries_total", kCounter,
          "Requests sent again that Qdrant never processed: refused (REFUSED_STREAM, above a "
          "GOAWAY's last stream id) or not sent (node unreachable).",
          {}, Downstream(&D::transparent_retries)),
      Def("qpool_retries_total", kCounter,
          "Attempts qpoold started again, by retry class and reason (transparent: Qdrant never "
          "processed the request; unavailable, resource_exhausted, per_try_timeout: policy "
          "retries).",
          {"class", "reason"}, ReadRetries),
      Def("qpool_retries_refused_total", kCounter,
          "Retryable failures passed on to the app without a retry, by the limit that said no: "
          "max_attempts, deadline (the caller's grpc-timeout), budget (the node's retry tokens), "
          "in_flight (retries running at once).",
          {"reason"},
          WorkerByEnum(kRetryRefusalCount, RetryRefusalName, &WorkerMetrics::retries_refused)),
      Def("qpool_replay_buffer_refusals_total", kCounter,
          "Calls forwarded without a replay copy (so never retried) because the request passed "
          "retry.replay_buffer_per_call or retry.replay_buffer_total.",
          {"limit"},
          WorkerByEnum(kReplayLimitCount, ReplayLimitName, &WorkerMetrics::replay_refusals)),
      Def("qpool_hedges_total", kCounter,
          "Hedged reads: second attempts started on another node after retry.hedge_delay without "
          "an answer.",
          {}, WorkerTotal(&WorkerMetrics::hedges)),
      Def("qpool_hedges_won_total", kCounter,
          "Hedges that became the call's attempt: their answer came first, or the first attempt "
          "failed meanwhile; the other attempt was cancelled.",
          {}, WorkerTotal(&WorkerMetrics::hedges_won)),
      Def("qpool_replay_buffer_bytes", kGauge,
          "Request bytes held now as replay copies, all calls together.", {},
          Downstream(&D::replay_bytes)),
      Def("qpool_retry_budget_tokens", kGauge,
          "Retry tokens left per node, summed over workers (each worker has a bucket of "
          "retry.budget_max_tokens); retries stop while a bucket is at half or less.",
          {"node"},
          PerNode(Scope::kNodes,
                  [](const N& m) { return m.retry_tokens.load(std::memory_order_relaxed); })),
      // --- calls: durations and bytes ---
      Def("qpool_call_duration_seconds", kHistogram,
          "Call duration in qpoold, request headers to the end of the answer, by protocol and "
          "method class.",
          {"protocol", "class"}, ReadCallDurations),
      Def("qpool_request_bytes_total", kCounter,
          "gRPC message bytes (HTTP/2 DATA payload) received from apps.", {},
          WorkerTotal(&WorkerMetrics::request_bytes)),
      Def("qpool_response_bytes_total", kCounter,
          "gRPC message bytes (HTTP/2 DATA payload) received from upstream for apps.", {},
          WorkerTotal(&WorkerMetrics::response_bytes)),
      Def("qpool_buffered_bytes", kGauge, "gRPC message bytes held in calls now, both directions.",
          {}, Downstream(&D::buffered_bytes)),
      // --- upstream pools, per node (the REST pools' gauges first, as before the table) ---
      Def("qpool_rest_upstream_connections", kGauge,
          "Upstream REST connections now, by node (its REST endpoint) and state (connecting, "
          "ready, busy, draining); busy ones carry a request.",
          {"node", "state"}, PoolConnections(/*rest=*/true), RestOn),
      Def("qpool_rest_calls_waiting", kGauge,
          "REST requests waiting for a free upstream connection now, by node.", {"node"},
          PoolGauge(/*rest=*/true, &G::waiting), RestOn),
      Def("qpool_upstream_connections", kGauge,
          "Upstream connections now, by node and state (connecting, ready, busy, draining).",
          {"node", "state"}, PoolConnections(/*rest=*/false)),
      Def("qpool_upstream_streams_in_flight", kGauge,
          "Upstream streams reserved or open now, by node.", {"node"},
          PoolGauge(/*rest=*/false, &G::streams_in_flight)),
      Def("qpool_calls_waiting", kGauge, "Calls waiting for a free upstream stream now, by node.",
          {"node"}, PoolGauge(/*rest=*/false, &G::waiting)),
      Def("qpool_upstream_node_usable", kGauge,
          "1 when some worker has a connection to the node up, or none has seen a connect fail "
          "since its last success; else 0.",
          {"node"}, ReadNodeUsable),
      // Connections, connect failures, TLS and disconnects: every upstream endpoint, the gRPC
      // nodes and (rest.listen on) each node's REST endpoint, which is a `node` of its own.
      Def("qpool_upstream_connects_total", kCounter,
          "Upstream connections that finished their handshake (HTTP/2 SETTINGS; for a REST "
          "endpoint the TCP or TLS handshake), by node.",
          {"node"}, NodeCounter(Scope::kEndpoints, &N::connects)),
      Def("qpool_upstream_connect_failures_total", kCounter,
          "Upstream connects that failed or timed out, by node and reason: a TLS reason (as "
          "qpool_upstream_tls_failures_total), connect (name or TCP), timeout "
          "(upstream.connect_timeout), other.",
          {"node", "reason"},
          NodeCounterByReason(Scope::kEndpoints, &N::connect_failures,
                              tls::ConnectFailureSlotName)),
      Def("qpool_upstream_tls_failures_total", kCounter,
          "Upstream TLS handshakes that failed, by node and reason (expired, unknown_ca, "
          "name_mismatch, verify, client_cert, alpn, handshake); each is also in "
          "qpool_upstream_connect_failures_total.",
          {"node", "reason"},
          NodeCounterByReason(Scope::kEndpoints, &N::tls_failures, tls::FailureReasonName)),
      Def("qpool_upstream_tls_handshakes_total", kCounter,
          "Upstream TLS handshakes completed, by node (resumed ones included).", {"node"},
          NodeCounter(Scope::kEndpoints, &N::tls_handshakes)),
      Def("qpool_upstream_tls_resumptions_total", kCounter,
          "Upstream TLS handshakes that resumed an earlier session, by node.", {"node"},
          NodeCounter(Scope::kEndpoints, &N::tls_resumptions)),
      Def("qpool_upstream_tls_unverified_connects_total", kCounter,
          "Upstream TLS connections made without checking the node's certificate "
          "(upstream.tls.verify: false), by node.",
          {"node"}, NodeCounter(Scope::kEndpoints, &N::tls_unverified_connects)),
      Def("qpool_upstream_disconnects_total", kCounter,
          "Upstream connections gone after they were up, by node and reason (goaway: drained after "
          "the node's GOAWAY; error: lost or broken; shutdown: qpoold stopping; recycled: "
          "max_connection_age, max_requests_per_connection or new TLS material; idle: "
          "idle_timeout).",
          {"node", "reason"},
          NodeCounterByReason(Scope::kEndpoints, &N::disconnects, pool::CloseReasonName)),
      Def("qpool_upstream_connect_duration_seconds", kHistogram,
          "Time from connect start to the node's HTTP/2 SETTINGS, by node.", {"node"},
          NodeHistogram(Scope::kNodes, &N::connect_duration)),
      Def("qpool_pool_wait_duration_seconds", kHistogram,
          "Time calls waited for a free upstream stream (0 when one was free), by node.", {"node"},
          NodeHistogram(Scope::kNodes, &N::wait_duration)),
      Def("qpool_pool_queue_overflows_total", kCounter,
          "Calls refused with RESOURCE_EXHAUSTED because upstream.max_pending calls already "
          "waited, by node.",
          {"node"}, NodeCounter(Scope::kNodes, &N::queue_overflows)),
      Def("qpool_pool_acquire_timeouts_total", kCounter,
          "Calls that waited upstream.acquire_timeout for a stream and got UNAVAILABLE, by node.",
          {"node"}, NodeCounter(Scope::kNodes, &N::acquire_timeouts)),
      Def("qpool_upstream_attempt_duration_seconds", kHistogram,
          "Upstream stream lifetime, opened to closed, by node.", {"node"},
          NodeHistogram(Scope::kNodes, &N::attempt_duration)),
      // REST pools (rest.listen on): waits, queue overflows and acquire timeouts, by REST node.
      Def("qpool_rest_pool_queue_overflows_total", kCounter,
          "REST requests answered 429 because upstream.max_pending requests and calls already "
          "waited, by node.",
          {"node"}, NodeCounter(Scope::kRestNodes, &N::queue_overflows), RestOn),
      Def("qpool_rest_pool_acquire_timeouts_total", kCounter,
          "REST requests that waited upstream.acquire_timeout for a connection, by node.", {"node"},
          NodeCounter(Scope::kRestNodes, &N::acquire_timeouts), RestOn),
      Def("qpool_rest_pool_wait_duration_seconds", kHistogram,
          "Time REST requests waited for a free upstream connection (0 when one was free), by "
          "node.",
          {"node"}, NodeHistogram(Scope::kRestNodes, &N::wait_duration), RestOn),
      // --- health (docs/architecture.md, "Health") ---
      Def("qpool_upstream_healthy", kGauge,
          "1 while the node passes its active health checks (medium and deep tiers, "
          "health.unhealthy_threshold / healthy_threshold); 0 after it failed them.",
          {"node"}, ReadHealthy),
      Def("qpool_health_checks_total", kCounter,
          "Health checks finished, by node, tier (fast: HTTP/2 PING on an idle connection; medium: "
          "health call; deep: read probe) and result (success, failure; a timeout is a failure).",
          {"node", "tier", "result"}, ReadHealthChecks),
      Def("qpool_health_check_duration_seconds", kHistogram,
          "Time of one health check, by tier: PING to its ack (fast), or stream acquire to the "
          "answer (medium, deep); timeouts count their timeout.",
          {"tier"}, ReadHealthCheckDurations),
      Def("qpool_upstream_ejections_total", kCounter,
          "Times a node was ejected by passive health checking (health.consecutive_failures "
          "failures in a row on one I/O worker), by node.",
          {"node"}, NodeCounter(Scope::kNodes, &N::ejections)),
      Def("qpool_upstream_panic_total", kCounter,
          "Calls routed in panic mode: no node was both healthy and not ejected, so every node was "
          "eligible.",
          {}, WorkerTotal(&WorkerMetrics::panic_routes)),
      Def("qpool_upstream_info", kGauge,
          "The version each node reported in its last qdrant.Qdrant/HealthCheck answer; the value "
          "is always 1.",
          {"node", "version"}, ReadUpstreamInfo),
      // --- process state ---
      Def("qpool_ready", kGauge, "1 when /readyz answers 200.", {},
          Value([](const ScrapeInput& in) { return in.ready ? 1.0 : 0.0; })),
      Def("qpool_draining", kGauge, "1 after SIGTERM/SIGINT, while calls drain.", {},
          Value([](const ScrapeInput& in) { return in.draining ? 1.0 : 0.0; })),
      Def("qpool_scrape_workers_unanswered", kGauge,
          "I/O workers that did not report pool gauges within the scrape's wait.", {},
          Value([](const ScrapeInput& in) {
            return static_cast<double>(std::count(in.pools.begin(), in.pools.end(), std::nullopt));
          })),
      // --- only in /metrics (RenderScrapeText) ---
      Def(
          "qpool_build_info", kGauge, "qpoold's version; the value is always 1.", {"version"},
          [](const Sources& s, Samples& out) { out.Add({*s.version}, 1); },
          [](const Sources& s) { return s.version != nullptr; }),
      // Config reloads (reload_metrics.h).
      Def(
          "qpool_config_reloads_total", kCounter,
          "Config reloads (SIGHUP) by result: success (the new config is in force) or failure (the "
          "old config kept: unreadable, invalid, or a key that needs a restart changed).",
          {"result"},
          [](const Sources& s, Samples& out) {
            out.Add({"failure"}, static_cast<double>(s.reloads->failures()));
            out.Add({"success"}, static_cast<double>(s.reloads->successes()));
          },
          [](const Sources& s) { return s.reloads != nullptr; }),
      Def(
          "qpool_config_last_reload_success_timestamp_seconds", kGauge,
          "Unix time of the last successful config load: start-up, or a reload.", {},
          [](const Sources& s, Samples& out) { out.Add({}, s.reloads->last_success_seconds()); },
          [](const Sources& s) { return s.reloads != nullptr; }),
  };
  return *table;
}

std::vector<MetricFamily> Build(const Sources& sources) {
  std::vector<MetricFamily> out;
  for (const FamilyDef& def : Table()) {
    if (def.shown != nullptr && !def.shown(sources)) continue;
    MetricFamily family;
    family.name = def.name;
    family.help = def.help;
    family.type = def.type;
    Samples samples(family, def.labels);
    def.read(sources, samples);
    out.push_back(std::move(family));
  }
  return out;
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void GaugesJson(std::ostringstream& out, const NodePoolGauges& g) {
  out << "\"connections\":{\"connecting\":" << g.connecting << ",\"ready\":" << g.ready
      << ",\"busy\":" << g.busy << ",\"draining\":" << g.draining
      << "},\"streams_in_flight\":" << g.streams_in_flight << ",\"calls_waiting\":" << g.waiting
      << ",\"consecutive_connect_failures\":" << g.consecutive_connect_failures
      << ",\"usable\":" << (g.usable ? "true" : "false")
      << ",\"longest_wait_seconds\":" << g.longest_wait_seconds;
  // A node that left the node set (reload, DNS) and drains; absent for nodes in the set.
  if (g.removed) out << ",\"removed\":true";
  if (!g.connections.empty()) {
    out << ",\"connection_list\":[";
    for (size_t i = 0; i < g.connections.size(); ++i) {
      const NodePoolGauges::Connection& c = g.connections[i];
      out << (i > 0 ? "," : "") << "{\"state\":\"" << c.state << "\",\"streams\":" << c.streams
          << ",\"stream_cap\":" << c.stream_cap << "}";
    }
    out << "]";
  }
}

// One "nodes" array of /pool: per node, totals and per worker.
void NodesJson(std::ostringstream& out, const std::vector<std::string>& names,
               const WorkerPools& pools) {
  out << "[";
  for (size_t n = 0; n < names.size(); ++n) {
    if (n > 0) out << ",";
    uint32_t answered = 0;
    const NodePoolGauges total = PoolTotals(pools, n, &answered);
    out << "{\"node\":" << JsonString(names[n]) << ",";
    GaugesJson(out, total);
    out << ",\"workers\":[";
    for (size_t w = 0; w < pools.size(); ++w) {
      if (w > 0) out << ",";
      out << "{\"worker\":" << w;
      if (pools[w] && n < pools[w]->size()) {
        out << ",";
        GaugesJson(out, (*pools[w])[n]);
      } else {
        out << ",\"answered\":false";
      }
      out << "}";
    }
    out << "]}";
  }
  out << "]";
}

}  // namespace

std::vector<DeclaredFamily> DeclaredFamilies() {
  std::vector<DeclaredFamily> out;
  for (const FamilyDef& def : Table()) out.push_back({def.name, def.type, def.help, def.labels});
  return out;
}

std::vector<MetricFamily> BuildFamilies(const ScrapeInput& input) { return Build({input}); }

std::string PoolJson(const ScrapeInput& input) {
  std::ostringstream out;
  out << "{\"ready\":" << (input.ready ? "true" : "false")
      << ",\"draining\":" << (input.draining ? "true" : "false") << ",\"nodes\":";
  NodesJson(out, input.node_names, input.pools);
  // REST pools (rest.listen): the same shape, by REST endpoint; [] when REST is off.
  out << ",\"rest_nodes\":";
  NodesJson(out, input.rest_node_names, input.rest_pools);
  out << "}\n";
  return out.str();
}

std::string RenderScrapeText(const ScrapeInput& input, const std::string& version,
                             const ConfigReloadMetrics* reloads) {
  std::vector<MetricFamily> families = Build({input, &version, reloads});
  for (auto& family : CollectProcessMetrics()) families.push_back(std::move(family));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace qpool::metrics
