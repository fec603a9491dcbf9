#include "tests/support/test_upstream.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "testing/test_service.grpc.pb.h"

namespace qpool::testing {
namespace {

using ::qpool::testing::EchoRequest;
using ::qpool::testing::EchoResponse;

absl::Duration DeadlineRemaining(const grpc::CallbackServerContext& ctx) {
  const auto deadline = ctx.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteDuration();
  return absl::FromChrono(deadline - std::chrono::system_clock::now());
}

int64_t DeadlineMs(absl::Duration remaining) {
  return remaining == absl::InfiniteDuration() ? -1 : absl::ToInt64Milliseconds(remaining);
}

// The final status a request asks for (OK unless status_code is set).
grpc::Status RequestedStatus(const EchoRequest& request) {
  if (request.status_code() == 0) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(request.status_code()),
                      request.status_message(), request.status_details());
}

void FillPayload(const EchoRequest& request, EchoResponse& response) {
  if (request.response_size() > 0) {
    response.set_payload(PatternBytes(request.response_size()));
  } else {
    response.set_payload(request.payload());
  }
}

// Per-call bookkeeping shared by every reactor: counts the call at the upstream, echoes the
// request metadata, and runs cancellable sleeps on gRPC alarms.
class CallState {
 public:
  CallState(std::shared_ptr<UpstreamStats> stats, grpc::CallbackServerContext* ctx, Method method)
      : stats_(std::move(stats)), ctx_(ctx), method_(method) {
    std::multimap<std::string, std::string> metadata;
    for (const auto& [key, value] : ctx->client_metadata()) {
      std::string k(key.data(), key.size());
      std::string v(value.data(), value.size());
      ctx->AddInitialMetadata(kEchoPrefix + k, v);
      ctx->AddTrailingMetadata(kEchoPrefix + k, v);
      metadata.emplace(std::move(k), std::move(v));
    }
    deadline_ = DeadlineRemaining(*ctx);
    stats_->CallStarted(method, ctx->peer(), std::move(metadata), deadline_);
  }

  int64_t deadline_ms() const { return DeadlineMs(deadline_); }

  // Runs `then(true)` after `sleep_ms` (now when <= 0), or `then(false)` as soon as the call is
  // cancelled. `then` runs on a gRPC thread, without any lock held.
  void SleepThen(int sleep_ms, std::function<void(bool)> then) {
    sleep_ms = std::min(sleep_ms, kMaxSleepMs);
    if (sleep_ms <= 0) {
      then(true);
      return;
    }
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      cancelled = cancelled_;
      if (!cancelled) {
        alarms_.push_back(std::make_unique<grpc::Alarm>());
        alarms_.back()->Set(std::chrono::system_clock::now() + std::chrono::milliseconds(sleep_ms),
                            std::move(then));
      }
    }
    if (cancelled) then(false);
  }

  // From the reactor's OnCancel.
  void Cancelled() {
    stats_->CallCancelled();
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (auto& alarm : alarms_) alarm->Cancel();
  }

  // Right before the reactor calls Finish: the call no longer holds a stream at the upstream's
  // peer once the peer can see its end.
  void Answered() { stats_->CallAnswered(); }

  // From the reactor's OnDone.
  void Done() { stats_->CallFinished(method_); }

  grpc::CallbackServerContext* ctx() { return ctx_; }

 private:
  std::shared_ptr<UpstreamStats> stats_;
  grpc::CallbackServerContext* ctx_;
  Method method_;
  absl::Duration deadline_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // Alarms stay alive until the reactor is deleted (an alarm may not die inside its callback).
  std::vector<std::unique_ptr<grpc::Alarm>> alarms_ ABSL_GUARDED_BY(mu_);
};

class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(std::shared_ptr<UpstreamStats> stats, grpc::CallbackServerContext* ctx,
            const EchoRequest* request, EchoResponse* response)
      : call_(std::move(stats), ctx, Method::kUnary) {
    if (request->compress_response()) ctx->set_compression_algorithm(GRPC_COMPRESS_GZIP);
    call_.SleepThen(request->sleep_ms(), [this, request, response](bool ok) {
      if (!ok) {
        Answer(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while sleeping"));
        return;
      }
      FillPayload(*request, *response);
      response->set_deadline_remaining_ms(call_.deadline_ms());
      response->set_messages_received(1);
      response->set_payload_bytes_received(request->payload().size());
      Answer(RequestedStatus(*request));
    });
  }

  void OnCancel() override { call_.Cancelled(); }
  void OnDone() override {
    call_.Done();
    delete this;
  }

 private:
  // Every reactor ends through here, exactly once.
  void Answer(const grpc::Status& status) {
    call_.Answered();
    Finish(status);
  }

  CallState call_;
};

class ClientStreamCall : public grpc::ServerReadReactor<EchoRequest> {
 public:
  ClientStreamCall(std::shared_ptr<UpstreamStats> stats, grpc::CallbackServerContext* ctx,
                   EchoResponse* response)
      : call_(std::move(stats), ctx, Method::kClientStream), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      if (messages_ == 0) {
        first_ = request_;
        if (first_.compress_response()) call_.ctx()->set_compression_algorithm(GRPC_COMPRESS_GZIP);
      }
      ++messages_;
      bytes_ += request_.payload().size();
      StartRead(&request_);
      return;
    }
    // The client half-closed (or the call died): answer after the first request's sleep.
    call_.SleepThen(first_.sleep_ms(), [this](bool ok) {
      if (!ok) {
        Answer(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while sleeping"));
        return;
      }
      FillPayload(first_, *response_);
      response_->set_deadline_remaining_ms(call_.deadline_ms());
      response_->set_messages_received(messages_);
      response_->set_payload_bytes_received(bytes_);
      Answer(RequestedStatus(first_));
    });
  }

  void OnCancel() override { call_.Cancelled(); }
  void OnDone() override {
    call_.Done();
    delete this;
  }

 private:
  // Every reactor ends through here, exactly once.
  void Answer(const grpc::Status& status) {
    call_.Answered();
    Finish(status);
  }

  CallState call_;
  EchoResponse* response_;
  EchoRequest request_;
  EchoRequest first_;
  int64_t messages_ = 0;
  int64_t bytes_ = 0;
};

class ServerStreamCall : public grpc::ServerWriteReactor<EchoResponse> {
 public:
  ServerStreamCall(std::shared_ptr<UpstreamStats> stats, grpc::CallbackServerContext* ctx,
                   const EchoRequest* request)
      : call_(std::move(stats), ctx, Method::kServerStream), request_(request) {
    if (request->compress_response()) ctx->set_compression_algorithm(GRPC_COMPRESS_GZIP);
    remaining_ = std::max(1, request->response_count());
    call_.SleepThen(request->sleep_ms(), [this](bool ok) {
      if (!ok) {
        Answer(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while sleeping"));
        return;
      }
      WriteNext();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Answer(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    WriteNext();
  }

  void OnCancel() override { call_.Cancelled(); }
  void OnDone() override {
    call_.Done();
    delete this;
  }

 private:
  // Every reactor ends through here, exactly once.
  void Answer(const grpc::Status& status) {
    call_.Answered();
    Finish(status);
  }

  void WriteNext() {
    if (remaining_ == 0) {
      Answer(RequestedStatus(*request_));
      return;
    }
    --remaining_;
    response_.Clear();
    FillPayload(*request_, response_);
    response_.set_index(index_++);
    response_.set_deadline_remaining_ms(call_.deadline_ms());
    response_.set_messages_received(1);
    StartWrite(&response_);
  }

  CallState call_;
  const EchoRequest* request_;
  EchoResponse response_;
  int remaining_ = 0;
  int index_ = 0;
};

// Answers each request with one response (after that request's sleep), then ends with the first
// request's status once the client half-closes. One read or write is outstanding at a time.
class BidiCall : public grpc::ServerBidiReactor<EchoRequest, EchoResponse> {
 public:
  BidiCall(std::shared_ptr<UpstreamStats> stats, grpc::CallbackServerContext* ctx)
      : call_(std::move(stats), ctx, Method::kBidi) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Answer(messages_ == 0 ? grpc::Status::OK : RequestedStatus(first_));
      return;
    }
    if (messages_ == 0) {
      first_ = request_;
      if (first_.compress_response()) call_.ctx()->set_compression_algorithm(GRPC_COMPRESS_GZIP);
    }
    ++messages_;
    bytes_ += request_.payload().size();
    call_.SleepThen(request_.sleep_ms(), [this](bool ok) {
      if (!ok) {
        Answer(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while sleeping"));
        return;
      }
      response_.Clear();
      FillPayload(request_, response_);
      response_.set_index(static_cast<int32_t>(messages_ - 1));
      response_.set_deadline_remaining_ms(call_.deadline_ms());
      response_.set_messages_received(messages_);
      response_.set_payload_bytes_received(bytes_);
      StartWrite(&response_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Answer(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    StartRead(&request_);
  }

  void OnCancel() override { call_.Cancelled(); }
  void OnDone() override {
    call_.Done();
    delete this;
  }

 private:
  // Every reactor ends through here, exactly once.
  void Answer(const grpc::Status& status) {
    call_.Answered();
    Finish(status);
  }

  CallState call_;
  EchoRequest request_;
  EchoRequest first_;
  EchoResponse response_;
  int64_t messages_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace

class TestUpstream::Service : public TestService::CallbackService {
 public:
  explicit Service(std::shared_ptr<UpstreamStats> stats) : stats_(std::move(stats)) {}

  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, const EchoRequest* request,
                                  EchoResponse* response) override {
    return new UnaryCall(stats_, ctx, request, response);
  }
  grpc::ServerReadReactor<EchoRequest>* ClientStream(grpc::CallbackServerContext* ctx,
                                                     EchoResponse* response) override {
    return new ClientStreamCall(stats_, ctx, response);
  }
  grpc::ServerWriteReactor<EchoResponse>* ServerStream(grpc::CallbackServerContext* ctx,
                                                       const EchoRequest* request) override {
    return new ServerStreamCall(stats_, ctx, request);
  }
  grpc::ServerBidiReactor<EchoRequest, EchoResponse>* Bidi(
      grpc::CallbackServerContext* ctx) override {
    return new BidiCall(stats_, ctx);
  }

 private:
  std::shared_ptr<UpstreamStats> stats_;
};

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::Start(uint16_t port,
                                                                  absl::Duration max_connection_age,
                                                                  const std::string& host) {
  std::unique_ptr<TestUpstream> upstream(new TestUpstream());
  upstream->stats_ = std::make_shared<UpstreamStats>();
  upstream->service_ = std::make_unique<Service>(upstream->stats_);
  int bound_port = 0;
  // grpc.health.v1.Health answers SERVING: what qpoold's medium probe asks with
  // health.medium_method "grpc" (tests that turn probes on).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(host, ":", port), grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.RegisterService(upstream->service_.get());
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  if (max_connection_age != absl::InfiniteDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(max_connection_age)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 10000);
  }
  upstream->server_ = builder.BuildAndStart();
  if (upstream->server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("test upstream: cannot bind ", host, ":", port));
  }
  upstream->port_ = static_cast<uint16_t>(bound_port);
  upstream->host_ = host;
  return upstream;
}

TestUpstream::~TestUpstream() { Shutdown(absl::ZeroDuration()); }

std::string TestUpstream::address() const { return absl::StrCat(host_, ":", port_); }

void TestUpstream::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

void UpstreamStats::CallStarted(Method method, const std::string& peer,
                                std::multimap<std::string, std::string> metadata,
                                absl::Duration deadline) {
  absl::MutexLock lock(&mu_);
  ++state_.started[static_cast<int>(method)];
  ++state_.in_progress;
  state_.max_in_progress = std::max(state_.max_in_progress, state_.in_progress);
  ++state_.unanswered;
  state_.max_unanswered = std::max(state_.max_unanswered, state_.unanswered);
  state_.peers.insert(peer);
  state_.last_metadata = std::move(metadata);
  state_.last_deadline = deadline;
}

void UpstreamStats::CallAnswered() {
  absl::MutexLock lock(&mu_);
  --state_.unanswered;
}

void UpstreamStats::CallCancelled() {
  absl::MutexLock lock(&mu_);
  ++state_.cancellations;
}

void UpstreamStats::CallFinished(Method method) {
  absl::MutexLock lock(&mu_);
  ++state_.finished[static_cast<int>(method)];
  --state_.in_progress;
}

int64_t UpstreamStats::CallsStarted() const {
  const State state = Snapshot();
  int64_t total = 0;
  for (int64_t n : state.started) total += n;
  return total;
}

int64_t UpstreamStats::CallsFinished() const {
  const State state = Snapshot();
  int64_t total = 0;
  for (int64_t n : state.finished) total += n;
  return total;
}

UpstreamStats::State UpstreamStats::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::string PatternBytes(size_t size, uint32_t seed) {
  std::string bytes(size, '\0');
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < size; ++i) {
    x = x * 1103515245u + 12345u;
    bytes[i] = static_cast<char>(x >> 24);
  }
  return bytes;
}

}  // namespace qpool::testing
