# cmake --install: the libraries, the public headers and a CMake package
# (find_package(qforge)) with namespaced targets qforge::core, autograd, nn,
# quant, data, trainers, and qforge::runtime (with qforge::kernels under it)
# for users who only deploy int8 models.
include(CMakePackageConfigHelpers)

get_property(qforge_targets GLOBAL PROPERTY QFORGE_INSTALL_TARGETS)
list(REMOVE_ITEM qforge_targets qforge_cli)  # the CLI's own library stays inside the binary
install(TARGETS ${qforge_targets} qforge_openblas qforge_hdf5
  EXPORT qforgeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT qforgeTargets NAMESPACE qforge:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qforge)

# Public headers: every header of the library folders except the internal
# ones (kernel lists and helpers that only their own .cpp files include).
foreach(dir core autograd nn quant data trainers)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qforge/${dir}
    FILES_MATCHING PATTERN "*.h"
    PATTERN "mnist" EXCLUDE
    PATTERN "sgemm_kernels.h" EXCLUDE
    PATTERN "tensor_math.h" EXCLUDE
    PATTERN "requant_avx512.h" EXCLUDE
    PATTERN "pack_groups.h" EXCLUDE
    PATTERN "ops" EXCLUDE)
endforeach()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/qforgeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/qforgeConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qforge)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/qforgeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/qforgeConfig.cmake ${PROJECT_BINARY_DIR}/qforgeConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qforge)
if(TARGET qforge)
  install(TARGETS qforge RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
