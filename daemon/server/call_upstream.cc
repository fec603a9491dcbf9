#include "daemon/server/call_upstream.h"

#include "daemon/pool/balancer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"

namespace qpool::server {

// --- From the downstream half --------------------------------------------------------------------

CallUpstream::CallUpstream(CallContext& context, UpstreamRequest& request, AnswerSink& answer,
                           pool::ShareAccount& account)
    : shared_{*this,           context, request, answer, /*deadline=*/{}, /*read=*/false, &account,
              /*keys=*/nullptr},
      controller_(context.retry, context.loop, context.random, *this) {}

void CallUpstream::Start(std::optional<MonoTime> deadline, bool read) {
  shared_.request.EndHeaders();
  shared_.deadline = deadline;
  shared_.read = read;
  start_at_bytes_ = shared_.context.start_at_bytes;
  start_pending_ = true;
  OnRequestMore();
}

void CallUpstream::OnRequestMore() {
  if (!start_pending_) {
    attempts_[controller_.primary()].ResumeRequest();
    return;
  }
  const UpstreamRequest::State state = shared_.request.state();
  if (state == UpstreamRequest::State::kBody && shared_.request.unsent_bytes() < start_at_bytes_)
    return;
  start_pending_ = false;
  if (state == UpstreamRequest::State::kDropped) return;  // answered meanwhile
  controller_.Start(shared_.context.loop.Now(), shared_.deadline);
}

void CallUpstream::Stop() {
  start_pending_ = false;
  controller_.Stop();
  held_answer_.Clear();
  // A normal close after the full answer finds the stream closed already.
  attempts_[controller_.primary()].Release(NGHTTP2_CANCEL);
}

void CallUpstream::DescribeForLog(AccessRecord& record) const {
  record.attempts = controller_.attempts();
  const int node = attempts_[controller_.primary()].node;
  const config::NodeTable& nodes = *shared_.context.nodes;
  if (node >= 0 && static_cast<size_t>(node) < nodes.slots.size()) {
    record.node = nodes.slots[node].name;
  }
}

// --- retry::AttemptHost --------------------------------------------------------------------------

void CallUpstream::StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) {
  Attempt& a = attempts_[slot];
  pool::Balancer& balancer = shared_.context.balancer;
  if (kind == retry::AttemptKind::kHedge) {
    a.reads_own_copy = true;
    shared_.request.CopyForHedge();
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
      shared_.context.balancer.PickOtherThan(pool::Protocol::kGrpc, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

void CallUpstream::RewindRequest() {
  // The failed attempt's bytes go back in front of what the app has sent since.
  shared_.request.Rewind();
  held_answer_.Clear();
}

void CallUpstream::PassOnHeldAnswer() {
  // Qdrant's own answer, as it was; nothing more goes upstream.
  shared_.request.Drop();
  shared_.request.Commit();
  NvArray nva = held_answer_.ToNv();
  shared_.answer.SendHeaders(nva.data(), nva.size(), /*end_stream=*/true,
                             GrpcStatusIn(held_answer_));
  held_answer_.Clear();
}

void CallUpstream::FinishWith(const absl::Status& status) {
  shared_.request
      .Drop();  // nothing more goes upstream (a no-op for the app once its stream is gone)
  shared_.answer.FinishLocally(status);
}

}  // namespace qpool::server
