// Client side of the test upstream's TestService (tests/support/test_upstream.h) for tests that
// call it directly or through qpoold: a channel with its own connection, a checked unary Echo,
// and a load of Echo calls from several connections.
//
//   auto stub = TestService::NewStub(OwnChannel(port));
//   ASSERT_TRUE(Echo(*stub, "before").ok());
//   EchoLoad load(port, /*threads=*/4, /*max_calls=*/5000);
//   ... reload, drain ...
//   load.Stop();
//   EXPECT_EQ(load.failed(), 0) << load.first_failure();
//
// Thread-safety: the functions are thread-safe; an EchoLoad as ThreadedLoad says.
#ifndef QPOOL_TESTS_SUPPORT_ECHO_CLIENT_H_
#define QPOOL_TESTS_SUPPORT_ECHO_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "testing/test_service.grpc.pb.h"
#include "tests/support/test_load.h"

namespace qpool::testing {

// A channel to 127.0.0.1:`port` with a subchannel pool of its own, so that it opens its own TCP
// connection rather than sharing one with other channels of the process.
std::shared_ptr<grpc::Channel> OwnChannel(uint16_t port);

// One unary call echoing `payload` (after `sleep_ms` at the upstream) within `deadline`. An answer
// whose payload is not `payload` is DATA_LOSS.
grpc::Status Echo(TestService::Stub& stub, const std::string& payload, int sleep_ms = 0,
                  absl::Duration deadline = absl::Seconds(5));

// Echo calls from `threads` connections of their own (OwnChannel); a failure's text is
// "<code>: <message>".
class EchoLoad : public ThreadedLoad {
 public:
  EchoLoad(uint16_t port, int threads, int max_calls);
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_ECHO_CLIENT_H_
