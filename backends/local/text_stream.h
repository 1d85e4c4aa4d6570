// Turns the byte pieces a tokenizer produces, one token at a time, into the text deltas a client
// may see: valid UTF-8 only, and nothing that belongs to (or might start) a stop sequence.
//
// Token pieces are bytes, not characters: a byte-fallback vocabulary (SentencePiece, 32k Llama)
// spells one CJK or Cyrillic character over two to four tokens, and a random model can emit a
// stray continuation byte that never completes. Both helpers are pure and single-threaded; the
// engine keeps one of each per slot.
#ifndef SWITCHYARD_BACKENDS_LOCAL_TEXT_STREAM_H_
#define SWITCHYARD_BACKENDS_LOCAL_TEXT_STREAM_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::backends {

// Length of the longest prefix of `bytes` after which only a possibly-incomplete UTF-8 sequence
// remains: a lead byte followed by fewer continuation bytes than it announces (at most 3 bytes).
// Everything before the cut is final; the tail may still become a character.
size_t Utf8CompletePrefixLength(std::string_view bytes);

// Returns `bytes` with every invalid or truncated UTF-8 sequence replaced by U+FFFD, so the
// result is always valid UTF-8 (overlongs, surrogates and code points above U+10FFFF included).
std::string SanitizeUtf8(std::string_view bytes);

// Holds back an incomplete multi-byte sequence across pieces.
class Utf8Holdback {
 public:
  // Appends a piece; returns the text that is now final (valid UTF-8, possibly empty).
  std::string Push(std::string_view piece);
  // Returns what is still held, a truncated sequence becoming U+FFFD; the stream ends.
  std::string Flush();

 private:
  std::string pending_;
};

// Matches stop sequences on the generated text. Text that might be the start of a stop sequence
// is held back until the next piece decides it; the stop sequence itself and everything after it
// are never released. Input must be valid UTF-8 (the output of Utf8Holdback); since a stop
// sequence is valid UTF-8 too, a hold-back never splits a character.
class StopMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop sequence was found; emit `text`, then finish
  };
  // Appends text. After a result with `stopped`, further calls return nothing.
  Result Push(std::string_view text);
  // Releases the held text at the end of generation (it did not turn into a stop sequence).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_LOCAL_TEXT_STREAM_H_
