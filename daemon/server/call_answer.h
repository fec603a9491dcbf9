// The answer of one gRPC call, on its way to the app: response HEADERS, the body qpoold holds for
// the app until its stream takes it, the trailers, and where the answer stands (ResponseState).
// It is the Call's part that talks to the app connection (CallDownstream) about the answer; the
// upstream half (CallUpstream and its Attempts) hands it what Qdrant answered, or asks it to
// answer locally, through AnswerSink and never sees the app connection.
//
//   CallAnswer answer(call, downstream, counters);
//   answer.SendHeaders(nva, n, /*end_stream=*/false, -1);  // the commit point's headers
//   answer.AppendData(data, len);                          // upstream DATA, held for the app
//   answer.AddTrailer("grpc-status", "0"); answer.End();   // trailers follow the body
//   answer.Read(buf, size, &flags);                        // the app stream's data source
//
// Ownership: a Call holds its CallAnswer by value; `call` names the stream to CallDownstream.
// Thread-safety: none; a call lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_ANSWER_H_
#define QPOOL_DAEMON_SERVER_CALL_ANSWER_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/common/byte_queue.h"
#include "daemon/server/call_downstream.h"
#include "daemon/server/header_block.h"
#include "daemon/server/proxy_counters.h"

namespace qpool::server {

// What the upstream half of a call does with the call's answer (CallAnswer implements it; a unit
// test passes a fake, tests/unit/attempt_test.cc). Events after finished() are the caller's to
// drop.
class AnswerSink {
 public:
  // The answer to the app is settled (complete, reset, or the app went away). Read on every
  // upstream frame, so a plain flag the implementation keeps rather than a virtual call.
  bool finished() const { return finished_; }
  // Response headers (`end_stream`: a trailers-only answer with grpc-status `grpc_code`).
  virtual void SendHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream, int grpc_code) = 0;
  virtual void AppendData(const uint8_t* data, size_t len) = 0;
  virtual void AddTrailer(std::string_view name, std::string_view value) = 0;
  // The upstream answer is complete: trailers (if any) follow the data queued.
  virtual void End() = 0;
  // Answers the app with `status` and no upstream answer: trailers-only if no response headers
  // went out yet, else trailers after the data already queued. Nothing once the app went away.
  virtual void FinishLocally(const absl::Status& status) = 0;
  // The upstream reset the stream before its answer was complete: so is the app's.
  virtual void PassOnReset(uint32_t h2_error_code) = 0;

 protected:
  ~AnswerSink() = default;  // not owned through this interface

  bool finished_ = false;  // once set, stays set
};

class CallAnswer final : public AnswerSink {
 public:
  // `call`, `downstream` and `counters` must outlive the answer.
  CallAnswer(Call& call, CallDownstream& downstream, ProxyCounters& counters)
      : call_(call),
        downstream_(downstream),
        counters_(counters),
        body_(&counters.buffered_bytes, downstream.response_bytes_held()) {}

  // AnswerSink. ----------------------------------------------------------------------------------
  void SendHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream, int grpc_code) override;
  void AppendData(const uint8_t* data, size_t len) override {
    body_.Append(data, len);
    Resume();
  }
  void AddTrailer(std::string_view name, std::string_view value) override {
    trailers_.Add(name, value);
  }
  void End() override;
  void FinishLocally(const absl::Status& status) override;
  void PassOnReset(uint32_t h2_error_code) override;

  // From the app's side. -------------------------------------------------------------------------
  // The app stream's data source (nghttp2 semantics): up to `length` bytes of the body; at its
  // end, the trailers (submitted from here) or END_STREAM; NGHTTP2_ERR_DEFERRED while nothing is
  // held and more is to come.
  ssize_t Read(uint8_t* buf, size_t length, uint32_t* data_flags);
  // The downstream stream is gone: nothing more goes to the app.
  void Close() { Set(State::kClosed); }
  bool closed() const { return state_ == State::kClosed; }
  // Something went to the app already (response HEADERS, or a reset).
  bool started() const { return state_ != State::kNone; }
  // Response bytes held for the app and not taken by it yet.
  size_t buffered() const { return body_.size(); }
  // The final grpc-status, upstream's or qpoold's; -1: none (a reset, or no trailers).
  int grpc_code() const { return grpc_code_; }

 private:
  enum class State : uint8_t {
    kNone,         // nothing sent to the app yet
    kHeadersSent,  // response HEADERS submitted; body and trailers to come
    kComplete,     // the whole answer is queued (ends with trailers, or END_STREAM)
    kReset,        // the stream was reset toward the app
    kClosed,       // the downstream stream is gone
  };

  void Set(State state) {
    state_ = state;
    finished_ = state >= State::kComplete;
  }
  // Tells the app connection the data source has more (or its end) when the headers went out.
  void Resume();

  Call& call_;  // names the stream to CallDownstream
  CallDownstream& downstream_;
  ProxyCounters& counters_;
  State state_ = State::kNone;
  int grpc_code_ = -1;
  HeaderBlock trailers_;
  ByteQueue body_;
};

// Inline: the app stream's data source, read at least once per call (as it was inside Call).
inline ssize_t CallAnswer::Read(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = body_.Read(buf, length);
  if (body_.empty()) {
    if (state_ == State::kComplete) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!trailers_.empty()) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        NvArray nva = trailers_.ToNv();
        downstream_.SubmitTrailers(call_, nva.data(), nva.size());
      }
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_ANSWER_H_
