# Helpers shared by the kvprec CMake files.

# add_kvprec_library(name SOURCES... [LINK_LIBS libs...] [DEPENDS targets...])
# A static, position-independent library installed with the kvprec export set,
# so plugins and find_package(KVPrec) consumers can link it.
function(add_kvprec_library name)
  cmake_parse_arguments(ARG "" "" "LINK_LIBS;DEPENDS" ${ARGN})
  add_library(${name} STATIC ${ARG_UNPARSED_ARGUMENTS})
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  llvm_update_compile_flags(${name})
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${KVPREC_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${KVPREC_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:include>)
  if(ARG_LINK_LIBS)
    target_link_libraries(${name} PUBLIC ${ARG_LINK_LIBS})
  endif()
  if(ARG_DEPENDS)
    add_dependencies(${name} ${ARG_DEPENDS})
  endif()
  set_property(GLOBAL APPEND PROPERTY KVPREC_EXPORTED_LIBS ${name})
  install(TARGETS ${name} EXPORT KVPrecTargets
    ARCHIVE DESTINATION lib LIBRARY DESTINATION lib)
endfunction()

# add_kvprec_unittest(name SOURCES... [LINK_LIBS libs...])
# A GoogleTest binary under build/unittests/, run by lit (test/Unit).
function(add_kvprec_unittest name)
  cmake_parse_arguments(ARG "" "" "LINK_LIBS" ${ARGN})
  add_executable(${name} ${ARG_UNPARSED_ARGUMENTS})
  llvm_update_compile_flags(${name})
  set_target_properties(${name} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${KVPREC_BINARY_DIR}/unittests)
  target_link_libraries(${name} PRIVATE GTest::gtest GTest::gtest_main
    ${ARG_LINK_LIBS})
  set_property(GLOBAL APPEND PROPERTY KVPREC_UNITTESTS ${name})
endfunction()

# kvprec_add_subdirectories(dir...): add each folder that has a CMakeLists.txt.
macro(kvprec_add_subdirectories)
  foreach(dir ${ARGN})
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${dir}/CMakeLists.txt)
      add_subdirectory(${dir})
    endif()
  endforeach()
endmacro()
