# The C++ function SDK of an installed Grove (included by GroveConfig.cmake):
#   Grove::grove_function       libgrove_function.a and grove/function/function.hpp
#   grove_add_function(<name> <sources>...)
# builds a function executable as the in-tree build does (sdk/function/cpp/CMakeLists.txt):
# with GROVE_FUNCTION_STATIC_RUNTIME (the default) libstdc++, libgcc and Protobuf lite are
# linked statically, so the binary loads nothing but libc and starts faster (the SDK
# README's "Run time"); off, it links Debian's shared libprotobuf-lite.
if(TARGET Grove::grove_function)
  return()
endif()
option(GROVE_FUNCTION_STATIC_RUNTIME
       "Link C++ functions' libstdc++, libgcc and Protobuf lite statically (faster start)" ON)
add_library(Grove::grove_function STATIC IMPORTED)
set_target_properties(Grove::grove_function PROPERTIES
  IMPORTED_LOCATION "${GROVE_FUNCTION_ARCHIVE}"
  IMPORTED_LINK_INTERFACE_LANGUAGES CXX
  INTERFACE_INCLUDE_DIRECTORIES "${GROVE_FUNCTION_INCLUDE_DIR}"
  INTERFACE_COMPILE_FEATURES cxx_std_20)
if(GROVE_FUNCTION_STATIC_RUNTIME)
  include(${CMAKE_CURRENT_LIST_DIR}/GroveStaticRuntime.cmake)
  grove_find_static_runtime()
  set(grove_function_link
      "$<LINK_GROUP:RESCAN,${GROVE_FUNCTION_ARCHIVE},${GROVE_PROTOBUF_LITE_STATIC},${GROVE_LIBSTDCXX_STATIC}>"
      Threads::Threads)
  set(grove_function_link_options -static-libstdc++ -static-libgcc "LINKER:--gc-sections"
                                  "LINKER:--as-needed")
else()
  set(grove_function_link Grove::grove_function protobuf::libprotobuf-lite Threads::Threads)
  set(grove_function_link_options "LINKER:--as-needed")
endif()

# grove_add_function(<name> <sources>...): a function executable on the SDK, to be named
# by a group's `handler` (with its directory as `codeUri`).
function(grove_add_function name)
  add_executable(${name} ${ARGN})
  target_include_directories(${name} PRIVATE "${GROVE_FUNCTION_INCLUDE_DIR}")
  target_compile_features(${name} PRIVATE cxx_std_20)
  target_link_libraries(${name} PRIVATE ${grove_function_link})
  target_link_options(${name} PRIVATE ${grove_function_link_options})
  set_target_properties(${name} PROPERTIES SKIP_BUILD_RPATH ON INSTALL_RPATH "")
endfunction()
