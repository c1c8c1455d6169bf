# grove_add_test(<name> SOURCES <src>... [LIBRARIES <lib>...] [DEFINITIONS <def>...]
#                [DEPENDS <target>...] [TIMEOUT <seconds>] [PRIVATE_HEADERS])
#
# One Boost.Test executable, registered with CTest under its own name: the shape of every
# C++ suite in the tree. PRIVATE_HEADERS lets the test include the directory's src/ (a
# plugin's config map, say). Built only with GROVE_BUILD_TESTS.
find_package(Boost 1.74 REQUIRED COMPONENTS unit_test_framework)

function(grove_add_test name)
  cmake_parse_arguments(arg "PRIVATE_HEADERS" "TIMEOUT" "SOURCES;LIBRARIES;DEFINITIONS;DEPENDS"
                        ${ARGN})
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "grove_add_test(${name}): SOURCES is required")
  endif()
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE ${arg_LIBRARIES} grove_test_support
                                        Boost::unit_test_framework)
  target_compile_definitions(${name} PRIVATE BOOST_TEST_DYN_LINK ${arg_DEFINITIONS})
  if(arg_PRIVATE_HEADERS)
    target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  endif()
  if(arg_DEPENDS)
    add_dependencies(${name} ${arg_DEPENDS})
  endif()
  add_test(NAME ${name} COMMAND ${name})
  if(arg_TIMEOUT)
    set_tests_properties(${name} PROPERTIES TIMEOUT ${arg_TIMEOUT})
  endif()
endfunction()
