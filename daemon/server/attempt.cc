#include "daemon/server/attempt.h"

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/upstream_connection.h"

namespace qpool::server {
namespace {

// The key qpoold sends on a call (the read-only one for a read, when set); empty: none. The keys
// are taken from the worker's context when the call's first attempt opens and kept in `shared`
// for its retries and hedges.
std::string_view CallApiKey(AttemptShared& shared) {
  if (shared.context.call_keys == nullptr) return {};
  if (shared.keys == nullptr) shared.keys = shared.context.call_keys->Snapshot();
  if (shared.keys == nullptr) return {};
  return shared.keys->For(shared.read);
}

}  // namespace

// --- Getting a stream ----------------------------------------------------------------------------

void Attempt::Acquire(pool::NodePool& pool_to_use, int at_node) {
  set_account(shared_.account);  // fair sharing between app connections
  const pool::NodePool::AcquireResult result = pool_to_use.Acquire(*this);
  if (result.outcome == pool::NodePool::AcquireOutcome::kFailed) {
    const bool unreachable =
        result.status.code() == absl::StatusCode::kUnavailable && !pool_to_use.usable();
    NotStarted(at_node, result.status, unreachable);
    return;
  }
  pool = &pool_to_use;  // when queued, OnStreamReady or OnAcquireFailed follows
  node = at_node;
  if (result.outcome == pool::NodePool::AcquireOutcome::kReady) {
    Open(*static_cast<UpstreamConnection*>(result.connection));
  }
}

void Attempt::OnStreamReady(pool::PoolConnection* conn) {
  Open(*static_cast<UpstreamConnection*>(conn));
}

void Attempt::OnAcquireFailed(const absl::Status& status) {
  const bool unreachable =
      status.code() == absl::StatusCode::kUnavailable && pool != nullptr && !pool->usable();
  NotStarted(node, status, unreachable);
}

void Attempt::NotStarted(int at_node, const absl::Status& status, bool node_unreachable) {
  Detach();
  shared_.owner.OnAttemptNotStarted(slot, at_node, status, node_unreachable);
}

void Attempt::Open(UpstreamConnection& conn) {
  // Headers as received, with grpc-timeout lowered by the time spent in qpoold so far, and the
  // API key qpoold holds (auth::ApiKeys) when it has one for this call.
  const std::string_view our_key = CallApiKey(shared_);
  const bool replace_key = !our_key.empty() && shared_.context.key_mode == auth::KeyMode::kOverride;
  const bool secure = conn.secure();
  const std::optional<MonoTime>& deadline = shared_.deadline;
  bool app_key = false;
  std::string remaining;
  NvArray nva;
  shared_.request.headers().ForEach([&](std::string_view name, std::string_view value) {
    if (name == "grpc-timeout" && deadline) {
      remaining = FormatGrpcTimeout(*deadline - shared_.context.loop.Now());
      nva.push_back(MakeNv(name, remaining));
    } else if (secure && name == ":scheme") {
      nva.push_back(MakeNv(name, "https"));
    } else if (!our_key.empty() && name == "api-key") {
      app_key = true;
      if (!replace_key) nva.push_back(MakeNv(name, value));
    } else {
      nva.push_back(MakeNv(name, value));
    }
  });
  if (!our_key.empty() && (replace_key || !app_key)) nva.push_back(ApiKeyNv(our_key));
  const int32_t stream_id = conn.SubmitRequest(*this, nva.data(), nva.size(),
                                               shared_.request.HasBodyToSend(reads_own_copy));
  if (stream_id < 0) {
    pool->ReleaseUnused(&conn);
    NotStarted(
        node,
        absl::UnavailableError(absl::StrCat("qpool: cannot open a stream to upstream node ",
                                            conn.node_name(), ": ", nghttp2_strerror(stream_id))),
        /*node_unreachable=*/false);
    return;
  }
  connection = &conn;
  connection_ref = conn.shared_from_this();
  id = stream_id;
  started_at = shared_.context.loop.Now();
  node_metrics = &shared_.context.metrics.node(static_cast<size_t>(node));
  conn.ScheduleFlush();
  shared_.owner.OnAttemptSent(slot, node, started_at);
}

// --- The stream ----------------------------------------------------------------------------------

void Attempt::OnResponseHeader(bool trailers, nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
  if (shared_.answer.finished()) return;
  if (!trailers) {
    response_headers.Add(name, value);
  } else if (shared_.owner.IsPrimary(slot)) {  // a hedge is promoted or gone by its headers' end
    shared_.answer.AddTrailer(HeaderRefs::View(name), HeaderRefs::View(value));
  }
}

void Attempt::OnResponseHeadersEnd(bool end_stream) {
  if (shared_.answer.finished()) return;
  int code = -1;
  retry::AttemptOutcome outcome;
  if (end_stream) {  // trailers-only: a whole answer
    code = GrpcStatusIn(response_headers);
    outcome.failure = FailureOfGrpcStatus(code);
    outcome.pushback = PushbackIn(response_headers);
  }
  if (shared_.owner.OnAttemptHeaders(slot, outcome, end_stream, shared_.request.AllSent()) !=
      retry::HeadersVerdict::kForward) {
    return;
  }
  // The commit point: this attempt's answer is the call's (the controller made it the primary,
  // if it was the hedge); the replay copy goes.
  shared_.request.Commit();
  NvArray nva = response_headers.ToNv();
  shared_.answer.SendHeaders(nva.data(), nva.size(), end_stream, code);
  response_headers.Clear();
}

void Attempt::OnResponseTrailersEnd() {
  if (!shared_.answer.finished() && shared_.owner.IsPrimary(slot)) shared_.answer.End();
}

void Attempt::OnResponseData(const uint8_t* data, size_t len) {
  shared_.context.metrics.AddResponseBytes(len);
  if (shared_.answer.finished() || !shared_.owner.IsPrimary(slot)) {
    if (attached()) connection->ConsumeResponseData(id, len);
    return;
  }
  shared_.answer.AppendData(data, len);
}

void Attempt::OnResponseEnd() {
  // DATA with END_STREAM and no trailers: not gRPC, but pass it on as the end of the response.
  if (!shared_.answer.finished() && shared_.owner.IsPrimary(slot)) shared_.answer.End();
}

void Attempt::OnClosed(uint32_t h2_error_code, bool connection_lost) {
  EndMetrics(shared_.context.loop.Now());
  if (shared_.answer.finished()) {
    // The answer is complete (or settled): the stream's end changes nothing.
    Detach();
    shared_.owner.OnAttemptFinished(slot);
    shared_.request.Drop();
    return;
  }
  const std::string node_name = attached() ? connection->node_name() : "";
  Detach();
  retry::AttemptOutcome outcome;
  absl::Status final_status;
  if (h2_error_code == kRequestNotSent) {
    // Refused by nghttp2 here, not by Qdrant: never taken for an upstream refusal, never replayed.
    outcome.failure = retry::Failure::kNotSent;
    final_status = absl::ResourceExhaustedError(
        "qpool: request headers too large to send upstream (over 64 KiB encoded); not sent");
  } else if (connection_lost) {
    outcome.failure = retry::Failure::kUnavailable;
    final_status = absl::UnavailableError(
        absl::StrCat("qpool: connection to upstream node ", node_name, " lost before the answer"));
  } else if (h2_error_code == NGHTTP2_REFUSED_STREAM) {
    outcome.failure = retry::Failure::kNeverReached;
    final_status = absl::UnavailableError(
        absl::StrCat("qpool: upstream node ", node_name, " refused the stream (not processed)"));
  } else {
    // The upstream reset the stream (CANCEL, INTERNAL_ERROR, ...) or ended it without an answer.
    outcome.failure =
        h2_error_code != NGHTTP2_NO_ERROR ? retry::Failure::kAborted : retry::Failure::kOther;
  }
  if (shared_.owner.OnAttemptEnded(slot, outcome, final_status) ==
      retry::EndVerdict::kPassOnClose) {
    // Passed on as the app would have seen it talking to Qdrant directly.
    shared_.request.Drop();
    shared_.answer.PassOnReset(h2_error_code);
  }
}

ssize_t Attempt::ReadRequestBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  return reads_own_copy ? shared_.request.ReadHedgeCopy(buf, length, data_flags)
                        : shared_.request.Read(buf, length, data_flags);
}

void Attempt::ResumeRequest() {
  if (attached() && !reads_own_copy) connection->ResumeRequestData(id);
}

void Attempt::ConsumeResponse(size_t n) {
  if (attached()) connection->ConsumeResponseData(id, n);
}

// --- Letting go ----------------------------------------------------------------------------------

void Attempt::Release(uint32_t h2_error_code) {
  if (attached()) {
    EndMetrics(shared_.context.loop.Now());
    connection->ResetStream(id, h2_error_code);
  } else if (pool != nullptr) {
    pool->CancelWait(*this);  // still queued for a stream
  }
  Detach();
}

void Attempt::Detach() {
  if (reads_own_copy) {
    reads_own_copy = false;  // the next attempt in this slot may be a primary
    shared_.request.ClearHedgeCopy();
  }
  response_headers.Clear();  // references into the upstream session
  hook.unlink();
  connection = nullptr;
  connection_ref.reset();
  id = -1;
  if (pool != nullptr) pool->ReleaseShare(*this);  // no-op unless it held a slot
  pool = nullptr;
  node_metrics = nullptr;
}

void Attempt::EndMetrics(MonoTime now) {
  if (node_metrics == nullptr) return;
  node_metrics->attempt_duration.Observe(now - started_at);
  node_metrics = nullptr;
}

}  // namespace qpool::server
