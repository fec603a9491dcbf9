#include "tests/support/echo_client.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace qpool::testing {

std::shared_ptr<grpc::Channel> OwnChannel(uint16_t port) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

grpc::Status Echo(TestService::Stub& stub, const std::string& payload, int sleep_ms,
                  absl::Duration deadline) {
  EchoRequest request;
  request.set_payload(payload);
  request.set_sleep_ms(sleep_ms);
  EchoResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  grpc::Status status = stub.Unary(&ctx, request, &response);
  if (status.ok() && response.payload() != payload) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS, "wrong payload: " + response.payload());
  }
  return status;
}

EchoLoad::EchoLoad(uint16_t port, int threads, int max_calls)
    : ThreadedLoad(threads, max_calls, [port](int thread) -> Caller {
        std::shared_ptr<TestService::Stub> stub = TestService::NewStub(OwnChannel(port));
        return [stub, thread](int call) -> std::string {
          const grpc::Status status = Echo(*stub, absl::StrCat("load ", thread, " ", call));
          if (status.ok()) return "";
          return absl::StrCat(status.error_code(), ": ", status.error_message());
        };
      }) {}

}  // namespace qpool::testing
