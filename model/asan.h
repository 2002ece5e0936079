// FEDGE_ASAN is defined (to 1) where AddressSanitizer instruments this
// build: clang says so with __has_feature, GCC with __SANITIZE_ADDRESS__.
#pragma once

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FEDGE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(FEDGE_ASAN)
#define FEDGE_ASAN 1
#endif
