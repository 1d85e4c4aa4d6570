// Bridges std::string_view to absl::string_view. Distribution builds of Abseil (Debian's among
// them) may keep their own string_view type, which StrCat, StrJoin and StrSplit do not accept
// from a std::string_view; converting explicitly compiles under either build.
#ifndef SWITCHYARD_POLICIES_ABSL_COMPAT_H_
#define SWITCHYARD_POLICIES_ABSL_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace switchyard::policies {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view StdSv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_ABSL_COMPAT_H_
