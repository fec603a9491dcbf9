#include "daemon/server/session_set.h"

#include <malloc.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/config/config.h"
#include "daemon/server/downstream_session.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/small_alloc.h"

namespace qpool::server {

bool TrimWatermark::Closed(size_t held) {
  peak_ = std::max(peak_, held);
  if (peak_ < kMinPeak || held > peak_ / 2) return false;
  peak_ = held;
  return true;
}

SessionSet::SessionSet(ConnectionContext& context, std::function<bool()> others_idle)
    : context_(context), others_idle_(std::move(others_idle)) {}

SessionSet::~SessionSet() = default;

Duration SessionSet::SweepPeriod(const config::ServerConfig& server) {
  // One timer per worker rather than one per connection, and nothing on the data path.
  Duration shortest = Duration::max();
  for (absl::Duration timeout :
       {server.handshake_timeout, server.idle_timeout, server.stream_idle_timeout}) {
    if (timeout > absl::ZeroDuration()) {
      shortest = std::min(shortest, absl::ToChronoNanoseconds(timeout));
    }
  }
  if (shortest == Duration::max()) return Duration::zero();
  return std::clamp<Duration>(shortest / 4, std::chrono::milliseconds(50), std::chrono::seconds(1));
}

void SessionSet::StartSweep() {
  sweep_period_ = SweepPeriod(context_.config->server);
  if (sweep_period_ == Duration::zero()) return;
  sweep_timer_ = context_.loop.CreateTimer();
  sweep_timer_->Arm(sweep_period_, [this] { Sweep(); });
}

void SessionSet::Adopt(boost::asio::ip::tcp::socket socket, bool refuse) {
  // In a session slab (small_alloc.h): it goes back to the kernel with its crowd.
  auto session = std::allocate_shared<DownstreamSession>(SessionSlabAllocator<DownstreamSession>(),
                                                         context_, std::move(socket));
  sessions_.emplace(session.get(), session);
  context_.counters.downstream_open.fetch_add(1, std::memory_order_relaxed);
  if (refuse) {
    session->Refuse(absl::StrCat("qpool: server.max_client_connections (",
                                 context_.config->server.max_client_connections, ") reached"));
  } else if (draining_) {
    session->Refuse("qpool: shutting down");
  } else {
    session->Start();
  }
}

void SessionSet::Remove(DownstreamSession* session) {
  context_.counters.downstream_open.fetch_sub(1, std::memory_order_relaxed);
  // Keep the session alive until the current event is done with it.
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  std::shared_ptr<DownstreamSession> keep = std::move(it->second);
  sessions_.erase(it);
  context_.loop.Post([keep] {});
  // On a later turn, once the closed sessions themselves are freed.
  if (trim_.Closed(sessions_.size())) context_.loop.Post([] { malloc_trim(0); });
  CheckDrained();
}

void SessionSet::BeginDrain(std::function<void()> on_idle) {
  draining_ = true;
  on_drained_ = std::move(on_idle);
  std::vector<std::shared_ptr<DownstreamSession>> sessions;
  for (auto& [ptr, session] : sessions_) sessions.push_back(session);
  for (auto& session : sessions) session->BeginDrain();
}

void SessionSet::CheckDrained() {
  if (draining_ && sessions_.empty() && (!others_idle_ || others_idle_()) && on_drained_) {
    auto callback = std::move(on_drained_);
    on_drained_ = nullptr;
    callback();
  }
}

void SessionSet::Stop() {
  std::vector<std::shared_ptr<DownstreamSession>> sessions;
  for (auto& [ptr, session] : sessions_) sessions.push_back(session);
  for (auto& session : sessions) session->Abort();
  if (sweep_timer_) sweep_timer_->Cancel();
}

void SessionSet::Sweep() {
  const MonoTime now = context_.loop.Now();
  // Decide first, act after: closing a session removes it from sessions_.
  std::vector<std::pair<std::shared_ptr<DownstreamSession>, DownstreamSession::TimeoutAction>> due;
  for (auto& [ptr, session] : sessions_) {
    const DownstreamSession::TimeoutAction action = ptr->CheckTimeouts(now);
    if (action != DownstreamSession::TimeoutAction::kNone) {
      due.emplace_back(session, action);
    } else {
      ptr->TrimIdle();
    }
  }
  for (auto& [session, action] : due) session->OnTimeout(action);
  // Streams stalled past server.stream_idle_timeout: resetting one closes no connection, but
  // ends calls, which may hand upstream streams to other sessions' calls; a snapshot keeps the
  // walk independent of that.
  std::vector<std::shared_ptr<DownstreamSession>> busy;
  for (auto& [ptr, session] : sessions_) {
    if (ptr->has_calls()) busy.push_back(session);
  }
  for (auto& session : busy) session->CheckStreams(now);
  sweep_timer_->Arm(sweep_period_, [this] { Sweep(); });
}

}  // namespace qpool::server
