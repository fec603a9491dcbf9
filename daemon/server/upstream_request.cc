#include "daemon/server/upstream_request.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "daemon/common/grpc_frame.h"

namespace qpool::server {
namespace {

// The first gRPC message of a request (5-byte prefix and body), from the bytes sent (`sent`) and
// not sent yet (`unsent`). False when the call does not hold all of it yet (or it is larger than
// the classifier would inflate: then `out` holds what there is, which the classifier treats as
// unreadable).
bool FirstGrpcMessage(const ByteQueue& sent, const ByteQueue& unsent, std::string& out) {
  std::string head;
  sent.CopyPrefix(kGrpcFramePrefixBytes, head);
  if (head.size() < kGrpcFramePrefixBytes) {
    unsent.CopyPrefix(kGrpcFramePrefixBytes - head.size(), head);
  }
  if (head.size() < kGrpcFramePrefixBytes) return false;
  const size_t want = kGrpcFramePrefixBytes +
                      std::min(GrpcFrameLength(head), retry::MethodClassifier::kMaxInflatedBytes);
  out.reserve(want);
  const size_t from_sent = sent.CopyPrefix(want, out);
  if (from_sent < want) unsent.CopyPrefix(want - from_sent, out);
  return out.size() == want;
}

}  // namespace

bool UpstreamRequest::Append(const uint8_t* data, size_t len) {
  if (state_ == State::kDropped) {
    window_.AcknowledgeRequestBytes(len);
    return false;
  }
  body_.Append(data, len);
  return true;
}

bool UpstreamRequest::End() {
  if (state_ == State::kDropped) return false;
  state_ = State::kEnded;
  return true;
}

void UpstreamRequest::Drop() {
  state_ = State::kDropped;
  replay_.Release();
  if (!body_.empty()) {
    Acknowledge(body_.size());
    body_.Clear();
  }
}

ssize_t UpstreamRequest::Read(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = body_.Read(buf, length);
  if (n > 0) {
    Acknowledge(n);
    replay_.Keep(buf, n);
  }
  if (body_.empty()) {
    if (state_ == State::kEnded) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void UpstreamRequest::CopyForHedge() {
  hedge_copy_.Clear();
  hedge_copy_.AppendCopyOf(replay_.bytes());
}

ssize_t UpstreamRequest::ReadHedgeCopy(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = hedge_copy_.Read(buf, length);
  if (hedge_copy_.empty()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

void UpstreamRequest::Rewind() {
  acknowledged_ahead_ += replay_.size();
  body_.PrependFrom(replay_.bytes());
}

retry::RetryClass UpstreamRequest::Classify(const retry::MethodClassifier& classifier) {
  if (retry_class_) return *retry_class_;
  const std::string_view path = headers_.Find(":path");
  std::string first_message;
  // A class read from part of a message is the safe one (filter-scoped) and not kept: the rest of
  // the message may still come.
  const bool settled = !classifier.NeedsFirstMessage(path) ||
                       FirstGrpcMessage(replay_.bytes(), body_, first_message) ||
                       state_ == State::kEnded;
  const retry::RetryClass retry_class =
      classifier.Classify(path, first_message, headers_.Find("grpc-encoding"));
  if (settled) retry_class_ = retry_class;
  return retry_class;
}

void UpstreamRequest::Acknowledge(size_t n) {
  const size_t already = std::min(n, acknowledged_ahead_);
  acknowledged_ahead_ -= already;
  if (n > already) window_.AcknowledgeRequestBytes(n - already);
}

}  // namespace qpool::server
