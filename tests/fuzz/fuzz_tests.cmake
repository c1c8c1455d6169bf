# The fuzzers as ctest tests of the normal build (README.md, "Fuzzing"). fuzz_build
# configures and builds the clang tree <build>/fuzz with tools/fuzz (ccache when there
# is one); then each fuzz_<name> replays regressions/<name>/ and fuzzes for
# GROVE_FUZZ_SECONDS from corpus/<name>/. Names come from targets/<name>.cpp.
# The fuzzers are built with ASan and UBSan in a clang tree of their own whatever this
# tree's type, so the sanitizer trees leave them to the normal one rather than build and
# run the same thing again.
if(GROVE_SANITIZER)
  return()
endif()
set(GROVE_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzz_<name> ctest test fuzzes")
file(GLOB grove_fuzz_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/targets/*.cpp)
set(grove_fuzz_env GROVE_FUZZ_BUILD_DIR=${CMAKE_BINARY_DIR}/fuzz)
add_test(NAME fuzz_build COMMAND ${PROJECT_SOURCE_DIR}/tools/fuzz build)
# A first build from nothing compiles the parsers and the protobuf code with clang.
set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP grove_fuzz TIMEOUT 3600
                                           ENVIRONMENT "${grove_fuzz_env}")
foreach(src ${grove_fuzz_sources})
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME fuzz_${name}
           COMMAND ${PROJECT_SOURCE_DIR}/tools/fuzz check ${name} ${GROVE_FUZZ_SECONDS})
  set_tests_properties(fuzz_${name} PROPERTIES FIXTURES_REQUIRED grove_fuzz TIMEOUT 300
                                               ENVIRONMENT "${grove_fuzz_env}")
endforeach()
