#include "daemon/common/asio_event_loop.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>

namespace qpool {
namespace {

class AsioTimer : public Timer {
 public:
  explicit AsioTimer(boost::asio::io_context& io) : timer_(io) {}
  ~AsioTimer() override { Cancel(); }

  void Arm(Duration after, std::function<void()> callback) override {
    Cancel();
    state_->armed = true;
    state_->callback = std::move(callback);
    timer_.expires_after(after);
    // The handler holds the state, not the timer: a completion that raced with Cancel(), a later
    // Arm() or the timer's destruction sees another generation and does nothing.
    timer_.async_wait(
        [state = state_, generation = state_->generation](const boost::system::error_code& ec) {
          if (ec || generation != state->generation || !state->armed) return;
          state->armed = false;
          auto callback = std::move(state->callback);
          callback();
        });
  }
  void Cancel() override {
    if (!state_->armed) return;
    state_->armed = false;
    state_->generation++;
    state_->callback = nullptr;
    timer_.cancel();
  }
  bool armed() const override { return state_->armed; }

 private:
  struct State {
    bool armed = false;
    uint64_t generation = 0;
    std::function<void()> callback;
  };
  boost::asio::steady_timer timer_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace

std::unique_ptr<Timer> AsioEventLoop::CreateTimer() { return std::make_unique<AsioTimer>(io_); }

void AsioEventLoop::Post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

}  // namespace qpool
