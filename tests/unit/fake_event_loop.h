// A hand-driven EventLoop for unit tests: time moves only when the test calls Advance(), and
// timers and posted work run then, in deadline order, on the test's thread.
#ifndef QPOOL_TESTS_UNIT_FAKE_EVENT_LOOP_H_
#define QPOOL_TESTS_UNIT_FAKE_EVENT_LOOP_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include "daemon/common/event_loop.h"

namespace qpool::testing {

class FakeEventLoop : public EventLoop {
 public:
  MonoTime Now() const override { return now_; }

  std::unique_ptr<Timer> CreateTimer() override { return std::make_unique<FakeTimer>(*this); }

  void Post(std::function<void()> fn) override { posted_.push_back(std::move(fn)); }

  // Runs posted work, then fires every timer due within `by`, moving the clock to each deadline
  // in turn; the clock ends at Now() + by.
  void Advance(Duration by) {
    const MonoTime end = now_ + by;
    RunPosted();
    while (!timers_.empty() && timers_.begin()->first.first <= end) {
      auto node = timers_.extract(timers_.begin());
      now_ = std::max(now_, node.key().first);
      FakeTimer* timer = node.mapped();
      timer->armed_ = false;
      auto callback = std::move(timer->callback_);
      callback();
      RunPosted();
    }
    now_ = end;
  }

  void RunPosted() {
    while (!posted_.empty()) {
      auto fn = std::move(posted_.front());
      posted_.pop_front();
      fn();
    }
  }

  // Time until the earliest armed timer, or max() when none is armed.
  Duration NextTimerIn() const {
    if (timers_.empty()) return Duration::max();
    return timers_.begin()->first.first - now_;
  }

 private:
  class FakeTimer : public Timer {
   public:
    explicit FakeTimer(FakeEventLoop& loop) : loop_(loop) {}
    ~FakeTimer() override { Cancel(); }
    void Arm(Duration after, std::function<void()> callback) override {
      Cancel();
      callback_ = std::move(callback);
      key_ = {loop_.now_ + after, loop_.next_seq_++};
      loop_.timers_.emplace(key_, this);
      armed_ = true;
    }
    void Cancel() override {
      if (!armed_) return;
      loop_.timers_.erase(key_);
      armed_ = false;
      callback_ = nullptr;
    }
    bool armed() const override { return armed_; }

   private:
    friend class FakeEventLoop;
    FakeEventLoop& loop_;
    std::function<void()> callback_;
    std::pair<MonoTime, uint64_t> key_;
    bool armed_ = false;
  };

  MonoTime now_{std::chrono::seconds(1000)};
  uint64_t next_seq_ = 0;
  std::map<std::pair<MonoTime, uint64_t>, FakeTimer*> timers_;
  std::deque<std::function<void()>> posted_;
};

// Returns a fixed value, set by the test.
class FakeRandom : public Random {
 public:
  explicit FakeRandom(double value = 0.5) : value_(value) {}
  double Uniform01() override { return value_; }
  void set(double value) { value_ = value; }

 private:
  double value_;
};

// Cycles through values spread over [0, 1): random picks that visit every choice.
class SweepRandom : public Random {
 public:
  double Uniform01() override {
    const double value = (next_ % 101) / 101.0;
    next_ += 37;
    return value;
  }

 private:
  uint64_t next_ = 0;
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_UNIT_FAKE_EVENT_LOOP_H_
