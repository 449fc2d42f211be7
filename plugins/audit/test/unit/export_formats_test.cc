// Exports of stored records as CEF and RFC 5424 syslog, against golden files whose records
// carry every character that could forge a field, a header part or a record: | = \ " ] and
// line breaks in values, an actor name shaped like structured data, a CRLF in a request id.
#include "core/export_formats.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace trellis::audit {
namespace {

std::string golden(const std::string& name) {
  std::ifstream in(std::string(TRELLIS_SOURCE_DIR) + "/plugins/audit/test/unit/golden/" + name,
                   std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(AuditExportTest, CefMatchesTheGoldenFile) {
  auto out = exportRecords(golden("records.jsonl"), ExportFormat::kCef, "-");
  ASSERT_TRUE(out) << out.status().message();
  EXPECT_EQ(*out, golden("records.cef"));
  // One record, one line: no value can start another.
  EXPECT_EQ(std::count(out->begin(), out->end(), '\n'), 3);
}

TEST(AuditExportTest, SyslogMatchesTheGoldenFileAndFramesEachRecordByItsLength) {
  auto out = exportRecords(golden("records.jsonl"), ExportFormat::kSyslog, "host-1");
  ASSERT_TRUE(out) << out.status().message();
  EXPECT_EQ(*out, golden("records.syslog"));
  // Walking the octet counts lands exactly on each record's start, and on the end.
  std::string_view rest = *out;
  int frames = 0;
  while (!rest.empty()) {
    const size_t space = rest.find(' ');
    ASSERT_NE(space, std::string_view::npos);
    const size_t length = std::stoul(std::string(rest.substr(0, space)));
    ASSERT_LE(space + 1 + length, rest.size());
    EXPECT_TRUE(rest.substr(space + 1).starts_with("<1")) << rest.substr(space + 1, 20);
    rest.remove_prefix(space + 1 + length);
    ++frames;
  }
  EXPECT_EQ(frames, 3);
}

TEST(AuditExportTest, PrioritiesFollowTheOutcome) {
  auto out = exportRecords(golden("records.jsonl"), ExportFormat::kSyslog, "h");
  ASSERT_TRUE(out);
  // Facility 13 (log audit): success informational, denied warning, failure error.
  EXPECT_NE(out->find(" <110>1 2026-12-04T05:18:34.123Z h "), std::string::npos);
  EXPECT_NE(out->find(" <108>1 2026-12-04T05:18:35.000Z h "), std::string::npos);
  EXPECT_NE(out->find(" <107>1 2026-12-04T05:18:36.999Z h "), std::string::npos);
}

TEST(AuditExportTest, RefusesWhatIsNotARecordAndUnknownFormats) {
  EXPECT_EQ(toCef("{nope").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(toSyslog(R"({"seq":1})", "h").status().message(),
            "not an audit record: seq, event_id and time are required");
  EXPECT_EQ(parseExportFormat("xml").status().message(),
            "format must be jsonl, cef or syslog, not \"xml\"");
  EXPECT_EQ(*exportRecords("a\n", ExportFormat::kJsonLines, "-"), "a\n");
}

}  // namespace
}  // namespace trellis::audit
