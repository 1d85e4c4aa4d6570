// Checks that turn a pattern candidate into a finding or drop it: checksums (Luhn, IBAN mod-97),
// number-range rules (SSN areas, IPv4 octets), full parsers (IPv6, JWT headers) and the shape
// tests that keep hashes, UUIDs and version strings from counting as secrets. Pure functions.
#ifndef SWITCHYARD_POLICIES_VALIDATORS_H_
#define SWITCHYARD_POLICIES_VALIDATORS_H_

#include <string>
#include <string_view>

namespace switchyard::policies {

// The decimal digits of `text`, in order, ignoring every other byte.
std::string DigitsOf(std::string_view text);

// True when the digit string passes the Luhn checksum.
bool LuhnValid(std::string_view digits);

// True when the digits begin with a prefix a card network issues and have that network's length.
bool CardPrefixValid(std::string_view digits);

// True for a compact IBAN (no spaces) with a known country length and mod-97 remainder 1.
bool IbanValid(std::string_view compact);

// True for an SSN the SSA could have issued (area not 000, 666 or 9xx; group and serial not
// zero), and not a value published as an example.
bool SsnValid(std::string_view digits);

// True for a dotted quad whose octets are 0..255 without leading zeros.
bool Ipv4Valid(std::string_view text);

// True for a textual IPv6 address (RFC 4291, with :: compression and a trailing IPv4 part).
bool Ipv6Valid(std::string_view text);

// True for addresses reserved for documentation (RFC 5737, RFC 3849): examples, not data.
bool IsDocumentationIp(std::string_view text);

// True for e-mail domains reserved for examples (RFC 2606, RFC 6761).
bool IsExampleEmailDomain(std::string_view domain);

// True when the first JWT segment decodes (base64url) to a JSON header naming an "alg".
bool JwtHeaderValid(std::string_view token);

// Shannon entropy of the bytes of `text` in bits per byte.
double ShannonEntropy(std::string_view text);

// Shapes that look random but are not credentials.
bool IsUuid(std::string_view text);
bool IsHex(std::string_view text);

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_VALIDATORS_H_
