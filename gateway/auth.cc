#include "gateway/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <iostream>
#include <iterator>

#include "absl/strings/match.h"
#include "gateway/hash.h"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

std::array<unsigned char, 32> Sha256(std::string_view data) {
  std::array<unsigned char, 32> digest{};
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

const TenantConfig* AuthConfig::FindTenant(std::string_view name) const {
  for (const TenantConfig& tenant : tenants) {
    if (tenant.name == name) return &tenant;
  }
  return nullptr;
}

const ApiKey* AuthConfig::FindKey(std::string_view name) const {
  for (const ApiKey& key : keys) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

std::optional<std::string_view> PresentedKey(std::optional<std::string_view> authorization,
                                             std::optional<std::string_view> x_api_key) {
  if (authorization.has_value()) {
    std::string_view value = *authorization;
    constexpr std::string_view kBearer = "bearer ";
    if (value.size() >= kBearer.size() &&
        absl::EqualsIgnoreCase(policies::Sv(value.substr(0, kBearer.size())),
                               policies::Sv(kBearer))) {
      value.remove_prefix(kBearer.size());
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
      return value;
    }
  }
  if (x_api_key.has_value()) return *x_api_key;
  // An Authorization header of another scheme is a key we cannot read: present, and wrong.
  if (authorization.has_value()) return std::string_view();
  return std::nullopt;
}

absl::StatusOr<Principal> Authenticate(const AuthConfig& auth,
                                       std::optional<std::string_view> presented_key) {
  if (!presented_key.has_value() || auth.keys.empty()) {
    if (auth.allow_unauthenticated) return Principal{};
    return absl::UnauthenticatedError(
        "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'");
  }
  const std::array<unsigned char, 32> digest = Sha256(*presented_key);
  // Every configured key is compared, match or not, so the time taken says nothing about which
  // (or whether any) key matched.
  const ApiKey* match = nullptr;
  for (const ApiKey& key : auth.keys) {
    const bool equal = CRYPTO_memcmp(key.sha256.data(), digest.data(), digest.size()) == 0;
    if (equal && match == nullptr) match = &key;
  }
  if (match == nullptr) return absl::UnauthenticatedError("invalid API key");
  return Principal{match->tenant, match->name};
}

std::optional<std::array<unsigned char, 32>> ParseSha256Hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  std::array<unsigned char, 32> digest{};
  for (size_t i = 0; i < digest.size(); ++i) {
    const int high = HexValue(hex[2 * i]);
    const int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    digest[i] = static_cast<unsigned char>(high * 16 + low);
  }
  return digest;
}

int HashKeyCommand(std::istream& in, std::ostream& out, std::ostream& err) {
  std::string key(std::istreambuf_iterator<char>(in), {});
  if (key.ends_with('\n')) key.pop_back();
  if (key.ends_with('\r')) key.pop_back();
  if (key.empty()) {
    err << "switchyard: hash-key reads an API key on stdin and got none\n";
    return 1;
  }
  out << Sha256Hex(key) << "\n";
  return 0;
}

}  // namespace switchyard::gateway
