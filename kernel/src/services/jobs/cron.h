// Five-field cron expressions in UTC: "minute hour day-of-month month day-of-week".
// Each field is "*", a number, a range "a-b", a step "*/n" or "a-b/n", or a comma list of
// those; months and weekdays also take names (jan, mon). Day-of-week 0 and 7 are Sunday.
// As in Vixie cron, when both day fields are restricted a day matching either one fires.
//
//   auto every_night = CronSchedule::parse("30 3 * * mon-fri");
//   int64_t next = every_night->next(now_ms);   // the next matching minute after now_ms
#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::services {

class CronSchedule {
 public:
  // INVALID names the field and the problem, e.g.
  // `cron field 2 (hour): 25 is out of range 0-23`.
  static Result<CronSchedule> parse(std::string_view expression);

  // The first whole minute strictly after `after_ms` (Unix ms, UTC) that matches; -1 if
  // none does within 5 years (e.g. "0 0 30 2 *").
  int64_t next(int64_t after_ms) const;

  const std::string& text() const { return text_; }

 private:
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;      // 1..31
  std::bitset<13> months_;    // 1..12
  std::bitset<7> weekdays_;   // 0..6, Sunday = 0
  bool any_day_ = false;      // day-of-month was "*"
  bool any_weekday_ = false;  // day-of-week was "*"
  std::string text_;
};

}  // namespace trellis::kernel::services
