// gRPC status code names as the gRPC spec spells them ("OK", "UNAVAILABLE", ...), for metric
// labels, logs and load reports. Thread-safety: a pure function.
#ifndef QPOOL_DAEMON_COMMON_GRPC_CODE_H_
#define QPOOL_DAEMON_COMMON_GRPC_CODE_H_

namespace qpool {

// The name of gRPC status code `code` (0 to 16); nullptr for any other number.
const char* GrpcCodeName(int code);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_GRPC_CODE_H_
