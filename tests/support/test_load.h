// Calls from several threads at once, for tests that check that no call fails while something
// happens (a reload, a drain, a node joining or leaving). Each thread makes up to `max_calls`
// calls, stops at Stop() and gives up after 60 s; the load counts the calls that succeeded and
// failed and keeps the first failure's text.
//
//   ThreadedLoad load(4, 100000, [port](int thread) -> ThreadedLoad::Caller {
//     auto stub = std::shared_ptr(TestService::NewStub(OwnChannel(port)));  // this thread's own
//     return [stub, thread](int call) { return EchoFailure(*stub, absl::StrCat(thread, call)); };
//   });
//   ... change something ...
//   load.Stop();
//   EXPECT_EQ(load.failed(), 0) << load.first_failure();
//
// Thread-safety: the counters are thread-safe; Stop() and the destructor are called by the thread
// that made the load.
#ifndef QPOOL_TESTS_SUPPORT_TEST_LOAD_H_
#define QPOOL_TESTS_SUPPORT_TEST_LOAD_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace qpool::testing {

class ThreadedLoad {
 public:
  // One call, numbered from 0 on its thread: "" when it succeeded, else what failed.
  using Caller = std::function<std::string(int call)>;
  // Makes the caller of thread `thread` (0-based), on that thread, before its first call; the
  // caller may own that thread's connection.
  using CallerFactory = std::function<Caller(int thread)>;

  ThreadedLoad(int threads, int max_calls, CallerFactory make_caller);
  ~ThreadedLoad();  // Stop()
  ThreadedLoad(const ThreadedLoad&) = delete;
  ThreadedLoad& operator=(const ThreadedLoad&) = delete;

  // Makes every thread stop after its current call and joins them. Idempotent.
  void Stop();

  int ok() const ABSL_LOCKS_EXCLUDED(mu_);
  int failed() const ABSL_LOCKS_EXCLUDED(mu_);
  std::string first_failure() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run(int thread, int max_calls, const CallerFactory& make_caller);

  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  int ok_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_TEST_LOAD_H_
