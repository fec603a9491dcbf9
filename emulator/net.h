// Small POSIX socket helpers shared by the emulator's listeners.
#ifndef QPOOL_EMULATOR_NET_H_
#define QPOOL_EMULATOR_NET_H_

#include <string>

#include "absl/status/statusor.h"

namespace qpool::emulator {

// A listening TCP socket (non-blocking, close-on-exec) bound to "HOST:PORT" (IPv4 dotted quad or
// "localhost"; PORT 0 picks a free port). The caller owns the returned fd.
absl::StatusOr<int> ListenTcp(const std::string& address);

// The "HOST:PORT" a bound socket listens on.
std::string LocalAddress(int fd);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_NET_H_
