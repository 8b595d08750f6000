#!/usr/bin/env bash
# Mutation testing of the pure modules with mutmut: each module is mutated on its own and checked by its
# own fast tests only, so the score says how well those tests pin that module's behaviour.
#
#   benchmarks/mutation.sh                 every module below, one after the other
#   benchmarks/mutation.sh geometry infotext
#   MUTATION_JOBS=2 benchmarks/mutation.sh request
#
# Prints, per module, the killed/total count and the surviving mutants (see them with
# `cd build/mutation/<module> && mutmut show <name>`). Mutants listed in benchmarks/mutation-equivalent.txt
# behave exactly like the original code (no test can tell them apart); they are left out of the score and
# printed separately. Not part of CI: it takes minutes per module.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=${MUTATION_DIR:-$root/build/mutation}
jobs=${MUTATION_JOBS:-2}
equivalent=$root/benchmarks/mutation-equivalent.txt

# module name -> "source file | its tests"
declare -A MODULES=(
  [geometry]="src/img2img/geometry.py|tests/test_geometry.py"
  [request]="src/img2img/request.py|tests/test_request.py"
  [infotext]="src/img2img/infotext.py|tests/test_infotext.py"
  [images]="src/img2img/images.py|tests/test_images.py"
  [schedulers]="src/img2img/schedulers.py|tests/test_schedulers.py"
  [a1111]="src/img2img/server/a1111/translate.py|tests/test_a1111_wire.py"
  [batch_items]="src/img2img/batch/items.py|tests/test_batch_items.py"
)
ORDER=(geometry request infotext images schedulers a1111 batch_items)

if [ $# -gt 0 ]; then ORDER=("$@"); fi
"$python" -c "import mutmut" 2>/dev/null || {
  echo "mutmut is not installed: $python -m pip install -e '.[mutation]'" >&2; exit 2; }

summary=()
for name in "${ORDER[@]}"; do
  spec=${MODULES[$name]:-}
  [ -n "$spec" ] || { echo "unknown module: $name (one of: ${!MODULES[*]})" >&2; exit 2; }
  source_file=${spec%%|*}
  tests=${spec#*|}
  dir=$work/$name
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$root/src" "$root/tests" "$dir/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  {
    cat "$root/pyproject.toml"
    printf '\n[tool.mutmut]\nsource_paths = ["src"]\nonly_mutate = ["%s"]\n' "$source_file"
    printf 'pytest_add_cli_args_test_selection = ["%s"]\n' "$tests"
    printf 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
    printf 'use_git_change_detection = false\n'
  } > "$dir/pyproject.toml"

  echo "== $name: mutating $source_file, tests: $tests"
  started=$SECONDS
  (cd "$dir" && HF_HUB_OFFLINE=1 "$python" -m mutmut run --max-children "$jobs" > mutmut.log 2>&1) || {
    echo "mutmut failed for $name; see $dir/mutmut.log" >&2; tail -20 "$dir/mutmut.log" >&2; exit 1; }
  (cd "$dir" && "$python" -m mutmut results --all true > results.txt)
  line=$("$python" - "$dir/results.txt" "$equivalent" "$name" "$((SECONDS - started))" <<'EOF'
import sys

results, equivalent_file, name, seconds = sys.argv[1:]
status = dict(line.strip().rsplit(": ", 1) for line in open(results) if ": " in line)
equivalent = set()
for line in open(equivalent_file):
    line = line.split("#", 1)[0].strip()
    if line:
        equivalent.add(line)
counted = {k: v for k, v in status.items() if k not in equivalent}
killed = sum(v in ("killed", "timeout") for v in counted.values())  # a timeout: the mutant hangs, caught
survivors = sorted(k for k, v in counted.items() if v not in ("killed", "timeout"))
excluded = sorted(k for k in status if k in equivalent)
score = 100.0 * killed / len(counted) if counted else 100.0
for k in survivors:
    print(f"   survived: {k} ({status[k]})", file=sys.stderr)
for k in excluded:
    print(f"   equivalent, not counted: {k} ({status[k]})", file=sys.stderr)
print(f"{name}: {killed}/{len(counted)} killed = {score:.1f}% ({len(excluded)} equivalent excluded, {seconds} s)")
EOF
  )
  echo "$line"
  summary+=("$line")
done

echo "== mutation score"
printf '%s\n' "${summary[@]}"
