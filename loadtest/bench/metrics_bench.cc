// Per-call cost of qpool's metrics on the data path (issue "Observability and admin": target under
// 1 µs per call), and the admin thread's cost of a scrape.
//
// BM_PerCallMetrics does what one unary call does to metrics, in the order call.cc does it:
// classify :path, read the clock at the start, at the upstream attempt's start and end, and at the
// call's end; record the pool wait, the attempt duration, both byte counts, the grpc-status parse
// and the call (class x code counter and duration histogram). BM_PerCallMetricsWhileScraped does
// the same while another thread scrapes in a loop, the worst case for the writer's cache lines.
//
//   build/bin/metrics_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "daemon/metrics/method_class.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/scrape_families.h"
#include "daemon/metrics/worker_metrics.h"
#include "prometheus/text_serializer.h"

namespace {

using qpool::metrics::ClassifyPath;
using qpool::metrics::MethodClass;
using qpool::metrics::WorkerMetrics;
using Clock = std::chrono::steady_clock;

// call.cc's grpc-status parse.
int ParseStatus(std::string_view value) {
  int parsed = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return -1;
    parsed = parsed * 10 + (c - '0');
  }
  return parsed;
}

void OneCall(WorkerMetrics& metrics, std::string_view path) {
  const MethodClass klass = ClassifyPath(path);
  const auto started = Clock::now();
  metrics.node(0).wait_duration.Observe(std::chrono::nanoseconds(0));
  const auto attempt = Clock::now();
  metrics.AddRequestBytes(64);
  metrics.AddResponseBytes(256);
  std::string_view status = "0";
  benchmark::DoNotOptimize(status);
  const int code = ParseStatus(status);
  metrics.node(0).attempt_duration.Observe(Clock::now() - attempt);
  metrics.RecordCall(klass, code, Clock::now() - started);
}

void BM_ClassifyPath(benchmark::State& state) {
  const std::string_view paths[] = {"/qdrant.Points/Search", "/qdrant.Points/Upsert",
                                    "/qdrant.Collections/Create", "/my.Service/Method"};
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ClassifyPath(paths[i++ & 3]));
  }
}
BENCHMARK(BM_ClassifyPath);

void BM_PerCallMetrics(benchmark::State& state) {
  WorkerMetrics metrics(1);
  for (auto _ : state) OneCall(metrics, "/qdrant.Points/Search");
  benchmark::DoNotOptimize(metrics.calls(MethodClass::kRead, 0));
}
BENCHMARK(BM_PerCallMetrics);

qpool::metrics::ScrapeInput InputFor(const WorkerMetrics& metrics) {
  qpool::metrics::ScrapeInput input;
  input.node_names = {"qdrant-0:6334"};
  input.workers = {&metrics};
  input.pools = {std::vector<qpool::metrics::NodePoolGauges>(1)};
  return input;
}

void BM_PerCallMetricsWhileScraped(benchmark::State& state) {
  WorkerMetrics metrics(1);
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      benchmark::DoNotOptimize(qpool::metrics::BuildFamilies(InputFor(metrics)).size());
    }
  });
  for (auto _ : state) OneCall(metrics, "/qdrant.Points/Search");
  stop = true;
  scraper.join();
}
BENCHMARK(BM_PerCallMetricsWhileScraped);

// The admin thread: build and serialize one scrape (one worker, one node).
void BM_Scrape(benchmark::State& state) {
  WorkerMetrics metrics(1);
  for (int i = 0; i < 1000; ++i) OneCall(metrics, i % 2 ? "/qdrant.Points/Search" : "/x.Y/Z");
  for (auto _ : state) {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, qpool::metrics::BuildFamilies(InputFor(metrics)));
    benchmark::DoNotOptimize(out.str().size());
  }
}
BENCHMARK(BM_Scrape);

}  // namespace

BENCHMARK_MAIN();
