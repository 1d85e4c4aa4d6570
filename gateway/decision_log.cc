#include "gateway/decision_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/hash.h"
#include "gateway/log.h"
#include "nlohmann/json.hpp"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kHashKey = ",\"hash\":\"";
constexpr char kTimeFormat[] = "%Y-%m-%dT%H:%M:%E3SZ";

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string FormatTime(std::chrono::system_clock::time_point time) {
  return absl::FormatTime(kTimeFormat, absl::FromChrono(time), absl::UTCTimeZone());
}

// The record's own hash, or nullopt when the line does not end in a well-formed hash member.
// `body` receives the line without the hash member.
std::optional<std::string> SplitHash(std::string_view line, std::string* body) {
  const size_t at = line.rfind(kHashKey);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view hash = line.substr(at + kHashKey.size());
  if (hash.size() != 64 + 2 || !hash.ends_with("\"}")) return std::nullopt;
  hash.remove_suffix(2);
  for (char c : hash) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  *body = absl::StrCat(policies::Sv(line.substr(0, at)), "}");
  return std::string(hash);
}

// Whether `line` (without its newline) is a whole record: it ends in the hash of its content.
bool IsRecordLine(std::string_view line) {
  std::string body;
  const std::optional<std::string> hash = SplitHash(line, &body);
  return hash.has_value() && Sha256Hex(body) == *hash;
}

// The last line of `text`, which ends in a newline, without that newline.
std::string_view LastLine(std::string_view text) {
  text.remove_suffix(1);
  const size_t before = text.rfind('\n');
  return before == std::string_view::npos ? text : text.substr(before + 1);
}

absl::Status NotADecisionLog(std::string_view path) {
  return absl::FailedPreconditionError(
      absl::StrCat("decision log ", policies::Sv(path),
                   ": its last line is not a decision record; refusing to append to, or cut, a "
                   "file that is not a decision log"));
}

}  // namespace

std::string DecisionLogLine(const RequestRecord& record, std::string_view prev,
                            bool include_prompts) {
  // Types only (never the matched text), each once.
  Json findings = Json::array();
  for (const std::string& type :
       std::set<std::string>(record.finding_types.begin(), record.finding_types.end())) {
    findings.push_back(type);
  }
  Json metadata = Json::object();
  for (const auto& [key, value] : record.metadata) metadata[key] = value;
  Json line = {
      {"time", FormatTime(record.time)},
      {"request_id", record.request_id},
      {"edge", record.edge},
      {"tenant", record.tenant},
      {"key_name", record.key_name},
      {"decision", record.rejected || record.denied ? "denied" : "routed"},
      {"rule", record.rule},
      {"policy_version", record.policy_version},
      {"level", record.level},
      {"findings", std::move(findings)},
      {"target", record.target},
      {"served_by", record.served_by},
      {"locality", record.locality},
      {"stream", record.stream},
      {"tokens_in", record.usage.prompt_tokens},
      {"tokens_out", record.usage.completion_tokens},
      {"cost_usd", record.cost_usd},
      {"savings_usd", record.savings_usd},
      {"estimated_usd", record.estimated_usd},
      {"latency_seconds", record.duration_seconds},
      {"ttft_seconds", record.ttft_seconds},
      {"outcome", record.outcome},
      {"requested_model", record.requested_model},
      {"metadata", std::move(metadata)},
      {"max_tokens", record.max_tokens ? Json(*record.max_tokens) : Json(nullptr)},
      {"estimated_prompt_tokens", record.estimated_prompt_tokens},
      {"difficulty_score", record.difficulty_score},
      {"difficulty_tier", record.difficulty_tier},
  };
  if (include_prompts) {
    Json messages = Json::array();
    for (const backends::Message& message : record.messages) {
      messages.push_back({{"role", message.role}, {"content", message.content}});
    }
    line["messages"] = std::move(messages);
  }
  line["prev"] = std::string(prev);
  std::string body = Dump(line);
  const std::string hash = Sha256Hex(body);
  body.pop_back();  // the closing brace
  absl::StrAppend(&body, policies::Sv(kHashKey), hash, "\"}");
  return body;
}

absl::StatusOr<RequestRecord> ParseDecisionLogLine(std::string_view line) {
  const Json json = Json::parse(line, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  RequestRecord record;
  std::string field;
  auto text = [&](const char* key, std::string& out) {
    auto it = json.find(key);
    if (it == json.end() || !it->is_string()) {
      if (field.empty()) field = key;
      return;
    }
    out = it->get<std::string>();
  };
  auto number = [&](const char* key, auto& out) {
    auto it = json.find(key);
    if (it == json.end() || !it->is_number()) {
      if (field.empty()) field = key;
      return;
    }
    out = it->get<std::remove_reference_t<decltype(out)>>();
  };
  std::string time;
  text("time", time);
  absl::Time parsed_time;
  std::string error;
  if (field.empty() && !absl::ParseTime(kTimeFormat, time, &parsed_time, &error)) field = "time";
  record.time = absl::ToChronoTime(parsed_time);
  text("request_id", record.request_id);
  text("edge", record.edge);
  text("tenant", record.tenant);
  text("key_name", record.key_name);
  std::string decision;
  text("decision", decision);
  if (field.empty() && decision != "routed" && decision != "denied") field = "decision";
  record.denied = decision == "denied";
  text("rule", record.rule);
  text("policy_version", record.policy_version);
  text("level", record.level);
  if (auto it = json.find("findings"); it != json.end() && it->is_array()) {
    for (const Json& type : *it) {
      if (!type.is_string()) {
        if (field.empty()) field = "findings";
        continue;
      }
      record.finding_types.push_back(type.get<std::string>());
    }
  } else if (field.empty()) {
    field = "findings";
  }
  text("target", record.target);
  text("served_by", record.served_by);
  text("locality", record.locality);
  if (auto it = json.find("stream"); it != json.end() && it->is_boolean()) {
    record.stream = it->get<bool>();
  }
  number("tokens_in", record.usage.prompt_tokens);
  number("tokens_out", record.usage.completion_tokens);
  number("cost_usd", record.cost_usd);
  number("savings_usd", record.savings_usd);
  number("estimated_usd", record.estimated_usd);
  number("latency_seconds", record.duration_seconds);
  number("ttft_seconds", record.ttft_seconds);
  text("outcome", record.outcome);
  text("requested_model", record.requested_model);
  if (auto it = json.find("metadata"); it != json.end() && it->is_object()) {
    for (const auto& [key, value] : it->items()) {
      if (value.is_string()) record.metadata[key] = value.get<std::string>();
    }
  }
  if (auto it = json.find("max_tokens"); it != json.end() && it->is_number_integer()) {
    record.max_tokens = it->get<int32_t>();
  }
  number("estimated_prompt_tokens", record.estimated_prompt_tokens);
  number("difficulty_score", record.difficulty_score);
  text("difficulty_tier", record.difficulty_tier);
  if (auto it = json.find("messages"); it != json.end() && it->is_array()) {
    for (const Json& message : *it) {
      if (!message.is_object() || !message.contains("role") || !message.contains("content") ||
          !message["role"].is_string() || !message["content"].is_string()) {
        if (field.empty()) field = "messages";
        continue;
      }
      record.messages.push_back(
          {message["role"].get<std::string>(), message["content"].get<std::string>()});
    }
  }
  if (!field.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing or malformed field '", field, "'"));
  }
  record.rejected = record.denied && record.locality.empty() && record.served_by.empty();
  return record;
}

absl::StatusOr<std::vector<std::string>> ReadDecisionLogLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open decision log"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return lines;
}

std::optional<ChainBreak> VerifyDecisionLogChain(const std::vector<std::string>& lines) {
  std::vector<std::string> hashes;
  hashes.reserve(lines.size());
  std::map<std::string, int64_t> line_of_hash;  // 1-based
  for (size_t i = 0; i < lines.size(); ++i) {
    hashes.push_back(Sha256Hex(lines[i]));
    line_of_hash.emplace(hashes.back(), static_cast<int64_t>(i + 1));
  }
  const std::string genesis = Sha256Hex(kDecisionLogGenesis);
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t number = static_cast<int64_t>(i + 1);
    std::string body;
    std::optional<std::string> hash = SplitHash(lines[i], &body);
    if (!hash) return ChainBreak{number, "altered: the line does not end in its hash"};
    if (Sha256Hex(body) != *hash) {
      return ChainBreak{number, "altered: the line's content does not match its hash"};
    }
    const Json json = Json::parse(body, nullptr, false);
    auto prev = json.is_object() ? json.find("prev") : Json::const_iterator();
    if (json.is_discarded() || !json.is_object() || prev == json.end() || !prev->is_string()) {
      return ChainBreak{number, "altered: not a decision log line (no 'prev')"};
    }
    const std::string& expected = i == 0 ? genesis : hashes[i - 1];
    const std::string actual = prev->get<std::string>();
    if (actual == expected) continue;
    if (actual == genesis) {
      return ChainBreak{number, "out of order: it is the first line of the chain"};
    }
    if (auto it = line_of_hash.find(actual); it != line_of_hash.end()) {
      return ChainBreak{number, absl::StrCat("out of order: it follows line ", it->second,
                                             " in the chain, not line ", number - 1)};
    }
    return ChainBreak{number, i == 0 ? "deleted: the chain's first line(s) are missing"
                                     : "deleted: the line that preceded it in the chain is "
                                       "missing"};
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<DecisionLog>> DecisionLog::Open(std::string path,
                                                               bool include_prompts,
                                                               DecisionLogCounters counters,
                                                               size_t queue_capacity) {
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("decision log ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::unique_ptr<DecisionLog> log(
      new DecisionLog(std::move(path), include_prompts, counters, queue_capacity));
  log->fd_ = fd;
  // Read the tail back to the last whole line; a line without its newline is torn.
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat("decision log ", log->path_, ": cannot stat: ", std::strerror(errno)));
  }
  const off_t end = st.st_size;
  // Read backwards until the tail holds the last whole line (and a torn one after it, if any).
  off_t pos = end;
  std::string tail;  // the file's bytes [pos, end)
  constexpr off_t kChunk = 64 * 1024;
  while (pos > 0) {
    const off_t start = std::max<off_t>(0, pos - kChunk);
    std::string chunk(static_cast<size_t>(pos - start), '\0');
    if (::pread(fd, chunk.data(), chunk.size(), start) != static_cast<ssize_t>(chunk.size())) {
      return absl::UnavailableError(
          absl::StrCat("decision log ", log->path_, ": cannot read: ", std::strerror(errno)));
    }
    tail.insert(0, chunk);
    pos = start;
    const size_t search = tail.back() == '\n' ? tail.size() - 1 : tail.size();
    if (search > 0 && tail.rfind('\n', search - 1) != std::string::npos) break;
  }
  if (!tail.empty() && tail.back() != '\n') {
    const size_t last_newline = tail.rfind('\n');
    const size_t keep = last_newline == std::string::npos ? 0 : last_newline + 1;
    if (IsRecordLine(std::string_view(tail).substr(keep))) {
      // A whole record that lost only its newline (an editor, a copy): keep it, end the line.
      Log(LogLevel::kWarning, "decision log ", log->path_,
          ": the last record has no newline; adding one");
      if (::write(fd, "\n", 1) != 1) {
        return absl::UnavailableError(
            absl::StrCat("decision log ", log->path_, ": cannot write: ", std::strerror(errno)));
      }
      tail.push_back('\n');
    } else {
      // Torn by a crash mid-write: cut it off so the chain continues from the last whole line.
      // Only from a decision log, though: the path may name some other file by mistake.
      const std::string_view torn = std::string_view(tail).substr(keep);
      if (!std::string_view("{\"").starts_with(torn.substr(0, 2)) ||
          (keep > 0 && !IsRecordLine(LastLine(std::string_view(tail).substr(0, keep))))) {
        return NotADecisionLog(log->path_);
      }
      Log(LogLevel::kWarning, "decision log ", log->path_, ": cutting off a torn last line (",
          tail.size() - keep, " bytes)");
      if (::ftruncate(fd, pos + static_cast<off_t>(keep)) != 0) {
        return absl::UnavailableError(absl::StrCat("decision log ", log->path_,
                                                   ": cannot truncate: ", std::strerror(errno)));
      }
      tail.resize(keep);
    }
  }
  if (!tail.empty()) {
    const std::string_view last = LastLine(tail);
    // Appending to a file that is not a decision log would mix records into it.
    if (!IsRecordLine(last)) return NotADecisionLog(log->path_);
    log->prev_ = Sha256Hex(last);
  }
  if (log->prev_.empty()) log->prev_ = Sha256Hex(kDecisionLogGenesis);
  log->writer_ = std::thread([raw = log.get()] { raw->Run(); });
  return log;
}

DecisionLog::~DecisionLog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void DecisionLog::Append(RequestRecord record) {
  bool dropped = false;
  {
    absl::MutexLock lock(&mu_);
    ++enqueued_;
    if (queue_.size() >= queue_capacity_) {
      ++done_;
      dropped = true;
    } else {
      queue_.push_back(std::move(record));
    }
  }
  if (dropped) {
    counters_.dropped_overflow.Increment();
    // One line per 1000 drops: an overloaded disk must not also flood the log.
    const double total = counters_.dropped_overflow.Value();
    if (total == 1 || std::fmod(total, 1000) == 0) {
      Log(LogLevel::kError, "decision log ", path_, ": queue full, dropped the record of ",
          record.request_id, " (", total, " dropped so far)");
    }
  }
}

void DecisionLog::Flush() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = enqueued_;
  std::pair<DecisionLog*, uint64_t> arg(this, target);
  mu_.Await(absl::Condition(
      +[](std::pair<DecisionLog*, uint64_t>* arg) {
        arg->first->mu_.AssertHeld();
        return arg->first->done_ >= arg->second;
      },
      &arg));
}

void DecisionLog::Run() {
  while (true) {
    std::deque<RequestRecord> batch;
    bool stop = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](DecisionLog* log) {
            log->mu_.AssertHeld();
            return log->stopping_ || !log->queue_.empty();
          },
          this));
      batch.swap(queue_);
      stop = stopping_;
    }
    if (!batch.empty()) {
      const bool ok = WriteBatch(batch);
      (ok ? counters_.written : counters_.dropped_write_error)
          .Increment(static_cast<double>(batch.size()));
      absl::MutexLock lock(&mu_);
      done_ += batch.size();
    }
    if (stop) {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) return;
    }
  }
}

bool DecisionLog::WriteBatch(const std::deque<RequestRecord>& batch) {
  const std::string prev_before = prev_;
  std::string bytes;
  for (const RequestRecord& record : batch) {
    std::string line = DecisionLogLine(record, prev_, include_prompts_);
    prev_ = Sha256Hex(line);
    absl::StrAppend(&bytes, line, "\n");
  }
  struct stat st {};
  const bool have_size = ::fstat(fd_, &st) == 0;
  size_t written = 0;
  int error = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno;
      break;
    }
    written += static_cast<size_t>(n);
  }
  if (error == 0 && ::fdatasync(fd_) != 0) error = errno;
  if (error == 0) return true;
  Log(LogLevel::kError, "decision log ", path_, ": write failed, dropped ", batch.size(),
      " records: ", std::strerror(error));
  // Cut a partial batch back off so the file ends in a whole line chained to prev_before.
  if (written > 0 && have_size && ::ftruncate(fd_, st.st_size) != 0) {
    Log(LogLevel::kError, "decision log ", path_, ": cannot cut off a partial write: ",
        std::strerror(errno));
  }
  prev_ = prev_before;
  return false;
}

}  // namespace switchyard::gateway
