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

#include "emulator/control_http.h"
#include "emulator/faults.h"
#include "emulator/rest_server.h"
#include "emulator/server.h"

namespace qpool::emulator {

// `faults`, `server` and `rest` (when given: the REST front, whose parked calls and connections
// the routes act on too) must outlive the handler.
ControlHttpServer::Handler MakeControlHandler(FaultInjector& faults, EmulatorServer& server,
                                              RestServer* rest = nullptr);

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_CONTROL_API_H_
