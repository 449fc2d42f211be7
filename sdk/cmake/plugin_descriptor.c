/* Prints the descriptor a built plugin carries, one field a line: id, version, ABI
 * ("1.1"). trellis_add_plugin() runs it after linking (TrellisCheckPlugin.cmake) to compare
 * the code with its trellis-plugin.json, so a mismatch fails the build, not the load.
 * Usage: trellis_plugin_descriptor PLUGIN.so */
#include <dlfcn.h>
#include <stdio.h>
#include <trellis/plugin.h>

int main(int argc, char** argv) {
  void* library;
  trellis_plugin_entry_fn entry;
  const trellis_plugin* plugin;
  if (argc != 2) {
    fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
    return 2;
  }
  library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 1;
  }
  *(void**)(&entry) = dlsym(library, TRELLIS_PLUGIN_ENTRY_SYMBOL);
  if (entry == NULL) {
    fprintf(stderr, "%s exports no " TRELLIS_PLUGIN_ENTRY_SYMBOL "\n", argv[1]);
    return 1;
  }
  plugin = entry();
  if (plugin == NULL || plugin->id == NULL || plugin->version == NULL) {
    fprintf(stderr, "%s: " TRELLIS_PLUGIN_ENTRY_SYMBOL " gave no id or version\n", argv[1]);
    return 1;
  }
  printf("%s\n%s\n%u.%u\n", plugin->id, plugin->version, (unsigned)plugin->abi_major,
         (unsigned)plugin->abi_minor);
  return 0;
}
