/* Shared helpers for onebit's test programs: each check prints one line
 *   PASS <name>: <detail>  |  FAIL <name>: <detail>  |  SKIP <name>: <reason>
 * and the program exits 1 if any check failed. tests/run.sh counts the lines. */
#ifndef ONEBIT_TEST_UTIL_H
#define ONEBIT_TEST_UTIL_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
#endif
