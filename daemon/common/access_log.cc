#include "daemon/common/access_log.h"

#include <array>
#include <cstdio>

#include "daemon/common/logging.h"

namespace qpool {
namespace {

// Fills `fields` (and the number texts in `numbers`) for `record`; returns how many are used.
size_t AccessFields(const AccessRecord& record, std::array<LogField, 9>& fields,
                    std::array<std::array<char, 32>, 3>& numbers) {
  size_t n = 0;
  fields[n++] = {"protocol", record.protocol};
  fields[n++] = {"method", record.method};
  if (!record.route.empty()) fields[n++] = {"route", record.route};
  fields[n++] = {"retry_class", record.retry_class};
  int length = std::snprintf(numbers[0].data(), numbers[0].size(), "%d", record.status);
  fields[n++] = {"status", std::string_view(numbers[0].data(), static_cast<size_t>(length)), true};
  length = std::snprintf(numbers[1].data(), numbers[1].size(), "%.3f",
                         std::chrono::duration<double, std::milli>(record.duration).count());
  fields[n++] = {"duration_ms", std::string_view(numbers[1].data(), static_cast<size_t>(length)),
                 true};
  fields[n++] = {"node", record.node.empty() ? std::string_view("-") : record.node};
  length = std::snprintf(numbers[2].data(), numbers[2].size(), "%u", record.attempts);
  fields[n++] = {"attempts", std::string_view(numbers[2].data(), static_cast<size_t>(length)),
                 true};
  fields[n++] = {"peer", record.peer};
  return n;
}

}  // namespace

void SetAccessLogSample(double fraction) {
  access_log_internal::sample.store(fraction, std::memory_order_relaxed);
}

std::string FormatAccessLine(const AccessRecord& record, std::string_view format,
                             std::chrono::system_clock::time_point time) {
  std::array<LogField, 9> fields;
  std::array<std::array<char, 32>, 3> numbers;
  const size_t n = AccessFields(record, fields, numbers);
  return FormatFieldsLine(format, time, "access", absl::MakeConstSpan(fields.data(), n));
}

void WriteAccessLine(const AccessRecord& record) {
  std::array<LogField, 9> fields;
  std::array<std::array<char, 32>, 3> numbers;
  const size_t n = AccessFields(record, fields, numbers);
  WriteFieldsLine("access", absl::MakeConstSpan(fields.data(), n));
}

}  // namespace qpool
