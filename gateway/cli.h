// The `switchyard` command line: serve, check, chat (a gRPC client), --version, --help.
#ifndef SWITCHYARD_GATEWAY_CLI_H_
#define SWITCHYARD_GATEWAY_CLI_H_

namespace switchyard::gateway {

// Runs one command; returns the process exit code.
int RunCli(int argc, char** argv);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_CLI_H_
