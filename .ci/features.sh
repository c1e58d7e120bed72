#!/usr/bin/env bash
# Builds what users build: every package that has features is checked with
# none of them, then with each one alone, warnings denied, so code that only
# one feature uses (or a gate that is missing) fails here and not in a
# user's build. `cargo test --all-features` and clippy cover the default and
# all-features builds.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-D warnings"

# "package feature feature …", one line for each workspace member that has
# features; the features are read from the manifests, `default` left out.
packages=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    features = sorted(f for f in package["features"] if f != "default")
    if features:
        print(package["name"], *features)
')

failed=()
check() {
  local package=$1 features=$2
  echo "-- $package: ${features:-no features}"
  if ! cargo check --quiet -p "$package" --no-default-features ${features:+--features "$features"}; then
    failed+=("$package: ${features:-no features}")
  fi
}

while read -r package features; do
  check "$package" ""
  for feature in $features; do
    check "$package" "$feature"
  done
done <<<"$packages"

if ((${#failed[@]})); then
  echo "feature builds that fail:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "every feature builds alone, and with none"
