#!/usr/bin/env bash
# Build the pinned Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok)
# from the Go module proxy into a cache folder outside git, and print that folder's bin/ path as the last line.
#
# The cache folder is named by a hash of go.mod, go.sum, the Go version and the build flags, so a second run with the
# same pins only checks that the binaries are there (well under a second); a change to any of them builds afresh.
#
# Environment:
#   BUD_KUBE_CACHE       root of the cache (default: $HOME/.cache/bud-foundry/kube); binaries go to <root>/<hash>/bin
#   BUD_KUBE_BUILD_JOBS  packages compiled in parallel (go build -p; default: number of CPUs)
#   GO                   the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
jobs="${BUD_KUBE_BUILD_JOBS:-$(nproc)}"

# Versions stamped into the binaries so that /version answers like a released cluster (Helm checks kubeVersion).
kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)
packages=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  go.etcd.io/etcd/server/v3
  sigs.k8s.io/kwok/cmd/kwok
)

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

go_version="$("$GO" env GOVERSION)"
key="$(cat "$here/go.mod" "$here/go.sum" <(echo "$go_version $ldflags ${packages[*]}") | sha256sum | cut -c1-16)"
cache_root="${BUD_KUBE_CACHE:-$HOME/.cache/bud-foundry/kube}"
out="$cache_root/$key"
bin="$out/bin"

cache_complete() {
  [[ -f "$out/built.ok" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if cache_complete; then
  echo "kube binaries up to date (Kubernetes $kube_version, cache $key)" >&2
  echo "$bin"
  exit 0
fi

# One build at a time per cache entry: a second caller (two test sessions, make test beside a test) waits for the
# first and then finds the cache complete.
mkdir -p "$out"
exec 9>"$out/build.lock"
flock 9
if cache_complete; then
  echo "kube binaries up to date (Kubernetes $kube_version, cache $key)" >&2
  echo "$bin"
  exit 0
fi

echo "building Kubernetes $kube_version control plane with $go_version, -p $jobs, into $out" >&2
mkdir -p "$out/src"
cp "$here/go.mod" "$here/go.sum" "$out/src/"
rm -rf "$out/bin.partial" "$out/built.ok"

start=$(date +%s)
# -trimpath and -s -w: smaller binaries and a build cache that does not depend on the folder we build in.
# -mod=readonly: go.mod and go.sum are complete; a mismatch fails instead of silently resolving other versions.
# GOTOOLCHAIN=local: never download another Go. One `go build` for all five shares every common package.
(
  cd "$out/src"
  GOTOOLCHAIN=local nice -n 15 "$GO" build -mod=readonly -p "$jobs" -trimpath \
    -ldflags "$ldflags" -o "$out/bin.partial/" "${packages[@]}"
)
# go names the binary of go.etcd.io/etcd/server/v3 after the module's last element before the major version.
mv "$out/bin.partial/server" "$out/bin.partial/etcd"
rm -rf "$bin"
mv "$out/bin.partial" "$bin"
touch "$out/built.ok"
elapsed=$(( $(date +%s) - start ))

echo "built in ${elapsed}s:" >&2
(cd "$bin" && ls -l "${binaries[@]}" | awk '{printf "  %-26s %6.1f MiB\n", $9, $5/1048576}') >&2
echo "$bin"
