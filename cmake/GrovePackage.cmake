# The Debian packages, made by `cpack` in the build tree (README.md, "Images and
# packages"):
#   grove      groved, grovectl, grove-certs, the default image's plugins (heartbeat,
#              message_manager and its broker plugin, shadow, function_runtime and its
#              Python SDK, local_resources), the runtime libraries, /etc/grove/profile.yaml
#              (configs/images/default.yaml rewritten for /usr) and group.yaml (empty), the systemd
#              unit grove.service, a dedicated user made by postinst.
#   grove-dev  the SDK headers, link names and the CMake package (find_package(Grove)).
# Install rules without a COMPONENT are grove's; COMPONENT extra (kv, deployment,
# ml_inference) is in neither package: images that want them use tools/grove-image.

set(grove_pkg_dir ${PROJECT_BINARY_DIR}/package)
set(grove_pkg_profile ${grove_pkg_dir}/profile.yaml)
set(GROVE_PYTHON_SDK_DIR /usr/${CMAKE_INSTALL_LIBDIR}/grove/python) # the installed SDK
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_custom_command(OUTPUT ${grove_pkg_profile}
  COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tools/grove-image profile
          ${PROJECT_SOURCE_DIR}/configs/images/default.yaml --prefix /usr
          --group /etc/grove/group.yaml --python-sdk-dir ${GROVE_PYTHON_SDK_DIR}
          --out ${grove_pkg_profile}
  DEPENDS ${PROJECT_SOURCE_DIR}/configs/images/default.yaml ${PROJECT_SOURCE_DIR}/tools/grove-image
  COMMENT "package profile: configs/images/default.yaml for /usr")
add_custom_target(grove_package_profile ALL DEPENDS ${grove_pkg_profile})

# Readable by root alone: the group holds functions' environmentVariables (often secrets),
# and GreengrassContainer functions see the host's /etc read-only.
install(FILES ${grove_pkg_profile} DESTINATION /etc/grove
        PERMISSIONS OWNER_READ OWNER_WRITE)
# The empty group: home.yaml's example function lives in the build tree.
install(FILES ${PROJECT_SOURCE_DIR}/configs/groups/empty.yaml DESTINATION /etc/grove
        RENAME group.yaml PERMISSIONS OWNER_READ OWNER_WRITE)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/grove.service
        DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME grove)
set(CPACK_PACKAGE_VENDOR "Grove")
set(CPACK_PACKAGE_CONTACT "Grove developers <grove@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Grove edge runtime for IoT devices")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_STRIP_FILES ON) # symbols stay in the build tree
set(CPACK_COMPONENTS_ALL grove dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_GROVE_PACKAGE_NAME grove)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME grove-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_GROVE_DESCRIPTION
    "Grove edge runtime: groved, grovectl and the default image's plugins")
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "Grove plugin SDK: headers and the CMake package (find_package(Grove))")
# dpkg-shlibdeps names the libraries the binaries link (CAF, Protobuf, yaml-cpp, ...);
# the rest are programs and files groved runs or reads, and libarchive, which
# libgrove_archive opens at its first use instead of linking (sdk/CMakeLists.txt), so
# dpkg-shlibdeps cannot see it. Its package and version are asked of dpkg for the file
# the build found: the name changes between releases (Debian 12 libarchive13, Debian 13
# libarchive13t64), and the version built against is the least one known to have every
# symbol archive.cpp resolves.
find_package(LibArchive REQUIRED)
file(REAL_PATH ${LibArchive_LIBRARIES} grove_libarchive_file)
execute_process(COMMAND dpkg-query --search ${grove_libarchive_file}
                OUTPUT_VARIABLE grove_libarchive_owner RESULT_VARIABLE grove_dpkg_status
                ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
set(grove_libarchive_package "")
# "libarchive13:amd64: /usr/lib/x86_64-linux-gnu/libarchive.so.13.6.2"
if(grove_dpkg_status EQUAL 0 AND grove_libarchive_owner MATCHES "^([a-z0-9.+-]+)(:[a-z0-9]+)?[:,]")
  set(grove_libarchive_name ${CMAKE_MATCH_1})
  execute_process(COMMAND dpkg-query --show --showformat=\${Version} ${CMAKE_MATCH_1}${CMAKE_MATCH_2}
                  OUTPUT_VARIABLE grove_libarchive_version RESULT_VARIABLE grove_dpkg_status
                  ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  # "3.6.2-1+deb12u5": the upstream version (and epoch), without the Debian revision.
  if(grove_dpkg_status EQUAL 0 AND grove_libarchive_version MATCHES "^(.+)-[^-]+$")
    set(grove_libarchive_package ", ${grove_libarchive_name} (>= ${CMAKE_MATCH_1})")
  elseif(grove_dpkg_status EQUAL 0 AND NOT grove_libarchive_version STREQUAL "")
    set(grove_libarchive_package ", ${grove_libarchive_name} (>= ${grove_libarchive_version})")
  endif()
endif()
if(grove_libarchive_package STREQUAL "")
  # Fatal only when cpack makes a .deb (cmake/GroveCPackCheck.cmake): a build that is
  # never packaged does not need dpkg.
  set(CPACK_GROVE_LIBARCHIVE_UNKNOWN ${grove_libarchive_file})
  message(WARNING "dpkg does not say which package (and version) owns "
                  "${grove_libarchive_file}: cpack will refuse to make the grove package")
endif()
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_SOURCE_DIR}/cmake/GroveCPackCheck.cmake)
set(CPACK_DEBIAN_GROVE_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
    ${PROJECT_BINARY_DIR}/lib ${PROJECT_BINARY_DIR}/lib/grove/plugins)
set(CPACK_DEBIAN_GROVE_PACKAGE_DEPENDS
    "mosquitto, openssl, python3, python3-yaml, libsystemd0, passwd${grove_libarchive_package}")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "grove (= ${PROJECT_VERSION}), libcaf-dev, libprotobuf-dev, libyaml-cpp-dev, libspdlog-dev, libfmt-dev, libsqlite3-dev, libjemalloc-dev")
# postinst and prerm name the Python SDK's directory (its bytecode, made at install).
foreach(script postinst prerm)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${script} ${grove_pkg_dir}/${script}
                 @ONLY)
endforeach()
set(CPACK_DEBIAN_GROVE_PACKAGE_CONTROL_EXTRA
    ${grove_pkg_dir}/postinst
    ${grove_pkg_dir}/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_GROVE_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
