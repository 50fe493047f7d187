/*
 * A slower disk for A/B runs: an LD_PRELOAD shim that sleeps before every fsync and fdatasync
 * (SLOW_SYNC_US microseconds, 2000 by default), to see how a change behaves where a sync takes
 * milliseconds (network block storage) rather than this machine's half millisecond.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/slow_sync.so bench/slow_sync.c -ldl
 *   LD_PRELOAD=/tmp/slow_sync.so bench/writer_cpu.sh BINARY DB 10
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static useconds_t delay(void) {
    const char *value = getenv("SLOW_SYNC_US");
    return value ? (useconds_t)atoi(value) : 2000;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    usleep(delay());
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    usleep(delay());
    return real(fd);
}
