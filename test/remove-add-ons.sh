#!/usr/bin/env bash
# test/remove-add-ons.sh [NAME...]: proves every add-on removable as README.md says. For each add-on
# (a folder under internal/ that cmd/server/main.ts names), in a scratch copy of the tree: delete
# the folder, its one line in cmd/server/main.ts and the npm packages its README says to uninstall,
# then build, check and test. All must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(sed -n "s#.*import('../../internal/\([a-z-]*\)/.*#\1#p" cmd/server/main.ts)
fi
[ ${#names[@]} -gt 0 ] || { echo "remove-add-ons: cmd/server/main.ts names no add-on" >&2; exit 1; }

for name in "${names[@]}"; do
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  # The tree as git sees it, committed or not, with the installed node_modules linked in.
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    [ -e "$file" ] || continue
    mkdir -p "$scratch/$(dirname "$file")"
    cp -p "$file" "$scratch/$file"
  done
  ln -s "$root/node_modules" "$scratch/node_modules"
  rm -r "$scratch/internal/$name"
  lines=$(grep -c "internal/$name/" "$scratch/cmd/server/main.ts" || true)
  [ "$lines" = 1 ] || { echo "remove-add-ons: $name is wired by $lines lines, not one" >&2; exit 1; }
  # The one line, and the lines of the manifests an add-on marks as its own (# internal/<name>/).
  sed -i "\#internal/$name/#d" "$scratch/cmd/server/main.ts" "$scratch"/deploy/kubernetes/*.yaml
  # The npm packages its README says to uninstall (`npm uninstall <package>...`) leave package.json
  # and the lockfile; node_modules is the shared one, so what proves them unneeded is that nothing
  # left imports them.
  read -ra packages < <(grep -o 'npm uninstall [a-z0-9@/._ -]*' "$root/internal/$name/README.md" | cut -c15- | tr '\n' ' ') || true
  if [ ${#packages[@]} -gt 0 ]; then
    (cd "$scratch" && npm uninstall --package-lock-only --ignore-scripts --no-audit --no-fund --silent "${packages[@]}")
    for package in "${packages[@]}"; do
      if grep -rlE "from '$package['/]|import\\('$package['/]" "$scratch/cmd" "$scratch/internal" "$scratch/test"; then
        echo "remove-add-ons: $package is still imported without internal/$name" >&2
        exit 1
      fi
    done
  fi
  echo "remove-add-ons: without internal/$name: build, check, test"
  (cd "$scratch" && npm run build --silent && npm run check --silent && npm test --silent) > "$scratch.log" 2>&1 || {
    tail -40 "$scratch.log"
    echo "remove-add-ons: FAILED without internal/$name (log: $scratch.log)" >&2
    exit 1
  }
  grep -E '^ℹ (tests|pass|fail) ' "$scratch.log" | tr '\n' ' '
  echo
  rm -rf "$scratch" "$scratch.log"
  trap - EXIT
done
echo "remove-add-ons: removed ${names[*]}, one at a time: all green"
