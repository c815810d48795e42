# libtwine-http (twine::twine_http, twine::twine_http_static), included by
# twineConfig.cmake for find_package(twine COMPONENTS http). Its dependency,
# libcurl, is found through pkg-config, as when twine was built.
include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)
if(NOT TARGET PkgConfig::CURL)
  pkg_check_modules(CURL QUIET IMPORTED_TARGET libcurl)
endif()
if(TARGET PkgConfig::CURL)
  include("${CMAKE_CURRENT_LIST_DIR}/twine-httpTargets.cmake")
endif()
