# cmake -DDESCRIBE=<trellis_plugin_descriptor> -DPLUGIN=<lib.so> -DMANIFEST=<json> -P this
#
# Run by trellis_add_plugin() after linking: the id, version and ABI in the plugin's code
# (its trellis_plugin descriptor) must be the ones its trellis-plugin.json declares, or
# trellisd would refuse to load it. On a mismatch the library is deleted (so the next build
# tries again) and the build fails naming both values.
function(trellis_plugin_mismatch)
  string(JOIN "" what ${ARGV})  # the message may come in several pieces
  file(REMOVE "${PLUGIN}")
  message(FATAL_ERROR "${MANIFEST}: ${what}; trellisd would refuse to load ${PLUGIN}")
endfunction()

# Leaks of a library loaded only to read its descriptor are not the build's concern.
set(ENV{ASAN_OPTIONS} "detect_leaks=0")
execute_process(COMMAND "${DESCRIBE}" "${PLUGIN}"
  OUTPUT_VARIABLE described ERROR_VARIABLE error RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  trellis_plugin_mismatch("cannot read the plugin's descriptor: ${error}")
endif()
string(REGEX MATCHALL "[^\n]+" fields "${described}")
list(GET fields 0 code_id)
list(GET fields 1 code_version)
list(GET fields 2 code_abi)

file(READ "${MANIFEST}" json)
string(JSON id ERROR_VARIABLE err GET "${json}" id)
if(err)
  trellis_plugin_mismatch("no \"id\" string (${err})")
endif()
string(JSON version ERROR_VARIABLE err GET "${json}" version)
if(err)
  trellis_plugin_mismatch("no \"version\" string (${err})")
endif()
string(JSON major ERROR_VARIABLE err GET "${json}" abi major)
if(NOT err)
  string(JSON minor ERROR_VARIABLE err GET "${json}" abi minor)
endif()
if(err)
  trellis_plugin_mismatch("no \"abi\": {\"major\": N, \"minor\": N} (${err})")
endif()

if(NOT id STREQUAL code_id)
  trellis_plugin_mismatch("the manifest says id \"${id}\" but the code's descriptor says "
                          "\"${code_id}\"")
endif()
if(NOT version STREQUAL code_version)
  trellis_plugin_mismatch("the manifest says version ${version} but the code's descriptor says "
                          "${code_version}")
endif()
if(NOT "${major}.${minor}" STREQUAL code_abi)
  string(REPLACE "." ";" code_abi_parts "${code_abi}")
  list(GET code_abi_parts 0 code_major)
  list(GET code_abi_parts 1 code_minor)
  trellis_plugin_mismatch("the manifest says ABI ${major}.${minor} but the code is compiled "
                          "against ABI ${code_abi} (TRELLIS_ABI_MAJOR/MINOR of the "
                          "trellis/plugin.h it includes): set \"abi\": {\"major\": "
                          "${code_major}, \"minor\": ${code_minor}}")
endif()
