// The request of one gRPC call as qpoold holds it on its way upstream: its headers (references
// into the app's session), the body bytes taken from the app and not sent yet, the replay copy of
// the bytes sent (until the commit point), and a hedge's own copy of the whole request. It also
// keeps the request's flow control honest: the app gets window credit (RequestWindow) for a byte
// once it went upstream, or once qpoold drops it, and never twice for the same byte, however many
// times a retry sends it again.
//
//   UpstreamRequest request(call, &counters.buffered_bytes, retry.replay, retry.events);
//   request.AddHeader(name, value);   // ... then EndHeaders()
//   request.Append(data, len);        // app DATA; End() at END_STREAM
//   request.Read(buf, n, &flags);     // the primary attempt's nghttp2 data source
//   request.Rewind();                 // a retry sends the request again from its first byte
//   request.Commit();                 // an answer is the call's: the copy and the headers go
//
// It knows nothing of attempts, streams or sockets: CallUpstream and its Attempts decide who
// reads it and when (tests/unit/upstream_request_test.cc drives it by hand).
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_UPSTREAM_REQUEST_H_
#define QPOOL_DAEMON_SERVER_UPSTREAM_REQUEST_H_

#include <nghttp2/nghttp2.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "daemon/common/byte_queue.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/replay_buffer.h"
#include "daemon/server/header_block.h"

namespace qpool::server {

// Where a request's flow-control credit goes: the app's stream (Call implements it).
class RequestWindow {
 public:
  // Lets the app send `n` more bytes on the stream.
  virtual void AcknowledgeRequestBytes(size_t n) = 0;

 protected:
  ~RequestWindow() = default;  // not owned through this interface
};

class UpstreamRequest {
 public:
  enum class State : uint8_t {
    kHeaders,  // request headers arriving
    kBody,     // headers complete; body arriving
    kEnded,    // the app finished sending (END_STREAM)
    kDropped,  // nothing more goes upstream: bytes are acknowledged and dropped as they arrive
  };

  // `window`, `limits` and `events` (may be null) must outlive the request; `buffered_bytes`
  // (may be null) follows the unsent bytes held (ProxyCounters::buffered_bytes).
  UpstreamRequest(RequestWindow& window, std::atomic<int64_t>* buffered_bytes,
                  const retry::ReplayLimits& limits, retry::RetryEvents* events)
      : window_(window), body_(buffered_bytes), replay_(limits, events) {}

  // From the app. ------------------------------------------------------------------------------
  // `name` and `value` belong to the app's session; the request keeps references.
  void AddHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value) { headers_.Add(name, value); }
  // The headers are complete; the body follows.
  void EndHeaders() { state_ = State::kBody; }
  // Takes `len` body bytes. False when the request was dropped: the bytes are acknowledged at
  // once and nothing is kept.
  bool Append(const uint8_t* data, size_t len);
  // The app finished sending. False when the request was dropped.
  bool End();
  // Nothing more goes upstream (the call is answered): the unsent bytes and the replay copy go, the
  // app gets credit for what it sent and for whatever it sends from now on.
  void Drop();

  // To the attempts. -------------------------------------------------------------------------
  const HeaderRefs& headers() const { return headers_; }
  // The primary attempt's data source (nghttp2 semantics): moves up to `length` unsent bytes into
  // `buf`, keeps them in the replay copy and gives the app credit for them (only for bytes it
  // did not get credit for already). Sets NGHTTP2_DATA_FLAG_EOF once the app's last byte is read;
  // NGHTTP2_ERR_DEFERRED while nothing is there yet.
  ssize_t Read(uint8_t* buf, size_t length, uint32_t* data_flags);
  // A hedge's own copy of the whole request, taken from the replay copy (the whole request is
  // held: retry::AttemptHost::WholeRequestHeld); read by the hedge alone, without credit (the
  // app had it for every byte already), and cleared when the hedge ends.
  void CopyForHedge();
  ssize_t ReadHedgeCopy(uint8_t* buf, size_t length, uint32_t* data_flags);
  void ClearHedgeCopy() { hedge_copy_.Clear(); }
  // An attempt opening its stream has DATA to send after its HEADERS: a hedge when its copy is
  // not empty, the primary unless the app ended the request and every byte went out.
  bool HasBodyToSend(bool hedge) const { return hedge ? !hedge_copy_.empty() : !AllSent(); }
  // The app ended the request and every byte of it went upstream.
  bool AllSent() const { return state_ == State::kEnded && body_.empty(); }
  // The next attempt sends the request from its first byte: the replay copy goes back in front of
  // the bytes not sent yet (the app got credit for those bytes already).
  void Rewind();
  // The commit point (or an answer passed on): nothing is sent again, so the replay copy and the
  // headers go. Bytes not sent yet still go upstream.
  void Commit() {
    replay_.Release();
    headers_.Clear();
  }
  // The request can be sent again from its first byte: the replay copy holds every byte sent.
  bool CanReplay() const { return replay_.intact(); }

  State state() const { return state_; }
  // Body bytes held and not sent yet.
  size_t unsent_bytes() const { return body_.size(); }
  // The request's retry class, from :path and, for a method whose class depends on its body, the
  // first message (from the bytes sent and not sent). Kept once settled; a class read before the
  // whole first message arrived is the safe one and is not kept.
  retry::RetryClass Classify(const retry::MethodClassifier& classifier);
  // The class once settled (for the access log).
  std::optional<retry::RetryClass> retry_class() const { return retry_class_; }

 private:
  // Gives the app credit for `n` bytes qpoold took from it and will not send (again).
  void Acknowledge(size_t n);

  RequestWindow& window_;
  State state_ = State::kHeaders;
  HeaderRefs headers_;
  ByteQueue body_;                 // taken from the app, not sent yet
  size_t acknowledged_ahead_ = 0;  // bytes at the front of body_ the app got credit for
  retry::ReplayBuffer replay_;     // a copy of the bytes sent, until the commit point
  ByteQueue hedge_copy_;           // the hedge's own copy of the whole request, read by it
  std::optional<retry::RetryClass> retry_class_;  // decided when first needed
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_UPSTREAM_REQUEST_H_
