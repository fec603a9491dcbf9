#include "daemon/health/health.h"

#include <algorithm>
#include <cmath>

namespace qpool::health {

bool ProbeTracker::OnProbeResult(bool success) {
  if (success) {
    consecutive_failures_ = 0;
    consecutive_successes_++;
    if (!healthy_ && consecutive_successes_ >= healthy_threshold_) {
      healthy_ = true;
      return true;
    }
  } else {
    consecutive_successes_ = 0;
    consecutive_failures_++;
    if (healthy_ && consecutive_failures_ >= unhealthy_threshold_) {
      healthy_ = false;
      return true;
    }
  }
  return false;
}

OutlierDetector::OutlierDetector(size_t nodes, OutlierOptions options, Random& random)
    : options_(options), random_(random), nodes_(nodes) {}

void OutlierDetector::OnSuccess(size_t node) { nodes_[node].consecutive_failures = 0; }

bool OutlierDetector::OnFailure(size_t node, MonoTime now) {
  Node& n = nodes_[node];
  n.consecutive_failures++;
  if (n.consecutive_failures < options_.consecutive_failures || IsEjected(node, now)) return false;
  if (EjectedCount(now) >= MaxEjected()) return false;  // max_ejection_percent
  n.consecutive_failures = 0;
  n.times_ejected++;
  const Duration base =
      std::min(options_.base_ejection_time * n.times_ejected, options_.max_ejection_time);
  n.ejected_until = now + Jittered(base, options_.jitter, random_);
  return true;
}

bool OutlierDetector::IsEjected(size_t node, MonoTime now) const {
  return nodes_[node].times_ejected > 0 && now < nodes_[node].ejected_until;
}

size_t OutlierDetector::EjectedCount(MonoTime now) const {
  size_t count = 0;
  for (size_t i = 0; i < nodes_.size(); ++i) count += IsEjected(i, now) ? 1 : 0;
  return count;
}

size_t OutlierDetector::MaxEjected() const {
  if (options_.max_ejection_percent == 0) return 0;
  const size_t by_percent = nodes_.size() * options_.max_ejection_percent / 100;
  return std::max<size_t>(1, by_percent);
}

std::vector<size_t> OutlierDetector::Eligible(MonoTime now, const std::vector<bool>* usable,
                                              bool* panic) const {
  std::vector<size_t> eligible;
  Eligible(now, usable, panic, &eligible);
  return eligible;
}

void OutlierDetector::Eligible(MonoTime now, const std::vector<bool>* usable, bool* panic,
                               std::vector<size_t>* out) const {
  out->clear();
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if ((usable == nullptr || (*usable)[i]) && !IsEjected(i, now)) out->push_back(i);
  }
  *panic = out->empty();
  if (*panic) {
    for (size_t i = 0; i < nodes_.size(); ++i) out->push_back(i);
  }
}

size_t PickPowerOfTwo(const std::vector<size_t>& eligible,
                      const std::function<double(size_t)>& load, Random& random) {
  if (eligible.size() == 1) return eligible[0];
  const size_t n = eligible.size();
  const size_t first = std::min(n - 1, static_cast<size_t>(random.Uniform01() * n));
  // The second draw picks among the other n - 1, so the two are always distinct.
  size_t second = std::min(n - 2, static_cast<size_t>(random.Uniform01() * (n - 1)));
  if (second >= first) second++;
  const size_t a = eligible[first];
  const size_t b = eligible[second];
  return load(b) < load(a) ? b : a;
}

NodeRouter::NodeRouter(size_t nodes, OutlierOptions options, bool passive, Random& random)
    : passive_(passive),
      random_(random),
      outlier_(nodes, options, random),
      states_(nodes),
      healthy_(nodes) {
  eligible_.reserve(nodes);
  candidates_.reserve(nodes);
}

size_t NodeRouter::Pick(MonoTime now, bool* panic) {
  const size_t n = states_.size();
  for (size_t i = 0; i < n; ++i) healthy_[i] = states_[i].healthy;
  if (passive_) {
    outlier_.Eligible(now, &healthy_, panic, &eligible_);
  } else {
    eligible_.clear();
    for (size_t i = 0; i < n; ++i) {
      if (healthy_[i]) eligible_.push_back(i);
    }
    *panic = eligible_.empty();
    if (*panic) {
      for (size_t i = 0; i < n; ++i) eligible_.push_back(i);
    }
  }
  // Prefer a connection that is up, then a node that may still connect; else any eligible node,
  // whose pool then answers with its connect error.
  candidates_.clear();
  for (size_t i : eligible_) {
    if (states_[i].live) candidates_.push_back(i);
  }
  if (candidates_.empty()) {
    for (size_t i : eligible_) {
      if (states_[i].usable) candidates_.push_back(i);
    }
  }
  const std::vector<size_t>& from = candidates_.empty() ? eligible_ : candidates_;
  return PickPowerOfTwo(
      from, [this](size_t i) { return static_cast<double>(states_[i].load); }, random_);
}

std::optional<size_t> NodeRouter::PickOtherThan(size_t except, MonoTime now) const {
  std::optional<size_t> best;
  for (size_t i = 0; i < states_.size(); ++i) {
    const NodeState& state = states_[i];
    if (i == except || !state.healthy || !state.live || outlier_.IsEjected(i, now)) continue;
    if (!best || state.load < states_[*best].load) best = i;
  }
  return best;
}

bool NodeRouter::OnAttemptEnd(size_t node, bool failed, MonoTime now) {
  if (!passive_) return false;
  if (!failed) {
    outlier_.OnSuccess(node);
    return false;
  }
  return outlier_.OnFailure(node, now);
}

Duration Jittered(Duration interval, double jitter, Random& random) {
  const double factor = 1.0 + jitter * (2.0 * random.Uniform01() - 1.0);
  return std::chrono::duration_cast<Duration>(interval * factor);
}

}  // namespace qpool::health
