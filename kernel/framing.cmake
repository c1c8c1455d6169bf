# grove_framing: Grove's framing (control socket, function IPC) plus the Grove error helpers
# it reports with. A small static library so grovectl and the function SDK link it without
# the kernel; grove_core links it too and compiles none of these sources a second time,
# except utf8.cpp (below).
#   kernel/src/framing.cpp     grove::framing::core (grove/kernel/framing_core.hpp): frames
#                              written and read, frame_stream; no CAF, so a function binary
#                              (the function SDK) links no libcaf_core
#   kernel/src/framing_error.cpp  grove::framing (grove/kernel/framing.hpp): the same with
#                              caf::error results, for groved, grovectl and the plugins
#   sdk/plugin/src/errc.cpp    grove::to_string(errc) (no CAF either)
#   sdk/plugin/src/errors.cpp  make_error, message_of, describe
#   sdk/plugin/src/rpc.cpp     set_error, error_of: errors as envelope fields (typed calls)
#   sdk/plugin/src/utf8.cpp    valid_utf8, escape_invalid_utf8: text from user code made fit
#                              for Protobuf strings (the function SDK, grovectl); grove_core
#                              compiles it itself for the plugins (the kernel calls nothing
#                              of it, so grove_framing's copy is never pulled into it: one
#                              definition per binary)
#   kernel/src/plugin_name.cpp validate_plugin_name: the one rule for plugin names
# Paths are relative to this file, so it works whichever project includes it.
get_filename_component(grove_framing_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
add_library(grove_framing STATIC
  ${grove_framing_root}/kernel/src/framing.cpp
  ${grove_framing_root}/kernel/src/framing_error.cpp
  ${grove_framing_root}/kernel/src/plugin_name.cpp
  ${grove_framing_root}/sdk/plugin/src/errc.cpp
  ${grove_framing_root}/sdk/plugin/src/errors.cpp
  ${grove_framing_root}/sdk/plugin/src/rpc.cpp
  ${grove_framing_root}/sdk/plugin/src/utf8.cpp)
target_include_directories(grove_framing PUBLIC
  $<BUILD_INTERFACE:${grove_framing_root}/kernel/include>
  $<BUILD_INTERFACE:${grove_framing_root}/sdk/plugin/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
# control.hpp includes grove/plugin.hpp, which includes yaml-cpp headers: headers
# only, nothing of yaml-cpp is linked.
target_include_directories(grove_framing SYSTEM PUBLIC
  $<TARGET_PROPERTY:yaml-cpp,INTERFACE_INCLUDE_DIRECTORIES>)
target_link_libraries(grove_framing PUBLIC grove_proto grove_caf)
target_compile_features(grove_framing PUBLIC cxx_std_20)
# Needed in the export set because grove_core (exported) links it.
install(TARGETS grove_framing EXPORT GroveTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
