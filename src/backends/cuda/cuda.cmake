# The CUDA backend: built when nvcc is found (and cuDNN with it), otherwise left out with a
# one-line notice. Works with CMake 3.25 through 4.x.
#   NEATML_CUDA_ARCHITECTURES  default "90-real;90-virtual": Hopper machine code plus
#                              compute_90 PTX that newer GPUs compile at load time.
include(CheckLanguage)
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "neatml: nvcc not found, building without the CUDA backend")
  return()
endif()

find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cublasLt)
  message(STATUS "neatml: CUDA toolkit libraries (cudart, cublasLt) not found, building without the CUDA backend")
  return()
endif()
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
  HINTS ${CUDAToolkit_LIBRARY_DIR} ENV CUDNN_ROOT PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
  message(STATUS "neatml: cuDNN not found (cudnn.h, libcudnn), building without the CUDA backend")
  return()
endif()

set(NEATML_CUDA_ARCHITECTURES "90-real;90-virtual" CACHE STRING "CUDA architectures of the CUDA backend")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES ${NEATML_CUDA_ARCHITECTURES})
endif()
enable_language(CUDA)
message(STATUS "neatml: CUDA backend (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, cuDNN ${CUDNN_LIBRARY}, archs ${NEATML_CUDA_ARCHITECTURES})")

file(GLOB NEATML_CUDA_SOURCES CONFIGURE_DEPENDS
  ${CMAKE_CURRENT_LIST_DIR}/*.c ${CMAKE_CURRENT_LIST_DIR}/*.cu)
target_sources(neatml PRIVATE ${NEATML_CUDA_SOURCES})
set_target_properties(neatml PROPERTIES
  CUDA_ARCHITECTURES "${NEATML_CUDA_ARCHITECTURES}"
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_RUNTIME_LIBRARY Shared
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON)
target_compile_options(neatml PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3>)
target_compile_definitions(neatml PRIVATE NEATML_HAVE_CUDA)
target_include_directories(neatml PRIVATE ${CUDAToolkit_INCLUDE_DIRS} ${CUDNN_INCLUDE_DIR})
target_link_libraries(neatml PRIVATE CUDA::cudart CUDA::cublasLt ${CUDNN_LIBRARY})

# NCCL (optional): the CUDA collectives. The toolkit's nccl.h/libnccl, or NCCL_ROOT.
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_ROOT PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
  HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_ROOT PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  message(STATUS "neatml: CUDA collectives on NCCL (${NCCL_LIBRARY})")
  target_compile_definitions(neatml PRIVATE NEATML_HAVE_NCCL)
  target_include_directories(neatml PRIVATE ${NCCL_INCLUDE_DIR})
  target_link_libraries(neatml PRIVATE ${NCCL_LIBRARY})
  set(NEATML_NCCL_FOUND TRUE)
else()
  message(STATUS "neatml: NCCL not found: the CUDA backend has no collectives")
endif()
