#include "daemon/pool/node_pool.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace qpool::pool {
namespace {

std::string FormatDuration(Duration d) { return absl::FormatDuration(absl::FromChrono(d)); }

// Deadlines past this are as good as never; it keeps Now() + d and d x 1.1 from overflowing when a
// config sets a huge duration.
constexpr Duration kLongestDeadline = std::chrono::hours(24 * 365 * 100);

MonoTime DeadlineAfter(MonoTime now, Duration after) {
  return now + std::min(after, kLongestDeadline);
}

// `age` x (1 + kConnectionAgeJitter x u), u uniform in [-1, 1): the formula of health::Jittered,
// written here so that the pool does not depend on the health module.
Duration JitteredAge(Duration age, Random& random) {
  const double factor = 1.0 + kConnectionAgeJitter * (2.0 * random.Uniform01() - 1.0);
  return std::chrono::duration_cast<Duration>(std::min(age, kLongestDeadline) * factor);
}

}  // namespace

const char* ConnectionStateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnecting:
      return "connecting";
    case ConnectionState::kReady:
      return "ready";
    case ConnectionState::kBusy:
      return "busy";
    case ConnectionState::kDraining:
      return "draining";
  }
  return "unknown";
}

const char* CloseReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::kGoAway:
      return "goaway";
    case CloseReason::kError:
      return "error";
    case CloseReason::kShutdown:
      return "shutdown";
    case CloseReason::kRecycled:
      return "recycled";
    case CloseReason::kIdle:
      return "idle";
  }
  return "error";
}

NodePool::NodePool(NodePoolOptions options, PendingBudget& budget, ConnectionFactory& factory,
                   EventLoop& loop, Random& random, PoolObserver* observer)
    : options_(std::move(options)),
      budget_(budget),
      factory_(factory),
      loop_(loop),
      random_(random),
      observer_(observer),
      share_timer_(loop.CreateTimer()),
      acquire_timer_(loop.CreateTimer()),
      backoff_timer_(loop.CreateTimer()),
      maintenance_timer_(loop.CreateTimer()) {}

NodePool::~NodePool() {
  shut_down_ = true;
  acquire_timer_->Cancel();
  backoff_timer_->Cancel();
  maintenance_timer_->Cancel();
  share_timer_->Cancel();
  for (StreamWaiter* waiter : waiters_) {
    waiter->queued_ = false;
    if (waiter->account_ != nullptr) waiter->account_->queued--;
  }
  turns_.clear();
  turn_of_.clear();
  for (StreamWaiter* waiter : probes_) waiter->queued_ = false;
  budget_.used -= static_cast<uint32_t>(waiters_.size());
  waiters_.clear();
  probes_.clear();
  // Abort() reports synchronously and then never again; collect first since reports edit lists.
  std::vector<std::shared_ptr<PoolConnection>> conns;
  for (SlotList* list : {&connecting_, &ready_, &busy_, &draining_}) {
    for (Slot& slot : *list) conns.push_back(slot.conn);
  }
  for (auto& conn : conns) conn->Abort();
}

void NodePool::Start() { Service(); }

NodePool::AcquireResult NodePool::Acquire(StreamWaiter& waiter) {
  if (shut_down_) {
    return {AcquireOutcome::kFailed, nullptr,
            absl::UnavailableError("qpool is shutting down and takes no new calls")};
  }
  if (waiter.probe_) {
    // A health probe goes around the queue (docs/security.md): a flood of app calls must not get
    // a healthy node ejected.
    SlotList* list = nullptr;
    SlotList::iterator it;
    if (FindProbeSlot(list, it)) {
      const size_t draining = draining_.size();
      PoolConnection* conn = TakeStream(*list, it);
      if (draining_.size() != draining) Service();
      return {AcquireOutcome::kReady, conn, absl::OkStatus()};
    }
    if (usable()) {
      Enqueue(waiter);
      Service();
      return {AcquireOutcome::kQueued, nullptr, absl::OkStatus()};
    }
  }
  // Waiters come first. A free slot and a waiter coexist only while Service() hands slots out
  // and a waiter's callback acquires again (Service() then serves the queue in turn), or when
  // every queued account is at its stream share: then a caller under its share goes ahead.
  ShareAccount* const account = waiter.account_;
  const bool under_share = account == nullptr || account->streams < StreamShareCap();
  if (!ready_.empty() && under_share && probes_.empty() && (waiters_.empty() || !servicing_)) {
    const size_t draining = draining_.size();
    PoolConnection* conn = TakeStream(ready_, ready_.begin());
    Grant(waiter);
    if (observer_) observer_->OnStreamAcquired(Duration::zero());
    // That stream was the connection's last (max_requests_per_connection): open its replacement.
    // No waiter is queued, so Service() cannot call one back from inside Acquire.
    if (draining_.size() != draining) Service();
    return {AcquireOutcome::kReady, conn, absl::OkStatus()};
  }
  if (!usable()) {
    return {AcquireOutcome::kFailed, nullptr,
            absl::UnavailableError(absl::StrCat(
                "qpool: cannot connect to upstream node ", options_.node_name, " (",
                consecutive_connect_failures_,
                " attempts failed, retrying with backoff): ", last_connect_error_.message()))};
  }
  if (budget_.used >= budget_.limit) {
    if (observer_) observer_->OnQueueOverflow();
    return {AcquireOutcome::kFailed, nullptr,
            absl::ResourceExhaustedError(
                absl::StrCat("qpool: ", budget_.used,
                             " calls already wait for a free upstream stream, the limit set by "
                             "upstream.max_pending (",
                             budget_.limit, ")"))};
  }
  if (account != nullptr && account->queued >= PendingShareCap()) {
    if (observer_) observer_->OnQueueOverflow();
    return {AcquireOutcome::kFailed, nullptr,
            absl::ResourceExhaustedError(absl::StrCat(
                "qpool: this app connection already has ", account->queued,
                " calls waiting for a free upstream stream, its share of upstream.max_pending (",
                PendingShareCap(), " of ", budget_.limit, ", upstream.max_connection_share)"))};
  }
  Enqueue(waiter);
  // Either no connection is ready, so Service() can only open connections and arm the timer, or
  // Service() is already running further up the stack and returns at once: either way it cannot
  // call the waiter back from inside Acquire.
  Service();
  return {AcquireOutcome::kQueued, nullptr, absl::OkStatus()};
}

void NodePool::CancelWait(StreamWaiter& waiter) {
  if (!waiter.queued_) return;
  waiter.queued_ = false;
  if (waiter.probe_) {
    probes_.erase(waiter.queue_pos_);
    return;
  }
  Unlink(waiter);
  // The acquire timer may now point at a waiter that is gone; OnAcquireTimer re-arms for the new
  // head, so leaving it armed is harmless.
}

void NodePool::ReleaseUnused(PoolConnection* conn) { OnStreamClosed(conn); }

void NodePool::ReleaseShare(StreamWaiter& waiter) {
  if (!waiter.holds_share_) return;
  waiter.holds_share_ = false;
  waiter.account_->streams--;
  // A waiter held back by its share may go now; not from inside the caller's own release.
  if (!turns_.empty() && !ready_.empty() && !shut_down_) {
    share_timer_->Arm(Duration::zero(), [this] { Service(); });
  }
}

uint32_t NodePool::StreamShareCap() const {
  if (options_.max_connection_share >= 1.0) return UINT32_MAX;
  const double slots = static_cast<double>(options_.max_connections) *
                       static_cast<double>(options_.max_streams_per_connection);
  return static_cast<uint32_t>(
      std::clamp(std::ceil(options_.max_connection_share * slots), 1.0, double{UINT32_MAX}));
}

uint32_t NodePool::PendingShareCap() const {
  if (options_.max_connection_share >= 1.0) return UINT32_MAX;
  return static_cast<uint32_t>(std::clamp(std::floor(options_.max_connection_share * budget_.limit),
                                          1.0, double{UINT32_MAX}));
}

void NodePool::Grant(StreamWaiter& waiter) {
  if (waiter.account_ == nullptr || waiter.holds_share_) return;
  waiter.holds_share_ = true;
  waiter.account_->streams++;
}

void NodePool::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  backoff_timer_->Cancel();
  maintenance_timer_->Cancel();
  maintenance_at_ = MonoTime::max();
  FailAllWaiters(absl::UnavailableError("qpool is shutting down and takes no new calls"));
  std::vector<std::shared_ptr<PoolConnection>> to_abort;
  std::vector<std::shared_ptr<PoolConnection>> to_drain;
  for (Slot& slot : connecting_) to_abort.push_back(slot.conn);
  for (SlotList* list : {&ready_, &busy_}) {
    while (!list->empty()) {
      to_drain.push_back(list->front().conn);
      Transition(*list, list->begin(), ConnectionState::kDraining);
    }
  }
  for (auto& conn : to_abort) conn->Abort();
  for (auto& conn : to_drain) conn->Drain();
}

void NodePool::UpdateOptions(NodePoolOptions options) {
  options.node_name = options_.node_name;
  if (retired_) options.min_connections = 0;
  options_ = std::move(options);
  if (shut_down_) return;
  // Recompute ready/busy against the new stream cap.
  for (SlotList* list : {&ready_, &busy_}) {
    for (auto it = list->begin(); it != list->end();) {
      auto next = std::next(it);
      Rebalance(*list, it);
      it = next;
    }
  }
  DrainIdleSurplus();
  // The maintenance scan re-reads the age and idle deadlines.
  maintenance_at_ = MonoTime::max();
  maintenance_timer_->Cancel();
  ScheduleMaintenance(loop_.Now());
  Service();
}

void NodePool::Retire() {
  if (retired_ || shut_down_) return;
  retired_ = true;
  options_.min_connections = 0;
  SPDLOG_INFO("upstream {}: removed from the node set; draining ({} calls in flight, {} waiting)",
              options_.node_name, streams_in_flight_, waiters_.size());
  Service();
}

void NodePool::DrainIdleSurplus() {
  if (shut_down_) return;
  const bool drain_all = retired_ && waiters_.empty() && probes_.empty();
  uint32_t total = TotalConnections();
  for (auto it = ready_.end(); it != ready_.begin();) {
    auto candidate = std::prev(it);
    if (candidate->streams == 0 && (drain_all || total > options_.max_connections)) {
      Recycle(ready_, candidate, retired_ ? CloseReason::kShutdown : CloseReason::kIdle);
      total--;
    } else {
      it = candidate;
    }
  }
}

bool NodePool::usable() const { return !(in_backoff_ && ready_.empty() && busy_.empty()); }

NodePoolStats NodePool::stats() const {
  NodePoolStats stats;
  stats.connecting = static_cast<uint32_t>(connecting_.size());
  stats.ready = static_cast<uint32_t>(ready_.size());
  stats.busy = static_cast<uint32_t>(busy_.size());
  stats.draining = static_cast<uint32_t>(draining_.size());
  for (const SlotList* list : {&ready_, &busy_, &draining_}) {
    for (const Slot& slot : *list) stats.streams_in_flight += slot.streams;
  }
  stats.waiting = static_cast<uint32_t>(waiters_.size() + probes_.size());
  stats.consecutive_connect_failures = consecutive_connect_failures_;
  return stats;
}

std::vector<NodePool::ConnectionInfo> NodePool::Connections() const {
  std::vector<ConnectionInfo> rows;
  for (const SlotList* list : {&connecting_, &ready_, &busy_, &draining_}) {
    for (const Slot& slot : *list) {
      rows.push_back(
          {slot.state, slot.streams, slot.StreamCap(options_.max_streams_per_connection)});
    }
  }
  return rows;
}

Duration NodePool::LongestWait() const {
  const StreamWaiter* oldest = OldestWaiter();
  if (oldest == nullptr) return Duration::zero();
  return loop_.Now() - oldest->queued_at_;
}

ConnectionState NodePool::StateOf(const PoolConnection* conn) const {
  for (const SlotList* list : {&connecting_, &ready_, &busy_, &draining_}) {
    for (const Slot& slot : *list) {
      if (slot.conn.get() == conn) return slot.state;
    }
  }
  return ConnectionState::kDraining;
}

// --- Connection events ---------------------------------------------------------------------

void NodePool::OnConnected(PoolConnection* conn, uint32_t peer_max_streams) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it)) return;
  if (consecutive_connect_failures_ > 0) {
    SPDLOG_INFO("upstream {}: connected after {} failed attempts", options_.node_name,
                consecutive_connect_failures_);
  }
  consecutive_connect_failures_ = 0;
  last_connect_error_ = absl::OkStatus();
  it->peer_max_streams = peer_max_streams;
  if (list != &connecting_) return;  // drained while connecting: stays draining
  const MonoTime now = loop_.Now();
  it->idle_since = now;
  if (options_.max_connection_age > Duration::zero()) {
    it->recycle_at = DeadlineAfter(now, JitteredAge(options_.max_connection_age, random_));
    ScheduleMaintenance(it->recycle_at);
  }
  if (it->recycle_when_up) {  // made with credentials replaced meanwhile (RecycleAll)
    it->recycle_at = now;
    ScheduleMaintenance(now);
  }
  it = Transition(*list, it, ConnectionState::kReady);
  Rebalance(ready_, it);
  // Its idle deadline, when it would put the pool above the floor (OnMaintenanceTimer rechecks).
  if (options_.idle_timeout > Duration::zero() && LiveConnections() > options_.min_connections) {
    ScheduleMaintenance(DeadlineAfter(now, options_.idle_timeout));
  }
  Service();
}

void NodePool::OnPeerMaxStreams(PoolConnection* conn, uint32_t peer_max_streams) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it)) return;
  it->peer_max_streams = peer_max_streams;
  if (list == &ready_ || list == &busy_) {
    Rebalance(*list, it);
    Service();
  }
}

void NodePool::OnConnectFailed(PoolConnection* conn, const absl::Status& reason) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it)) return;
  RemoveSlot(*list, it, reason);
  if (shut_down_) return;
  consecutive_connect_failures_++;
  last_connect_error_ = reason;
  // Log the 1st, 2nd, 4th, 8th ... failure in a row: a node that stays down does not flood the log.
  if ((consecutive_connect_failures_ & (consecutive_connect_failures_ - 1)) == 0) {
    SPDLOG_WARN("upstream {}: connect failed ({} in a row): {}", options_.node_name,
                consecutive_connect_failures_, std::string(reason.message()));
  }
  if (observer_) observer_->OnConnectFailed(reason);
  in_backoff_ = true;
  backoff_timer_->Arm(NextBackoff(), [this] { OnBackoffTimer(); });
  Service();
}

void NodePool::OnGoAway(PoolConnection* conn) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it) || list == &draining_) return;
  Transition(*list, it, ConnectionState::kDraining);
  Service();
}

void NodePool::OnStreamClosed(PoolConnection* conn) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it) || it->streams == 0) return;
  it->streams--;
  streams_in_flight_--;
  if (list == &ready_ || list == &busy_) {
    if (it->streams == 0 && options_.idle_timeout > Duration::zero()) {
      it->idle_since = loop_.Now();
      // Only above the floor can idleness close it; a connection opened later arms its own
      // deadline, and the scan then looks at every idle connection.
      if (LiveConnections() > options_.min_connections) {
        ScheduleMaintenance(DeadlineAfter(it->idle_since, options_.idle_timeout));
      }
    }
    Rebalance(*list, it);
    Service();
  }
}

void NodePool::OnClosed(PoolConnection* conn, const absl::Status& reason) {
  SlotList* list;
  SlotList::iterator it;
  if (!Find(conn, list, it)) return;
  CloseReason why =
      it->state == ConnectionState::kDraining ? it->drain_reason : CloseReason::kGoAway;
  if (shut_down_) {
    why = CloseReason::kShutdown;
  } else if (!reason.ok()) {
    why = CloseReason::kError;
  }
  RemoveSlot(*list, it, reason);
  if (observer_) observer_->OnConnectionClosed(why, reason);
  if (!shut_down_) Service();
}

// --- Internals -------------------------------------------------------------------------------

NodePool::SlotList& NodePool::ListFor(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnecting:
      return connecting_;
    case ConnectionState::kReady:
      return ready_;
    case ConnectionState::kBusy:
      return busy_;
    case ConnectionState::kDraining:
      return draining_;
  }
  return draining_;
}

bool NodePool::Find(const PoolConnection* conn, SlotList*& list, SlotList::iterator& it) {
  // Pools are small (max_connections <= 1024, typically 4): a scan beats a map here.
  for (SlotList* candidate : {&ready_, &busy_, &connecting_, &draining_}) {
    for (auto i = candidate->begin(); i != candidate->end(); ++i) {
      if (i->conn.get() == conn) {
        list = candidate;
        it = i;
        return true;
      }
    }
  }
  return false;
}

bool NodePool::FindProbeSlot(SlotList*& list, SlotList::iterator& it) {
  if (!ready_.empty()) {
    list = &ready_;
    it = ready_.begin();
    return true;
  }
  for (auto i = busy_.begin(); i != busy_.end(); ++i) {
    if (i->streams < i->peer_max_streams) {
      list = &busy_;
      it = i;
      return true;
    }
  }
  return false;
}

StreamWaiter* NodePool::OldestWaiter() const {
  StreamWaiter* oldest = nullptr;
  for (const std::list<StreamWaiter*>* queue : {&waiters_, &probes_}) {
    if (!queue->empty() && (oldest == nullptr || queue->front()->queued_at_ < oldest->queued_at_)) {
      oldest = queue->front();
    }
  }
  return oldest;
}

PoolConnection* NodePool::TakeStream(SlotList& list, SlotList::iterator it) {
  it->streams++;
  it->streams_handed_out++;
  streams_in_flight_++;
  PoolConnection* conn = it->conn.get();
  if (options_.max_requests_per_connection > 0 &&
      it->streams_handed_out >= options_.max_requests_per_connection) {
    Recycle(list, it, CloseReason::kRecycled);
  } else {
    Rebalance(list, it);
  }
  return conn;
}

void NodePool::Recycle(SlotList& list, SlotList::iterator it, CloseReason reason) {
  SPDLOG_DEBUG("upstream {}: recycling a connection ({}, {} streams handed out, {} in flight)",
               options_.node_name, CloseReasonName(reason), it->streams_handed_out, it->streams);
  it->drain_reason = reason;
  std::shared_ptr<PoolConnection> conn = it->conn;
  Transition(list, it, ConnectionState::kDraining);
  // Drain() on a later turn: the stream just handed out (max_requests_per_connection) is only
  // reserved; its caller opens it when the pool returns. A connection drained with no stream open
  // closes at once, and after our GOAWAY it would not take the caller's stream. The slot is
  // draining already, so no other stream goes to it meanwhile. The lambda owns the connection:
  // the pool may be gone when it runs (Drain() after Abort() is a no-op).
  loop_.Post([conn = std::move(conn)] { conn->Drain(); });
}

uint32_t NodePool::LiveConnections() const {
  return static_cast<uint32_t>(connecting_.size() + ready_.size() + busy_.size());
}

NodePool::SlotList::iterator NodePool::Transition(SlotList& from_list, SlotList::iterator it,
                                                  ConnectionState to) {
  const ConnectionState from = it->state;
  SlotList& to_list = ListFor(to);
  it->state = to;
  // Ready connections fill in order (front first), so new ones go to the back.
  to_list.splice(to_list.end(), from_list, it);
  if (observer_ && from != to) observer_->OnConnectionState(&from, &to);
  return it;
}

void NodePool::Rebalance(SlotList& list, SlotList::iterator it) {
  const bool full = it->streams >= it->StreamCap(options_.max_streams_per_connection);
  if (full && it->state == ConnectionState::kReady) {
    Transition(list, it, ConnectionState::kBusy);
  } else if (!full && it->state == ConnectionState::kBusy) {
    Transition(list, it, ConnectionState::kReady);
  }
}

void NodePool::RemoveSlot(SlotList& list, SlotList::iterator it, const absl::Status& reason) {
  const ConnectionState from = it->state;
  streams_in_flight_ -= it->streams;
  list.erase(it);
  if (observer_) observer_->OnConnectionState(&from, nullptr);
}

uint32_t NodePool::TotalConnections() const {
  return static_cast<uint32_t>(connecting_.size() + ready_.size() + busy_.size() +
                               draining_.size());
}

uint32_t NodePool::ConnectingCapacity() const {
  // A connection recycled after max_requests_per_connection streams takes no more than that.
  uint32_t per_connection = options_.max_streams_per_connection;
  if (options_.max_requests_per_connection > 0) {
    per_connection = std::min(per_connection, options_.max_requests_per_connection);
  }
  return static_cast<uint32_t>(connecting_.size()) * per_connection;
}

void NodePool::Service() {
  if (servicing_) return;
  servicing_ = true;
  // Health probes first (a slot on a ready connection or the headroom above the cap), then app
  // calls on free slots, oldest first.
  SlotList* probe_list = nullptr;
  SlotList::iterator probe_slot;
  while (!probes_.empty() && FindProbeSlot(probe_list, probe_slot)) {
    StreamWaiter* waiter = probes_.front();
    probes_.pop_front();
    waiter->queued_ = false;
    PoolConnection* conn = TakeStream(*probe_list, probe_slot);
    waiter->OnStreamReady(conn);  // may re-enter Acquire/CancelWait: lists stay consistent
  }
  while (!waiters_.empty() && !ready_.empty()) {
    StreamWaiter* waiter = NextInTurn();
    if (waiter == nullptr) break;  // every queued account is at its share
    PoolConnection* conn = TakeStream(ready_, ready_.begin());
    Grant(*waiter);
    if (observer_) observer_->OnStreamAcquired(loop_.Now() - waiter->queued_at_);
    waiter->OnStreamReady(conn);  // may re-enter Acquire/CancelWait: lists stay consistent
  }
  // Open connections for what waits beyond the capacity already on its way, and up to the floor.
  if (!shut_down_ && !in_backoff_) {
    while (TotalConnections() < options_.max_connections &&
           (waiters_.size() + probes_.size() > ConnectingCapacity() ||
            LiveConnections() < options_.min_connections)) {
      OpenConnection();
    }
  }
  if ((!waiters_.empty() || !probes_.empty()) && !usable()) {
    FailAllWaiters(absl::UnavailableError(absl::StrCat("qpool: cannot connect to upstream node ",
                                                       options_.node_name, ": ",
                                                       last_connect_error_.message())));
  }
  if (retired_) DrainIdleSurplus();
  ArmAcquireTimer();
  servicing_ = false;
}

void NodePool::OpenConnection() {
  opened_any_ = true;
  Slot slot;
  slot.conn = factory_.Connect(*this);
  slot.state = ConnectionState::kConnecting;
  connecting_.push_back(std::move(slot));
  const ConnectionState to = ConnectionState::kConnecting;
  if (observer_) observer_->OnConnectionState(nullptr, &to);
}

void NodePool::Enqueue(StreamWaiter& waiter) {
  waiter.queued_ = true;
  waiter.queued_at_ = loop_.Now();
  if (waiter.probe_) {
    waiter.queue_pos_ = probes_.insert(probes_.end(), &waiter);
    return;
  }
  waiter.queue_pos_ = waiters_.insert(waiters_.end(), &waiter);
  budget_.used++;
  auto [it, added] = turn_of_.try_emplace(waiter.account_);
  if (added) it->second = turns_.insert(turns_.end(), Turn{waiter.account_, {}});
  std::list<StreamWaiter*>& turn = it->second->waiters;
  waiter.turn_pos_ = turn.insert(turn.end(), &waiter);
  if (waiter.account_ != nullptr) waiter.account_->queued++;
}

void NodePool::Unlink(StreamWaiter& waiter) {
  waiters_.erase(waiter.queue_pos_);
  waiter.queued_ = false;
  budget_.used--;
  auto it = turn_of_.find(waiter.account_);
  it->second->waiters.erase(waiter.turn_pos_);
  if (it->second->waiters.empty()) {
    turns_.erase(it->second);
    turn_of_.erase(it);
  }
  if (waiter.account_ != nullptr) waiter.account_->queued--;
}

StreamWaiter* NodePool::NextInTurn() {
  const uint32_t cap = StreamShareCap();
  for (auto turn = turns_.begin(); turn != turns_.end(); ++turn) {
    if (turn->account != nullptr && turn->account->streams >= cap) continue;
    StreamWaiter* waiter = turn->waiters.front();
    // Served: its account goes to the back of the round (if it still waits after Unlink).
    turns_.splice(turns_.end(), turns_, turn);
    Unlink(*waiter);
    return waiter;
  }
  return nullptr;
}

StreamWaiter* NodePool::Dequeue() {
  StreamWaiter* waiter = waiters_.front();
  Unlink(*waiter);
  return waiter;
}

void NodePool::FailAllWaiters(const absl::Status& status) {
  while (!probes_.empty()) {
    StreamWaiter* probe = probes_.front();
    probes_.pop_front();
    probe->queued_ = false;
    probe->OnAcquireFailed(status);
  }
  while (!waiters_.empty()) Dequeue()->OnAcquireFailed(status);
  acquire_timer_->Cancel();
}

void NodePool::ArmAcquireTimer() {
  // Called whenever the queue's head changes (every queued acquire that gets a stream, under
  // load): a timer armed for an earlier deadline stays, fires early, finds nobody expired and
  // arms again for the head then, instead of being re-armed on every change. Only an earlier
  // deadline (or none armed) arms now.
  const StreamWaiter* oldest = OldestWaiter();
  if (oldest == nullptr) return;  // an armed timer fires, finds nobody, and stops
  const MonoTime deadline = oldest->queued_at_ + options_.acquire_timeout;
  if (acquire_timer_->armed() && acquire_timer_at_ <= deadline) return;
  acquire_timer_at_ = deadline;
  const Duration delay = std::max(Duration::zero(), deadline - loop_.Now());
  acquire_timer_->Arm(delay, [this] { OnAcquireTimer(); });
}

void NodePool::OnAcquireTimer() {
  const MonoTime now = loop_.Now();
  while (!probes_.empty() && probes_.front()->queued_at_ + options_.acquire_timeout <= now) {
    StreamWaiter* probe = probes_.front();
    probes_.pop_front();
    probe->queued_ = false;
    probe->OnAcquireFailed(absl::UnavailableError(
        absl::StrCat("qpool: every stream to upstream node ", options_.node_name,
                     " the node allows is in use (its SETTINGS_MAX_CONCURRENT_STREAMS)")));
  }
  while (!waiters_.empty() && waiters_.front()->queued_at_ + options_.acquire_timeout <= now) {
    StreamWaiter* waiter = Dequeue();
    if (observer_) observer_->OnAcquireTimeout();
    waiter->OnAcquireFailed(absl::UnavailableError(absl::StrCat(
        "qpool: no stream to upstream node ", options_.node_name, " became free within ",
        FormatDuration(options_.acquire_timeout), " (upstream.acquire_timeout); ",
        TotalConnections(), " of ", options_.max_connections, " connections open (",
        options_.max_connections_key, ")")));
  }
  ArmAcquireTimer();
}

void NodePool::OnBackoffTimer() {
  in_backoff_ = false;
  Service();
}

void NodePool::RecycleAll(Duration spread) {
  if (shut_down_) return;
  const MonoTime now = loop_.Now();
  MonoTime first = MonoTime::max();
  for (SlotList* list : {&ready_, &busy_}) {
    for (Slot& slot : *list) {
      const MonoTime at = now + std::chrono::duration_cast<Duration>(spread * random_.Uniform01());
      slot.recycle_at = std::min(slot.recycle_at, at);
      first = std::min(first, slot.recycle_at);
    }
  }
  for (Slot& slot : connecting_) slot.recycle_when_up = true;
  if (first != MonoTime::max()) ScheduleMaintenance(first);
}

void NodePool::ScheduleMaintenance(MonoTime at) {
  if (shut_down_ || at >= maintenance_at_) return;
  maintenance_at_ = at;
  maintenance_timer_->Arm(std::max(Duration::zero(), at - loop_.Now()),
                          [this] { OnMaintenanceTimer(); });
}

void NodePool::OnMaintenanceTimer() {
  maintenance_at_ = MonoTime::max();
  const MonoTime now = loop_.Now();
  // Age: ready and busy connections alike; a busy one's streams finish while it drains.
  for (SlotList* list : {&ready_, &busy_}) {
    for (auto it = list->begin(); it != list->end();) {
      auto next = std::next(it);  // Recycle moves `it` to draining_
      if (it->recycle_at <= now) Recycle(*list, it, CloseReason::kRecycled);
      it = next;
    }
  }
  // Idle: from the back of each list (streams fill the ready list from the front, so the back is
  // where load leaves connections idle), and never below min_connections.
  if (options_.idle_timeout > Duration::zero()) {
    uint32_t live = LiveConnections();
    for (SlotList* list : {&ready_, &busy_}) {
      for (auto it = list->end(); it != list->begin() && live > options_.min_connections;) {
        auto candidate = std::prev(it);
        const bool idle = candidate->streams == 0 &&
                          DeadlineAfter(candidate->idle_since, options_.idle_timeout) <= now;
        if (idle) {
          Recycle(*list, candidate, CloseReason::kIdle);  // `it` stays valid
          live--;
        } else {
          it = candidate;
        }
      }
    }
  }
  Service();  // replacements, for min_connections or waiting calls
  // The next deadline: every age; idle ones only while above the floor.
  MonoTime next = MonoTime::max();
  const bool above_floor = LiveConnections() > options_.min_connections;
  for (SlotList* list : {&ready_, &busy_}) {
    for (const Slot& slot : *list) {
      next = std::min(next, slot.recycle_at);
      if (above_floor && slot.streams == 0 && options_.idle_timeout > Duration::zero()) {
        next = std::min(next, DeadlineAfter(slot.idle_since, options_.idle_timeout));
      }
    }
  }
  if (next != MonoTime::max()) ScheduleMaintenance(next);
}

Duration NodePool::NextBackoff() {
  // Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniform draw in
  // [0, min(max, base * 2^(failures - 1))].
  const uint32_t exponent = std::min<uint32_t>(consecutive_connect_failures_ - 1, 20);
  Duration ceiling = options_.connect_backoff_base * (int64_t{1} << exponent);
  ceiling = std::min(ceiling, options_.connect_backoff_max);
  return std::chrono::duration_cast<Duration>(ceiling * random_.Uniform01());
}

}  // namespace qpool::pool
