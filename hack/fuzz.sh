#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/fuzz.sh runs every fuzz target (func FuzzXxx(f *testing.F) in a
# _test.go file) of every package in the main module, one after another, each
# for FUZZTIME (default 30s). `go test` can fuzz only one target of one package
# at a time, hence this loop. New failing inputs are written by `go test` under
# the package's testdata/fuzz/FuzzXxx/, to be committed with the fix.
#
# Usage: FUZZTIME=1m hack/fuzz.sh [package pattern...]   (default: ./...)
#
# Plain `go test` (and so `make test`) already runs every fuzz target's seed
# corpus as a regular test; this script is for the coverage-guided search.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-30s}"
patterns=("$@")
[[ ${#patterns[@]} -gt 0 ]] || patterns=(./...)

ran=0
failed=()
while IFS=$'\t' read -r pkg dir files; do
	read -r -a tests <<<"$files"
	[[ ${#tests[@]} -gt 0 ]] || continue
	targets="$(cd "$dir" && grep -ho '^func Fuzz[A-Za-z0-9_]*(' "${tests[@]}" | sed 's/^func //; s/($//' | sort -u || true)"
	for t in $targets; do
		echo "==> fuzz $pkg $t for $FUZZTIME" >&2
		ran=$((ran + 1))
		if ! "$GO" test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			failed+=("$pkg.$t")
		fi
	done
done < <("$GO" list -f '{{.ImportPath}}{{"\t"}}{{.Dir}}{{"\t"}}{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' "${patterns[@]}")

if [[ $ran -eq 0 ]]; then
	echo "fuzz.sh: no fuzz targets found in ${patterns[*]}" >&2
	exit 0
fi
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzz.sh: ${#failed[@]} of $ran fuzz targets failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz.sh: $ran fuzz targets ran for $FUZZTIME each, no failures" >&2
