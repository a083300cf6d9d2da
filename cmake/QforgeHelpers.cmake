# Helpers shared by every folder's CMakeLists.txt.

# qforge_add_module(<name> [SOURCES ...] [DEPS ...] [PRIVATE_DEPS ...])
# Builds the library target qforge_<name> (alias qforge::<name>) for one
# top-level folder. Headers sit next to their sources and are included as
# "<folder>/<file>.h" from the repository root.
function(qforge_add_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS;EXPORT_NAME" ${ARGN})
  set(target qforge_${name})
  if(NOT ARG_EXPORT_NAME)
    set(ARG_EXPORT_NAME ${name})
  endif()
  add_library(${target} ${ARG_SOURCES})
  # In the tree, "core/tensor.h" resolves from the repository root; installed,
  # headers sit in <prefix>/include/qforge/<folder>/, reachable both as
  # "core/tensor.h" and as <qforge/core/tensor.h>.
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/qforge>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${target} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS}
    $<BUILD_INTERFACE:qforge_build_flags>)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${ARG_EXPORT_NAME})
  add_library(qforge::${name} ALIAS ${target})
  if(NOT ARG_EXPORT_NAME STREQUAL name)
    add_library(qforge::${ARG_EXPORT_NAME} ALIAS ${target})
  endif()
  set_property(GLOBAL APPEND PROPERTY QFORGE_INSTALL_TARGETS ${target})
endfunction()

# qforge_add_test_folder(<folder> DEPS ...)
# Builds one gtest binary from tests/<folder>/*.cpp and registers every test
# case with CTest, labelled with the folder name.
function(qforge_add_test_folder folder)
  cmake_parse_arguments(ARG "" "" "DEPS;LABELS" ${ARGN})
  # Not recursive: a subfolder (tests/quant/runtime) is a folder of its own.
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${folder}/*.cpp)
  if(NOT srcs)
    return()
  endif()
  string(REPLACE "/" "_" tname "test_${folder}")
  add_executable(${tname} ${srcs})
  target_include_directories(${tname} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${tname} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main qforge_build_flags)
  set(labels ${folder} ${ARG_LABELS})
  gtest_discover_tests(${tname}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${labels}"
    DISCOVERY_TIMEOUT 60)
endfunction()

# qforge_isa_sources(<flags> <files...>): ISA flags on individual files only.
function(qforge_isa_sources flags)
  set_source_files_properties(${ARGN} PROPERTIES COMPILE_OPTIONS "${flags}")
endfunction()
