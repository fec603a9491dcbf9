#include "tests/support/test_load.h"

#include "absl/time/clock.h"

namespace qpool::testing {

ThreadedLoad::ThreadedLoad(int threads, int max_calls, CallerFactory make_caller) {
  for (int t = 0; t < threads; ++t) {
    threads_.emplace_back([this, t, max_calls, make_caller] { Run(t, max_calls, make_caller); });
  }
}

ThreadedLoad::~ThreadedLoad() { Stop(); }

void ThreadedLoad::Stop() {
  stop_ = true;
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

void ThreadedLoad::Run(int thread, int max_calls, const CallerFactory& make_caller) {
  Caller call = make_caller(thread);
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < max_calls && !stop_.load() && absl::Now() < give_up; ++i) {
    std::string failure = call(i);
    absl::MutexLock lock(&mu_);
    if (failure.empty()) {
      ++ok_;
    } else if (failed_++ == 0) {
      first_failure_ = std::move(failure);
    }
  }
}

int ThreadedLoad::ok() const {
  absl::MutexLock lock(&mu_);
  return ok_;
}

int ThreadedLoad::failed() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

std::string ThreadedLoad::first_failure() const {
  absl::MutexLock lock(&mu_);
  return first_failure_;
}

}  // namespace qpool::testing
