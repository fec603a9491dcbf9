#include "emulator/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "emulator/net.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_posix.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "qdrant/health.grpc.pb.h"
#include "qdrant/points_service.grpc.pb.h"
#include "qdrant/qdrant.grpc.pb.h"
#include "qdrant/snapshots_service.grpc.pb.h"

namespace qpool::emulator {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// An accepted client socket; the inode tells whether `fd` still names this socket (gRPC closes
// the fd when the connection ends, and the number may be reused).
struct Connection {
  int fd;
  ino_t inode;
};

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  if (text.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not PEM"));
  }
  return text.str();
}

ino_t InodeOf(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

}  // namespace

class Call;

class EmulatorServer::Impl {
 public:
  Impl(const ServerOptions& options, Storage& storage, FaultInjector& faults, int listen_fd)
      : options_(options),
        handlers_(storage, options.handlers),
        faults_(faults),
        listen_fd_(listen_fd),
        wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        address_(LocalAddress(listen_fd)) {}

  absl::Status Start();
  void Shutdown();
  void CloseConnections(CloseMode mode);
  void ReleaseParkedCalls();
  const std::string& address() const { return address_; }
  const std::string& tls_address() const { return tls_address_; }

  // Runs one call: counts it, applies its faults, runs `handler`, answers. `write_collection` is
  // non-empty for writes, which are counted per collection when the handler succeeds.
  grpc::ServerUnaryReactor* Dispatch(grpc::CallbackServerContext* context, const char* method,
                                     std::string write_collection,
                                     std::function<absl::Status()> handler);

  const Handlers& handlers() const { return handlers_; }
  FaultInjector& faults() { return faults_; }
  void Park(const char* method, std::shared_ptr<std::atomic<bool>> claimed, Call* call);
  void RequestGoaway();
  void CloseAbruptly();

 private:
  struct Generation;
  struct Parked {
    const char* method;
    std::shared_ptr<std::atomic<bool>> claimed;
    Call* call;  // Valid while *claimed is false.
  };

  // `tls`: a generation that listens on options_.tls_listen with TLS credentials.
  absl::StatusOr<std::unique_ptr<Generation>> NewGeneration(bool tls = false);
  void AcceptLoop();
  void CloserLoop();

  const ServerOptions options_;
  const Handlers handlers_;
  FaultInjector& faults_;
  const int listen_fd_;
  const int wake_fd_;
  const std::string address_;
  std::string tls_address_;                 // set by Start(); empty without TLS
  std::unique_ptr<Generation> tls_server_;  // the TLS port's server, for the whole run
  std::thread acceptor_;
  std::thread closer_;

  absl::Mutex mu_;
  std::unique_ptr<Generation> current_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<Generation>> draining_ ABSL_GUARDED_BY(mu_);
  std::vector<Connection> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<Parked> parked_ ABSL_GUARDED_BY(mu_);
  int goaway_requests_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_number_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// One unary call. Whoever first sets `claimed_` (the inline path, the latency alarm, a release
// from hang, or OnCancel) is the one that finishes the call; `this` is only touched after a
// successful claim, and is deleted by gRPC's OnDone after Finish.
class Call final : public grpc::ServerUnaryReactor {
 public:
  Call(EmulatorServer::Impl* impl, grpc::CallbackServerContext* context, const char* method,
       std::string write_collection, std::function<absl::Status()> handler)
      : impl_(impl),
        context_(context),
        method_(method),
        write_collection_(std::move(write_collection)),
        handler_(std::move(handler)) {}

  void Start() {
    plan_ = impl_->faults().OnCall(method_);
    if (plan_.hang) {
      impl_->Park(method_, claimed_, this);
      return;
    }
    if (plan_.delay > absl::ZeroDuration()) {
      alarm_ = std::make_unique<grpc::Alarm>();
      alarm_->Set(absl::ToChronoTime(absl::Now() + plan_.delay), [this, claimed = claimed_](bool) {
        if (!claimed->exchange(true)) Proceed();
      });
      return;
    }
    if (!claimed_->exchange(true)) Proceed();
  }

  // Runs the handler (unless the fault refuses the call first) and answers. Caller has claimed.
  void Proceed() {
    if (plan_.error.has_value() && !plan_.error->after_handler) {
      FinishInjected();
      return;
    }
    absl::Status status = handler_();
    if (status.ok() && !write_collection_.empty()) impl_->faults().CountWrite(write_collection_);
    if (plan_.close_after == CloseMode::kAbrupt) {
      // Processed, then the connection drops instead of the answer.
      impl_->CloseAbruptly();
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection closed by qdrant-emulator"));
      return;
    }
    // Finish() may run OnDone, which deletes this call, on another thread at once: nothing of
    // `this` is touched after it.
    EmulatorServer::Impl* const impl = impl_;
    const bool goaway_after = plan_.close_after == CloseMode::kGoaway;
    if (plan_.error.has_value()) {
      FinishInjected();
    } else {
      Finish(ToGrpc(status));
    }
    if (goaway_after) impl->RequestGoaway();
  }

  void FinishWith(const grpc::Status& status) { Finish(status); }
  void OnCancel() override {
    if (!claimed_->exchange(true))
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
  }
  void OnDone() override { delete this; }

 private:
  void FinishInjected() {
    impl_->faults().CountInjectedError();
    if (plan_.error->retry_after_s > 0) {
      context_->AddTrailingMetadata("retry-after", absl::StrCat(plan_.error->retry_after_s));
    }
    Finish(grpc::Status(static_cast<grpc::StatusCode>(plan_.error->code), plan_.error->message));
  }

  EmulatorServer::Impl* const impl_;
  grpc::CallbackServerContext* const context_;
  const char* const method_;
  const std::string write_collection_;
  const std::function<absl::Status()> handler_;
  std::shared_ptr<std::atomic<bool>> claimed_ = std::make_shared<std::atomic<bool>>(false);
  CallPlan plan_;
  std::unique_ptr<grpc::Alarm> alarm_;
};

// A call refused before it runs: answered at once, never counted.
class Refused final : public grpc::ServerUnaryReactor {
 public:
  explicit Refused(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* EmulatorServer::Impl::Dispatch(grpc::CallbackServerContext* context,
                                                         const char* method,
                                                         std::string write_collection,
                                                         std::function<absl::Status()> handler) {
  // Qdrant's authentication: the two health methods need no key; otherwise the full key, or the
  // read-only key for a call that writes nothing.
  const std::string_view name(method);
  const bool health_method =
      name == "qdrant.Qdrant/HealthCheck" || name == "grpc.health.v1.Health/Check";
  if (!options_.api_key.empty()) {
    const auto& metadata = context->client_metadata();
    auto key = metadata.find("api-key");
    const std::string_view sent = key == metadata.end()
                                      ? std::string_view()
                                      : std::string_view(key->second.data(), key->second.size());
    if (health_method) {
      faults_.CountKey(sent.empty() ? "none" : sent == options_.api_key ? "full" : "other");
    } else if (!sent.empty() && sent == options_.api_key) {
      faults_.CountKey("full");
    } else if (!sent.empty() && !options_.read_only_api_key.empty() &&
               sent == options_.read_only_api_key) {
      if (!write_collection.empty()) {
        faults_.CountKey("refused");
        return new Refused(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                        "Forbidden: Write access denied for read-only API key"));
      }
      faults_.CountKey("read_only");
    } else {
      faults_.CountKey("refused");
      // Qdrant's words for a missing or wrong key.
      return new Refused(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                      "Must provide an API key or an Authorization bearer token"));
    }
  }
  auto* call = new Call(this, context, method, std::move(write_collection), std::move(handler));
  call->Start();
  return call;
}

namespace {

// The services: each method forwards to a Handlers method through Impl::Dispatch.
#define QPOOL_EMULATOR_METHOD(Service, Method, Request, Reply, HandlerFn, write)          \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context,                  \
                                   const qdrant::Request* request, qdrant::Reply* reply)  \
      override {                                                                          \
    return impl_->Dispatch(                                                               \
        context, "qdrant." #Service "/" #Method,                                          \
        (write) ? request->collection_name() : std::string(),                             \
        [this, request, reply] { return impl_->handlers().HandlerFn(*request, reply); }); \
  }

class QdrantService final : public qdrant::Qdrant::CallbackService {
 public:
  explicit QdrantService(EmulatorServer::Impl* impl) : impl_(impl) {}
  grpc::ServerUnaryReactor* HealthCheck(grpc::CallbackServerContext* context,
                                        const qdrant::HealthCheckRequest* request,
                                        qdrant::HealthCheckReply* reply) override {
    return impl_->Dispatch(
        context, "qdrant.Qdrant/HealthCheck", std::string(),
        [this, request, reply] { return impl_->handlers().HealthCheck(*request, reply); });
  }

 private:
  EmulatorServer::Impl* const impl_;
};

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit HealthService(EmulatorServer::Impl* impl) : impl_(impl) {}
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* reply) override {
    return impl_->Dispatch(
        context, "grpc.health.v1.Health/Check", std::string(),
        [this, request, reply] { return impl_->handlers().HealthCheckV1(*request, reply); });
  }

 private:
  EmulatorServer::Impl* const impl_;
};

class CollectionsService final : public qdrant::Collections::CallbackService {
 public:
  explicit CollectionsService(EmulatorServer::Impl* impl) : impl_(impl) {}
  QPOOL_EMULATOR_METHOD(Collections, Create, CreateCollection, CollectionOperationResponse,
                        CreateCollection, true)
  QPOOL_EMULATOR_METHOD(Collections, Get, GetCollectionInfoRequest, GetCollectionInfoResponse,
                        GetCollection, false)
  QPOOL_EMULATOR_METHOD(Collections, Delete, DeleteCollection, CollectionOperationResponse,
                        DeleteCollection, true)
  QPOOL_EMULATOR_METHOD(Collections, CollectionExists, CollectionExistsRequest,
                        CollectionExistsResponse, CollectionExists, false)
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const qdrant::ListCollectionsRequest* request,
                                 qdrant::ListCollectionsResponse* reply) override {
    return impl_->Dispatch(
        context, "qdrant.Collections/List", std::string(),
        [this, request, reply] { return impl_->handlers().ListCollections(*request, reply); });
  }

 private:
  EmulatorServer::Impl* const impl_;
};

class PointsService final : public qdrant::Points::CallbackService {
 public:
  explicit PointsService(EmulatorServer::Impl* impl) : impl_(impl) {}
  QPOOL_EMULATOR_METHOD(Points, Upsert, UpsertPoints, PointsOperationResponse, Upsert, true)
  QPOOL_EMULATOR_METHOD(Points, Delete, DeletePoints, PointsOperationResponse, Delete, true)
  QPOOL_EMULATOR_METHOD(Points, Get, GetPoints, GetResponse, Get, false)
  QPOOL_EMULATOR_METHOD(Points, Count, CountPoints, CountResponse, Count, false)
  QPOOL_EMULATOR_METHOD(Points, Search, SearchPoints, SearchResponse, Search, false)
  QPOOL_EMULATOR_METHOD(Points, Query, QueryPoints, QueryResponse, Query, false)
  QPOOL_EMULATOR_METHOD(Points, Scroll, ScrollPoints, ScrollResponse, Scroll, false)

 private:
  EmulatorServer::Impl* const impl_;
};

#undef QPOOL_EMULATOR_METHOD

}  // namespace

// One gRPC server instance with its own service objects. A GOAWAY replaces the current generation
// with a new one; the old one drains in the closer thread.
struct EmulatorServer::Impl::Generation {
  explicit Generation(Impl* impl) : qdrant(impl), health(impl), collections(impl), points(impl) {}
  QdrantService qdrant;
  HealthService health;
  CollectionsService collections;
  PointsService points;
  qdrant::Snapshots::CallbackService snapshots;  // Every method UNIMPLEMENTED.
  std::unique_ptr<grpc::Server> server;
};

absl::StatusOr<std::unique_ptr<EmulatorServer::Impl::Generation>>
EmulatorServer::Impl::NewGeneration(bool tls) {
  auto generation = std::make_unique<Generation>(this);
  grpc::ServerBuilder builder;
  int tls_port = 0;
  if (tls && options_.tls_reload_seconds > 0) {
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options_.tls_key_file, options_.tls_cert_file, options_.tls_client_ca_file,
        static_cast<unsigned int>(options_.tls_reload_seconds));
    grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
    tls_options.watch_identity_key_cert_pairs();
    if (!options_.tls_client_ca_file.empty()) {
      tls_options.watch_root_certs();
      tls_options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    }
    builder.AddListeningPort(options_.tls_listen,
                             grpc::experimental::TlsServerCredentials(tls_options), &tls_port);
  } else if (tls) {
    grpc::SslServerCredentialsOptions ssl;
    absl::StatusOr<std::string> chain = ReadPem(options_.tls_cert_file, "--tls-cert");
    if (!chain.ok()) return chain.status();
    absl::StatusOr<std::string> key = ReadPem(options_.tls_key_file, "--tls-key");
    if (!key.ok()) return key.status();
    ssl.pem_key_cert_pairs.push_back({*key, *chain});
    if (!options_.tls_client_ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadPem(options_.tls_client_ca_file, "--tls-client-ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    builder.AddListeningPort(options_.tls_listen, grpc::SslServerCredentials(ssl), &tls_port);
  }
  builder.RegisterService(&generation->qdrant);
  builder.RegisterService(&generation->health);
  builder.RegisterService(&generation->collections);
  builder.RegisterService(&generation->points);
  builder.RegisterService(&generation->snapshots);
  // As Qdrant: no receive size limit, clients' keepalive pings accepted, gzip answers to clients
  // that accept gzip, no stream limit unless asked for.
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 0);
  builder.SetDefaultCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  if (options_.max_concurrent_streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  }
  generation->server = builder.BuildAndStart();
  if (generation->server == nullptr) {
    return absl::InternalError(tls ? absl::StrCat("cannot start the TLS gRPC server on ",
                                                  options_.tls_listen,
                                                  " (a bad certificate or key, or the address)")
                                   : std::string("cannot start the gRPC server"));
  }
  if (tls) {
    const std::string& listen = options_.tls_listen;
    tls_address_ = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", tls_port);
  }
  return generation;
}

absl::Status EmulatorServer::Impl::Start() {
  if (!options_.tls_cert_file.empty()) {
    absl::StatusOr<std::unique_ptr<Generation>> tls = NewGeneration(/*tls=*/true);
    if (!tls.ok()) return tls.status();
    tls_server_ = *std::move(tls);
  }
  absl::StatusOr<std::unique_ptr<Generation>> generation = NewGeneration();
  if (!generation.ok()) return generation.status();
  {
    absl::MutexLock lock(&mu_);
    current_ = *std::move(generation);
  }
  acceptor_ = std::thread([this] { AcceptLoop(); });
  closer_ = std::thread([this] { CloserLoop(); });
  return absl::OkStatus();
}

void EmulatorServer::Impl::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    faults_.CountConnection();
    absl::MutexLock lock(&mu_);
    if (stopping_ || current_ == nullptr) {
      close(fd);
      continue;
    }
    // Forget sockets gRPC has closed (their fd no longer names the same inode).
    std::vector<Connection> alive;
    for (const Connection& c : connections_) {
      if (c.fd != fd && InodeOf(c.fd) == c.inode) alive.push_back(c);
    }
    alive.push_back(Connection{fd, InodeOf(fd)});
    connections_ = std::move(alive);
    grpc::AddInsecureChannelFromFd(current_->server.get(), fd);
  }
}

void EmulatorServer::Impl::CloserLoop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    mu_.Await(absl::Condition(
        +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu_) {
          return impl->stopping_ || impl->goaway_requests_ > 0 || !impl->draining_.empty();
        },
        this));
    if (goaway_requests_ > 0 && !stopping_) {
      goaway_requests_ = 0;
      absl::StatusOr<std::unique_ptr<Generation>> next = NewGeneration();
      if (next.ok()) {
        draining_.push_back(std::move(current_));
        current_ = *std::move(next);
        ++generation_number_;
      }
    }
    if (!draining_.empty()) {
      std::unique_ptr<Generation> old = std::move(draining_.front());
      draining_.pop_front();
      mu_.Unlock();
      faults_.CountGoaway();
      old->server->Shutdown(absl::ToChronoTime(absl::Now() + options_.goaway_grace));
      old.reset();
      mu_.Lock();
      continue;
    }
    if (stopping_) return;
  }
}

void EmulatorServer::Impl::RequestGoaway() {
  absl::MutexLock lock(&mu_);
  ++goaway_requests_;
}

void EmulatorServer::Impl::CloseAbruptly() {
  uint64_t closed = 0;
  {
    absl::MutexLock lock(&mu_);
    for (const Connection& c : connections_) {
      if (InodeOf(c.fd) != c.inode) continue;
      linger reset{1, 0};  // When gRPC closes the fd: RST instead of an orderly close.
      setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
      shutdown(c.fd, SHUT_RDWR);
      ++closed;
    }
    connections_.clear();
  }
  faults_.CountAbruptCloses(closed);
}

void EmulatorServer::Impl::CloseConnections(CloseMode mode) {
  if (mode == CloseMode::kAbrupt) {
    CloseAbruptly();
    return;
  }
  if (mode != CloseMode::kGoaway) return;
  absl::MutexLock lock(&mu_);
  uint64_t target = generation_number_ + 1;
  ++goaway_requests_;
  // Returns once the new generation is serving; the old one gets GOAWAY right after.
  std::pair<Impl*, uint64_t> arg(this, target);
  mu_.Await(absl::Condition(
      +[](std::pair<Impl*, uint64_t>* arg) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return arg->first->stopping_ || arg->first->generation_number_ >= arg->second;
      },
      &arg));
}

void EmulatorServer::Impl::Park(const char* method, std::shared_ptr<std::atomic<bool>> claimed,
                                Call* call) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      parked_.push_back(Parked{method, std::move(claimed), call});
      return;
    }
  }
  if (!claimed->exchange(true)) {
    call->FinishWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "qdrant-emulator is stopping"));
  }
}

void EmulatorServer::Impl::ReleaseParkedCalls() {
  std::vector<Parked> released;
  {
    absl::MutexLock lock(&mu_);
    std::vector<Parked> still;
    for (Parked& p : parked_) {
      if (p.claimed->load()) continue;  // Already cancelled.
      (faults_.ShouldHang(p.method) ? still : released).push_back(std::move(p));
    }
    parked_ = std::move(still);
  }
  for (Parked& p : released) {
    if (!p.claimed->exchange(true)) p.call->Proceed();
  }
}

void EmulatorServer::Impl::Shutdown() {
  std::vector<Parked> parked;
  std::unique_ptr<Generation> current;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    parked = std::move(parked_);
    current = std::move(current_);
  }
  for (Parked& p : parked) {
    if (!p.claimed->exchange(true)) {
      p.call->FinishWith(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "qdrant-emulator is stopping"));
    }
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  if (acceptor_.joinable()) acceptor_.join();
  if (closer_.joinable()) closer_.join();
  if (current != nullptr) {
    current->server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  if (tls_server_ != nullptr) {
    tls_server_->server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  close(listen_fd_);
  close(wake_fd_);
}

absl::StatusOr<std::unique_ptr<EmulatorServer>> EmulatorServer::Start(const ServerOptions& options,
                                                                      Storage& storage,
                                                                      FaultInjector& faults) {
  absl::StatusOr<int> fd = ListenTcp(options.listen);
  if (!fd.ok()) return fd.status();
  auto impl = std::make_unique<Impl>(options, storage, faults, *fd);
  absl::Status status = impl->Start();
  if (!status.ok()) return status;
  return std::unique_ptr<EmulatorServer>(new EmulatorServer(std::move(impl)));
}

EmulatorServer::EmulatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EmulatorServer::~EmulatorServer() { Shutdown(); }
const std::string& EmulatorServer::address() const { return impl_->address(); }
const std::string& EmulatorServer::tls_address() const { return impl_->tls_address(); }
void EmulatorServer::CloseConnections(CloseMode mode) { impl_->CloseConnections(mode); }
void EmulatorServer::ReleaseParkedCalls() { impl_->ReleaseParkedCalls(); }
void EmulatorServer::Shutdown() { impl_->Shutdown(); }

}  // namespace qpool::emulator
