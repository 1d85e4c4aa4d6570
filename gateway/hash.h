// Content hashes for versioning config and chaining logs.
#ifndef SWITCHYARD_GATEWAY_HASH_H_
#define SWITCHYARD_GATEWAY_HASH_H_

#include <string>
#include <string_view>

namespace switchyard::gateway {

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// A short, stable version string for a config text: "sha256:" + the first 16 hex digits.
std::string ContentHash(std::string_view data);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_HASH_H_
