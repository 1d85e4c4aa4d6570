// Random damage to JSON text, for the tests that hold a fast reader to a reference reader on
// input that is valid, nearly valid and broken: whatever the fast reader accepts, the reference
// must read the same way.
#ifndef SWITCHYARD_TESTS_SUPPORT_JSON_MUTATION_H_
#define SWITCHYARD_TESTS_SUPPORT_JSON_MUTATION_H_

#include <random>
#include <string>
#include <string_view>

namespace switchyard::test_support {

// `text` after one to three random edits: a byte replaced or inserted (drawn from `alphabet`),
// a byte or a run of up to 12 bytes deleted, or the text cut short.
inline std::string MutateJson(std::string text, std::string_view alphabet, std::mt19937& random) {
  const int edits = 1 + static_cast<int>(random() % 3);
  for (int e = 0; e < edits && !text.empty(); ++e) {
    const size_t at = random() % text.size();
    switch (random() % 5) {
      case 0: text[at] = alphabet[random() % alphabet.size()]; break;
      case 1: text.insert(at, 1, alphabet[random() % alphabet.size()]); break;
      case 2: text.erase(at, 1); break;
      case 3: text.resize(at); break;
      case 4: text.erase(at, 1 + random() % 12); break;
    }
  }
  return text;
}

}  // namespace switchyard::test_support

#endif  // SWITCHYARD_TESTS_SUPPORT_JSON_MUTATION_H_
