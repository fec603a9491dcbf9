#include "daemon/health/health_scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace qpool::health {

const char* TierName(Tier tier) {
  switch (tier) {
    case Tier::kFast:
      return "fast";
    case Tier::kMedium:
      return "medium";
    case Tier::kDeep:
      return "deep";
  }
  return "unknown";
}

HealthScheduler::HealthScheduler(SchedulerOptions options, EventLoop& loop, Random& random,
                                 ProbeRunner& runner, HealthSink& sink)
    : options_(std::move(options)),
      loop_(loop),
      random_(random),
      runner_(runner),
      sink_(sink),
      self_(std::make_shared<HealthScheduler*>(this)) {
  nodes_.reserve(options_.nodes);
  for (size_t n = 0; n < options_.nodes; ++n) {
    nodes_.emplace_back(options_.unhealthy_threshold, options_.healthy_threshold);
    Node& node = nodes_.back();
    node.slots[static_cast<size_t>(Tier::kMedium)].schedule = options_.medium;
    node.slots[static_cast<size_t>(Tier::kDeep)].schedule = options_.deep;
    node.slots[static_cast<size_t>(Tier::kFast)].schedule.enabled = false;  // on the workers
    for (Slot& slot : node.slots) {
      slot.next = loop_.CreateTimer();
      slot.timeout = loop_.CreateTimer();
    }
  }
}

HealthScheduler::~HealthScheduler() { Stop(); }

void HealthScheduler::Start() {
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (Tier tier : {Tier::kMedium, Tier::kDeep}) {
      const Slot& slot = nodes_[n].slots[static_cast<size_t>(tier)];
      if (!slot.schedule.enabled) continue;
      ArmNext(n, tier,
              std::chrono::duration_cast<Duration>(slot.schedule.interval * random_.Uniform01()));
    }
  }
}

void HealthScheduler::Stop() {
  stopped_ = true;
  for (Node& node : nodes_) {
    for (Slot& slot : node.slots) {
      slot.next->Cancel();
      slot.timeout->Cancel();
      slot.generation++;
      slot.in_flight = false;
    }
  }
}

void HealthScheduler::ArmNext(size_t node, Tier tier, Duration after) {
  Slot& slot = nodes_[node].slots[static_cast<size_t>(tier)];
  slot.next->Arm(after, [this, node, tier] {
    Slot& s = nodes_[node].slots[static_cast<size_t>(tier)];
    // The next start is counted from this one, so a slow probe does not stretch the period.
    ArmNext(node, tier, Jittered(s.schedule.interval, options_.jitter, random_));
    if (s.in_flight) {
      s.due = true;  // starts when the one in flight ends
      return;
    }
    StartProbe(node, tier);
  });
}

void HealthScheduler::StartProbe(size_t node, Tier tier) {
  Slot& slot = nodes_[node].slots[static_cast<size_t>(tier)];
  slot.in_flight = true;
  slot.due = false;
  const uint64_t generation = ++slot.generation;
  slot.started_at = loop_.Now();
  slot.timeout->Arm(slot.schedule.timeout, [this, node, tier] { OnTimeout(node, tier); });
  std::weak_ptr<HealthScheduler*> weak = self_;
  runner_.Run(node, tier, slot.schedule.timeout,
              [weak, node, tier, generation](ProbeResult result) {
                if (std::shared_ptr<HealthScheduler*> self = weak.lock()) {
                  (*self)->OnResult(node, tier, generation, std::move(result));
                }
              });
}

void HealthScheduler::OnResult(size_t node, Tier tier, uint64_t generation, ProbeResult result) {
  Slot& slot = nodes_[node].slots[static_cast<size_t>(tier)];
  if (stopped_ || !slot.in_flight || generation != slot.generation) return;  // late or stopped
  slot.timeout->Cancel();
  Finish(node, tier, result, loop_.Now() - slot.started_at);
}

void HealthScheduler::OnTimeout(size_t node, Tier tier) {
  Slot& slot = nodes_[node].slots[static_cast<size_t>(tier)];
  if (!slot.in_flight) return;
  ProbeResult result;
  result.detail = absl::StrCat("no answer within ",
                               absl::FormatDuration(absl::FromChrono(slot.schedule.timeout)));
  Finish(node, tier, result, slot.schedule.timeout);
}

void HealthScheduler::Finish(size_t node, Tier tier, const ProbeResult& result, Duration took) {
  Node& n = nodes_[node];
  Slot& slot = n.slots[static_cast<size_t>(tier)];
  slot.in_flight = false;
  slot.generation++;  // a result after a timeout is dropped
  sink_.OnCheck(node, tier, result, took);
  if (slot.tracker.OnProbeResult(result.success)) {
    bool healthy = true;
    for (const Slot& s : n.slots) healthy = healthy && s.tracker.healthy();
    if (healthy != n.healthy) {
      n.healthy = healthy;
      sink_.OnHealthChanged(node, healthy);
    }
  }
  if (slot.due && !stopped_) StartProbe(node, tier);
}

}  // namespace qpool::health
