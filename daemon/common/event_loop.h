// The seam between time-driven logic (pool, calls) and the event loop that runs it.
//
// Production code uses the Asio implementation (daemon/common/asio_event_loop.h); unit tests use
// FakeEventLoop (tests/unit/fake_event_loop.h), which advances time by hand, so tests need neither
// sleeps nor sockets.
// Thread-safety: an EventLoop and its timers belong to one thread (one I/O worker); nothing here
// is thread-safe.
#ifndef QPOOL_DAEMON_COMMON_EVENT_LOOP_H_
#define QPOOL_DAEMON_COMMON_EVENT_LOOP_H_

#include <chrono>
#include <functional>
#include <memory>

namespace qpool {

using MonoClock = std::chrono::steady_clock;
using MonoTime = MonoClock::time_point;
using Duration = std::chrono::nanoseconds;

// A one-shot timer. Arm() replaces any earlier arming; Cancel() guarantees the callback will not
// run. Destroying the timer cancels it.
class Timer {
 public:
  virtual ~Timer() = default;
  virtual void Arm(Duration after, std::function<void()> callback) = 0;
  virtual void Cancel() = 0;
  virtual bool armed() const = 0;
};

class EventLoop {
 public:
  virtual ~EventLoop() = default;
  virtual MonoTime Now() const = 0;
  virtual std::unique_ptr<Timer> CreateTimer() = 0;
  // Runs `fn` later on this loop's thread, after the current event is handled.
  virtual void Post(std::function<void()> fn) = 0;
};

// Uniform random numbers for jitter; a seam so tests can pin them.
class Random {
 public:
  virtual ~Random() = default;
  // A value in [0, 1).
  virtual double Uniform01() = 0;
};

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_EVENT_LOOP_H_
