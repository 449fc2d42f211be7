// The KV redo log's records (kernel/src/storage/kv_redo_log.cc), as trellisd reads a
// tenant's log segment at start after a crash, a full disk or damage on disk. Properties:
//   - parsing never reads past the bytes, and stops exactly where the valid records end,
//     saying why unless every byte was read or only zeros (space written ahead) follow;
//   - the records it accepts are exactly what the writer would have written: encoding
//     their batches again, numbered from the first one's sequence, gives back those bytes;
//   - a batch payload decodes only if encoding the decoded changes gives it back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "storage/internal/kv_redo_log.h"

using trellis::kernel::storage::internal::decodeBatch;
using trellis::kernel::storage::internal::encodeBatch;
using trellis::kernel::storage::internal::encodeRecord;
using trellis::kernel::storage::internal::parseSegment;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  const auto parsed = parseSegment(bytes, 0);
  FUZZ_CHECK(parsed.valid_bytes <= bytes.size(), "valid_bytes past the end");
  FUZZ_CHECK(parsed.stopped_by.empty() == (parsed.valid_bytes + parsed.zero_bytes == bytes.size()),
             "stopped_by \"" + parsed.stopped_by + "\" at " + std::to_string(parsed.valid_bytes) +
                 " of " + std::to_string(bytes.size()));
  FUZZ_CHECK(bytes.substr(parsed.valid_bytes, parsed.zero_bytes).find_first_not_of('\0') ==
                 std::string_view::npos,
             "zero_bytes counts a byte that is not zero");
  std::string again;
  uint64_t seq = parsed.next_seq - parsed.batches.size();
  for (const auto& batch : parsed.batches) again += encodeRecord(seq++, batch);
  FUZZ_CHECK(again == bytes.substr(0, parsed.valid_bytes),
             "accepted records do not encode back to their bytes");
  if (!parsed.batches.empty()) {
    // Read again from the number it stopped at: the same records, nothing more.
    const auto from_first = parseSegment(bytes, parsed.next_seq - parsed.batches.size());
    FUZZ_CHECK(from_first.valid_bytes == parsed.valid_bytes, "the first number changed the parse");
  }

  auto changes = decodeBatch(bytes);
  if (changes) FUZZ_CHECK(encodeBatch(*changes) == bytes, "a decoded payload encodes otherwise");
  return 0;
}
