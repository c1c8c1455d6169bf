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

# grove_add_plugin_proto(<prefix> <file.proto>)
#
# A plugin's bus API: protoc generates <file>.pb.{h,cc} into gen/grove/ of the current
# binary directory, built as the static library <prefix>_proto (position independent, so
# plugins link it); <prefix>_client is the interface target of the plugin's typed client
# (its include/ folder, if it has one) with the messages, for other plugins, grovectl and
# tests. Code includes the messages as <grove/<file>.pb.h>.
function(grove_add_plugin_proto prefix proto)
  get_filename_component(stem ${proto} NAME_WE)
  get_filename_component(proto_path ${proto} ABSOLUTE)
  get_filename_component(proto_dir ${proto_path} DIRECTORY)
  set(gen ${CMAKE_CURRENT_BINARY_DIR}/gen/grove)
  file(MAKE_DIRECTORY ${gen})
  add_custom_command(
    OUTPUT ${gen}/${stem}.pb.cc ${gen}/${stem}.pb.h
    COMMAND protobuf::protoc --cpp_out=${gen} -I${proto_dir} ${proto_path}
    DEPENDS ${proto_path}
    COMMENT "protoc ${stem}.proto")
  add_library(${prefix}_proto STATIC ${gen}/${stem}.pb.cc)
  target_include_directories(${prefix}_proto PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_BINARY_DIR}/gen>)
  target_link_libraries(${prefix}_proto PUBLIC protobuf::libprotobuf-lite)
  target_compile_options(${prefix}_proto PRIVATE -Wno-unused-parameter)
  set_target_properties(${prefix}_proto PROPERTIES POSITION_INDEPENDENT_CODE ON)
  add_library(${prefix}_client INTERFACE)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/include)
    target_include_directories(${prefix}_client INTERFACE ${CMAKE_CURRENT_SOURCE_DIR}/include)
  endif()
  target_link_libraries(${prefix}_client INTERFACE ${prefix}_proto)
endfunction()
