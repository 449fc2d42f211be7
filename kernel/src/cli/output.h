// How read verbs print: `--output table` (the default, for people), `json` (the API's
// answer as is, for scripts) or `yaml` (the same data as YAML). `--json` is short for
// `--output json`.
//
//   Output out;                              // --output is bound to out.format
//   out.print(body, printTenantList);        // table: the function; json/yaml: the data
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>

namespace trellis::cli {

enum class OutputFormat { kTable, kJson, kYaml };

struct Output {
  std::string format = "table";  // bound to --output
  bool json_flag = false;        // bound to --json

  OutputFormat kind() const;
  bool structured() const { return kind() != OutputFormat::kTable; }
  // Prints a JSON body: as is (json), converted (yaml), or through `human` (table).
  void print(const std::string& json_body, void (*human)(const std::string&)) const;
  void print(const Poco::JSON::Object::Ptr& o, void (*human)(const std::string&)) const;
};

// The process-wide choice, set once after the flags are parsed; the older commands print
// their structured answers through printStructured().
const Output& currentOutput();
void setCurrentOutput(const Output& out);
// A JSON body as JSON (with a final newline) or as YAML, following currentOutput().
void printStructured(const std::string& json_body);

// "2026-12-02T13:00:00Z" for Unix milliseconds, as tables show times.
std::string utcTime(int64_t unix_ms);

// JSON text -> YAML text (block style; strings quoted when YAML would misread them).
std::string jsonToYaml(const std::string& json_body);

}  // namespace trellis::cli
