#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/flux-image.sh writes a flux-core container image as a `docker save`
# tarball, without Docker or a registry, for the node e2e test: a Debian
# bookworm root file system made by debootstrap from Debian's packages (the
# run-time libraries of flux-core and flux-security, Python 3 and Lua), plus
# a flux-core build (hack/flux-core.sh) and the flux-security build it was
# linked against, each at the same absolute path as on this machine (their
# paths are compiled in). The root file system is cached outside the checkout
# and reused; the image itself is made by hack/image.
#
# Usage:
#   hack/flux-image.sh OUT.tar TAG FLUX_CORE_PREFIX
#   hack/flux-image.sh --rootfs    only make (or find) the cached root file
#                                  system, and print its path
#
# It must run as root (debootstrap). It fails, naming them, when a shared
# library that a flux-core or flux-security program needs is not in the root
# file system.
#
# Environment:
#   FLUX_ROOTFS_CACHE  where the root file systems are kept (default:
#                      ${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator/rootfs)
#   DEBIAN_MIRROR      (default: http://deb.debian.org/debian)
#   GO                 the go command (default: go)

set -euo pipefail

usage() { sed -n '/^# hack\/flux-image.sh/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }
log() { echo "flux-image.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

ROOTFS_ONLY=0
if [[ $# -eq 1 && "$1" == --rootfs ]]; then
	ROOTFS_ONLY=1
elif [[ $# -ne 3 ]]; then
	usage >&2
	exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GO="${GO:-go}"
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not on PATH (apt-get install debootstrap)"
if [[ $ROOTFS_ONLY -eq 0 ]]; then
	OUT="$1"
	TAG="$2"
	PREFIX="$(cd "$3" && pwd)"
	[[ -x "$PREFIX/bin/flux" ]] || die "no flux-core build in $PREFIX (hack/flux-core.sh builds one)"
fi

# The flux-security build flux-core was linked against, if any.
SECURITY=""
if [[ $ROOTFS_ONLY -eq 0 && -f "$PREFIX/flux-security-prefix" ]]; then
	SECURITY="$(cat "$PREFIX/flux-security-prefix")"
	[[ -d "$SECURITY" ]] || die "flux-security prefix $SECURITY (named by $PREFIX/flux-security-prefix) is missing"
fi

# The run-time packages: the libraries of the build dependencies that
# hack/flux-core.sh installs, Python 3 with the modules flux-core's
# bindings import, and Lua with posix for the job shell's plugins.
PACKAGES=(
	libzmq5 libjansson4 liblz4-1 libarchive13 libhwloc15 libsqlite3-0 libuuid1
	lua5.1 liblua5.1-0 lua-posix
	python3 libpython3.11 python3-cffi-backend python3-yaml python3-ply
	libsodium23 libmunge2 libpam0g
)
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${FLUX_ROOTFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator/rootfs}"
KEY="$(printf '%s\n' bookworm minbase "${PACKAGES[@]}" | sha256sum | cut -c1-12)"
ROOTFS="$CACHE/bookworm-$KEY"
mkdir -p "$CACHE"

exec 9>"$CACHE/.bookworm-$KEY.lock"
flock 9
if [[ ! -f "$ROOTFS/.complete" ]]; then
	log "debootstrap bookworm (minbase + ${#PACKAGES[@]} packages) into $ROOTFS"
	start=$SECONDS
	tmp="$CACHE/.bookworm-$KEY.tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	if ! debootstrap --variant=minbase --include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)" bookworm "$tmp" "$MIRROR" >"$CACHE/.bookworm-$KEY.log" 2>&1; then
		tail -20 "$CACHE/.bookworm-$KEY.log" >&2
		die "debootstrap failed (log: $CACHE/.bookworm-$KEY.log)"
	fi
	# What an image needs not: the package cache and the apt lists.
	rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
	rm -rf "$ROOTFS"
	mv "$tmp" "$ROOTFS"
	echo "$((SECONDS - start))" >"$ROOTFS/.complete"
	log "root file system ready in $((SECONDS - start))s"
fi
if [[ $ROOTFS_ONLY -eq 1 ]]; then
	echo "$ROOTFS"
	exit 0
fi

# Every shared library a flux program needs must be in the root file
# system (resolved inside it, with its own loader).
missing=()
while IFS= read -r lib; do
	found=0
	for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib; do
		[[ -e "$ROOTFS/$d/$lib" ]] && found=1 && break
	done
	for p in "$PREFIX" ${SECURITY:+"$SECURITY"}; do
		[[ $found -eq 0 && -n "$(find "$p" -name "$lib" -print -quit)" ]] && found=1
	done
	[[ $found -eq 1 ]] || missing+=("$lib")
done < <(
	# ldd says "not a dynamic executable" of scripts and static files.
	find "$PREFIX" ${SECURITY:+"$SECURITY"} -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
		xargs -0 -r ldd 2>/dev/null | awk '/=>/ { print $1 }' | sort -u
)
if [[ ${#missing[@]} -gt 0 ]]; then
	die "libraries flux-core needs that the root file system lacks: ${missing[*]} (add their packages to PACKAGES)"
fi

args=(-o "$OUT" -tag "$TAG" -rootfs "$ROOTFS" -tree "$PREFIX:$PREFIX"
	-env "PATH=$PREFIX/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	-entrypoint "$PREFIX/bin/flux" -user 65532:65532 -workdir /tmp)
[[ -n "$SECURITY" ]] && args+=(-tree "$SECURITY:$SECURITY")
# The prefixes' parent directories must be traversable by the pod's uid
# (debootstrap's /root is 0700, and the cache is often under it).
for p in "$PREFIX" ${SECURITY:+"$SECURITY"}; do
	d="$(dirname "$p")"
	while [[ "$d" != / ]]; do
		args+=(-dir "$d:755")
		d="$(dirname "$d")"
	done
done
(cd "$ROOT" && GOWORK=off "$GO" run ./hack/image "${args[@]}")
log "wrote $OUT ($TAG)"
