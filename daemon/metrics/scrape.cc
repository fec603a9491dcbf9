#include "daemon/metrics/scrape.h"

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
using Labels = std::vector<ClientMetric::Label>;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddCounter(MetricFamily& family, Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
}

void AddGauge(MetricFamily& family, Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

// Adds one histogram series: the sum over `parts` (same bounds), made cumulative.
void AddHistogram(MetricFamily& family, Labels labels,
                  const std::vector<const DurationHistogram*>& parts) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (parts.empty()) return;
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
  family.metric.push_back(std::move(metric));
}

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

// Pool gauges for node `n`, summed over the workers that answered.
using WorkerPools = std::vector<std::optional<std::vector<NodePoolGauges>>>;

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

NodePoolGauges NodeTotals(const ScrapeInput& input, size_t n, uint32_t* answered) {
  return PoolTotals(input.pools, n, answered);
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

}  // namespace

std::vector<MetricFamily> BuildFamilies(const ScrapeInput& input) {
  std::vector<MetricFamily> out;
  const size_t nodes = input.node_names.size();
  auto node_label = [&](size_t n) { return Labels{{"node", input.node_names[n]}}; };

  // --- downstream (apps) ---
  {
    auto f = Family("qpool_downstream_connections", "App connections open now.", MetricType::Gauge);
    AddGauge(f, {}, static_cast<double>(input.downstream.open));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_connections_accepted_total",
                    "App connections accepted since start.", MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.accepted));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_connections_refused_total",
                    "App connections refused because server.max_client_connections was reached.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.refused));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_protocol_errors_total",
                    "App connections closed for bad input: garbage, HTTP/1.1, a bad preface or "
                    "broken HTTP/2.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.protocol_errors));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_abuse_total",
                    "App connections closed with GOAWAY(ENHANCE_YOUR_CALM), by the budget they "
                    "overran (docs/security.md).",
                    MetricType::Counter);
    for (const auto& [reason, count] : input.downstream.abuse) {
      AddCounter(f, {{"reason", reason}}, static_cast<double>(count));
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_header_limit_rejections_total",
                    "Requests answered RESOURCE_EXHAUSTED because their headers were over "
                    "server.max_header_list_size or server.max_headers.",
                    MetricType::Counter);
    AddCounter(f, {{"limit", "max_header_list_size"}},
               static_cast<double>(input.downstream.header_list_size_rejections));
    AddCounter(f, {{"limit", "max_headers"}},
               static_cast<double>(input.downstream.header_count_rejections));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_downstream_timeouts_total",
                    "App connections closed by server.handshake_timeout (no preface and SETTINGS "
                    "in time) or server.idle_timeout (no stream for that long).",
                    MetricType::Counter);
    AddCounter(f, {{"reason", "handshake"}},
               static_cast<double>(input.downstream.handshake_timeouts));
    AddCounter(f, {{"reason", "idle"}}, static_cast<double>(input.downstream.idle_timeouts));
    out.push_back(std::move(f));
  }
  {
    auto f =
        Family("qpool_downstream_stream_resets_total",
               "App streams reset on both sides: buffer_limit (the connection held more "
               "unread response bytes than server.connection_buffer_limit), stream_idle (no "
               "progress from the app for server.stream_idle_timeout), message_size (a request "
               "message over server.max_message_size after the response had started).",
               MetricType::Counter);
    for (const auto& [reason, count] : input.downstream.stream_resets) {
      AddCounter(f, {{"reason", reason}}, static_cast<double>(count));
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_calls_started_total", "Calls whose request headers arrived.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.calls_started));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_calls_total",
                    "Calls finished, by protocol, method class and status: the gRPC status "
                    "(RESET: ended by RST_STREAM or a lost connection, with no status) or the HTTP "
                    "status of a REST call (none: no answer completed).",
                    MetricType::Counter);
    for (size_t c = 0; c < kMethodClassCount; ++c) {
      const auto klass = static_cast<MethodClass>(c);
      for (size_t slot = 0; slot < kCodeSlots; ++slot) {
        const uint64_t value =
            SumWorkers(input, [&](const WorkerMetrics& w) { return w.calls(klass, slot); });
        if (value == 0 && slot != 0) continue;  // OK always; other codes once they happen
        AddCounter(
            f,
            {{"protocol", "grpc"}, {"class", MethodClassName(klass)}, {"code", CodeSlotName(slot)}},
            static_cast<double>(value));
      }
    }
    for (size_t c = 0; c < kMethodClassCount; ++c) {
      const auto klass = static_cast<MethodClass>(c);
      for (size_t slot = 0; slot < kHttpStatusSlots; ++slot) {
        const uint64_t value =
            SumWorkers(input, [&](const WorkerMetrics& w) { return w.rest_calls(klass, slot); });
        if (value == 0) continue;  // REST series appear once they happen
        AddCounter(f,
                   {{"protocol", "rest"},
                    {"class", MethodClassName(klass)},
                    {"code", HttpStatusSlotName(slot)}},
                   static_cast<double>(value));
      }
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_local_replies_total",
                    "Calls answered by qpoold itself (pool limits, unreachable node, deadline, "
                    "upstream connection lost).",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.local_replies));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_transparent_retries_total",
                    "Requests sent again that Qdrant never processed: refused (REFUSED_STREAM, "
                    "above a GOAWAY's last stream id) or not sent (node unreachable).",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(input.downstream.transparent_retries));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_retries_total",
                    "Attempts qpoold started again, by retry class and reason (transparent: Qdrant "
                    "never processed the request; unavailable, resource_exhausted, "
                    "per_try_timeout: policy retries).",
                    MetricType::Counter);
    for (size_t c = 0; c < kRetryClassCount; ++c) {
      const auto klass = static_cast<retry::RetryClass>(c);
      for (size_t r = 1; r < kRetryReasonCount; ++r) {
        const auto reason = static_cast<retry::RetryReason>(r);
        const uint64_t value =
            SumWorkers(input, [&](const WorkerMetrics& w) { return w.retries(klass, reason); });
        const bool policy_class =
            klass == retry::RetryClass::kRead || klass == retry::RetryClass::kIdScopedWrite;
        // Every series a class can have is shown from the start; others once they happen.
        if (value == 0 && !policy_class && reason != retry::RetryReason::kTransparent) continue;
        AddCounter(
            f,
            {{"class", retry::RetryClassName(klass)}, {"reason", retry::RetryReasonName(reason)}},
            static_cast<double>(value));
      }
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_retries_refused_total",
                    "Retryable failures passed on to the app without a retry, by the limit that "
                    "said no: max_attempts, deadline (the caller's grpc-timeout), budget (the "
                    "node's retry tokens), in_flight (retries running at once).",
                    MetricType::Counter);
    for (size_t r = 0; r < kRetryRefusalCount; ++r) {
      const auto refusal = static_cast<RetryRefusal>(r);
      AddCounter(f, {{"reason", RetryRefusalName(refusal)}},
                 static_cast<double>(SumWorkers(
                     input, [&](const WorkerMetrics& w) { return w.retries_refused(refusal); })));
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_replay_buffer_refusals_total",
                    "Calls forwarded without a replay copy (so never retried) because the request "
                    "passed retry.replay_buffer_per_call or retry.replay_buffer_total.",
                    MetricType::Counter);
    for (size_t l = 0; l < kReplayLimitCount; ++l) {
      const auto limit = static_cast<ReplayLimit>(l);
      AddCounter(f, {{"limit", ReplayLimitName(limit)}},
                 static_cast<double>(SumWorkers(
                     input, [&](const WorkerMetrics& w) { return w.replay_refusals(limit); })));
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_hedges_total",
                    "Hedged reads: second attempts started on another node after "
                    "retry.hedge_delay without an answer.",
                    MetricType::Counter);
    AddCounter(
        f, {},
        static_cast<double>(SumWorkers(input, [](const WorkerMetrics& w) { return w.hedges(); })));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_hedges_won_total",
                    "Hedges that became the call's attempt: their answer came first, or the first "
                    "attempt failed meanwhile; the other attempt was cancelled.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(SumWorkers(input, [](const WorkerMetrics& w) {
                 return w.hedges_won();
               })));
    out.push_back(std::move(f));
  }
  {
    auto f =
        Family("qpool_replay_buffer_bytes",
               "Request bytes held now as replay copies, all calls together.", MetricType::Gauge);
    AddGauge(f, {}, static_cast<double>(input.downstream.replay_bytes));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_retry_budget_tokens",
                    "Retry tokens left per node, summed over workers (each worker has a bucket of "
                    "retry.budget_max_tokens); retries stop while a bucket is at half or less.",
                    MetricType::Gauge);
    for (size_t n = 0; n < nodes; ++n) {
      double tokens = 0;
      for (const WorkerMetrics* w : input.workers) {
        tokens += w->node(input.slot(n)).retry_tokens.load(std::memory_order_relaxed);
      }
      AddGauge(f, node_label(n), tokens);
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_call_duration_seconds",
                    "Call duration in qpoold, request headers to the end of the answer, by "
                    "protocol and method class.",
                    MetricType::Histogram);
    for (size_t c = 0; c < kMethodClassCount; ++c) {
      const auto klass = static_cast<MethodClass>(c);
      AddHistogram(f, {{"protocol", "grpc"}, {"class", MethodClassName(klass)}},
                   Parts(input, [&](const WorkerMetrics& w) -> const DurationHistogram& {
                     return w.call_duration(klass);
                   }));
    }
    if (!input.rest_node_names.empty()) {
      for (size_t c = 0; c < kMethodClassCount; ++c) {
        const auto klass = static_cast<MethodClass>(c);
        AddHistogram(f, {{"protocol", "rest"}, {"class", MethodClassName(klass)}},
                     Parts(input, [&](const WorkerMetrics& w) -> const DurationHistogram& {
                       return w.rest_call_duration(klass);
                     }));
      }
    }
    out.push_back(std::move(f));
  }
  {
    auto f =
        Family("qpool_request_bytes_total",
               "gRPC message bytes (HTTP/2 DATA payload) received from apps.", MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(SumWorkers(input, [](const WorkerMetrics& w) {
                 return w.request_bytes();
               })));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_response_bytes_total",
                    "gRPC message bytes (HTTP/2 DATA payload) received from upstream for apps.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(SumWorkers(input, [](const WorkerMetrics& w) {
                 return w.response_bytes();
               })));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_buffered_bytes",
                    "gRPC message bytes held in calls now, both directions.", MetricType::Gauge);
    AddGauge(f, {}, static_cast<double>(input.downstream.buffered_bytes));
    out.push_back(std::move(f));
  }

  // --- upstream pool, per node ---
  auto node_counter = [&](const char* name, const char* help, auto get) {
    auto f = Family(name, help, MetricType::Counter);
    for (size_t n = 0; n < nodes; ++n) {
      AddCounter(f, node_label(n),
                 static_cast<double>(SumWorkers(
                     input, [&](const WorkerMetrics& w) { return get(w.node(input.slot(n))); })));
    }
    out.push_back(std::move(f));
  };
  auto node_histogram = [&](const char* name, const char* help, auto get) {
    auto f = Family(name, help, MetricType::Histogram);
    for (size_t n = 0; n < nodes; ++n) {
      AddHistogram(f, node_label(n),
                   Parts(input, [&](const WorkerMetrics& w) -> const DurationHistogram& {
                     return get(w.node(input.slot(n)));
                   }));
    }
    out.push_back(std::move(f));
  };
  {
    auto f = Family("qpool_upstream_connections",
                    "Upstream connections now, by node and state (connecting, ready, busy, "
                    "draining).",
                    MetricType::Gauge);
    auto streams = Family("qpool_upstream_streams_in_flight",
                          "Upstream streams reserved or open now, by node.", MetricType::Gauge);
    auto waiting =
        Family("qpool_calls_waiting", "Calls waiting for a free upstream stream now, by node.",
               MetricType::Gauge);
    auto usable = Family("qpool_upstream_node_usable",
                         "1 when some worker has a connection to the node up, or none has seen a "
                         "connect fail since its last success; else 0.",
                         MetricType::Gauge);
    for (size_t n = 0; n < nodes; ++n) {
      uint32_t answered = 0;
      const NodePoolGauges g = NodeTotals(input, n, &answered);
      if (answered == 0) continue;
      const std::string& node = input.node_names[n];
      AddGauge(f, {{"node", node}, {"state", "connecting"}}, g.connecting);
      AddGauge(f, {{"node", node}, {"state", "ready"}}, g.ready);
      AddGauge(f, {{"node", node}, {"state", "busy"}}, g.busy);
      AddGauge(f, {{"node", node}, {"state", "draining"}}, g.draining);
      AddGauge(streams, node_label(n), g.streams_in_flight);
      AddGauge(waiting, node_label(n), g.waiting);
    }
    for (size_t n = 0; n < nodes; ++n) {
      AddGauge(usable, node_label(n), NodeUsable(input.workers, input.slot(n)) ? 1 : 0);
    }
    if (!input.rest_node_names.empty()) {
      auto rest = Family("qpool_rest_upstream_connections",
                         "Upstream REST connections now, by node (its REST endpoint) and state "
                         "(connecting, ready, busy, draining); busy ones carry a request.",
                         MetricType::Gauge);
      auto rest_waiting = Family("qpool_rest_calls_waiting",
                                 "REST requests waiting for a free upstream connection now, by "
                                 "node.",
                                 MetricType::Gauge);
      for (size_t n = 0; n < input.rest_node_names.size(); ++n) {
        uint32_t answered = 0;
        const NodePoolGauges g = PoolTotals(input.rest_pools, n, &answered);
        if (answered == 0) continue;
        const std::string& node = input.rest_node_names[n];
        AddGauge(rest, {{"node", node}, {"state", "connecting"}}, g.connecting);
        AddGauge(rest, {{"node", node}, {"state", "ready"}}, g.ready);
        AddGauge(rest, {{"node", node}, {"state", "busy"}}, g.busy);
        AddGauge(rest, {{"node", node}, {"state", "draining"}}, g.draining);
        AddGauge(rest_waiting, {{"node", node}}, g.waiting);
      }
      out.push_back(std::move(rest));
      out.push_back(std::move(rest_waiting));
    }
    out.push_back(std::move(f));
    out.push_back(std::move(streams));
    out.push_back(std::move(waiting));
    out.push_back(std::move(usable));
  }
  // Connections, connect failures, TLS and disconnects: every upstream endpoint, the gRPC nodes
  // and (rest.listen on) each node's REST endpoint, which is a `node` of its own.
  struct Endpoint {
    const std::string* name;
    size_t index;
    bool rest;
  };
  std::vector<Endpoint> endpoints;
  for (size_t n = 0; n < nodes; ++n) {
    endpoints.push_back({&input.node_names[n], input.slot(n), false});
  }
  for (size_t n = 0; n < input.rest_node_names.size(); ++n) {
    endpoints.push_back({&input.rest_node_names[n], input.rest_slot(n), true});
  }
  // `index`: the endpoint's node slot. A worker without counters for it (a slot newer than the
  // worker's metrics) adds nothing.
  auto endpoint_sum = [&](const Endpoint& e, auto get) {
    return static_cast<double>(SumWorkers(input, [&](const WorkerMetrics& w) -> uint64_t {
      if (e.index >= w.node_count()) return 0;
      return get(e.rest ? w.rest_node(e.index) : w.node(e.index));
    }));
  };
  auto endpoint_counter = [&](const char* name, const char* help, auto get) {
    auto f = Family(name, help, MetricType::Counter);
    for (const Endpoint& e : endpoints) AddCounter(f, {{"node", *e.name}}, endpoint_sum(e, get));
    out.push_back(std::move(f));
  };
  endpoint_counter(
      "qpool_upstream_connects_total",
      "Upstream connections that finished their handshake (HTTP/2 SETTINGS; for a REST "
      "endpoint the TCP or TLS handshake), by node.",
      [](const NodeMetrics& m) { return m.connects.Get(); });
  {
    auto f = Family("qpool_upstream_connect_failures_total",
                    "Upstream connects that failed or timed out, by node and reason: a TLS reason "
                    "(as qpool_upstream_tls_failures_total), connect (name or TCP), timeout "
                    "(upstream.connect_timeout), other.",
                    MetricType::Counter);
    for (const Endpoint& e : endpoints) {
      for (size_t r = 0; r < tls::kConnectFailureSlots; ++r) {
        AddCounter(
            f, {{"node", *e.name}, {"reason", tls::ConnectFailureSlotName(r)}},
            endpoint_sum(e, [r](const NodeMetrics& m) { return m.connect_failures[r].Get(); }));
      }
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_upstream_tls_failures_total",
                    "Upstream TLS handshakes that failed, by node and reason (expired, "
                    "unknown_ca, name_mismatch, verify, client_cert, alpn, handshake); each is "
                    "also in qpool_upstream_connect_failures_total.",
                    MetricType::Counter);
    for (const Endpoint& e : endpoints) {
      for (size_t r = 0; r < tls::kFailureReasonCount; ++r) {
        AddCounter(f,
                   {{"node", *e.name},
                    {"reason", tls::FailureReasonName(static_cast<tls::FailureReason>(r))}},
                   endpoint_sum(e, [r](const NodeMetrics& m) { return m.tls_failures[r].Get(); }));
      }
    }
    out.push_back(std::move(f));
  }
  endpoint_counter("qpool_upstream_tls_handshakes_total",
                   "Upstream TLS handshakes completed, by node (resumed ones included).",
                   [](const NodeMetrics& m) { return m.tls_handshakes.Get(); });
  endpoint_counter("qpool_upstream_tls_resumptions_total",
                   "Upstream TLS handshakes that resumed an earlier session, by node.",
                   [](const NodeMetrics& m) { return m.tls_resumptions.Get(); });
  endpoint_counter("qpool_upstream_tls_unverified_connects_total",
                   "Upstream TLS connections made without checking the node's certificate "
                   "(upstream.tls.verify: false), by node.",
                   [](const NodeMetrics& m) { return m.tls_unverified_connects.Get(); });
  {
    auto f = Family("qpool_upstream_disconnects_total",
                    "Upstream connections gone after they were up, by node and reason (goaway: "
                    "drained after the node's GOAWAY; error: lost or broken; shutdown: qpoold "
                    "stopping; recycled: max_connection_age, max_requests_per_connection or new "
                    "TLS material; idle: idle_timeout).",
                    MetricType::Counter);
    for (const Endpoint& e : endpoints) {
      for (size_t r = 0; r < kDisconnectReasonCount; ++r) {
        AddCounter(
            f,
            {{"node", *e.name}, {"reason", DisconnectReasonName(static_cast<DisconnectReason>(r))}},
            endpoint_sum(e, [r](const NodeMetrics& m) { return m.disconnects[r].Get(); }));
      }
    }
    out.push_back(std::move(f));
  }
  node_histogram(
      "qpool_upstream_connect_duration_seconds",
      "Time from connect start to the node's HTTP/2 SETTINGS, by node.",
      [](const NodeMetrics& m) -> const DurationHistogram& { return m.connect_duration; });
  node_histogram("qpool_pool_wait_duration_seconds",
                 "Time calls waited for a free upstream stream (0 when one was free), by node.",
                 [](const NodeMetrics& m) -> const DurationHistogram& { return m.wait_duration; });
  node_counter("qpool_pool_queue_overflows_total",
               "Calls refused with RESOURCE_EXHAUSTED because upstream.max_pending calls already "
               "waited, by node.",
               [](const NodeMetrics& m) { return m.queue_overflows.Get(); });
  node_counter("qpool_pool_acquire_timeouts_total",
               "Calls that waited upstream.acquire_timeout for a stream and got UNAVAILABLE, by "
               "node.",
               [](const NodeMetrics& m) { return m.acquire_timeouts.Get(); });
  node_histogram(
      "qpool_upstream_attempt_duration_seconds",
      "Upstream stream lifetime, opened to closed, by node.",
      [](const NodeMetrics& m) -> const DurationHistogram& { return m.attempt_duration; });

  // REST pools (rest.listen on): their waits, queue overflows and acquire timeouts, by REST node.
  // Their connects, connect failures, TLS and disconnects are in the qpool_upstream_* families
  // above, where each REST endpoint is a `node` of its own.
  if (!input.rest_node_names.empty()) {
    const size_t rest_nodes = input.rest_node_names.size();
    auto has_rest = [&](const WorkerMetrics& w, size_t n) {
      return input.rest_slot(n) < w.rest_node_count();
    };
    auto rest_counter = [&](const char* name, const char* help, auto get) {
      auto f = Family(name, help, MetricType::Counter);
      for (size_t n = 0; n < rest_nodes; ++n) {
        const uint64_t value = SumWorkers(input, [&](const WorkerMetrics& w) -> uint64_t {
          return has_rest(w, n) ? get(w.rest_node(input.rest_slot(n))) : 0;
        });
        AddCounter(f, {{"node", input.rest_node_names[n]}}, static_cast<double>(value));
      }
      out.push_back(std::move(f));
    };
    rest_counter("qpool_rest_pool_queue_overflows_total",
                 "REST requests answered 429 because upstream.max_pending requests and calls "
                 "already waited, by node.",
                 [](const NodeMetrics& m) { return m.queue_overflows.Get(); });
    rest_counter("qpool_rest_pool_acquire_timeouts_total",
                 "REST requests that waited upstream.acquire_timeout for a connection, by node.",
                 [](const NodeMetrics& m) { return m.acquire_timeouts.Get(); });
    {
      auto f = Family("qpool_rest_pool_wait_duration_seconds",
                      "Time REST requests waited for a free upstream connection (0 when one was "
                      "free), by node.",
                      MetricType::Histogram);
      for (size_t n = 0; n < rest_nodes; ++n) {
        std::vector<const DurationHistogram*> parts;
        for (const WorkerMetrics* w : input.workers) {
          if (has_rest(*w, n)) parts.push_back(&w->rest_node(input.rest_slot(n)).wait_duration);
        }
        AddHistogram(f, {{"node", input.rest_node_names[n]}}, parts);
      }
      out.push_back(std::move(f));
    }
  }

  // --- health (docs/architecture.md, "Health") ---
  {
    auto f = Family("qpool_upstream_healthy",
                    "1 while the node passes its active health checks (medium and deep tiers, "
                    "health.unhealthy_threshold / healthy_threshold); 0 after it failed them.",
                    MetricType::Gauge);
    if (input.health != nullptr) {
      for (size_t n = 0; n < nodes; ++n)
        AddGauge(f, node_label(n), input.health->healthy(input.slot(n)));
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_health_checks_total",
                    "Health checks finished, by node, tier (fast: HTTP/2 PING on an idle "
                    "connection; medium: health call; deep: read probe) and result (success, "
                    "failure; a timeout is a failure).",
                    MetricType::Counter);
    for (size_t n = 0; n < nodes; ++n) {
      const std::string& node = input.node_names[n];
      for (bool success : {true, false}) {
        const char* result = success ? "success" : "failure";
        AddCounter(f, {{"node", node}, {"tier", "fast"}, {"result", result}},
                   static_cast<double>(SumWorkers(input, [&](const WorkerMetrics& w) {
                     return success ? w.node(input.slot(n)).pings_ok.Get()
                                    : w.node(input.slot(n)).pings_failed.Get();
                   })));
        if (input.health == nullptr) continue;
        AddCounter(f, {{"node", node}, {"tier", "medium"}, {"result", result}},
                   static_cast<double>(input.health->checks(input.slot(n), kMediumTier, success)));
        AddCounter(f, {{"node", node}, {"tier", "deep"}, {"result", result}},
                   static_cast<double>(input.health->checks(input.slot(n), kDeepTier, success)));
      }
    }
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_health_check_duration_seconds",
                    "Time of one health check, by tier: PING to its ack (fast), or stream "
                    "acquire to the answer (medium, deep); timeouts count their timeout.",
                    MetricType::Histogram);
    AddHistogram(f, {{"tier", "fast"}},
                 Parts(input, [](const WorkerMetrics& w) -> const DurationHistogram& {
                   return w.ping_duration();
                 }));
    if (input.health != nullptr) {
      AddHistogram(f, {{"tier", "medium"}}, {&input.health->check_duration(kMediumTier)});
      AddHistogram(f, {{"tier", "deep"}}, {&input.health->check_duration(kDeepTier)});
    }
    out.push_back(std::move(f));
  }
  node_counter("qpool_upstream_ejections_total",
               "Times a node was ejected by passive health checking (health.consecutive_failures "
               "failures in a row on one I/O worker), by node.",
               [](const NodeMetrics& m) { return m.ejections.Get(); });
  {
    auto f = Family("qpool_upstream_panic_total",
                    "Calls routed in panic mode: no node was both healthy and not ejected, so "
                    "every node was eligible.",
                    MetricType::Counter);
    AddCounter(f, {}, static_cast<double>(SumWorkers(input, [](const WorkerMetrics& w) {
                 return w.panic_routes();
               })));
    out.push_back(std::move(f));
  }
  {
    auto f = Family("qpool_upstream_info",
                    "The version each node reported in its last qdrant.Qdrant/HealthCheck answer; "
                    "the value is always 1.",
                    MetricType::Gauge);
    if (input.health != nullptr) {
      for (size_t n = 0; n < nodes; ++n) {
        const std::string version = input.health->version(input.slot(n));
        if (!version.empty()) {
          AddGauge(f, {{"node", input.node_names[n]}, {"version", version}}, 1);
        }
      }
    }
    out.push_back(std::move(f));
  }

  // --- process state ---
  {
    auto f = Family("qpool_ready", "1 when /readyz answers 200.", MetricType::Gauge);
    AddGauge(f, {}, input.ready ? 1 : 0);
    out.push_back(std::move(f));
  }
  {
    auto f =
        Family("qpool_draining", "1 after SIGTERM/SIGINT, while calls drain.", MetricType::Gauge);
    AddGauge(f, {}, input.draining ? 1 : 0);
    out.push_back(std::move(f));
  }
  {
    uint32_t missing = 0;
    for (const auto& worker : input.pools) missing += worker ? 0 : 1;
    auto f = Family("qpool_scrape_workers_unanswered",
                    "I/O workers that did not report pool gauges within the scrape's wait.",
                    MetricType::Gauge);
    AddGauge(f, {}, missing);
    out.push_back(std::move(f));
  }
  return out;
}

MetricFamily BuildInfoFamily(const std::string& version) {
  auto f =
      Family("qpool_build_info", "qpoold's version; the value is always 1.", MetricType::Gauge);
  AddGauge(f, {{"version", version}}, 1);
  return f;
}

namespace {

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
  std::vector<MetricFamily> families = BuildFamilies(input);
  families.push_back(BuildInfoFamily(version));
  if (reloads != nullptr) {
    for (auto& family : BuildReloadFamilies(*reloads)) families.push_back(std::move(family));
  }
  for (auto& family : CollectProcessMetrics()) families.push_back(std::move(family));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace qpool::metrics
