// What a PostgreSQL server sends the secrets plugin, as hostile bytes. Properties: the frame
// reader and the message parsers either name the fault or return frames that lie within
// the input; the client's login and query loop end with a Status on any answer (never a
// crash, a hang or an escaping exception), and no message it returns holds the password.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "database/pg_client.h"
#include "database/pg_wire.h"
#include "fuzz_check.h"

namespace {

using namespace trellis::secrets::pg;

constexpr std::string_view kPassword = "fuzz-Canary-Pw-91";

class Bytes : public Transport {
 public:
  explicit Bytes(std::string_view data) : data_(data) {}
  trellis::Status write(std::string_view) override { return trellis::Status::ok(); }
  trellis::Result<size_t> read(char* buf, size_t cap) override {
    // Small, uneven chunks, so frames are split everywhere.
    const size_t n = std::min({cap, data_.size(), size_t{7}});
    data_.copy(buf, n);
    data_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view data_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  FrameReader r;
  r.feed(in);
  size_t consumed = 0;
  while (true) {
    auto f = r.next();
    if (!f || !*f) break;
    consumed += 5 + (*f)->body.size();
    FUZZ_CHECK(consumed <= size, "a frame reaches past the input");
    switch ((*f)->type) {
      case 'E':
      case 'N': (void)parseError((*f)->body); break;
      case 'R': (void)parseAuth((*f)->body); break;
      case 'D': {
        auto row = parseDataRow((*f)->body);
        if (row) {
          size_t total = 0;
          for (const auto& c : *row) total += c ? c->size() : 0;
          FUZZ_CHECK(total <= (*f)->body.size(), "row values larger than the row");
        }
        break;
      }
      case 'C': (void)parseCommandComplete((*f)->body); break;
      default: break;
    }
  }

  Bytes server(in);
  PgClient pg(server);
  trellis::Status s = pg.login("fuzzer", "db", kPassword);
  if (!s) {
    FUZZ_CHECK(s.message().find(kPassword) == std::string::npos, "the password in: " + s.message());
  } else {
    auto q = pg.exec("SELECT 1");
    if (!q) {
      FUZZ_CHECK(q.status().message().find(kPassword) == std::string::npos,
                 "the password in: " + q.status().message());
    }
  }
  return 0;
}
