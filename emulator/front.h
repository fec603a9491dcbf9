// One of the emulator's protocol fronts (EmulatorServer for gRPC, RestServer for REST) as main()
// and the control endpoint drive it: where it listens, closing its connections on purpose,
// letting parked calls go, shutting down.
//
//   for (Front* front : fronts) front->CloseConnections(CloseMode::kGoaway);
//
// Thread-safety: every implementation's methods are thread-safe.
#ifndef QPOOL_EMULATOR_FRONT_H_
#define QPOOL_EMULATOR_FRONT_H_

#include <string>

#include "emulator/faults.h"

namespace qpool::emulator {

class Front {
 public:
  virtual ~Front() = default;

  // "127.0.0.1:PORT" as bound.
  virtual const std::string& address() const = 0;
  // The TLS port's "127.0.0.1:PORT"; empty without TLS.
  virtual const std::string& tls_address() const = 0;
  // kGoaway: calls being served finish (gRPC GOAWAY; REST answers `Connection: close`) and idle
  // connections close; kAbrupt: every connection is reset, unanswered. Returns once done.
  virtual void CloseConnections(CloseMode mode) = 0;
  // Lets parked calls whose method no longer hangs (see FaultInjector) proceed.
  virtual void ReleaseParkedCalls() = 0;
  // Answers parked calls (UNAVAILABLE, 503), closes every connection and stops. Idempotent.
  virtual void Shutdown() = 0;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_FRONT_H_
