# Included by cpack once per generator (CPACK_PROJECT_CONFIG_FILE, cmake/GrovePackage.cmake):
# a grove .deb without its libarchive dependency would install and then fail at the first
# archive it reads, so cpack refuses to make one when configure could not name the package.
if(CPACK_GENERATOR STREQUAL "DEB" AND CPACK_GROVE_LIBARCHIVE_UNKNOWN)
  message(FATAL_ERROR "no Debian package (and version) found for "
                      "${CPACK_GROVE_LIBARCHIVE_UNKNOWN}: the grove package would not "
                      "depend on libarchive, which libgrove_archive opens at run time")
endif()
