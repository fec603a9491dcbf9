#include "daemon/retry/method_class.h"

#include <zlib.h>

#include <cstdint>
#include <optional>

#include "daemon/common/grpc_frame.h"
#include "daemon/common/qdrant_methods.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "nlohmann/json.hpp"

namespace qpool::retry {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// Inflates a gzip (or zlib) stream; nullopt when it is corrupt or inflates past `limit`.
std::optional<std::string> Inflate(std::string_view compressed, size_t limit) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 32) != Z_OK) return std::nullopt;  // 32: gzip or zlib header
  std::string out;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  stream.avail_in = static_cast<uInt>(compressed.size());
  int rv = Z_OK;
  while (rv == Z_OK) {
    if (out.size() >= limit) break;
    const size_t chunk = std::min<size_t>(64 * 1024, limit - out.size());
    const size_t offset = out.size();
    out.resize(offset + chunk);
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + offset);
    stream.avail_out = static_cast<uInt>(chunk);
    rv = inflate(&stream, Z_NO_FLUSH);
    out.resize(offset + chunk - stream.avail_out);
    if (rv == Z_BUF_ERROR && stream.avail_in == 0) break;  // truncated input
  }
  inflateEnd(&stream);
  if (rv != Z_STREAM_END) return std::nullopt;
  return out;
}

enum class Selector { kAbsent, kIds, kFilter, kUnreadable };

// Reads a PointsSelector: oneof { PointsIdsList points = 1; Filter filter = 2; }.
Selector ReadPointsSelector(std::string_view bytes) {
  CodedInputStream input(reinterpret_cast<const uint8_t*>(bytes.data()),
                         static_cast<int>(bytes.size()));
  Selector selector = Selector::kAbsent;
  while (uint32_t tag = input.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if (field == 1) selector = Selector::kIds;
    if (field == 2) selector = Selector::kFilter;
    if (!WireFormatLite::SkipField(&input, tag)) return Selector::kUnreadable;
  }
  return input.ConsumedEntireMessage() ? selector : Selector::kUnreadable;
}

// Which of the keys a REST points write names its points by appear at the top level of a JSON
// object. A SAX pass: nothing of the document is kept, however large (an upsert of many MiB).
class TopLevelKeys : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool points = false;
  bool filter = false;
  bool update_filter = false;
  bool object = false;  // the document is an object

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    if (depth_ == 0) object = true;
    depth_++;
    return true;
  }
  bool key(string_t& name) override {
    if (depth_ == 1) {
      if (name == "points") points = true;
      if (name == "filter") filter = true;
      if (name == "update_filter") update_filter = true;
    }
    return true;
  }
  bool end_object() override {
    depth_--;
    return true;
  }
  bool start_array(std::size_t) override {
    depth_++;
    return true;
  }
  bool end_array() override {
    depth_--;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  int depth_ = 0;
};

}  // namespace

const char* RetryClassName(RetryClass retry_class) {
  switch (retry_class) {
    case RetryClass::kRead:
      return "read";
    case RetryClass::kIdScopedWrite:
      return "id_scoped_write";
    case RetryClass::kFilterScopedWrite:
      return "filter_scoped_write";
    case RetryClass::kNeverRepeat:
      return "never";
  }
  return "never";
}

MethodClassifier::MethodClassifier() {
  for (const QdrantMethod& method : QdrantMethods()) {
    std::string path = "/";
    path.append(method.service).append("/").append(method.method);
    switch (method.kind) {
      case MethodKind::kRead:
        fixed_[path] = RetryClass::kRead;
        break;
      case MethodKind::kFilterWrite:
        fixed_[path] = RetryClass::kFilterScopedWrite;
        break;
      case MethodKind::kSelectorWrite:
        by_selector_[path] = method.selector;
        break;
      case MethodKind::kAdmin:
        break;  // not in either map: Classify() answers kNeverRepeat, as for unknown methods
    }
  }
}

void MethodClassifier::Override(std::string path, RetryClass retry_class) {
  by_selector_.erase(path);
  fixed_[std::move(path)] = retry_class;
}

namespace {
// Debian's Abseil has its own string_view type, which its hash maps look up by.
absl::string_view Key(std::string_view path) { return absl::string_view(path.data(), path.size()); }
}  // namespace

bool MethodClassifier::NeedsFirstMessage(std::string_view path) const {
  return !fixed_.contains(Key(path)) && by_selector_.contains(Key(path));
}

RetryClass MethodClassifier::Classify(std::string_view path, std::string_view first_message,
                                      std::string_view grpc_encoding) const {
  if (auto it = fixed_.find(Key(path)); it != fixed_.end()) return it->second;
  auto it = by_selector_.find(Key(path));
  if (it == by_selector_.end()) return RetryClass::kNeverRepeat;
  const SelectorRule& rule = it->second;

  // The gRPC frame: compressed flag, big-endian length, message.
  if (first_message.size() < kGrpcFramePrefixBytes) return RetryClass::kFilterScopedWrite;
  const size_t length = GrpcFrameLength(first_message);
  if (first_message.size() - kGrpcFramePrefixBytes < length) {
    return RetryClass::kFilterScopedWrite;
  }
  std::string_view message = first_message.substr(kGrpcFramePrefixBytes, length);
  std::optional<std::string> inflated;
  if (first_message[0] != 0) {
    if (grpc_encoding != "gzip" && grpc_encoding != "deflate") {
      return RetryClass::kFilterScopedWrite;
    }
    inflated = Inflate(message, kMaxInflatedBytes);
    if (!inflated) return RetryClass::kFilterScopedWrite;
    message = *inflated;
  }

  CodedInputStream input(reinterpret_cast<const uint8_t*>(message.data()),
                         static_cast<int>(message.size()));
  Selector selector = Selector::kAbsent;
  bool conditional = false;
  while (uint32_t tag = input.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if (rule.conditional_field != 0 && field == rule.conditional_field) conditional = true;
    if (rule.selector_field != 0 && field == rule.selector_field &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      std::string bytes;
      uint32_t size;
      if (!input.ReadVarint32(&size) || !input.ReadString(&bytes, static_cast<int>(size))) {
        return RetryClass::kFilterScopedWrite;
      }
      selector = ReadPointsSelector(bytes);
      continue;
    }
    if (!WireFormatLite::SkipField(&input, tag)) return RetryClass::kFilterScopedWrite;
  }
  if (!input.ConsumedEntireMessage()) return RetryClass::kFilterScopedWrite;

  if (conditional) return RetryClass::kFilterScopedWrite;
  if (rule.selector_field == 0) return RetryClass::kIdScopedWrite;
  switch (selector) {
    case Selector::kIds:
      return RetryClass::kIdScopedWrite;
    case Selector::kAbsent:
      return rule.absent_selector_is_filter ? RetryClass::kFilterScopedWrite
                                            : RetryClass::kIdScopedWrite;
    case Selector::kFilter:
    case Selector::kUnreadable:
      return RetryClass::kFilterScopedWrite;
  }
  return RetryClass::kFilterScopedWrite;
}

bool MethodClassifier::RestNeedsBody(const QdrantRestRoute* route) const {
  return route != nullptr && !route->grpc_method.empty() && NeedsFirstMessage(route->grpc_method);
}

RetryClass MethodClassifier::ClassifyRest(const QdrantRestRoute* route, std::string_view body,
                                          std::string_view content_encoding) const {
  if (route == nullptr) return RetryClass::kNeverRepeat;
  if (route->grpc_method.empty()) {
    return route->kind == MethodKind::kRead ? RetryClass::kRead : RetryClass::kNeverRepeat;
  }
  const std::string_view path = route->grpc_method;
  if (auto it = fixed_.find(Key(path)); it != fixed_.end()) return it->second;
  auto it = by_selector_.find(Key(path));
  if (it == by_selector_.end()) return RetryClass::kNeverRepeat;
  const SelectorRule& rule = it->second;

  std::optional<std::string> inflated;
  if (!content_encoding.empty() && content_encoding != "identity") {
    if (content_encoding != "gzip" && content_encoding != "deflate") {
      return RetryClass::kFilterScopedWrite;
    }
    inflated = Inflate(body, kMaxInflatedBytes);
    if (!inflated) return RetryClass::kFilterScopedWrite;
    body = *inflated;
  }
  TopLevelKeys keys;
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(body.begin(), body.end(), &keys);
  } catch (const std::exception&) {  // the library's edge: an unreadable body is a filter
    parsed = false;
  }
  if (!parsed || !keys.object) return RetryClass::kFilterScopedWrite;
  if (rule.conditional_field != 0 && keys.update_filter) return RetryClass::kFilterScopedWrite;
  if (rule.selector_field == 0) return RetryClass::kIdScopedWrite;
  if (keys.filter) return RetryClass::kFilterScopedWrite;
  if (keys.points) return RetryClass::kIdScopedWrite;
  return rule.absent_selector_is_filter ? RetryClass::kFilterScopedWrite
                                        : RetryClass::kIdScopedWrite;
}

}  // namespace qpool::retry
