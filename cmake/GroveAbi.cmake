# The plugin ABI identity, derived from the SDK's public headers at build time.
#
# grove_abi_generate(<target>...) makes <build>/generated/include/grove/abi.hpp (included by
# grove/plugin.hpp) and adds it to <target>'s include path. The hash covers every public
# SDK header and envelope.proto; a ctest test (sdk_abi_lock) checks it against
# sdk/plugin/abi.lock, so a change to grove::plugin or grove::context cannot land without
# a GROVE_PLUGIN_ABI_VERSION bump.
set(GROVE_ABI_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/grove_abi_hash.cmake)

function(grove_abi_generate target)
  # From the function's own folder: GROVE_ABI_SCRIPT is not set in directories that
  # call this without include(GroveAbi) (tests/fuzz).
  set(script ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/grove_abi_hash.cmake)
  file(GLOB headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/sdk/plugin/include/grove/*.hpp)
  # store.hpp, archive.hpp, cgroup.hpp, rate_limiter.hpp and rotating_log.hpp are the
  # interfaces of libgrove_store, libgrove_archive (versioned by their SONAMEs) and the
  # static grove_cgroup, grove_rate_limiter and grove_rotating_log, which a plugin links
  # itself; the kernel never sees their types, so they are not part of the plugin ABI.
  list(FILTER headers EXCLUDE REGEX "/grove/(store|archive|cgroup|rate_limiter|rotating_log)\\.hpp$")
  set(inputs ${headers} ${PROJECT_SOURCE_DIR}/proto/envelope.proto)
  set(out_dir ${CMAKE_BINARY_DIR}/generated/include)
  set(out ${out_dir}/grove/abi.hpp)
  # At configure time too, so the file exists before the first build step.
  execute_process(COMMAND ${CMAKE_COMMAND} "-DOUT=${out}" "-DINPUTS=${inputs}"
                          "-DVERSION_HEADER=${PROJECT_SOURCE_DIR}/sdk/plugin/include/grove/plugin.hpp"
                          -P ${script})
  # The script rewrites the header only when the hash changes, so touching a header
  # without changing the interface rebuilds nothing.
  if(TARGET grove_abi_header)
    add_dependencies(${target} grove_abi_header)
    target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${out_dir}>)
    return()
  endif()
  add_custom_target(grove_abi_header
    COMMAND ${CMAKE_COMMAND} "-DOUT=${out}" "-DINPUTS=${inputs}"
            "-DVERSION_HEADER=${PROJECT_SOURCE_DIR}/sdk/plugin/include/grove/plugin.hpp"
            -P ${script}
    BYPRODUCTS ${out}
    COMMENT "Plugin ABI hash"
    VERBATIM)
  add_dependencies(${target} grove_abi_header)
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${out_dir}>)
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/grove COMPONENT dev)
  set(GROVE_ABI_INPUTS "${inputs}" PARENT_SCOPE)
endfunction()

