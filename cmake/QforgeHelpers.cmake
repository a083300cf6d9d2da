# Helpers shared by every folder's CMakeLists.txt.

# qforge_add_module(<name> [SOURCES ...] [DEPS ...] [PRIVATE_DEPS ...])
# Builds the library target qforge_<name> (alias qforge::<name>) for one
# top-level folder. Headers sit next to their sources and are included as
# "<folder>/<file>.h" from the repository root.
function(qforge_add_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target qforge_${name})
  if(ARG_SOURCES)
    add_library(${target} ${ARG_SOURCES})
    target_include_directories(${target} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
    target_link_libraries(${target} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS} qforge_build_flags)
  else()
    # A folder whose code has not landed yet: it still takes its place in the graph.
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
    target_link_libraries(${target} INTERFACE ${ARG_DEPS})
  endif()
  add_library(qforge::${name} ALIAS ${target})
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
