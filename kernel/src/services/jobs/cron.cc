#include "services/jobs/cron.h"

#include <array>
#include <charconv>
#include <ctime>
#include <vector>

namespace trellis::kernel::services {
namespace {

struct FieldSpec {
  const char* name;
  int min;
  int max;
  const char* const* names;  // lower-case names for min, min+1, …; null if none
};

constexpr const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                   "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kWeekdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
constexpr std::array<FieldSpec, 5> kFields = {{{"minute", 0, 59, nullptr},
                                               {"hour", 0, 23, nullptr},
                                               {"day-of-month", 1, 31, nullptr},
                                               {"month", 1, 12, kMonths},
                                               {"day-of-week", 0, 7, kWeekdays}}};

Status fieldError(size_t index, std::string_view what) {
  return Status::invalid("cron field " + std::to_string(index + 1) + " (" + kFields[index].name +
                         "): " + std::string(what));
}

// A number or (for months and weekdays) a three-letter name.
Result<int> value(std::string_view text, size_t index) {
  const FieldSpec& f = kFields[index];
  if (f.names) {
    size_t count = index == 3 ? 12 : 7;
    for (size_t i = 0; i < count; ++i) {
      std::string_view name = f.names[i];
      if (text.size() == 3 && (text[0] | 0x20) == name[0] && (text[1] | 0x20) == name[1] &&
          (text[2] | 0x20) == name[2]) {
        return f.min + static_cast<int>(i);
      }
    }
  }
  int n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return fieldError(index, "\"" + std::string(text) + "\" is not a number");
  }
  if (n < f.min || n > f.max) {
    return fieldError(index, std::to_string(n) + " is out of range " + std::to_string(f.min) + "-" +
                                 std::to_string(f.max));
  }
  return n;
}

// Sets the bits one comma-separated field selects; `star` reports a bare "*".
Status parseField(std::string_view text, size_t index, std::vector<bool>& bits, bool& star) {
  const FieldSpec& f = kFields[index];
  star = text == "*";
  bits.assign(f.max + 1, false);
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) return fieldError(index, "empty list item");
    int step = 1;
    if (size_t slash = item.find('/'); slash != std::string_view::npos) {
      std::string_view s = item.substr(slash + 1);
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
      if (s.empty() || ec != std::errc() || end != s.data() + s.size() || step < 1 ||
          step > f.max) {
        return fieldError(index,
                          "step \"" + std::string(s) + "\" must be 1-" + std::to_string(f.max));
      }
      item = item.substr(0, slash);
    }
    int lo = f.min, hi = f.max;
    if (item != "*") {
      size_t dash = item.find('-');
      auto a = value(item.substr(0, dash), index);
      if (!a) return a.status();
      lo = hi = *a;
      if (dash != std::string_view::npos) {
        auto b = value(item.substr(dash + 1), index);
        if (!b) return b.status();
        hi = *b;
        if (hi < lo) return fieldError(index, "range " + std::string(item) + " is backwards");
      } else if (step > 1) {
        hi = f.max;  // "5/15" means from 5 on, every 15
      }
    }
    for (int v = lo; v <= hi; v += step) bits[v] = true;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return Status::ok();
}

}  // namespace

Result<CronSchedule> CronSchedule::parse(std::string_view expression) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < expression.size()) {
    while (i < expression.size() && (expression[i] == ' ' || expression[i] == '\t')) ++i;
    size_t start = i;
    while (i < expression.size() && expression[i] != ' ' && expression[i] != '\t') ++i;
    if (i > start) fields.push_back(expression.substr(start, i - start));
  }
  if (fields.size() != 5) {
    return Status::invalid("cron expression \"" + std::string(expression) + "\" has " +
                           std::to_string(fields.size()) +
                           " fields; expected 5: minute hour day-of-month month day-of-week");
  }
  CronSchedule c;
  c.text_ = std::string(expression);
  for (size_t f = 0; f < 5; ++f) {
    std::vector<bool> bits;
    bool star = false;
    if (Status s = parseField(fields[f], f, bits, star); !s) return s;
    for (size_t v = 0; v < bits.size(); ++v) {
      if (!bits[v]) continue;
      switch (f) {
        case 0: c.minutes_.set(v); break;
        case 1: c.hours_.set(v); break;
        case 2: c.days_.set(v); break;
        case 3: c.months_.set(v); break;
        case 4: c.weekdays_.set(v % 7); break;  // 7 is Sunday too
      }
    }
    if (f == 2) c.any_day_ = star;
    if (f == 4) c.any_weekday_ = star;
  }
  return c;
}

int64_t CronSchedule::next(int64_t after_ms) const {
  // Minute by minute would be up to 2.6M steps over 5 years; skip whole days and hours
  // that cannot match instead.
  time_t t = static_cast<time_t>(after_ms / 60000 + 1) * 60;
  const time_t limit = t + time_t{5} * 366 * 24 * 3600;
  while (t < limit) {
    struct tm tm {};
    gmtime_r(&t, &tm);
    bool day_ok;
    bool dom = days_.test(tm.tm_mday), dow = weekdays_.test(tm.tm_wday);
    if (any_day_ && any_weekday_) {
      day_ok = true;
    } else if (any_day_) {
      day_ok = dow;
    } else if (any_weekday_) {
      day_ok = dom;
    } else {
      day_ok = dom || dow;
    }
    if (!months_.test(tm.tm_mon + 1) || !day_ok) {
      t += (24 - tm.tm_hour) * 3600 - tm.tm_min * 60;  // next midnight
      continue;
    }
    if (!hours_.test(tm.tm_hour)) {
      t += 3600 - tm.tm_min * 60;  // next hour
      continue;
    }
    if (!minutes_.test(tm.tm_min)) {
      t += 60;
      continue;
    }
    return static_cast<int64_t>(t) * 1000;
  }
  return -1;
}

}  // namespace trellis::kernel::services
