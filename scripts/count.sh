# count.sh: sourced by run_tests.sh and check_aarch64.sh. Totals the suites' closing lines
# ("<name>: N passed, M failed[, K skipped]") into $passed, $failed and $skipped; a suite
# without one counts as a failure.
count() { # count "<label>" "<output>": add the suite's closing line to the totals
  local line
  line=$(printf '%s\n' "$2" | grep -E '^[A-Za-z0-9_-]+: [0-9]+ passed, [0-9]+ failed' | tail -n1)
  if [ -z "$line" ]; then
    echo "$1: no result line (crashed?)"; failed=$((failed + 1)); return
  fi
  echo "$1 -> ${line#*: }"
  local p f s
  p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
}
