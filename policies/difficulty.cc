#include "policies/difficulty.h"

#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "policies/absl_compat.h"
#include "policies/policy_set.h"
#include "policies/yaml_util.h"

namespace switchyard::policies {
namespace {

// What a cue word counts towards. kStep/kBy/kAt/kLeast/kMost/kNo/kMore/kThan only count as part
// of the phrases "step by step", "at least", "at most" and "no more than".
enum class Cue : uint8_t {
  kNone, kCode, kMath, kReasoning, kConstraint,
  kStep, kBy, kAt, kLeast, kMost, kNo, kMore, kFewer, kThan,
};

struct CueWord {
  std::string_view word;
  Cue cue;
};

constexpr CueWord kCueWords[] = {
    // Code: keywords of common languages and words that ask for programming work.
    {"def", Cue::kCode}, {"return", Cue::kCode}, {"class", Cue::kCode},
    {"function", Cue::kCode}, {"import", Cue::kCode}, {"include", Cue::kCode},
    {"const", Cue::kCode}, {"void", Cue::kCode}, {"struct", Cue::kCode},
    {"lambda", Cue::kCode}, {"async", Cue::kCode}, {"await", Cue::kCode},
    {"printf", Cue::kCode}, {"println", Cue::kCode}, {"elif", Cue::kCode},
    {"nullptr", Cue::kCode}, {"namespace", Cue::kCode}, {"func", Cue::kCode},
    {"impl", Cue::kCode}, {"typedef", Cue::kCode}, {"std", Cue::kCode},
    {"refactor", Cue::kCode}, {"debug", Cue::kCode}, {"compile", Cue::kCode},
    {"regex", Cue::kCode}, {"algorithm", Cue::kCode}, {"recursion", Cue::kCode},
    // Math.
    {"integral", Cue::kMath}, {"derivative", Cue::kMath}, {"equation", Cue::kMath},
    {"equations", Cue::kMath}, {"theorem", Cue::kMath}, {"lemma", Cue::kMath},
    {"matrix", Cue::kMath}, {"eigenvalue", Cue::kMath}, {"eigenvalues", Cue::kMath},
    {"polynomial", Cue::kMath}, {"probability", Cue::kMath}, {"solve", Cue::kMath},
    {"calculate", Cue::kMath}, {"prime", Cue::kMath}, {"primes", Cue::kMath},
    {"modulo", Cue::kMath}, {"logarithm", Cue::kMath}, {"sqrt", Cue::kMath},
    {"integer", Cue::kMath}, {"integers", Cue::kMath}, {"inequality", Cue::kMath},
    {"calculus", Cue::kMath}, {"induction", Cue::kMath},
    // Multi-step reasoning.
    {"prove", Cue::kReasoning}, {"proof", Cue::kReasoning}, {"why", Cue::kReasoning},
    {"explain", Cue::kReasoning}, {"compare", Cue::kReasoning},
    {"contrast", Cue::kReasoning}, {"derive", Cue::kReasoning},
    {"analyze", Cue::kReasoning}, {"analyse", Cue::kReasoning},
    {"justify", Cue::kReasoning}, {"evaluate", Cue::kReasoning},
    {"tradeoff", Cue::kReasoning}, {"tradeoffs", Cue::kReasoning},
    {"implications", Cue::kReasoning}, {"critique", Cue::kReasoning},
    // Constraints.
    {"must", Cue::kConstraint}, {"without", Cue::kConstraint}, {"exactly", Cue::kConstraint},
    {"never", Cue::kConstraint}, {"ensure", Cue::kConstraint},
    {"required", Cue::kConstraint}, {"requirements", Cue::kConstraint},
    {"constraint", Cue::kConstraint}, {"constraints", Cue::kConstraint},
    {"avoid", Cue::kConstraint},
    // Phrase parts.
    {"step", Cue::kStep}, {"by", Cue::kBy}, {"at", Cue::kAt}, {"least", Cue::kLeast},
    {"most", Cue::kMost}, {"no", Cue::kNo}, {"more", Cue::kMore}, {"fewer", Cue::kFewer},
    {"than", Cue::kThan},
};

constexpr size_t kMaxWord = 12;

// Open-addressed table over kCueWords: most words of a prompt miss on an empty slot after one
// hash, which keeps the pass cheap enough to run on every request.
class CueTable {
 public:
  CueTable() {
    slots_.fill(-1);
    static_assert(std::size(kCueWords) < kMask / 2);
    for (size_t i = 0; i < std::size(kCueWords); ++i) {
      size_t slot = Hash(kCueWords[i].word);
      while (slots_[slot] >= 0) slot = (slot + 1) & kMask;
      slots_[slot] = static_cast<int16_t>(i);
      const std::string_view word = kCueWords[i].word;
      const size_t bit = FilterBit(word.size(), word[0], word[1], word.back());
      filter_[bit / 64] |= uint64_t{1} << (bit % 64);
    }
  }

  // A cheap filter before Find, on the length and three letters of a word in any case: about
  // one word in five of a prompt shares length and first letter with some cue word, which made
  // the branch after the filter hard to predict; with three letters hashed into 4096 bits,
  // false positives are rare. Needs len >= 2.
  bool MayHold(const unsigned char* word, size_t len) const {
    const size_t bit = FilterBit(len, word[0], word[1], word[len - 1]);
    return (filter_[bit / 64] >> (bit % 64)) & 1;
  }

  Cue Find(std::string_view word) const {
    for (size_t slot = Hash(word);; slot = (slot + 1) & kMask) {
      const int16_t index = slots_[slot];
      if (index < 0) return Cue::kNone;
      if (kCueWords[index].word == word) return kCueWords[index].cue;
    }
  }

 private:
  static constexpr size_t kMask = 511;
  static size_t Hash(std::string_view word) {
    const auto first = static_cast<unsigned char>(word.front());
    const auto second = static_cast<unsigned char>(word[word.size() > 1 ? 1 : 0]);
    const auto last = static_cast<unsigned char>(word.back());
    return (word.size() * 131 + first * 31 + second * 17 + last * 7) & kMask;
  }
  static size_t FilterBit(size_t len, unsigned char first, unsigned char second,
                          unsigned char last) {
    return (len * 0x9e5 + (first | 0x20) * 0x3b1 + (second | 0x20) * 0x61 + (last | 0x20)) &
           (kFilterBits - 1);
  }
  static constexpr size_t kFilterBits = 4096;
  std::array<int16_t, kMask + 1> slots_;
  std::array<uint64_t, kFilterBits / 64> filter_{};
};

struct Counts {
  double fences = 0, code_words = 0, code_symbols = 0;
  double latex = 0, dollars = 0, operators = 0, math_words = 0, digits = 0;
  double reasoning = 0, constraints = 0, bullets = 0, questions = 0;
  double bytes = 0;
};

// What the byte-at-a-time code asks of a byte; everything else (newlines, punctuation) is a
// "rare" byte of the block masks below.
enum ByteClass : uint8_t { kOther, kLetter, kBlank, kDigit };

constexpr std::array<uint8_t, 256> MakeClasses() {
  std::array<uint8_t, 256> classes{};
  for (int c = 'a'; c <= 'z'; ++c) classes[c] = kLetter;
  for (int c = 'A'; c <= 'Z'; ++c) classes[c] = kLetter;
  for (int c = '0'; c <= '9'; ++c) classes[c] = kDigit;
  classes[' '] = classes['\t'] = classes['\r'] = kBlank;
  return classes;
}
constexpr std::array<uint8_t, 256> kClasses = MakeClasses();

// Which bytes of a 64-byte block are letters, digits, blanks, and "rare": the punctuation,
// newlines and control bytes that need a look of their own. Bytes of multi-byte UTF-8
// characters are none of these: no feature counts them.
struct BlockMasks {
  uint64_t letters = 0;
  uint64_t digits = 0;
  uint64_t rare = 0;
};

BlockMasks ClassifyBlock(const unsigned char* block) {
  BlockMasks masks;
#if defined(__SSE2__)
  // Sixteen bytes per step: range checks as signed compares after a bias, blanks by equality.
  const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80));
  for (int k = 0; k < 4; ++k) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * k));
    const __m128i lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
    const __m128i letter =
        _mm_cmplt_epi8(_mm_add_epi8(lower, _mm_set1_epi8(static_cast<char>(-'a' - 0x80))),
                       _mm_set1_epi8(static_cast<char>(-0x80 + 26)));
    const __m128i digit =
        _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(static_cast<char>(-'0' - 0x80))),
                       _mm_set1_epi8(static_cast<char>(-0x80 + 10)));
    const __m128i blank = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')),
                                                    _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
    const __m128i common = _mm_or_si128(_mm_or_si128(letter, digit), blank);
    const auto shift = static_cast<unsigned>(16 * k);
    masks.letters |= uint64_t{static_cast<uint16_t>(_mm_movemask_epi8(letter))} << shift;
    masks.digits |= uint64_t{static_cast<uint16_t>(_mm_movemask_epi8(digit))} << shift;
    // High-bit bytes (UTF-8) are neither common nor rare.
    masks.rare |= uint64_t{static_cast<uint16_t>(
                      ~_mm_movemask_epi8(_mm_or_si128(common, _mm_and_si128(v, bias))))}
                  << shift;
  }
#else
  for (int i = 0; i < 64; ++i) {
    const unsigned char c = block[i];
    const uint8_t kind = kClasses[c];
    const uint64_t bit = uint64_t{1} << i;
    if (kind == kLetter) {
      masks.letters |= bit;
    } else if (kind == kDigit) {
      masks.digits |= bit;
    } else if (kind != kBlank && c < 0x80) {
      masks.rare |= bit;
    }
  }
#endif
  return masks;
}

int CountTrailingZeros(uint64_t x) { return __builtin_ctzll(x); }

bool IsBlank(unsigned char c) { return kClasses[c] == kBlank; }

// Whether only blanks stand between the start of the line and `pos`.
bool AtLineStart(const unsigned char* data, size_t pos) {
  while (pos > 0 && IsBlank(data[pos - 1])) --pos;
  return pos == 0 || data[pos - 1] == '\n';
}

// "1. item" or "2) item" starting at `pos`, which holds a digit.
bool NumberedBullet(const unsigned char* data, size_t n, size_t pos) {
  size_t j = pos + 1;
  while (j < n && kClasses[data[j]] == kDigit) ++j;
  return j + 1 < n && (data[j] == '.' || data[j] == ')') && data[j + 1] == ' ';
}

// The line that starts at `pos` (after a newline or at the start of the text) opens a
// numbered item when its first byte other than blanks is a digit.
void CountLineStart(const unsigned char* data, size_t n, size_t pos, Counts& counts) {
  while (pos < n && IsBlank(data[pos])) ++pos;
  if (pos < n && kClasses[data[pos]] == kDigit && NumberedBullet(data, n, pos)) ++counts.bullets;
}

// Counts one word's cue, given the two previous words' cues (updated here).
inline void CountWord(const unsigned char* word, size_t len, const CueTable& table, Cue& prev1,
                      Cue& prev2, Counts& counts) {
  if (len < 2 || len > kMaxWord || !table.MayHold(word, len)) {
    prev2 = prev1;
    prev1 = Cue::kNone;
    return;
  }
  char lower[kMaxWord];
  for (size_t k = 0; k < len; ++k) lower[k] = static_cast<char>(word[k] | 0x20);
  const Cue cue = table.Find(std::string_view(lower, len));
  switch (cue) {
    case Cue::kNone: break;
    case Cue::kCode: ++counts.code_words; break;
    case Cue::kMath: ++counts.math_words; break;
    case Cue::kReasoning: ++counts.reasoning; break;
    case Cue::kConstraint: ++counts.constraints; break;
    case Cue::kStep:
      if (prev1 == Cue::kBy && prev2 == Cue::kStep) ++counts.reasoning;
      break;
    case Cue::kLeast:
    case Cue::kMost:
      if (prev1 == Cue::kAt) ++counts.constraints;
      break;
    case Cue::kThan:
      if ((prev1 == Cue::kMore || prev1 == Cue::kFewer) && prev2 == Cue::kNo) {
        ++counts.constraints;
      }
      break;
    default: break;
  }
  prev2 = prev1;
  prev1 = cue;
}

// The rare bytes: punctuation that feeds a feature, newlines, backtick runs.
void CountRare(const unsigned char* data, size_t n, size_t i, Counts& counts) {
  const unsigned char c = data[i];
  switch (c) {
    case '\n':
      CountLineStart(data, n, i + 1, counts);
      break;
    case '`':
      if (i == 0 || data[i - 1] != '`') {  // the first of a run: count the run once
        size_t j = i + 1;
        while (j < n && data[j] == '`') ++j;
        if (j - i >= 3) ++counts.fences;
      }
      break;
    case '?': ++counts.questions; break;
    case '{': case '}': case ';': ++counts.code_symbols; break;
    case '=': case '^': case '<': case '>': ++counts.operators; break;
    case '$': ++counts.dollars; break;
    case '\\':
      if (i + 1 < n && kClasses[data[i + 1]] == kLetter) ++counts.latex;
      break;
    case '+': case '-': case '*':
      if (i + 1 < n && data[i + 1] == ' ' && AtLineStart(data, i)) {
        ++counts.bullets;
      } else if (c == '+') {
        ++counts.operators;
      }
      break;
    default: break;
  }
}

// One pass over the text, 64 bytes at a time: the block's letter, digit and rare-byte masks
// come from a few vector compares, words are read off the letter mask, digits are a popcount,
// and only the rare bytes (a few percent of prose) are looked at one by one. A byte-at-a-time
// loop spent most of its time deciding what each byte was.
void CountText(std::string_view text, const CueTable& table, Counts& counts) {
  const size_t n = text.size();
  const auto* data = reinterpret_cast<const unsigned char*>(text.data());
  Cue prev1 = Cue::kNone, prev2 = Cue::kNone;  // the two previous words' cues
  size_t word_start = 0;
  bool in_word = false;  // a word runs on from an earlier block
  uint64_t digits = 0;
  CountLineStart(data, n, 0, counts);
  for (size_t base = 0; base < n; base += 64) {
    BlockMasks masks;
    if (n - base >= 64) {
      masks = ClassifyBlock(data + base);
    } else {
      // The tail, padded with NUL bytes, which are rare but masked off below.
      unsigned char block[64] = {};
      std::memcpy(block, data + base, n - base);
      masks = ClassifyBlock(block);
      masks.rare &= (uint64_t{1} << (n - base)) - 1;
    }
    digits += static_cast<uint64_t>(__builtin_popcountll(masks.digits));
    for (uint64_t rare = masks.rare; rare != 0; rare &= rare - 1) {
      CountRare(data, n, base + CountTrailingZeros(rare), counts);
    }
    const uint64_t letters = masks.letters;
    if (in_word) {  // the word that ran on from the previous block ends at the first non-letter
      if (letters == ~uint64_t{0}) continue;
      CountWord(data + word_start, base + CountTrailingZeros(~letters) - word_start, table, prev1,
                prev2, counts);
    }
    // A word starts where a letter follows a non-letter; its length is the run of ones there.
    uint64_t starts = letters & ~((letters << 1) | (in_word ? 1 : 0));
    in_word = false;
    for (; starts != 0; starts &= starts - 1) {
      const int pos = CountTrailingZeros(starts);
      const uint64_t after = ~(letters >> pos);  // zero only for a block of letters
      const int len = after == 0 ? 64 : CountTrailingZeros(after);
      if (pos + len == 64) {  // runs into the next block
        word_start = base + static_cast<size_t>(pos);
        in_word = true;
        break;
      }
      CountWord(data + base + pos, static_cast<size_t>(len), table, prev1, prev2, counts);
    }
  }
  if (in_word) CountWord(data + word_start, n - word_start, table, prev1, prev2, counts);
  counts.digits += static_cast<double>(digits);
  counts.bytes += static_cast<double>(n);
}

// x / (x + half): 0 at 0, 1/2 at `half`, approaching 1.
double Squash(double x, double half) { return x <= 0 ? 0 : x / (x + half); }

}  // namespace

std::string_view TierName(DifficultyTier tier) {
  switch (tier) {
    case DifficultyTier::kEasy: return "easy";
    case DifficultyTier::kMedium: return "medium";
    case DifficultyTier::kHard: return "hard";
  }
  return "easy";
}

std::array<double, HeuristicDifficultyScorer::kCount> HeuristicDifficultyScorer::Features(
    const RequestFeatures& request, int64_t prompt_tokens) const {
  static const CueTable* table = new CueTable();
  Counts counts;
  for (std::string_view text : request.texts) CountText(text, *table, counts);
  std::array<double, kCount> f{};
  f[kLength] = Squash(static_cast<double>(prompt_tokens), 1000);
  f[kCode] = Squash(counts.fences + counts.code_words + counts.code_symbols / 4, 4);
  const double digit_ratio = counts.bytes > 0 ? counts.digits / counts.bytes : 0;
  f[kMath] = Squash(counts.latex + counts.math_words + (counts.operators + counts.dollars) / 2 +
                        4 * digit_ratio,
                    4);
  f[kReasoning] = Squash(counts.reasoning, 2);
  f[kConstraints] = Squash(counts.constraints + counts.bullets, 4);
  f[kQuestions] = Squash(counts.questions, 3);
  f[kDepth] = Squash(static_cast<double>(request.texts.size()) - 1, 6);
  return f;
}

DifficultyScore HeuristicDifficultyScorer::Score(const RequestFeatures& request,
                                                 int64_t prompt_tokens) const {
  const std::array<double, kCount> f = Features(request, prompt_tokens);
  DifficultyScore out;
  out.contributions.reserve(kCount);
  double sum = 0;
  for (int i = 0; i < kCount; ++i) {
    const double contribution = f[i] * options_.weights[i];
    sum += contribution;
    out.contributions.push_back({kFeatureNames[i], f[i], contribution});
  }
  out.score = 1 - std::exp(-sum);
  out.tier = out.score >= options_.hard     ? DifficultyTier::kHard
             : out.score >= options_.medium ? DifficultyTier::kMedium
                                            : DifficultyTier::kEasy;
  return out;
}

absl::StatusOr<std::unique_ptr<const HeuristicDifficultyScorer>>
HeuristicDifficultyScorer::FromYaml(const YAML::Node& node, const YamlReader& yaml) {
  Options options;
  if (node) {
    if (absl::Status status = yaml.ExpectMap(node, "difficulty", {"weights", "tiers"});
        !status.ok()) {
      return status;
    }
    if (const YAML::Node weights = node["weights"]) {
      if (absl::Status status =
              yaml.ExpectMap(weights, "difficulty weights",
                             {kFeatureNames[0], kFeatureNames[1], kFeatureNames[2],
                              kFeatureNames[3], kFeatureNames[4], kFeatureNames[5],
                              kFeatureNames[6]});
          !status.ok()) {
        return status;
      }
      for (int i = 0; i < kCount; ++i) {
        auto weight = yaml.Double(weights, kFeatureNames[i], 0, 100);
        if (!weight.ok()) return weight.status();
        if (weight->has_value()) options.weights[i] = **weight;
      }
    }
    if (const YAML::Node tiers = node["tiers"]) {
      if (absl::Status status = yaml.ExpectMap(tiers, "difficulty tiers", {"medium", "hard"});
          !status.ok()) {
        return status;
      }
      auto medium = yaml.Double(tiers, "medium", 0, 1);
      if (!medium.ok()) return medium.status();
      auto hard = yaml.Double(tiers, "hard", 0, 1);
      if (!hard.ok()) return hard.status();
      options.medium = medium->value_or(options.medium);
      options.hard = hard->value_or(options.hard);
      if (options.medium > options.hard) {
        return yaml.Error(tiers, absl::StrCat("difficulty tier 'medium' (", options.medium,
                                              ") must not be above 'hard' (", options.hard,
                                              ")"));
      }
    }
  }
  return std::make_unique<const HeuristicDifficultyScorer>(options);
}

}  // namespace switchyard::policies
