# grove_find_static_runtime(): the archives a C++ function links when
# GROVE_FUNCTION_STATIC_RUNTIME is on, for the in-tree build (sdk/function/cpp) and an
# installed Grove (GroveFunction.cmake) alike. Sets GROVE_PROTOBUF_LITE_STATIC (Debian's
# libprotobuf-lite.a: position independent, so it goes into a PIE) and
# GROVE_LIBSTDCXX_STATIC (libstdc++'s archive: -static-libstdc++ alone puts it last,
# after the shared libraries).
macro(grove_find_static_runtime)
  find_library(GROVE_PROTOBUF_LITE_STATIC NAMES libprotobuf-lite.a)
  if(NOT GROVE_PROTOBUF_LITE_STATIC)
    message(FATAL_ERROR "GROVE_FUNCTION_STATIC_RUNTIME: no libprotobuf-lite.a (libprotobuf-dev); "
                        "configure with -DGROVE_FUNCTION_STATIC_RUNTIME=OFF to link it shared")
  endif()
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.a
                  OUTPUT_VARIABLE GROVE_LIBSTDCXX_STATIC OUTPUT_STRIP_TRAILING_WHITESPACE)
  # Without the archive the compiler prints the bare name back (clang with libc++, no
  # libstdc++-dev): say so here rather than as a link error far away.
  if(NOT IS_ABSOLUTE "${GROVE_LIBSTDCXX_STATIC}")
    message(FATAL_ERROR "GROVE_FUNCTION_STATIC_RUNTIME: ${CMAKE_CXX_COMPILER} has no libstdc++.a; "
                        "configure with -DGROVE_FUNCTION_STATIC_RUNTIME=OFF to link it shared")
  endif()
endmacro()
