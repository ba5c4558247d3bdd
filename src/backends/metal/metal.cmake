# The Metal backend: built on Apple platforms only (Objective-C with ARC, MPS and MPSGraph,
# macOS 12 or newer). Included from CMakeLists.txt inside if(APPLE).
enable_language(OBJC)
if(NOT CMAKE_OSX_DEPLOYMENT_TARGET)
  set(CMAKE_OSX_DEPLOYMENT_TARGET 12.0 CACHE STRING "" FORCE)
endif()
file(GLOB NEATML_METAL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.m)
target_sources(neatml PRIVATE ${NEATML_METAL_SOURCES})
set_source_files_properties(${NEATML_METAL_SOURCES} PROPERTIES
  COMPILE_OPTIONS "-fobjc-arc;-Wall;-Wextra;-Wno-unused-parameter;-Werror=unguarded-availability-new")
target_compile_definitions(neatml PRIVATE NEATML_HAVE_METAL)
target_link_libraries(neatml PRIVATE "-framework Metal" "-framework MetalPerformanceShaders"
  "-framework MetalPerformanceShadersGraph" "-framework Foundation" objc)
message(STATUS "neatml: Metal backend (MPS, MPSGraph; deployment target ${CMAKE_OSX_DEPLOYMENT_TARGET})")
