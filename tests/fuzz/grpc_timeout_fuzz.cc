// libFuzzer target: the gRPC wire values qpoold reads or writes itself. For any bytes:
// - ParseGrpcTimeout accepts only 1 to 8 digits and a unit, and a parsed timeout formats back
//   (FormatGrpcTimeout) to a value that parses to no earlier deadline than the original;
// - PercentEncodeGrpcMessage yields only printable ASCII, and decodes back to the input.
//
//   build/fuzz/bin/grpc_timeout_fuzz -max_total_time=60 tests/fuzz/corpus/grpc_timeout_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "daemon/server/grpc_wire.h"

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The inverse of percent-encoding; aborts on a malformed escape.
std::string PercentDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) std::abort();
    const int high = HexValue(text[i + 1]);
    const int low = HexValue(text[i + 2]);
    if (high < 0 || low < 0) std::abort();
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

bool WellFormedTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return false;
  for (size_t i = 0; i + 1 < value.size(); ++i) {
    if (value[i] < '0' || value[i] > '9') return false;
  }
  return std::string_view("HMSmun").find(value.back()) != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const std::optional<qpool::Duration> timeout = qpool::server::ParseGrpcTimeout(text);
  if (timeout.has_value() != WellFormedTimeout(text)) std::abort();
  if (timeout.has_value() && timeout->count() > 0) {
    const std::string formatted = qpool::server::FormatGrpcTimeout(*timeout);
    if (!WellFormedTimeout(formatted)) std::abort();
    const std::optional<qpool::Duration> again = qpool::server::ParseGrpcTimeout(formatted);
    if (!again.has_value() || *again < *timeout) std::abort();
  }

  const std::string encoded =
      qpool::server::PercentEncodeGrpcMessage(absl::string_view(text.data(), text.size()));
  for (char c : encoded) {
    if (c < 0x20 || c > 0x7E) std::abort();
  }
  if (PercentDecode(encoded) != text) std::abort();
  return 0;
}
