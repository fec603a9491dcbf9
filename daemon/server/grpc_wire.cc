#include "daemon/server/grpc_wire.h"

#include <cstdint>

#include "daemon/common/grpc_code.h"

namespace qpool::server {

std::optional<Duration> ParseGrpcTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  int64_t amount = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    amount = amount * 10 + (c - '0');
  }
  int64_t unit_ns;
  switch (value.back()) {
    case 'H':
      unit_ns = 3'600'000'000'000;
      break;
    case 'M':
      unit_ns = 60'000'000'000;
      break;
    case 'S':
      unit_ns = 1'000'000'000;
      break;
    case 'm':
      unit_ns = 1'000'000;
      break;
    case 'u':
      unit_ns = 1'000;
      break;
    case 'n':
      unit_ns = 1;
      break;
    default:
      return std::nullopt;
  }
  // 8 digits of hours (up to 99999999H) do not fit a 64-bit count of nanoseconds; anything past
  // kMaxGrpcTimeout is read as kMaxGrpcTimeout (found by tests/fuzz/grpc_timeout_fuzz).
  if (amount > kMaxGrpcTimeout.count() / unit_ns) return kMaxGrpcTimeout;
  return Duration(amount * unit_ns);
}

std::string FormatGrpcTimeout(Duration timeout) {
  constexpr int64_t kMaxAmount = 99'999'999;
  const int64_t ns = timeout.count();
  if (ns <= 0) return "1n";
  struct Unit {
    int64_t ns;
    char suffix;
  };
  static constexpr Unit kUnits[] = {{1, 'n'},
                                    {1'000, 'u'},
                                    {1'000'000, 'm'},
                                    {1'000'000'000, 'S'},
                                    {60'000'000'000, 'M'},
                                    {3'600'000'000'000, 'H'}};
  for (const Unit& unit : kUnits) {
    const int64_t amount = (ns + unit.ns - 1) / unit.ns;  // round up
    if (amount <= kMaxAmount) return std::to_string(amount) + unit.suffix;
  }
  return std::to_string(kMaxAmount) + "H";
}

std::string PercentEncodeGrpcMessage(absl::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (unsigned char c : message) {
    if (c >= 0x20 && c <= 0x7E && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

int GrpcCode(const absl::Status& status) { return static_cast<int>(status.code()); }

std::optional<Duration> PushbackIn(const HeaderRefs& block) {
  auto number = [](std::string_view text, int64_t& out) {
    if (text.empty() || text.size() > 12) return false;
    out = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    return true;
  };
  int64_t value = 0;
  if (number(block.Find("grpc-retry-pushback-ms"), value)) {
    return std::chrono::milliseconds(value);
  }
  if (!block.Find("grpc-retry-pushback-ms").empty()) return std::nullopt;  // negative: no retry
  if (number(block.Find("retry-after"), value)) return std::chrono::seconds(value);
  return std::nullopt;
}

retry::Failure FailureOfGrpcStatus(int code) {
  switch (code) {
    case kGrpcOk:
      return retry::Failure::kNone;
    case kGrpcUnavailable:
      return retry::Failure::kUnavailable;
    case kGrpcResourceExhausted:
      return retry::Failure::kResourceExhausted;
    default:
      return retry::Failure::kOther;
  }
}

}  // namespace qpool::server
