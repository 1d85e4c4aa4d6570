#include "gateway/cli.h"

int main(int argc, char** argv) { return switchyard::gateway::RunCli(argc, argv); }
