# trellis_add_plugin(<target> MANIFEST <trellis-plugin.json> SOURCES <files...>
#                    [OUTPUT_DIR <dir>] [FILES <extra files to copy beside the library>]
#                    [NO_DESCRIPTOR_CHECK])
#
# Builds a plugin as a MODULE library that exports only `trellis_plugin_entry`, links
# nothing of the host (undefined symbols are an error at link time), and lays it out
# with its manifest in OUTPUT_DIR (default: ${CMAKE_BINARY_DIR}/plugins/<target>) —
# a folder trellisd can load directly when listed in `plugins.dirs`' parent.
# After linking it loads the library and fails the build unless the id, version and ABI
# in the code's descriptor are the manifest's (NO_DESCRIPTOR_CHECK: deliberately broken
# test fixtures only; skipped when cross-compiling).
set(_TRELLIS_PLUGIN_MAP "${CMAKE_CURRENT_LIST_DIR}/plugin.map" CACHE INTERNAL "")
set(_TRELLIS_PLUGIN_DESCRIPTOR_SRC "${CMAKE_CURRENT_LIST_DIR}/plugin_descriptor.c"
    CACHE INTERNAL "")
set(_TRELLIS_CHECK_PLUGIN "${CMAKE_CURRENT_LIST_DIR}/TrellisCheckPlugin.cmake" CACHE INTERNAL "")

function(trellis_add_plugin target)
  cmake_parse_arguments(ARG "NO_DESCRIPTOR_CHECK" "MANIFEST;OUTPUT_DIR" "SOURCES;FILES" ${ARGN})
  if(NOT ARG_MANIFEST OR NOT ARG_SOURCES)
    message(FATAL_ERROR "trellis_add_plugin(${target}): MANIFEST and SOURCES are required")
  endif()
  if(NOT ARG_OUTPUT_DIR)
    set(ARG_OUTPUT_DIR "${CMAKE_BINARY_DIR}/plugins/${target}")
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE trellis::sdk)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIR}")
  target_link_options(${target} PRIVATE
    "LINKER:--no-undefined" "LINKER:--version-script=${_TRELLIS_PLUGIN_MAP}")
  get_filename_component(manifest "${ARG_MANIFEST}" ABSOLUTE)
  if(NOT ARG_NO_DESCRIPTOR_CHECK AND NOT CMAKE_CROSSCOMPILING)
    if(NOT TARGET trellis_plugin_descriptor)
      add_executable(trellis_plugin_descriptor "${_TRELLIS_PLUGIN_DESCRIPTOR_SRC}")
      target_link_libraries(trellis_plugin_descriptor PRIVATE trellis::sdk ${CMAKE_DL_LIBS})
      if(NOT CMAKE_C_COMPILER_LOADED)
        set_source_files_properties("${_TRELLIS_PLUGIN_DESCRIPTOR_SRC}" PROPERTIES LANGUAGE CXX)
      endif()
    endif()
    add_dependencies(${target} trellis_plugin_descriptor)
    add_custom_command(TARGET ${target} POST_BUILD
      COMMAND ${CMAKE_COMMAND} -DDESCRIBE=$<TARGET_FILE:trellis_plugin_descriptor>
              -DPLUGIN=$<TARGET_FILE:${target}> -DMANIFEST=${manifest}
              -P "${_TRELLIS_CHECK_PLUGIN}"
      VERBATIM)
    # A changed manifest alone must trigger the check again.
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${manifest}")
  endif()
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -E copy_if_different "${manifest}"
            "${ARG_OUTPUT_DIR}/trellis-plugin.json"
    VERBATIM)
  foreach(extra IN LISTS ARG_FILES)
    get_filename_component(extra_abs "${extra}" ABSOLUTE)
    add_custom_command(TARGET ${target} POST_BUILD
      COMMAND ${CMAKE_COMMAND} -E copy_if_different "${extra_abs}" "${ARG_OUTPUT_DIR}/"
      VERBATIM)
  endforeach()
endfunction()

# trellis_add_lua_plugin(<target> MANIFEST <trellis-plugin.json> SOURCES <files.lua...>
#                        [OUTPUT_DIR <dir>] [FILES <extra files>])
#
# Lays out a Lua plugin ("runtime": "lua") in OUTPUT_DIR (default:
# ${CMAKE_BINARY_DIR}/plugins/<target>): the manifest as trellis-plugin.json beside the Lua
# sources and extra files, copied again whenever one changes. Nothing is compiled: trellisd
# compiles the entry when it loads the plugin and names file:line on a syntax error.
function(trellis_add_lua_plugin target)
  cmake_parse_arguments(ARG "" "MANIFEST;OUTPUT_DIR" "SOURCES;FILES" ${ARGN})
  if(NOT ARG_MANIFEST OR NOT ARG_SOURCES)
    message(FATAL_ERROR "trellis_add_lua_plugin(${target}): MANIFEST and SOURCES are required")
  endif()
  if(NOT ARG_OUTPUT_DIR)
    set(ARG_OUTPUT_DIR "${CMAKE_BINARY_DIR}/plugins/${target}")
  endif()
  get_filename_component(manifest "${ARG_MANIFEST}" ABSOLUTE)
  set(pairs "${manifest}" trellis-plugin.json)
  foreach(file IN LISTS ARG_SOURCES ARG_FILES)
    get_filename_component(abs "${file}" ABSOLUTE)
    get_filename_component(name "${file}" NAME)
    list(APPEND pairs "${abs}" "${name}")
  endforeach()
  set(outputs)
  while(pairs)
    list(POP_FRONT pairs src dst)
    add_custom_command(OUTPUT "${ARG_OUTPUT_DIR}/${dst}"
      COMMAND ${CMAKE_COMMAND} -E copy "${src}" "${ARG_OUTPUT_DIR}/${dst}"
      DEPENDS "${src}" VERBATIM)
    list(APPEND outputs "${ARG_OUTPUT_DIR}/${dst}")
  endwhile()
  add_custom_target(${target} ALL DEPENDS ${outputs})
endfunction()
