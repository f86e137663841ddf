/* Shared helpers for onebit's test programs: each check prints one line
 *   PASS <name>: <detail>  |  FAIL <name>: <detail>  |  SKIP <name>: <reason>
 * and the program exits 1 if any check failed. tests/run.sh counts the lines. */
#ifndef ONEBIT_TEST_UTIL_H
#define ONEBIT_TEST_UTIL_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int tu_failed = 0, tu_passed = 0, tu_skipped = 0;

static inline void tu_report(const char *verdict, const char *name, const char *fmt, ...) {
    va_list ap;
    printf("%s %s: ", verdict, name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!strcmp(verdict, "FAIL")) tu_failed++;
    else if (!strcmp(verdict, "PASS")) tu_passed++;
    else tu_skipped++;
}
#define TU_CHECK(cond, name, ...) tu_report((cond) ? "PASS" : "FAIL", name, __VA_ARGS__)

/* ../shared, or $ONEBIT_SHARED; NULL (with the reason in *why) when absent. */
static inline const char *tu_shared_dir(void) {
    const char *d = getenv("ONEBIT_SHARED");
    if (!d || !*d) d = "../shared";
    struct stat s;
    if (stat(d, &s) != 0 || !S_ISDIR(s.st_mode)) return NULL;
    return d;
}
static inline int tu_path_exists(const char *p) { struct stat s; return stat(p, &s) == 0; }
static inline int tu_exit(void) { return tu_failed ? 1 : 0; }
/* a loopback TCP port free at the time of asking (bound to port 0, then released), -1 on error */
static inline int tu_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &l)) port = ntohs(a.sin_port);
    close(fd);
    return port;
}
#endif
