# Finds the Debian 12 packages Grove builds against. CAF 0.17 ships no CMake package
# config, so it is located by hand.
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)

if(NOT TARGET grove_caf)
  find_path(CAF_INCLUDE_DIR caf/config.hpp REQUIRED)
  find_library(CAF_CORE_LIBRARY NAMES caf_core REQUIRED)
  add_library(grove_caf INTERFACE IMPORTED)
  set_target_properties(grove_caf PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${CAF_CORE_LIBRARY};Threads::Threads")
endif()
