# Cross build for arm64 Debian 12 boards (Raspberry Pi OS bookworm) from an
# amd64 machine: Debian's aarch64 cross compiler against an arm64 sysroot
# holding Debian's arm64 -dev packages (scripts/arm64_sysroot makes one),
# and qemu-aarch64-static to run what is built (tests, --help at install).
# The `arm64` preset uses this file; docs/install.md says how.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(DEFINED ENV{FEDGE_ARM64_SYSROOT})
  set(FEDGE_ARM64_SYSROOT $ENV{FEDGE_ARM64_SYSROOT})
else()
  set(FEDGE_ARM64_SYSROOT /var/tmp/fedge-arm64-sysroot)
endif()
if(NOT EXISTS ${FEDGE_ARM64_SYSROOT}/usr/include/aarch64-linux-gnu)
  message(FATAL_ERROR "no arm64 sysroot at ${FEDGE_ARM64_SYSROOT} "
    "(scripts/arm64_sysroot makes one; FEDGE_ARM64_SYSROOT names another)")
endif()

set(CMAKE_SYSROOT ${FEDGE_ARM64_SYSROOT})
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH ${FEDGE_ARM64_SYSROOT})
# Programs (protoc, the gRPC plugin) are the build machine's; libraries,
# headers and CMake packages are the sysroot's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L ${FEDGE_ARM64_SYSROOT})

set(ENV{PKG_CONFIG_SYSROOT_DIR} ${FEDGE_ARM64_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR}
  "${FEDGE_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${FEDGE_ARM64_SYSROOT}/usr/share/pkgconfig")
