# Cross toolchain for aarch64 Linux (Debian's gcc-aarch64-linux-gnu), used by
# scripts/check_aarch64.sh:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DNEATML_CUDA=OFF -DDNNL_ROOT=$PWD/.deps-aarch64
# DNNL_ROOT is a folder where arm64 .deb files were unpacked (dpkg -x): oneDNN, zlib.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Look for libraries and headers only in the cross libc's tree and the unpacked packages,
# never in the host's /usr (its amd64 libdnnl and zlib would link wrongly); programs
# (cmake's helpers) come from the host. The try_compile projects of find_package(OpenMP)
# read this file again, so DNNL_ROOT is passed on to them.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES DNNL_ROOT)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
if(DNNL_ROOT)
  list(APPEND CMAKE_FIND_ROOT_PATH "${DNNL_ROOT}")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
