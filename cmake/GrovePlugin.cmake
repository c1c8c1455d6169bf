# grove_add_plugin(<name> SOURCES <src>... [LIBRARIES <lib>...] [OUTPUT_DIR <dir>])
#
# Builds lib<name>.so as a Grove plugin: hidden visibility (only the entry symbol is
# exported), linked against the Grove SDK, written to the plugin directory. The same
# helper is installed with the SDK, so in-tree and out-of-tree plugins build alike.
function(grove_add_plugin name)
  cmake_parse_arguments(arg "" "OUTPUT_DIR" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "grove_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${arg_SOURCES})
  if(TARGET grove_core)
    target_link_libraries(${name} PRIVATE grove_core ${arg_LIBRARIES})
  else()
    target_link_libraries(${name} PRIVATE Grove::grove_core ${arg_LIBRARIES})
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME "${name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    # Installed in <libdir>/grove/plugins: finds SDK libraries such as libgrove_store
    # that groved itself does not load.
    INSTALL_RPATH "$ORIGIN/../..")
  target_compile_features(${name} PRIVATE cxx_std_20)
  target_compile_definitions(${name} PRIVATE "GROVE_BUILD_LIBS=\"${GROVE_BUILD_LIBS}\"")
  if(arg_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${arg_OUTPUT_DIR}")
  elseif(DEFINED GROVE_PLUGIN_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${GROVE_PLUGIN_OUTPUT_DIR}")
  endif()
endfunction()
