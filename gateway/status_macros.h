// Early-return helpers for absl::Status / absl::StatusOr, as in Abseil-based codebases.
#ifndef SWITCHYARD_GATEWAY_STATUS_MACROS_H_
#define SWITCHYARD_GATEWAY_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SY_STATUS_CONCAT_INNER(a, b) a##b
#define SY_STATUS_CONCAT(a, b) SY_STATUS_CONCAT_INNER(a, b)

// Binds `lhs` to the value of a StatusOr expression, or returns its error.
#define SY_ASSIGN_OR_RETURN(lhs, expr) \
  SY_ASSIGN_OR_RETURN_IMPL(SY_STATUS_CONCAT(status_or_, __LINE__), lhs, expr)
#define SY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  auto lhs = std::move(tmp).value()

// Returns the status of an expression when it is an error.
#define SY_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status sy_status_ = (expr);           \
    if (!sy_status_.ok()) return sy_status_;      \
  } while (0)

#endif  // SWITCHYARD_GATEWAY_STATUS_MACROS_H_
