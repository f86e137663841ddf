#!/bin/sh
# Runs every test program given, prints their PASS / FAIL / SKIP lines, then the totals as the last
# line: "N passed, N failed, N skipped". Exits non-zero if any check failed or a program crashed.
passed=0; failed=0; skipped=0; status=0
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E '^(PASS|FAIL|SKIP) ' || true
    p=$(printf '%s\n' "$out" | grep -c '^PASS ')
    f=$(printf '%s\n' "$out" | grep -c '^FAIL ')
    s=$(printf '%s\n' "$out" | grep -c '^SKIP ')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # a crash or an error exit without a FAIL line still fails the suite
        printf 'FAIL %s: exited with status %d\n%s\n' "$t" "$rc" "$(printf '%s\n' "$out" | tail -5)"
        f=1
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    [ "$f" -ne 0 ] && status=1
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
