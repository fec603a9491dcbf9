#include "daemon/server/call_upstream.h"

#include "daemon/pool/balancer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/call.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"

namespace qpool::server {

// --- From the downstream half --------------------------------------------------------------------

CallUpstream::CallUpstream(Call& call, CallContext& context)
    : call_(call),
      context_(context),
      request_(call, &context.counters.buffered_bytes, context.retry.replay, context.retry.events),
      controller_(context.retry, context.loop, context.random, *this) {}

void CallUpstream::Start(MonoTime /*now*/, std::optional<MonoTime> deadline) {
  request_.EndHeaders();
  deadline_ = deadline;
  start_at_bytes_ = context_.start_at_bytes;
  start_pending_ = true;
  OnRequestMore();
}

void CallUpstream::OnRequestMore() {
  if (!start_pending_) {
    attempts_[controller_.primary()].ResumeRequest();
    return;
  }
  const UpstreamRequest::State state = request_.state();
  if (state == UpstreamRequest::State::kBody && request_.unsent_bytes() < start_at_bytes_) return;
  start_pending_ = false;
  if (state == UpstreamRequest::State::kDropped) return;  // answered meanwhile
  controller_.Start(context_.loop.Now(), deadline_);
}

void CallUpstream::Stop() {
  start_pending_ = false;
  controller_.Stop();
  held_answer_.Clear();
  // A normal close after the full answer finds the stream closed already.
  attempts_[controller_.primary()].Release(NGHTTP2_CANCEL);
}

// --- retry::AttemptHost --------------------------------------------------------------------------

void CallUpstream::StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) {
  Attempt& a = attempts_[slot];
  pool::Balancer& balancer = context_.balancer;
  if (kind == retry::AttemptKind::kHedge) {
    a.reads_own_copy = true;
    request_.CopyForHedge();
  } else {
    // The balancer's choice; a retry goes to another node when there is one to go to.
    size_t pick = balancer.Pick(pool::Protocol::kGrpc);
    if (avoid_node >= 0 && pick == static_cast<size_t>(avoid_node)) {
      if (std::optional<size_t> other = balancer.PickOtherThan(pool::Protocol::kGrpc, pick)) {
        pick = *other;
      }
    }
    node = static_cast<int>(pick);
  }
  a.Acquire(*balancer.pool(pool::Protocol::kGrpc, static_cast<size_t>(node)), node);
}

int CallUpstream::PickHedgeNode(int node) {
  if (node < 0) return -1;
  const std::optional<size_t> other =
      context_.balancer.PickOtherThan(pool::Protocol::kGrpc, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

void CallUpstream::RewindRequest() {
  // The failed attempt's bytes go back in front of what the app has sent since.
  request_.Rewind();
  held_answer_.Clear();
}

void CallUpstream::PassOnHeldAnswer() {
  // Qdrant's own answer, as it was; nothing more goes upstream.
  request_.Drop();
  request_.Commit();
  NvArray nva = held_answer_.ToNv();
  call_.SendResponseHeaders(nva.data(), nva.size(), /*end_stream=*/true,
                            GrpcStatusIn(held_answer_));
  held_answer_.Clear();
}

void CallUpstream::FinishWith(const absl::Status& status) { call_.FinishLocally(status); }

}  // namespace qpool::server
