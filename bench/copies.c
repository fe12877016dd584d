/* The two copies that alignment decides on AMD EPYC (bench/RESULTS.md, "Copies that
 * alignment decides"), timed per GiB:
 *
 *   copies pread FILE OFFSET   pread FILE into a 1 MiB buffer that starts OFFSET bytes
 *                              past a page boundary (the kernel's copy to user space)
 *   copies memcpy SRC DST      1 GiB in 16 KiB memcpy calls, source and destination
 *                              SRC and DST bytes past a page boundary (glibc's memcpy,
 *                              as rustls copies a received TLS record)
 *
 * bench/copies.sh builds and runs both for the offsets that matter, with and without
 * the glibc tunable xfer and xferd start with. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const size_t mib = 1 << 20, record = 16 << 10, gib = 1UL << 30;
    if (argc == 4 && strcmp(argv[1], "pread") == 0) {
        size_t off = strtoul(argv[3], NULL, 10);
        char *base = aligned_alloc(4096, mib + 8192), *buf = base + off;
        memset(base, 1, mib + 8192);
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { perror(argv[2]); return 1; }
        off_t size = lseek(fd, 0, SEEK_END), at = 0;
        double t = now();
        while (at < size) {
            ssize_t n = pread(fd, buf, mib, at);
            if (n <= 0) { perror("pread"); return 1; }
            at += n;
        }
        printf("pread into page+%-4zu %.3f s/GiB\n", off, (now() - t) * gib / size);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "memcpy") == 0) {
        size_t so = strtoul(argv[2], NULL, 10), d_o = strtoul(argv[3], NULL, 10);
        char *s = aligned_alloc(4096, record + 8192), *d = aligned_alloc(4096, record + 8192);
        memset(s, 1, record + 8192);
        memset(d, 2, record + 8192);
        double t = now();
        for (size_t done = 0; done < gib; done += record) {
            memcpy(d + d_o, s + so, record);
            __asm__ volatile("" ::: "memory");
        }
        printf("memcpy 16 KiB, page+%-4zu -> page+%-4zu %.3f s/GiB\n", so, d_o, now() - t);
        return 0;
    }
    fprintf(stderr, "usage: copies pread FILE OFFSET | copies memcpy SRC_OFFSET DST_OFFSET\n");
    return 2;
}
