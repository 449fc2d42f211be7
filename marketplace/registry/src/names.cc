#include "names.h"

#include <algorithm>

namespace trellis::registry {

std::string skeleton(std::string_view name) {
  std::string s;
  for (char c : name) {
    if (c == '-' || c == '_') continue;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '0') c = 'o';
    if (c == '1' || c == 'i') c = 'l';
    s += c;
  }
  // Letter pairs that read as one letter; applied after the mapping above, left to right.
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i + 1 < s.size() && s[i] == 'r' && s[i + 1] == 'n') {
      out += 'm';
      ++i;
    } else if (i + 1 < s.size() && s[i] == 'v' && s[i + 1] == 'v') {
      out += 'w';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

size_t editDistance(std::string_view a, std::string_view b, size_t cap) {
  const size_t n = a.size(), m = b.size();
  if ((n > m ? n - m : m - n) > cap) return cap + 1;
  // Three rows of the optimal-string-alignment table.
  std::vector<size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) prev[j] = j;
  for (size_t i = 1; i <= n; ++i) {
    cur[0] = i;
    size_t row_min = cur[0];
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
      row_min = std::min(row_min, cur[j]);
    }
    if (row_min > cap) return cap + 1;
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return std::min(prev[m], cap + 1);
}

std::string_view namespaceOf(std::string_view id) {
  size_t slash = id.find('/');
  return slash == std::string_view::npos ? std::string_view() : id.substr(0, slash);
}

std::optional<std::string> confusableId(std::string_view id,
                                        const std::vector<std::string>& existing_ids) {
  const std::string sk = skeleton(id);
  for (const std::string& other : existing_ids) {
    if (other == id) continue;
    if (skeleton(other) == sk) return other;
    if (namespaceOf(other) != namespaceOf(id) && editDistance(id, other, 1) <= 1) return other;
  }
  return std::nullopt;
}

std::optional<std::string> confusableNamespace(std::string_view ns,
                                               const std::vector<std::string>& existing) {
  const std::string sk = skeleton(ns);
  for (const std::string& other : existing) {
    if (other != ns && skeleton(other) == sk) return other;
  }
  return std::nullopt;
}

}  // namespace trellis::registry
