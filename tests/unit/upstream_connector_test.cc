// UpstreamConnector, an upstream connection's connect phase, against loopback sockets: TCP up
// reports `connected` (no TLS engine when the node has no TLS context); a refused connect reports
// kConnect; the deadline, left running after TCP is up (the handshakes still under way), reports
// kTimeout, and Finished() stops it; after Cancel() nothing is reported.
#include "daemon/server/upstream_connector.h"

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "daemon/server/connection_context.h"
#include "daemon/tls/client_tls.h"
#include "daemon/tls/failure_reason.h"
#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;
using namespace std::chrono_literals;

class CleartextHost : public ConnectionHost {
 public:
  void OnSessionClosed(DownstreamSession*) override {}
  std::shared_ptr<const tls::ClientContext> TlsContextOf(size_t) const override { return nullptr; }
};

class UpstreamConnectorTest : public ::testing::Test {
 protected:
  UpstreamConnectorTest() : acceptor_(io_, tcp::endpoint(tcp::v4(), 0)), socket_(io_) {}

  void Start(config::NodeAddress node, absl::Duration timeout) {
    connector_.Start(
        node, 0, socket_, timeout, host_, std::make_shared<int>(0),
        {/*connected=*/[this](std::unique_ptr<tls::TlsEngine> engine) {
           connected_++;
           engine_seen_ = engine != nullptr;
         },
         /*failed=*/[this](const absl::Status& reason) { failures_.push_back(reason); }});
  }
  config::NodeAddress Listening() const { return {"127.0.0.1", acceptor_.local_endpoint().port()}; }

  boost::asio::io_context io_;
  tcp::acceptor acceptor_;  // listens; the kernel completes the TCP handshake, nobody answers
  tcp::socket socket_;
  CleartextHost host_;
  UpstreamConnector connector_{io_};
  int connected_ = 0;
  bool engine_seen_ = false;
  std::vector<absl::Status> failures_;
};

TEST_F(UpstreamConnectorTest, ReportsConnectedWithoutEngineForCleartext) {
  Start(Listening(), absl::Seconds(10));
  while (connected_ == 0 && failures_.empty() && io_.run_one_for(5s) > 0) {
  }
  EXPECT_EQ(connected_, 1);
  EXPECT_FALSE(engine_seen_);
  EXPECT_TRUE(failures_.empty());
  EXPECT_TRUE(socket_.is_open());
  connector_.Finished();
  io_.run_for(100ms);
  EXPECT_TRUE(failures_.empty());
}

TEST_F(UpstreamConnectorTest, DeadlineCoversTheHandshakeUntilFinished) {
  Start(Listening(), absl::Milliseconds(50));
  io_.run_for(1s);
  EXPECT_EQ(connected_, 1);
  ASSERT_EQ(failures_.size(), 1u);
  EXPECT_TRUE(absl::IsUnavailable(failures_[0]));
  EXPECT_EQ(tls::ConnectFailureOf(failures_[0]), tls::ConnectFailure::kTimeout);
}

TEST_F(UpstreamConnectorTest, RefusedConnectIsAConnectFailure) {
  const config::NodeAddress node = Listening();
  acceptor_.close();  // nobody listens on that port now
  Start(node, absl::Seconds(10));
  io_.run_for(1s);
  EXPECT_EQ(connected_, 0);
  ASSERT_EQ(failures_.size(), 1u);
  EXPECT_EQ(tls::ConnectFailureOf(failures_[0]), tls::ConnectFailure::kConnect);
}

TEST_F(UpstreamConnectorTest, NothingReportedAfterCancel) {
  Start(Listening(), absl::Milliseconds(50));
  connector_.Cancel();
  io_.run_for(300ms);
  EXPECT_EQ(connected_, 0);
  EXPECT_TRUE(failures_.empty());
}

}  // namespace
}  // namespace qpool::server
