#pragma once

// Happens-before edges for ThreadSanitizer where a hand-over goes through CAF's
// mailbox: Debian's libcaf_core is not instrumented, so TSan cannot see that a
// message enqueued on one thread is the one an actor handles on another. Empty
// outside the tsan build type.

#if defined(__SANITIZE_THREAD__)
/// 1 in the tsan build type, where the code below adds the edges TSan cannot see.
#  define GROVE_TSAN 1
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
/// The sender's writes so far are visible to whoever acquires `addr` afterwards.
#  define GROVE_TSAN_RELEASE(addr) __tsan_release(static_cast<void*>(addr))
/// Everything released on `addr` before happens before what follows.
#  define GROVE_TSAN_ACQUIRE(addr) __tsan_acquire(static_cast<void*>(addr))
#else
#  define GROVE_TSAN 0
#  define GROVE_TSAN_RELEASE(addr) static_cast<void>(0)
#  define GROVE_TSAN_ACQUIRE(addr) static_cast<void>(0)
#endif
