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
  switch (value.back()) {
    case 'H':
      return std::chrono::hours(amount);
    case 'M':
      return std::chrono::minutes(amount);
    case 'S':
      return std::chrono::seconds(amount);
    case 'm':
      return std::chrono::milliseconds(amount);
    case 'u':
      return std::chrono::microseconds(amount);
    case 'n':
      return std::chrono::nanoseconds(amount);
    default:
      return std::nullopt;
  }
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
