// The production side of the EventLoop seam (event_loop.h): timers and posts on a Boost.Asio
// io_context, and random numbers from std::mt19937_64. Unit tests use FakeEventLoop instead.
//
//   boost::asio::io_context io{1};
//   AsioEventLoop loop(io);
//   auto timer = loop.CreateTimer();
//   timer->Arm(std::chrono::seconds(1), [] { ... });  // runs on the thread that runs `io`
//
// Thread-safety: as EventLoop: a loop, its timers and a StdRandom belong to the one thread that
// runs the io_context; only Post() may be called from any thread (boost::asio::post is).
#ifndef QPOOL_DAEMON_COMMON_ASIO_EVENT_LOOP_H_
#define QPOOL_DAEMON_COMMON_ASIO_EVENT_LOOP_H_

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <random>

#include "daemon/common/event_loop.h"

namespace qpool {

// The EventLoop seam over Asio. `io` must outlive the loop and its timers.
class AsioEventLoop : public EventLoop {
 public:
  explicit AsioEventLoop(boost::asio::io_context& io) : io_(io) {}
  MonoTime Now() const override { return MonoClock::now(); }
  // A steady_timer on `io`; a completion that races with Cancel() or a later Arm() does nothing.
  std::unique_ptr<Timer> CreateTimer() override;
  void Post(std::function<void()> fn) override;

 private:
  boost::asio::io_context& io_;
};

// The Random seam: a Mersenne Twister seeded from std::random_device.
class StdRandom : public Random {
 public:
  StdRandom() : engine_(std::random_device{}()) {}
  double Uniform01() override { return std::uniform_real_distribution<double>(0, 1)(engine_); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_ASIO_EVENT_LOOP_H_
