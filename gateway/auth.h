// API keys and the tenant they belong to. Keys are configured as SHA-256 hashes only; a presented
// key is hashed and compared with every configured hash in constant time, so neither the key nor
// its position in the table leaks through timing, logs or metrics.
#ifndef SWITCHYARD_GATEWAY_AUTH_H_
#define SWITCHYARD_GATEWAY_AUTH_H_

#include <array>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/budget.h"

namespace switchyard::gateway {

struct ApiKey {
  std::string name;
  std::string tenant;
  std::array<unsigned char, 32> sha256{};
  Limits limits;
};

struct TenantConfig {
  std::string name;
  Limits limits;
};

struct AuthConfig {
  // Requests without a key run as the anonymous tenant. Keys are still checked when presented.
  bool allow_unauthenticated = false;
  std::vector<ApiKey> keys;
  std::vector<TenantConfig> tenants;  // every tenant named by a key or by `tenants:`

  const TenantConfig* FindTenant(std::string_view name) const;
  const ApiKey* FindKey(std::string_view name) const;
};

// Who a request runs as. Empty tenant and key name: anonymous.
struct Principal {
  std::string tenant;
  std::string key_name;
};

// The key a client presented: `Authorization: Bearer K` (either header name case; gRPC metadata
// keys are lower case), else `x-api-key: K`. nullopt when neither is present.
std::optional<std::string_view> PresentedKey(std::optional<std::string_view> authorization,
                                             std::optional<std::string_view> x_api_key);

// Resolves a presented key. Unauthenticated (message safe to show, never containing the key)
// when no key was presented and anonymous access is off, or when a key was presented that matches
// none of the configured ones. With no keys configured at all, a presented key is ignored (SDKs
// insist on sending one) and anonymous access decides.
absl::StatusOr<Principal> Authenticate(const AuthConfig& auth,
                                       std::optional<std::string_view> presented_key);

// Parses 64 hex digits into a digest.
std::optional<std::array<unsigned char, 32>> ParseSha256Hex(std::string_view hex);

// The `switchyard hash-key` command: reads one key from `in` (a trailing newline is not part of
// it) and prints its SHA-256 in hex. Returns the exit code.
int HashKeyCommand(std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_AUTH_H_
