#include "policies/scanner.h"

#include <hs/hs.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"
#include "simdjson.h"

namespace switchyard::policies {
namespace {

bool IsWordByte(unsigned char c) {
  // Bytes of multi-byte UTF-8 characters count as word bytes, so "café" is one word.
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         c == '_' || c >= 0x80;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// A literal for Hyperscan: every byte that is not alphanumeric becomes \xHH.
std::string EscapeLiteral(std::string_view word) {
  std::string out;
  for (unsigned char c : word) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Where the phrase that Hyperscan saw end at `end` begins, walking its words backwards.
// Hyperscan reports no start for these patterns (asking for one costs scan speed).
std::optional<size_t> PhraseStart(std::string_view text, size_t end,
                                  const std::vector<std::string>& words) {
  size_t pos = end;
  for (size_t w = words.size(); w-- > 0;) {
    const std::string& word = words[w];
    if (pos < word.size()) return std::nullopt;
    pos -= word.size();
    for (size_t i = 0; i < word.size(); ++i) {
      if (Lower(text[pos + i]) != word[i]) return std::nullopt;
    }
    if (w == 0) break;
    const size_t word_start = pos;
    while (pos > 0 && IsSpace(text[pos - 1])) --pos;
    if (pos == word_start) return std::nullopt;
  }
  return pos;
}

// Hyperscan scratch space is per thread; one block serves every database on that thread
// because hs_alloc_scratch only grows it. hs_alloc_scratch re-validates the whole database
// (a checksum over megabytes with a large dictionary), so it runs only when this thread meets
// a scanner it has not scanned with just before.
hs_scratch_t* ThreadScratch(const hs_database_t* database, uint64_t scanner_id) {
  struct Holder {
    hs_scratch_t* scratch = nullptr;
    uint64_t scanner_id = 0;
    ~Holder() { hs_free_scratch(scratch); }
  };
  thread_local Holder holder;
  if (holder.scratch != nullptr && holder.scanner_id == scanner_id) return holder.scratch;
  if (hs_alloc_scratch(database, &holder.scratch) != HS_SUCCESS) return nullptr;
  holder.scanner_id = scanner_id;
  return holder.scratch;
}

// Scanner ids start at 1 so a fresh thread's holder (id 0) never matches.
std::atomic<uint64_t> next_scanner_id{1};

bool HyperscanAccepts(const std::string& regex, unsigned flags) {
  hs_database_t* database = nullptr;
  hs_compile_error_t* error = nullptr;
  if (hs_compile(regex.c_str(), flags, HS_MODE_BLOCK, nullptr, &database, &error) != HS_SUCCESS) {
    hs_free_compile_error(error);
    return false;
  }
  hs_free_database(database);
  return true;
}

}  // namespace

struct Scanner::MatchContext {
  const Scanner* scanner;
  std::string_view text;
  std::vector<Raw>* raw;
  Result* out;
};

Scanner::Scanner() : id_(next_scanner_id.fetch_add(1, std::memory_order_relaxed)) {}

Scanner::~Scanner() { hs_free_database(database_); }

size_t Scanner::re2_fallback_count() const {
  return static_cast<size_t>(std::count_if(regexes_.begin(), regexes_.end(),
                                           [](const Regex& r) { return r.fallback != nullptr; }));
}

absl::StatusOr<std::unique_ptr<const Scanner>> Scanner::Build(
    const std::vector<std::string_view>& builtin_types, const std::vector<TermSpec>& terms,
    const std::vector<RegexSpec>& regexes) {
  std::unique_ptr<Scanner> scanner(new Scanner());
  std::vector<std::string> expressions;
  std::vector<unsigned> flags;

  for (const BuiltinPattern& pattern : BuiltinPatterns()) {
    if (std::find(builtin_types.begin(), builtin_types.end(), pattern.type) ==
        builtin_types.end()) {
      continue;
    }
    scanner->entries_.push_back({Kind::kBuiltin, static_cast<int>(scanner->builtins_.size())});
    scanner->builtins_.push_back(&pattern);
    expressions.emplace_back(pattern.regex);
    flags.push_back((pattern.som ? HS_FLAG_SOM_LEFTMOST : 0u) |
                    (pattern.caseless ? HS_FLAG_CASELESS : 0u));
  }

  for (const TermSpec& spec : terms) {
    Term term;
    term.group = spec.group;
    std::string word;
    for (char c : spec.term) {
      if (IsSpace(c)) {
        if (!word.empty()) term.words.push_back(std::move(word));
        word.clear();
      } else {
        word.push_back(Lower(c));
      }
    }
    if (!word.empty()) term.words.push_back(std::move(word));
    if (term.words.empty()) continue;
    term.word_start = IsWordByte(static_cast<unsigned char>(term.words.front().front()));
    term.word_end = IsWordByte(static_cast<unsigned char>(term.words.back().back()));
    std::string expression;
    for (size_t i = 0; i < term.words.size(); ++i) {
      if (i > 0) expression += "\\s+";
      expression += EscapeLiteral(term.words[i]);
    }
    scanner->entries_.push_back({Kind::kTerm, static_cast<int>(scanner->terms_.size())});
    scanner->terms_.push_back(std::move(term));
    expressions.push_back(std::move(expression));
    flags.push_back(HS_FLAG_CASELESS);
  }

  // Policy regexes are RE2's, which reads them and the text as UTF-8: without HS_FLAG_UTF8
  // Hyperscan would take '.' or a class for one byte, so "M.ller" missed "Müller" and a match
  // could end inside a character, which redaction then cut in two. Not HS_FLAG_UCP: RE2's \d,
  // \w, \s and \b are ASCII, and so are Hyperscan's without it.
  constexpr unsigned kRegexFlags = HS_FLAG_SOM_LEFTMOST | HS_FLAG_UTF8;
  scanner->utf8_ = !regexes.empty();
  for (const RegexSpec& spec : regexes) {
    Regex regex;
    regex.group = spec.group;
    if (HyperscanAccepts(spec.regex, kRegexFlags)) {
      scanner->entries_.push_back({Kind::kRegex, static_cast<int>(scanner->regexes_.size())});
      expressions.push_back(spec.regex);
      flags.push_back(kRegexFlags);
    } else {
      // Hyperscan has no support for some RE2 constructs ((?U), \C, very large repeats); those
      // few run on RE2 after the main scan.
      RE2::Options options;
      options.set_log_errors(false);
      regex.fallback = std::make_unique<RE2>(spec.regex, options);
      if (!regex.fallback->ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid regex '", spec.regex, "': ", regex.fallback->error()));
      }
    }
    scanner->regexes_.push_back(std::move(regex));
  }

  if (expressions.empty()) return scanner;
  std::vector<const char*> pointers;
  std::vector<unsigned> ids;
  for (size_t i = 0; i < expressions.size(); ++i) {
    pointers.push_back(expressions[i].c_str());
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_compile_error_t* error = nullptr;
  if (hs_compile_multi(pointers.data(), flags.data(), ids.data(),
                       static_cast<unsigned>(pointers.size()), HS_MODE_BLOCK, nullptr,
                       &scanner->database_, &error) != HS_SUCCESS) {
    std::string message = absl::StrCat("cannot build the sensitivity scanner: ", error->message);
    if (error->expression >= 0) {
      absl::StrAppend(&message, " (pattern '", expressions[error->expression], "')");
    }
    hs_free_compile_error(error);
    return absl::InvalidArgumentError(message);
  }
  return scanner;
}

int Scanner::OnMatch(unsigned int id, unsigned long long from, unsigned long long to,
                     unsigned int flags, void* context) {
  auto* match = static_cast<MatchContext*>(context);
  const Scanner& self = *match->scanner;
  const Entry& entry = self.entries_[id];
  if (entry.kind == Kind::kBuiltin) {
    size_t start = static_cast<size_t>(from);
    const BuiltinPattern& pattern = *self.builtins_[entry.index];
    if (pattern.find_start != nullptr) {
      start = pattern.find_start(match->text, static_cast<size_t>(to));
      if (start == std::string_view::npos) return 0;  // cannot happen for a real match
    }
    match->raw->push_back({id, start, static_cast<size_t>(to)});
    return 0;
  }
  if (entry.kind == Kind::kRegex) {
    match->raw->push_back({id, static_cast<size_t>(from), static_cast<size_t>(to)});
    return 0;
  }
  const Term& term = self.terms_[entry.index];
  const std::string_view text = match->text;
  const size_t end = static_cast<size_t>(to);
  std::optional<size_t> start;
  if (term.words.size() == 1) {
    start = end - term.words.front().size();
  } else {
    start = PhraseStart(text, end, term.words);
    if (!start) return 0;
  }
  if (term.word_start && *start > 0 && IsWordByte(static_cast<unsigned char>(text[*start - 1]))) {
    return 0;
  }
  if (term.word_end && end < text.size() && IsWordByte(static_cast<unsigned char>(text[end]))) {
    return 0;
  }
  match->out->hits.push_back({term.group, *start, end});
  return 0;
}

absl::Status Scanner::Scan(std::string_view text, Result& out) const {
  out.findings.clear();
  out.hits.clear();
  // Reused across calls on this thread: Classify should not allocate per message.
  thread_local std::vector<Raw> raw;
  raw.clear();
  // Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), as the JSON
  // parsers and protobuf check it: Hyperscan's results for a UTF-8 pattern on anything else are
  // undefined.
  if (utf8_ && !simdjson::validate_utf8(text.data(), text.size())) {
    return absl::InvalidArgumentError("the text is not valid UTF-8");
  }
  if (database_ != nullptr && !text.empty()) {
    hs_scratch_t* scratch = ThreadScratch(database_, id_);
    if (scratch == nullptr) return absl::ResourceExhaustedError("no Hyperscan scratch space");
    MatchContext context{this, text, &raw, &out};
    const hs_error_t status = hs_scan(database_, text.data(), static_cast<unsigned>(text.size()),
                                      0, scratch, &Scanner::OnMatch, &context);
    if (status != HS_SUCCESS) {
      return absl::InternalError(absl::StrCat("Hyperscan scan failed with code ", status));
    }
  }
  for (size_t i = 0; i < regexes_.size(); ++i) {
    if (regexes_[i].fallback == nullptr) continue;
    re2::StringPiece input(text.data(), text.size());
    re2::StringPiece match;
    size_t pos = 0;
    while (pos <= text.size() &&
           regexes_[i].fallback->Match(input, pos, text.size(), RE2::UNANCHORED, &match, 1)) {
      const size_t start = static_cast<size_t>(match.data() - text.data());
      const size_t end = start + match.size();
      out.hits.push_back({regexes_[i].group, start, end});
      pos = end > start ? end : end + 1;
    }
  }
  Resolve(text, raw, out);
  return absl::OkStatus();
}

void Scanner::Resolve(std::string_view text, std::vector<Raw>& raw, Result& out) const {
  struct Candidate {
    const BuiltinPattern* pattern;
    size_t start;
    size_t end;
    double confidence;
  };
  // Per-thread buffers: Resolve runs once per message and should not allocate each time.
  thread_local std::vector<Candidate> candidates;
  thread_local std::vector<Hit> regex_hits;
  thread_local std::vector<const Candidate*> accepted;
  thread_local std::vector<Hit> merged;
  candidates.clear();
  regex_hits.clear();
  accepted.clear();
  merged.clear();
  // Hyperscan reports every end offset; for each pattern and start, the longest end that its
  // validator accepts is the finding (longest first, so "+44 20 7946 0958" is not cut short).
  std::sort(raw.begin(), raw.end(), [](const Raw& a, const Raw& b) {
    if (a.id != b.id) return a.id < b.id;
    if (a.start != b.start) return a.start < b.start;
    return a.end > b.end;
  });
  for (size_t i = 0; i < raw.size();) {
    size_t j = i;
    while (j < raw.size() && raw[j].id == raw[i].id && raw[j].start == raw[i].start) ++j;
    const Entry& entry = entries_[raw[i].id];
    if (entry.kind == Kind::kRegex) {
      regex_hits.push_back({regexes_[entry.index].group, raw[i].start, raw[i].end});
    } else {
      const BuiltinPattern* pattern = builtins_[entry.index];
      // Without a known start every end is a candidate of its own; overlaps go below.
      const bool each_end = !pattern->som && pattern->find_start == nullptr;
      for (size_t k = i; k < j; ++k) {
        size_t start = each_end ? raw[k].end : raw[k].start;
        size_t end = raw[k].end;
        double confidence = pattern->confidence;
        if (pattern->validate == nullptr || pattern->validate(text, start, end, confidence)) {
          candidates.push_back({pattern, start, end, confidence});
          if (!each_end) break;
        }
      }
    }
    i = j;
  }

  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.pattern->priority != b.pattern->priority) return a.pattern->priority > b.pattern->priority;
    if (a.end - a.start != b.end - b.start) return a.end - a.start > b.end - b.start;
    return a.start < b.start;
  });
  for (const Candidate& candidate : candidates) {
    const bool overlaps = std::any_of(accepted.begin(), accepted.end(), [&](const Candidate* a) {
      return candidate.start < a->end && a->start < candidate.end;
    });
    if (!overlaps) accepted.push_back(&candidate);
  }
  std::sort(accepted.begin(), accepted.end(),
            [](const Candidate* a, const Candidate* b) { return a->start < b->start; });
  for (const Candidate* candidate : accepted) {
    out.findings.push_back({std::string(candidate->pattern->type), 0, candidate->start,
                            candidate->end, candidate->confidence});
  }

  // Overlapping matches of one regex group become one span.
  std::sort(regex_hits.begin(), regex_hits.end(), [](const Hit& a, const Hit& b) {
    if (a.group != b.group) return a.group < b.group;
    return a.start < b.start;
  });
  for (const Hit& hit : regex_hits) {
    if (!merged.empty() && merged.back().group == hit.group && hit.start < merged.back().end) {
      merged.back().end = std::max(merged.back().end, hit.end);
    } else {
      merged.push_back(hit);
    }
  }
  out.hits.insert(out.hits.end(), merged.begin(), merged.end());
}

}  // namespace switchyard::policies
