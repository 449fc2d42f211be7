#include "services/blobs/blob_abi.h"

#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "trellis/kernel/services/blob_store.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::services {
namespace {

using blobs::BlobInfo;
using blobs::BlobReader;
using blobs::BlobStore;
using blobs::BlobWriter;

// Handle objects. A plugin may use one handle from several threads; the mutex keeps the
// stream's calls in order.
struct WriterHandle final : HandleObject {
  explicit WriterHandle(std::unique_ptr<BlobWriter> w) : writer(std::move(w)) {}
  std::mutex mu;
  std::unique_ptr<BlobWriter> writer;  // aborts in its destructor unless committed
};
struct ReaderHandle final : HandleObject {
  explicit ReaderHandle(std::unique_ptr<BlobReader> r) : reader(std::move(r)) {}
  std::mutex mu;
  std::unique_ptr<BlobReader> reader;
};

trellis_ctx* blobCall(const trellis_ctx* c, const char* call, trellis_status* refused,
                      BlobStore** store) {
  trellis_ctx* ctx = enter(c, "blobs", call, Tenant::kRequired, refused);
  if (!ctx) return nullptr;
  *store = ctx->plugin->services().blobs;
  if (!*store || !ctx->plugin->services().handles) {
    *refused = fail(ctx, Status::unavailable("this host has no blob storage"));
    return nullptr;
  }
  return ctx;
}

// The tenant's storage quota is shared by KV and blobs: blobs get what KV leaves. The
// host's KvStore reports KV and blob bytes together (runtime::withBlobs).
Result<blobs::Scope> scopeOf(trellis_ctx* ctx, BlobStore& store) {
  blobs::Scope scope{ctx->tenant->id, ctx->plugin->id()};
  if (const auto& max = ctx->tenant->quotas.max_storage_bytes) {
    auto total = ctx->plugin->services().kv->storageBytes(ctx->tenant->id);
    if (!total) return total.status();
    auto blob_bytes = store.storageBytes(ctx->tenant->id);
    if (!blob_bytes) return blob_bytes.status();
    const uint64_t kv = *total - std::min(*total, *blob_bytes);
    scope.max_storage_bytes = *max - std::min(*max, kv);
  }
  return scope;
}

trellis_status quotaOrFail(trellis_ctx* ctx, const Status& s) {
  if (s.code() == StatusCode::kQuotaExceeded) {
    return refuseQuota(ctx, "max_storage_bytes", ctx->tenant->quotas.max_storage_bytes.value_or(0),
                       s.message());
  }
  return fail(ctx, s);
}

void appendHead(std::string& out, const BlobInfo& b) {
  out += "{\"key\":";
  util::appendJsonString(out, b.key);
  out +=
      ",\"size\":" + std::to_string(b.size) + ",\"sha256\":\"" + b.sha256 + "\",\"content_type\":";
  util::appendJsonString(out, b.content_type);
  out += ",\"metadata\":{";
  for (size_t i = 0; i < b.metadata.size(); ++i) {
    if (i) out += ',';
    util::appendJsonString(out, b.metadata[i].first);
    out += ':';
    util::appendJsonString(out, b.metadata[i].second);
  }
  out += "},\"created_at_ms\":" + std::to_string(b.created_ms) + "}";
}

std::string headJson(const BlobInfo& b) {
  std::string out;
  appendHead(out, b);
  return out;
}

// {"name": "value", ...} -> Metadata sorted by key; INVALID naming the field otherwise.
Result<blobs::Metadata> parseMetadata(std::string_view json) {
  if (json.empty()) return blobs::Metadata{};
  std::map<std::string, std::string> sorted;
  try {
    Poco::JSON::Parser parser;
    auto object = parser.parse(std::string(json)).extract<Poco::JSON::Object::Ptr>();
    for (const auto& name : object->getNames()) {
      auto value = object->get(name);
      if (!value.isString()) {
        return Status::invalid("metadata: the value of \"" + name + "\" is not a string");
      }
      sorted[name] = value.convert<std::string>();
    }
  } catch (const std::exception&) {
    return Status::invalid("metadata: expected a JSON object of string values");
  }
  return blobs::Metadata(sorted.begin(), sorted.end());
}

}  // namespace

trellis_status blobOpenWrite(const trellis_ctx* c, trellis_str key,
                             const trellis_blob_write_options* options, trellis_handle* writer) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_open_write", &refused, &store);
  if (!ctx) return refused;
  if (!writer) return fail(ctx, Status::invalid("blob_open_write needs an output handle"));
  blobs::WriteOptions opts;
  if (options) {
    if (options->struct_size < sizeof(trellis_blob_write_options)) {
      return fail(ctx, Status::invalid("options: struct_size is too small"));
    }
    if (options->content_type.len > 0) opts.content_type = std::string(view(options->content_type));
    auto metadata = parseMetadata(view(options->metadata_json));
    if (!metadata) return fail(ctx, metadata.status());
    opts.metadata = std::move(*metadata);
  }
  auto scope = scopeOf(ctx, *store);
  if (!scope) return fail(ctx, scope.status());
  auto w = store->openWrite(*scope, view(key), opts);
  if (!w) return fail(ctx, w.status());
  auto h = ctx->plugin->services().handles->open(ownerOf(ctx), HandleKind::kBlobWriter,
                                                 std::make_shared<WriterHandle>(std::move(*w)));
  if (!h) return fail(ctx, h.status());
  *writer = *h;
  return TRELLIS_OK;
}

trellis_status blobWrite(const trellis_ctx* c, trellis_handle writer, trellis_str chunk) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_write", &refused, &store);
  if (!ctx) return refused;
  auto w = ctx->plugin->services().handles->get<WriterHandle>(ownerOf(ctx), HandleKind::kBlobWriter,
                                                              writer);
  if (!w) return fail(ctx, w.status());
  std::lock_guard lock((*w)->mu);
  Status s = (*w)->writer->write(view(chunk));
  return s ? TRELLIS_OK : quotaOrFail(ctx, s);
}

trellis_status blobCommit(const trellis_ctx* c, trellis_handle writer, trellis_buf* head_json) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_commit", &refused, &store);
  if (!ctx) return refused;
  auto taken = ctx->plugin->services().handles->take(ownerOf(ctx), HandleKind::kBlobWriter, writer);
  if (!taken) return fail(ctx, taken.status());
  auto& w = static_cast<WriterHandle&>(**taken);
  std::lock_guard lock(w.mu);
  auto info = w.writer->commit();
  if (!info) return quotaOrFail(ctx, info.status());
  ctx->usage.blob_bytes_written += info->size;
  if (head_json) fillBuf(head_json, headJson(*info));
  return TRELLIS_OK;
}

trellis_status blobOpenRead(const trellis_ctx* c, trellis_str key, uint64_t offset, uint64_t length,
                            trellis_handle* reader) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_open_read", &refused, &store);
  if (!ctx) return refused;
  if (!reader) return fail(ctx, Status::invalid("blob_open_read needs an output handle"));
  blobs::Range range{offset, length == UINT64_MAX ? std::nullopt : std::optional(length)};
  auto r = store->openRead({ctx->tenant->id, ctx->plugin->id()}, view(key), range);
  if (!r) return fail(ctx, r.status());
  auto h = ctx->plugin->services().handles->open(ownerOf(ctx), HandleKind::kBlobReader,
                                                 std::make_shared<ReaderHandle>(std::move(*r)));
  if (!h) return fail(ctx, h.status());
  *reader = *h;
  return TRELLIS_OK;
}

trellis_status blobRead(const trellis_ctx* c, trellis_handle reader, char* buf, size_t cap,
                        size_t* len) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_read", &refused, &store);
  if (!ctx) return refused;
  if (!len || (!buf && cap > 0)) return fail(ctx, Status::invalid("blob_read needs buf and len"));
  auto r = ctx->plugin->services().handles->get<ReaderHandle>(ownerOf(ctx), HandleKind::kBlobReader,
                                                              reader);
  if (!r) return fail(ctx, r.status());
  std::lock_guard lock((*r)->mu);
  auto n = (*r)->reader->read(buf, cap);
  if (!n) return fail(ctx, n.status());
  *len = *n;
  return TRELLIS_OK;
}

trellis_status blobHead(const trellis_ctx* c, trellis_str key, trellis_buf* head_json) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_head", &refused, &store);
  if (!ctx) return refused;
  if (!head_json) return fail(ctx, Status::invalid("blob_head needs an output buffer"));
  auto info = store->head({ctx->tenant->id, ctx->plugin->id()}, view(key));
  if (!info) return fail(ctx, info.status());
  fillBuf(head_json, headJson(*info));
  return TRELLIS_OK;
}

trellis_status blobDelete(const trellis_ctx* c, trellis_str key) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_delete", &refused, &store);
  if (!ctx) return refused;
  Status s = store->remove({ctx->tenant->id, ctx->plugin->id()}, view(key));
  return s ? TRELLIS_OK : fail(ctx, s);
}

trellis_status blobList(const trellis_ctx* c, trellis_str prefix, trellis_str start_after,
                        uint32_t limit, trellis_buf* out_json) {
  trellis_status refused = TRELLIS_OK;
  BlobStore* store = nullptr;
  trellis_ctx* ctx = blobCall(c, "blob_list", &refused, &store);
  if (!ctx) return refused;
  if (!out_json) return fail(ctx, Status::invalid("blob_list needs an output buffer"));
  auto page =
      store->list({ctx->tenant->id, ctx->plugin->id()}, view(prefix), view(start_after), limit);
  if (!page) return fail(ctx, page.status());
  std::string out = "{\"items\":[";
  for (size_t i = 0; i < page->blobs.size(); ++i) {
    if (i) out += ',';
    appendHead(out, page->blobs[i]);
  }
  out += "],\"next\":";
  if (page->next_start_after.empty()) {
    out += "null";
  } else {
    util::appendJsonString(out, page->next_start_after);
  }
  out += '}';
  fillBuf(out_json, out);
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
