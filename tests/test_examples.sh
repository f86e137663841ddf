#!/bin/sh
# The example programs end to end on the embedded default (no data needed), from the repository root:
#   train_10min trains, packs, reloads and samples; eval on its artifact reproduces its val_bpb;
#   generate samples from it; train_unconstrained interrupted by a real SIGINT exits 130 with a
#   checkpoint and, resumed, logs the same losses as an uninterrupted run; bad input exits non-zero
#   naming the file or flag. Prints PASS / FAIL lines like the C tests.
# ONEBIT_EXAMPLES_GPU=1 runs the GPU builds of the trainers and eval (build/*_gpu, on a GPU machine:
# the GPU kill-and-resume record of BENCHMARKS.md), generate included (its logits are checked
# against the CPU path's in test_gpu's eval_backend group).
B=build
G=${ONEBIT_EXAMPLES_GPU:+_gpu}
T=$(mktemp -d /tmp/onebit_examples_XXXXXX)
trap 'rm -rf "$T"' EXIT
check() { # check NAME CONDITION-EXIT-STATUS DETAIL
    if [ "$2" -eq 0 ]; then echo "PASS examples/$1: $3"; else echo "FAIL examples/$1: $3"; fi
}
for p in train_10min$G train_unconstrained$G eval$G generate$G generate; do
    [ -x $B/$p ] || { echo "FAIL examples/build: $B/$p is missing (make $B/$p)"; exit 1; }
done
# quick runs: no sliding window, no temperature search where they are not under test
QUICK="--set SLIDING_EVAL=0 --set TEMP_SCALING=0 --set GENERATE_TOKENS=0 --max-seconds 0"

# 1. train_10min on the embedded default, 30 steps
$B/train_10min$G --iterations 30 --out $T/a --checkpoint-dir $T/a/ck --set SLIDING_EVAL=0 > $T/a.log 2>&1
rc=$?
pre=$(sed -n 's/^step:30\/30 val_loss:[0-9.]* val_bpb:\([0-9.]*\).*/\1/p' $T/a.log | head -1)
rt=$(sed -n 's/^final_xnor_roundtrip val_loss:[0-9.]* val_bpb:\([0-9.]*\) (identical.*bit-identical).*/\1/p' $T/a.log)
[ $rc -eq 0 ] && [ -n "$pre" ] && [ "$pre" = "$rt" ] && [ -s $T/a/onebit_embedded.ob1 ] && [ -s $T/a/onebit_embedded.svg ] && \
    [ -s $T/a/onebit_embedded.jsonl ] && grep -q "^sample" $T/a.log && grep -q "FITS" $T/a.log
check train_10min $? "exit $rc, val_bpb $pre, roundtrip $rt (identical), artifact, plot, JSONL and sample written"

# 2. eval on that artifact: the same val_bpb as the run's own evaluation
$B/eval$G $T/a/onebit_embedded.ob1 --stride 0 --temperature 1 > $T/e.log 2>&1
rc=$?
ev=$(sed -n 's/^val_loss:[0-9.]* val_bpb:\([0-9.]*\)$/\1/p' $T/e.log)
[ $rc -eq 0 ] && [ "$ev" = "$pre" ]
check eval_matches_run $? "eval: val_bpb $ev, the training run's $pre"
$B/eval$G $T/a/onebit_embedded.ob1 --stride 64 --temperature search > $T/e2.log 2>&1
rc=$?
grep -q "^temp_scaling optimal_T:" $T/e2.log && grep -q "^final_sliding val_loss:" $T/e2.log && [ $rc -eq 0 ]
check eval_sliding $? "$(grep -E '^(temp_scaling|final_sliding)' $T/e2.log | tr '\n' ' ')"

# 3. generate: the prompt, then new text
$B/generate$G $T/a/onebit_embedded.ob1 --prompt "int main(" --tokens 40 --seed 7 > $T/g.log 2>&1
rc=$?
n=$(wc -c < $T/g.log)
[ $rc -eq 0 ] && head -c 9 $T/g.log | grep -q "int main(" && [ "$n" -ge 45 ]
check generate $? "exit $rc, $n bytes: $(head -c 60 $T/g.log | tr '\n' ' ')"
$B/generate$G $T/a/onebit_embedded.ob1 --prompt "x" --tokens 40 --seed 7 > $T/g1.log 2>&1
$B/generate$G $T/a/onebit_embedded.ob1 --prompt "x" --tokens 40 --seed 7 > $T/g2.log 2>&1
cmp -s $T/g1.log $T/g2.log
check generate_seeded $? "the same seed samples the same text"

# 4. bad input: a missing artifact, a damaged one, another tokenizer, an unknown flag, a bad value
$B/eval$G $T/none.ob1 > $T/x.log 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "none.ob1" $T/x.log
check eval_missing_artifact $? "exit $rc: $(head -1 $T/x.log)"
cp $T/a/onebit_embedded.ob1 $T/bad.ob1
printf 'XXXX' | dd of=$T/bad.ob1 bs=1 seek=100 conv=notrunc 2>/dev/null
$B/eval$G $T/bad.ob1 > $T/x.log 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "bad.ob1" $T/x.log && cmp -s $T/bad.ob1 $T/bad.ob1
check eval_damaged_artifact $? "exit $rc: $(head -1 $T/x.log)"
tok=${ONEBIT_SHARED:-../shared}/data/fineweb_1024_bpe.model
if [ -f "$tok" ]; then
    $B/generate $T/a/onebit_embedded.ob1 --tokenizer "$tok" > $T/x.log 2>&1; rc=$?
    [ $rc -ne 0 ] && grep -q "another tokenizer" $T/x.log
    check generate_wrong_tokenizer $? "exit $rc: $(head -1 $T/x.log)"
else
    echo "SKIP examples/generate_wrong_tokenizer: $tok is absent"
fi
$B/eval$G $T/a/onebit_embedded.ob1 --strid 3 > $T/x.log 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--strid" $T/x.log
check eval_unknown_flag $? "exit $rc: $(head -1 $T/x.log)"
$B/train_10min$G --iterations many > $T/x.log 2>&1; rc=$?
head -1 $T/x.log | grep -q "ITERATIONS: 'many' is not an integer" && [ $rc -eq 2 ]
check train_bad_value $? "exit $rc: $(head -1 $T/x.log)"
$B/train_unconstrained$G --preset binary-50k --data $T/nowhere > $T/x.log 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "nowhere" $T/x.log
check train_missing_data $? "exit $rc: $(head -1 $T/x.log)"

# 5. a real SIGINT: checkpoint, exit 130, --resume continues with the same losses
# (on the GPU a step takes milliseconds: a longer run, so that the signal lands mid-run)
if [ -n "$G" ]; then N=1000; CE=100; else N=60; CE=10; fi
U="$B/train_unconstrained$G --preset embedded --iterations $N --checkpoint-every $CE --set TRAIN_LOG_EVERY=1 $QUICK"
$U --out $T/full --checkpoint-dir $T/full/ck > $T/full.log 2>&1
rc_full=$?
$U --out $T/int --checkpoint-dir $T/int/ck > $T/int.log 2>&1 &
pid=$!
i=0
while [ ! -f $T/int/ck/$(printf 'ckpt_%010d.ob1c' $CE) ] && [ $i -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
kill -INT $pid 2>/dev/null
wait $pid
rc_int=$?
$U --out $T/int --checkpoint-dir $T/int/ck --resume > $T/res.log 2>&1
rc_res=$?
at=$(sed -n 's/^resumed from .* at step \([0-9]*\).*/\1/p' $T/res.log)
grep -E "^step:[0-9]+/$N loss:" $T/full.log | sed 's/ t:.*//' > $T/full.steps
grep -E "^step:[0-9]+/$N loss:" $T/res.log | sed 's/ t:.*//' > $T/res.steps
n_res=$(wc -l < $T/res.steps)
[ $rc_full -eq 0 ] && [ $rc_int -eq 130 ] && [ $rc_res -eq 0 ] && [ -n "$at" ] && [ "$at" -lt $N ] && [ "$n_res" -eq $((N - at)) ] && \
    [ "$(tail -n "$n_res" $T/full.steps)" = "$(cat $T/res.steps)" ]
check sigint_resume $? "SIGINT: exit $rc_int; resumed at step $at: the $n_res later loss lines equal the uninterrupted run's (exit $rc_full, $rc_res)"
fin_full=$(sed -n 's/^final_xnor_roundtrip val_loss:\([0-9.]*\).*/\1/p' $T/full.log)
fin_res=$(sed -n 's/^final_xnor_roundtrip val_loss:\([0-9.]*\).*/\1/p' $T/res.log)
[ -n "$fin_full" ] && [ "$fin_full" = "$fin_res" ] && cmp -s $T/full/onebit_embedded.ob1 $T/int/onebit_embedded.ob1
check resume_same_artifact $? "final roundtrip val_loss $fin_full and $fin_res; the two artifacts are byte-identical"
