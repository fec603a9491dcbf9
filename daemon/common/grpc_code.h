// gRPC status codes: the numbers qpoold reads from Qdrant's grpc-status and writes in its own
// answers, by name, and their names as the gRPC spec spells them ("OK", "UNAVAILABLE", ...) for
// metric labels, logs and load reports. The one place in qpool that knows the numbering; code
// elsewhere says kGrpcUnavailable, never 14.
//
//   if (code == kGrpcUnavailable) ...      // 14
//   GrpcCodeName(kGrpcResourceExhausted)   // "RESOURCE_EXHAUSTED"
//
// Thread-safety: constants and a pure function.
#ifndef QPOOL_DAEMON_COMMON_GRPC_CODE_H_
#define QPOOL_DAEMON_COMMON_GRPC_CODE_H_

namespace qpool {

// The codes of https://grpc.github.io/grpc/core/md_doc_statuscodes.html (absl::StatusCode uses
// the same numbers).
inline constexpr int kGrpcOk = 0;
inline constexpr int kGrpcCancelled = 1;
inline constexpr int kGrpcUnknown = 2;
inline constexpr int kGrpcInvalidArgument = 3;
inline constexpr int kGrpcDeadlineExceeded = 4;
inline constexpr int kGrpcNotFound = 5;
inline constexpr int kGrpcAlreadyExists = 6;
inline constexpr int kGrpcPermissionDenied = 7;
inline constexpr int kGrpcResourceExhausted = 8;
inline constexpr int kGrpcFailedPrecondition = 9;
inline constexpr int kGrpcAborted = 10;
inline constexpr int kGrpcOutOfRange = 11;
inline constexpr int kGrpcUnimplemented = 12;
inline constexpr int kGrpcInternal = 13;
inline constexpr int kGrpcUnavailable = 14;
inline constexpr int kGrpcDataLoss = 15;
inline constexpr int kGrpcUnauthenticated = 16;

// The name of gRPC status code `code` (0 to 16); nullptr for any other number.
const char* GrpcCodeName(int code);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_GRPC_CODE_H_
