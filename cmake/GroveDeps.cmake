# Finds the Debian 12 packages Grove builds against. CAF 0.17 ships no CMake package
# config, so it is located by hand.
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)

# Library versions a plugin records in its descriptor and the loader compares with the
# kernel's (grove/plugin.hpp). In-tree and out-of-tree builds (this file is installed
# with the SDK) each record the versions they really compiled against.
set(GROVE_BUILD_LIBS "yaml-cpp ${yaml-cpp_VERSION}, fmt ${fmt_VERSION}, spdlog ${spdlog_VERSION}")

if(NOT TARGET grove_caf)
  find_path(CAF_INCLUDE_DIR caf/config.hpp REQUIRED)
  find_library(CAF_CORE_LIBRARY NAMES caf_core REQUIRED)
  add_library(grove_caf INTERFACE IMPORTED)
  set_target_properties(grove_caf PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${CAF_CORE_LIBRARY};Threads::Threads")
endif()

# Allocator for the executables (groved, bus_bench). Bus messages are allocated by the
# publisher's thread and freed by the receiver's; glibc's malloc serialises such
# cross-thread frees on arena locks, jemalloc does not (bus_bench: ~2.7x messages/s).
set(GROVE_ALLOCATOR "jemalloc" CACHE STRING "jemalloc or system")
if(NOT TARGET grove_allocator)
  add_library(grove_allocator INTERFACE)
  if(GROVE_ALLOCATOR STREQUAL "jemalloc")
    find_library(JEMALLOC_LIBRARY NAMES jemalloc REQUIRED)
    # no-as-needed: nothing calls jemalloc by name, it replaces malloc by linking.
    target_link_libraries(grove_allocator INTERFACE
      "-Wl,--push-state,--no-as-needed" ${JEMALLOC_LIBRARY} "-Wl,--pop-state")
  endif()
endif()
