// Host-table entry points for blob storage (ABI 1.2, capability "blobs"): every call is
// scoped by the host to the ctx's (tenant, plugin) and goes through services::enter().
#pragma once

#include "trellis/plugin.h"

namespace trellis::kernel::services {

trellis_status blobOpenWrite(const trellis_ctx* ctx, trellis_str key,
                             const trellis_blob_write_options* options, trellis_handle* writer);
trellis_status blobWrite(const trellis_ctx* ctx, trellis_handle writer, trellis_str chunk);
trellis_status blobCommit(const trellis_ctx* ctx, trellis_handle writer, trellis_buf* head_json);
trellis_status blobOpenRead(const trellis_ctx* ctx, trellis_str key, uint64_t offset,
                            uint64_t length, trellis_handle* reader);
trellis_status blobRead(const trellis_ctx* ctx, trellis_handle reader, char* buf, size_t cap,
                        size_t* len);
trellis_status blobHead(const trellis_ctx* ctx, trellis_str key, trellis_buf* head_json);
trellis_status blobDelete(const trellis_ctx* ctx, trellis_str key);
trellis_status blobList(const trellis_ctx* ctx, trellis_str prefix, trellis_str start_after,
                        uint32_t limit, trellis_buf* out_json);

}  // namespace trellis::kernel::services
