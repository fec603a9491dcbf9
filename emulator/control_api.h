// The emulator's control endpoint (HTTP/1.1, JSON), run-time access to fault injection and
// counters. Routes (docs/emulator.md has examples):
//   GET  /healthz                        {"ok":true}
//   GET  /counters                       qpool.emulator.Counters as JSON
//   POST /counters/reset                 zeroes every counter
//   GET  /faults                         current qpool.emulator.FaultConfig
//   PUT  /faults  (or POST)              replaces it with the JSON body; 400 names a bad field
//   POST /hang, POST /resume             park every new call / answer parked calls
//   POST /connections/close?mode=goaway|abrupt   (gRPC and REST connections)
#ifndef QPOOL_EMULATOR_CONTROL_API_H_
#define QPOOL_EMULATOR_CONTROL_API_H_

#include <vector>

#include "emulator/control_http.h"
#include "emulator/faults.h"
#include "emulator/front.h"

namespace qpool::emulator {

// The routes act on the parked calls and connections of every front in `fronts` (the gRPC one,
// and the REST one when it is on). `faults` and the fronts must outlive the handler.
ControlHttpServer::Handler MakeControlHandler(FaultInjector& faults, std::vector<Front*> fronts);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_CONTROL_API_H_
