#include "policies/redact.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace switchyard::policies {
namespace {

std::string Label(std::string_view type) {
  std::string label;
  label.reserve(type.size());
  for (char c : type) {
    label.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c))
                        ? absl::ascii_toupper(static_cast<unsigned char>(c))
                        : '_');
  }
  return label;
}

}  // namespace

Redaction Redact(const std::vector<std::string_view>& texts,
                 const std::vector<Finding>& findings) {
  std::vector<const Finding*> order;
  order.reserve(findings.size());
  for (const Finding& finding : findings) order.push_back(&finding);
  std::stable_sort(order.begin(), order.end(), [](const Finding* a, const Finding* b) {
    return a->message != b->message ? a->message < b->message : a->start < b->start;
  });

  Redaction out;
  std::map<std::pair<std::string, std::string>, std::string> placeholders;  // (label, value)
  std::map<std::string, int> counters;
  out.texts.reserve(texts.size());
  size_t next = 0;
  for (size_t message = 0; message < texts.size(); ++message) {
    const std::string_view text = texts[message];
    std::string redacted;
    size_t copied = 0;
    while (next < order.size() && order[next]->message <= message) {
      const Finding& finding = *order[next++];
      if (finding.message != message || finding.start < copied || finding.end > text.size() ||
          finding.start >= finding.end) {
        continue;
      }
      // Findings that overlap this one join its placeholder, so no byte of any of them leaves.
      size_t end = finding.end;
      while (next < order.size() && order[next]->message == message &&
             order[next]->start < end) {
        if (order[next]->end <= text.size()) end = std::max(end, order[next]->end);
        ++next;
      }
      std::string label = Label(finding.type);
      std::string value(text.substr(finding.start, end - finding.start));
      auto [it, inserted] = placeholders.try_emplace({label, value});
      if (inserted) {
        it->second = absl::StrCat("<", label, "_", ++counters[label], ">");
        out.restore.emplace_back(it->second, std::move(value));
      }
      redacted.append(text.substr(copied, finding.start - copied)).append(it->second);
      copied = end;
    }
    redacted.append(text.substr(copied));
    out.texts.push_back(std::move(redacted));
  }
  return out;
}

Restorer::Restorer(std::vector<std::pair<std::string, std::string>> restore)
    : restore_(std::move(restore)) {
  for (const auto& [placeholder, value] : restore_) {
    longest_ = std::max(longest_, placeholder.size());
  }
}

std::string Restorer::Push(std::string_view delta) {
  held_.append(delta);
  std::string out;
  size_t copied = 0;
  size_t pos = 0;
  while ((pos = held_.find('<', pos)) != std::string::npos) {
    const std::string_view rest = std::string_view(held_).substr(pos);
    bool partial = false;
    const std::pair<std::string, std::string>* match = nullptr;
    for (const auto& entry : restore_) {
      if (rest.starts_with(entry.first)) {
        match = &entry;
        break;
      }
      if (rest.size() < entry.first.size() && std::string_view(entry.first).starts_with(rest)) {
        partial = true;
      }
    }
    if (match != nullptr) {
      out.append(held_, copied, pos - copied).append(match->second);
      pos += match->first.size();
      copied = pos;
    } else if (partial) {
      break;  // the next delta decides
    } else {
      ++pos;
    }
  }
  const size_t keep = pos == std::string::npos ? held_.size() : pos;
  out.append(held_, copied, keep - copied);
  held_.erase(0, keep);
  return out;
}

std::string Restorer::Finish() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace switchyard::policies
