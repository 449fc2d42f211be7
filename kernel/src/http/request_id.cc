#include "trellis/kernel/http/request_id.h"

#include "trellis/tenants/admission.h"

namespace trellis::kernel::http {

std::string newRequestId() {
  return tenants::randomHexId(16);
}

}  // namespace trellis::kernel::http
