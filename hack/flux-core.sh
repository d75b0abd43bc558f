#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/flux-core.sh builds the real Flux broker that test/realflux runs
# against: flux-security, then flux-core configured --with-flux-security
# against it, from release tarballs (no source host is contacted). The
# tarballs default to the repository's sibling directory ../shared
# (../shared/flux-core/flux-core-0.88.0.tar.gz and
# ../shared/flux-security/flux-security-0.15.0.tar.gz, relative to the
# repository root); FLUX_CORE_TARBALL and FLUX_SECURITY_TARBALL name others.
#
# Cache path convention (outside the checkout; shared by every worktree and
# every user of the same cache directory):
#
#   CACHE = ${FLUX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator}
#   CACHE/flux-security-<sver>-<ssha12>/   flux-security (lib, include,
#                                           libexec/flux/flux-imp, etc/flux,
#                                           lib/pkgconfig/flux-security.pc);
#                                           also reachable as .../prefix
#                                           (a symlink to itself), the
#                                           CACHE/flux-security-<sver>-*/prefix
#                                           form tests glob for
#   CACHE/flux-<cver>-<sha12>/              flux-core (bin/flux, ...), built
#                                           against the flux-security above;
#                                           its file flux-security-prefix
#                                           names that directory
#
# where <ssha12> is the first 12 hex digits of the sha256 of the line
# "<flux-security tarball sha256> recipe=<SEC_RECIPE>" and <sha12> the first 12 of
# the sha256 of "<flux-core tarball sha256> <flux-security tarball sha256>
# recipe=<RECIPE>" (RECIPE below: bumped whenever the configure flags change).
# A directory under that name is complete: each is built in a temporary
# directory next to it (installed with DESTDIR), under a lock
# (CACHE/.<name>.lock, flock) so that two concurrent runs never build into
# the same place, and renamed into place only on success. A run that finds it
# present does nothing. Nothing is ever written into the checkout.
#
# Output (stdout, one line): the flux-core prefix; PREFIX/bin/flux is the
# broker. Progress goes to stderr.
#
# Usage:
#   hack/flux-core.sh              build if needed, print the flux-core prefix
#   hack/flux-core.sh --security   build if needed, print the flux-security prefix
#   hack/flux-core.sh --for-test   what `make test` runs: when `flux` is already
#                                  on PATH, print nothing (that one is used);
#                                  else build and print PREFIX/bin. When the
#                                  tarballs are missing: fail under CI=true,
#                                  else warn and print nothing (test/realflux
#                                  then skips)
#   hack/flux-core.sh --key        print the cache directory names, build nothing
#   hack/flux-core.sh -h|--help
#
# Environment:
#   FLUX_CORE_TARBALL      flux-core release tarball (flux-core-<version>.tar.gz)
#   FLUX_SECURITY_TARBALL  flux-security release tarball (flux-security-<version>.tar.gz)
#   FLUX_CACHE_DIR         the cache directory (default above)
#   FLUX_BUILD_JOBS        make -j (default: nproc)
#   PYTHON                 the Python flux-core's bindings are built for (default /usr/bin/python3)
#
# Debian 12 build dependencies (.ci/run installs them): see FLUX_DEBIAN_DEPS in
# .ci/run, and the READMEs next to the tarballs.

set -euo pipefail

usage() { sed -n '/^# hack\/flux-core.sh/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }

# RECIPE names the build recipe below; change it whenever a configure flag or
# a build step changes, so that cached builds of the old recipe are not reused.
RECIPE=2
# SEC_RECIPE is flux-security's part of it (its build did not change in recipe 2,
# so its cached entry is kept).
SEC_RECIPE=1

mode=prefix
for arg in "$@"; do
	case "$arg" in
	--security) mode=security ;;
	--for-test) mode=for-test ;;
	--key) mode=key ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "flux-core.sh: unknown argument: $arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

log() { echo "flux-core.sh: $*" >&2; }

if [[ $mode == for-test ]] && command -v flux >/dev/null 2>&1; then
	log "using $(command -v flux) ($(flux version 2>/dev/null | awk '/^commands:/ {print $2}'))"
	exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORE_TARBALL="${FLUX_CORE_TARBALL:-$ROOT/../shared/flux-core/flux-core-0.88.0.tar.gz}"
SEC_TARBALL="${FLUX_SECURITY_TARBALL:-$ROOT/../shared/flux-security/flux-security-0.15.0.tar.gz}"

for tb in "$CORE_TARBALL" "$SEC_TARBALL"; do
	if [[ ! -f "$tb" ]]; then
		msg="no tarball at $tb (set FLUX_CORE_TARBALL and FLUX_SECURITY_TARBALL)"
		if [[ $mode == for-test && "${CI:-}" != true ]]; then
			log "$msg: flux is not on PATH and cannot be built; test/realflux will skip"
			exit 0
		fi
		log "$msg"
		exit 1
	fi
done

# version prints the version in a release tarball's name (<name>-<version>.tar.gz).
version() {
	local base
	base="$(basename "$1")"
	base="${base%.tar.gz}"
	echo "${base##*-}"
}

# checksum prints the tarball's sha256, verified against SHA256SUMS next to it
# when there is one.
checksum() {
	local sum dir sums want
	sum="$(sha256sum "$1" | cut -d' ' -f1)"
	dir="$(dirname "$1")"
	sums="$dir/SHA256SUMS"
	if [[ -f "$sums" ]]; then
		want="$(awk -v f="$(basename "$1")" '$2 == f || $2 == "*" f { print $1 }' "$sums")"
		if [[ -n "$want" && "$want" != "$sum" ]]; then
			log "$1: sha256 $sum does not match $sums ($want)"
			return 1
		fi
	fi
	echo "$sum"
}

CORE_VERSION="$(version "$CORE_TARBALL")"
SEC_VERSION="$(version "$SEC_TARBALL")"
CORE_SHA="$(checksum "$CORE_TARBALL")"
SEC_SHA="$(checksum "$SEC_TARBALL")"
SEC_KEY="$(echo "$SEC_SHA recipe=$SEC_RECIPE" | sha256sum | cut -c1-12)"
CORE_KEY="$(echo "$CORE_SHA $SEC_SHA recipe=$RECIPE" | sha256sum | cut -c1-12)"

CACHE="${FLUX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator}"
SEC_NAME="flux-security-$SEC_VERSION-$SEC_KEY"
CORE_NAME="flux-$CORE_VERSION-$CORE_KEY"

if [[ $mode == key ]]; then
	echo "$CORE_NAME"
	echo "$SEC_NAME"
	exit 0
fi

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
SEC_PREFIX="$CACHE/$SEC_NAME"
CORE_PREFIX="$CACHE/$CORE_NAME"
JOBS="${FLUX_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PY="${PYTHON:-/usr/bin/python3}"

# build NAME FUNCTION: under CACHE/.NAME.lock, unless CACHE/NAME exists, run
# FUNCTION SRC STAGE PREFIX in a fresh temporary directory and rename the
# installed STAGE/PREFIX to CACHE/NAME.
build() {
	local name="$1" fn="$2" prefix="$CACHE/$1" tmp start
	exec 9>"$CACHE/.$name.lock"
	flock 9
	if [[ -f "$prefix/.complete" ]]; then
		exec 9>&-
		return 0
	fi
	# Not ours to keep: a directory without the stamp was not renamed into
	# place by this script (the rename is the last step).
	if [[ -e "$prefix" ]]; then
		log "$prefix exists without .complete: removing it"
		rm -rf "$prefix"
	fi
	tmp="$(mktemp -d "$CACHE/.$name.build.XXXXXX")"
	# shellcheck disable=SC2064 # expand tmp now: it is local
	trap "rm -rf '$tmp'" EXIT
	start=$SECONDS
	log "building $name into $prefix (log: $tmp/build.log; several minutes)"
	if ! "$fn" "$tmp/src" "$tmp/stage" "$prefix" >"$tmp/build.log" 2>&1; then
		log "building $name failed; the end of its log:"
		tail -n 40 "$tmp/build.log" >&2
		exit 1
	fi
	date -u +%FT%TZ >"$tmp/stage$prefix/.complete"
	echo "$((SECONDS - start))" >"$tmp/stage$prefix/.build-seconds"
	cp "$tmp/build.log" "$tmp/stage$prefix/.build.log"
	mv -T "$tmp/stage$prefix" "$prefix"
	rm -rf "$tmp"
	trap - EXIT
	log "built $name in $((SECONDS - start))s"
	exec 9>&-
}

# The build functions run as the condition of an if, where bash ignores
# set -e: every step checks its own status (a failed make once left a
# flux-core without bin/ marked complete).
build_security() {
	local src="$1" stage="$2" prefix="$3"
	mkdir -p "$src" "$stage" || return
	tar -xzf "$SEC_TARBALL" -C "$src" --strip-components=1 || return
	cd "$src" || return
	./configure --prefix="$prefix" || return
	make -j"$JOBS" || return
	make install DESTDIR="$stage" || return
	ln -s . "$stage$prefix/prefix"
}

build_core() {
	local src="$1" stage="$2" prefix="$3"
	mkdir -p "$src" "$stage"
	tar -xzf "$CORE_TARBALL" -C "$src" --strip-components=1
	cd "$src" || return
	export FLUX_VERSION="$CORE_VERSION"
	export PKG_CONFIG_PATH="$SEC_PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
	# No .git in a release tarball: the version comes from FLUX_VERSION.
	./autogen.sh || return
	# CPPFLAGS: flux-core 0.88.0's job-exec includes <flux/security/version.h>
	# without flux-security's pkg-config cflags (found only when flux-security
	# is installed under a default include path).
	./configure --prefix="$prefix" --with-flux-security --disable-docs PYTHON="$PY" \
		CPPFLAGS="-I$SEC_PREFIX/include${CPPFLAGS:+ $CPPFLAGS}" || return
	make -j"$JOBS" || return
	make install DESTDIR="$stage" || return
	[[ -x "$stage$prefix/bin/flux" ]] || { echo "no bin/flux installed" >&2; return 1; }
	echo "$SEC_PREFIX" >"$stage$prefix/flux-security-prefix"
}

build "$SEC_NAME" build_security
# CACHE/flux-security-*/prefix is how tests find a flux-security build
# (fluxbridge/sign); an entry built before this link existed gets it here.
[[ -e "$SEC_PREFIX/prefix" ]] || ln -sfn . "$SEC_PREFIX/prefix" 2>/dev/null || true
build "$CORE_NAME" build_core

case "$mode" in
security) echo "$SEC_PREFIX" ;;
for-test) echo "$CORE_PREFIX/bin" ;;
*) echo "$CORE_PREFIX" ;;
esac
