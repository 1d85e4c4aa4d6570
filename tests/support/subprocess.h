// Runs the real `switchyard` binary in tests: to completion (CLI checks) or as a server whose
// stderr is read for the "listening" line.
#ifndef SWITCHYARD_TESTS_SUPPORT_SUBPROCESS_H_
#define SWITCHYARD_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace switchyard::testing {

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;
  std::string err;
};

// Runs `argv` with `input` on stdin, at most `timeout_seconds`, and collects its output.
RunResult RunCommand(const std::vector<std::string>& argv, const std::string& input = "",
                     double timeout_seconds = 60);

// A child process whose stderr is captured.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv,
                        const std::vector<std::string>& extra_env = {});
  ~ChildProcess();  // kills the child if it still runs

  // Reads stderr until a line containing `needle` arrives; returns that line, or nullopt on
  // timeout or exit.
  std::optional<std::string> WaitForLine(const std::string& needle, double timeout_seconds);
  void Signal(int signal_number);
  // Waits for exit; returns the exit code, or -1 on timeout (the child is then killed) or death
  // by a signal.
  int Wait(double timeout_seconds);
  // Everything read from stderr so far.
  const std::string& err() const { return err_; }

 private:
  bool ReadSome(double timeout_seconds);

  pid_t pid_ = -1;
  int err_fd_ = -1;
  std::string err_;
  size_t scanned_ = 0;
  bool exited_ = false;
};

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_SUPPORT_SUBPROCESS_H_
