// The decision log: one JSON line per request (dispatched or refused), hash-chained so that an
// altered, deleted or reordered line is detectable (`switchyard audit`).
//
// Line format: a JSON object whose fields are the request's record (gateway/request_record.h),
// then `prev`, then `hash`:
//   prev = lower-case hex SHA-256 of the previous line's bytes (without its newline); the first
//          line of a file chains to SHA-256 of kDecisionLogGenesis.
//   hash = SHA-256 of the line's own JSON with the `hash` member left out, i.e. of the bytes
//          before `,"hash":"` followed by `}`.
// A restart reads the last line of the existing file and continues its chain.
//
// Writing never blocks a request: Append() only queues (bounded); one writer thread takes every
// queued record at once, writes the batch with one write(2) on an O_APPEND descriptor and
// fdatasync(2)s it before taking the next. A full queue or a failed write drops the record and
// counts it in switchyard_decision_log_dropped_total{reason} (and logs an error); a failed write
// is cut back off the file so the chain stays whole. A crash loses at most the batch in flight;
// a torn last line (no trailing newline) is cut off at the next start, with a warning.
#ifndef SWITCHYARD_GATEWAY_DECISION_LOG_H_
#define SWITCHYARD_GATEWAY_DECISION_LOG_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/metrics.h"
#include "gateway/request_record.h"

namespace switchyard::gateway {

inline constexpr std::string_view kDecisionLogGenesis = "switchyard decision log v1";

// The line for `record` (no newline), chained to `prev`. Messages are written only when
// `include_prompts`.
std::string DecisionLogLine(const RequestRecord& record, std::string_view prev,
                            bool include_prompts);

// A line read back (the inverse of DecisionLogLine). InvalidArgument names the bad field.
absl::StatusOr<RequestRecord> ParseDecisionLogLine(std::string_view line);

// Every line of the log at `path`, for `audit` and `replay`. The error says which file and why
// (it cannot be opened, or reading it failed).
absl::StatusOr<std::vector<std::string>> ReadDecisionLogLines(const std::string& path);

// Why a log's chain is broken: the first bad line (1-based) and what is wrong with it.
struct ChainBreak {
  int64_t line = 0;
  std::string reason;
};

// Checks every line's own hash and its link to the line before it (the first to the genesis).
std::optional<ChainBreak> VerifyDecisionLogChain(const std::vector<std::string>& lines);

struct DecisionLogCounters {
  Counter& written;
  Counter& dropped_overflow;
  Counter& dropped_write_error;
};

class DecisionLog {
 public:
  static constexpr size_t kDefaultQueueCapacity = 8192;

  // Opens (creating) `path` for appending, cuts off a torn last line, reads the chain head and
  // starts the writer thread.
  static absl::StatusOr<std::unique_ptr<DecisionLog>> Open(
      std::string path, bool include_prompts, DecisionLogCounters counters,
      size_t queue_capacity = kDefaultQueueCapacity);

  // Drains: every record appended before is written and synced, then the writer stops.
  ~DecisionLog();
  DecisionLog(const DecisionLog&) = delete;
  DecisionLog& operator=(const DecisionLog&) = delete;

  // Queues one record; never waits for the disk. Thread-safe.
  void Append(RequestRecord record);

  // Waits until every record appended before the call is written (or dropped).
  void Flush();

  const std::string& path() const { return path_; }
  bool include_prompts() const { return include_prompts_; }

 private:
  DecisionLog(std::string path, bool include_prompts, DecisionLogCounters counters,
              size_t queue_capacity)
      : path_(std::move(path)),
        include_prompts_(include_prompts),
        counters_(counters),
        queue_capacity_(queue_capacity) {}

  void Run();
  // Writes one batch; on failure restores the file and the chain head. Writer thread only.
  bool WriteBatch(const std::deque<RequestRecord>& batch);

  const std::string path_;
  const bool include_prompts_;
  DecisionLogCounters counters_;
  const size_t queue_capacity_;
  int fd_ = -1;
  std::string prev_;  // hash of the last line written; writer thread only after Open

  absl::Mutex mu_;
  std::deque<RequestRecord> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;  // records accepted or dropped so far
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;      // of those, written or dropped
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_DECISION_LOG_H_
