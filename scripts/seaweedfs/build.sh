#!/usr/bin/env bash
# Build SeaweedFS' `weed` (the dev stack's and the tests' S3 server) from the Go module proxy into a cache folder
# outside git, and print the path of the binary as the last line.
#
# SeaweedFS tags its releases without Go's semver, so the proxy knows the pinned release by its commit's
# pseudo-version. Its go.mod holds a replace directive, which `go install module@version` refuses: the module is
# downloaded into the module cache and built there, against its own go.mod and go.sum (-mod=readonly).
#
# The cache folder is named by a hash of the version, the Go version and the build flags, so a second run with the
# same pin only checks that the binary is there (well under a second); a change to any of them builds afresh.
#
# Environment:
#   BUD_SEAWEEDFS_CACHE       root of the cache (default: $HOME/.cache/bud-foundry/seaweedfs)
#   BUD_SEAWEEDFS_BUILD_JOBS  packages compiled in parallel (go build -p; default: number of CPUs)
#   GO                        the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

# SeaweedFS 4.53 (commit 7506e5f91cd6, 2026-11-09).
module=github.com/seaweedfs/seaweedfs
version=v0.0.0-20261109003541-7506e5f91cd6

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
jobs="${BUD_SEAWEEDFS_BUILD_JOBS:-$(nproc)}"
ldflags="-s -w"
go_version="$("$GO" env GOVERSION)"
key="$(echo "$module@$version $go_version $ldflags" | sha256sum | cut -c1-16)"
cache_root="${BUD_SEAWEEDFS_CACHE:-$HOME/.cache/bud-foundry/seaweedfs}"
out="$cache_root/$key"
weed="$out/bin/weed"

if [[ -f "$out/built.ok" && -x "$weed" ]]; then
  echo "weed up to date ($version, cache $key)" >&2
  echo "$weed"
  exit 0
fi

# One build at a time per cache entry: a second caller waits for the first and then finds the binary there.
mkdir -p "$out"
exec 9>"$out/build.lock"
flock 9
if [[ -f "$out/built.ok" && -x "$weed" ]]; then
  echo "weed up to date ($version, cache $key)" >&2
  echo "$weed"
  exit 0
fi

echo "building SeaweedFS weed $version with $go_version, -p $jobs, into $out" >&2
start=$(date +%s)
# GOTOOLCHAIN=local: never download another Go. GOFLAGS cleared: a caller's -mod=mod would let go.sum drift.
source_dir="$(GOTOOLCHAIN=local GOFLAGS= "$GO" mod download -json "$module@$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$source_dir/weed" ]] || { echo "go mod download gave no source folder for $module@$version" >&2; exit 1; }
rm -rf "$out/bin.partial" "$out/built.ok"
mkdir -p "$out/bin.partial"
# -trimpath and -s -w: a smaller binary and a build cache that does not depend on where the module cache lies.
(
  cd "$source_dir"
  GOTOOLCHAIN=local GOFLAGS= nice -n 15 "$GO" build -mod=readonly -buildvcs=false -p "$jobs" -trimpath \
    -ldflags "$ldflags" -o "$out/bin.partial/weed" ./weed
)
rm -rf "$out/bin"
mv "$out/bin.partial" "$out/bin"
touch "$out/built.ok"
echo "built in $(( $(date +%s) - start ))s: $(du -m "$weed" | cut -f1) MiB" >&2
echo "$weed"
