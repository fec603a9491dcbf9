// libFuzzer target: the retry classifier's inspection of a write's first request message
// (daemon/retry/method_class.h), which reads app-supplied protobuf bytes, gzip-inflated or not.
// Any bytes must give an answer (a malformed or oversized request is a filter-scoped write, the
// safe side), never a crash, hang, sanitizer report or unbounded allocation; and a request the
// classifier can read must be classified the same whether it came compressed or not.
//
// Input: byte 0 picks one of the methods whose class depends on the request; byte 1's low bits
// pick grpc-encoding ("", gzip, deflate, identity) and bit 2 whether the rest is used as the raw
// framed first message (exercising the frame checks) or as the message itself, which this target
// then frames, compressing it with zlib for gzip/deflate (exercising the inflater on real
// streams).
//
//   build/fuzz/bin/method_class_fuzz -max_total_time=60 tests/fuzz/corpus/method_class_fuzz
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/grpc_frame.h"
#include "daemon/common/qdrant_methods.h"
#include "daemon/retry/method_class.h"

namespace {

const std::vector<std::string>& SelectorPaths() {
  static const auto* paths = [] {
    auto* out = new std::vector<std::string>;
    for (const qpool::QdrantMethod& m : qpool::QdrantMethods()) {
      if (m.kind != qpool::MethodKind::kSelectorWrite) continue;
      std::string path = "/";
      path.append(m.service).append("/").append(m.method);
      out->push_back(std::move(path));
    }
    return out;
  }();
  return *paths;
}

// zlib `window_bits`: 15 + 16 for a gzip stream, 15 for a zlib one.
std::string Compress(std::string_view data, int window_bits) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    std::abort();
  }
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  if (deflate(&stream, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qpool::retry::MethodClassifier* classifier = new qpool::retry::MethodClassifier;
  if (size < 2) return 0;
  const std::vector<std::string>& paths = SelectorPaths();
  const std::string& path = paths[data[0] % paths.size()];
  static constexpr std::string_view kEncodings[] = {"", "gzip", "deflate", "identity"};
  const std::string_view encoding = kEncodings[data[1] & 3];
  const bool frame_it = (data[1] & 4) != 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);

  if (!classifier->NeedsFirstMessage(path)) std::abort();
  if (!frame_it) {
    (void)classifier->Classify(path, rest, encoding);
    return 0;
  }
  const qpool::retry::RetryClass plain =
      classifier->Classify(path, qpool::GrpcFrame(rest), encoding);
  if (encoding == "gzip" || encoding == "deflate") {
    const std::string compressed = Compress(rest, encoding == "gzip" ? 15 + 16 : 15);
    const qpool::retry::RetryClass inflated =
        classifier->Classify(path, qpool::GrpcFrame(compressed, /*compressed=*/true), encoding);
    if (inflated != plain) std::abort();  // same request, same answer
  }
  return 0;
}
