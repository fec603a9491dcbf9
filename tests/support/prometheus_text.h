// Reads a Prometheus text-format scrape for tests: every sample as "name{labels}" -> value, the
// key written exactly as qpoold writes it.
//
//   Samples samples = ParseSamples(HttpGet(admin_port, "/metrics").body);
//   EXPECT_EQ(samples["qpool_calls_total{protocol=\"grpc\",class=\"read\",code=\"OK\"}"], 40);
//
// Thread-safety: a pure function.
#ifndef QPOOL_TESTS_SUPPORT_PROMETHEUS_TEXT_H_
#define QPOOL_TESTS_SUPPORT_PROMETHEUS_TEXT_H_

#include <map>
#include <sstream>
#include <string>

namespace qpool::testing {

using Samples = std::map<std::string, double>;

inline Samples ParseSamples(const std::string& text) {
  Samples samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_PROMETHEUS_TEXT_H_
