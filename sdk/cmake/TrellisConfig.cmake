# find_package(Trellis) for out-of-tree plugins: gives trellis::sdk and
# trellis_add_plugin(). See docs/plugin-guide.md.
include("${CMAKE_CURRENT_LIST_DIR}/TrellisTargets.cmake")
include("${CMAKE_CURRENT_LIST_DIR}/TrellisPlugin.cmake")
