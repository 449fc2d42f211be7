// The admin API's OpenAPI 3.1 description (docs/admin-api.openapi.json), embedded at build
// time and served at GET /v1/openapi.json. tests/integration/openapi_test.cc checks that
// every admin route is in it and that every route in it answers.
#pragma once

#include <string_view>

namespace trellis::kernel::runtime {

std::string_view adminOpenApiJson();

}  // namespace trellis::kernel::runtime
