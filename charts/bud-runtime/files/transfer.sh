#!/bin/bash
# bud-runtime's model-transfer init container: copy s3://$S3_BUCKET/$S3_PREFIX into $MODEL_DIR on the model cache,
# verify every file against SHA256SUMS, and publish the folder atomically. A copy already verified against the same
# sums is kept as is, so restarts and extra replicas do not copy again.
set -euo pipefail

sums="${SHA256SUMS_FILE:-/etc/bud-transfer/SHA256SUMS}"   # mounted from the release's ConfigMap
want="$(sha256sum "$sums" | cut -d' ' -f1)"   # identifies this exact list of files and sums
marker="$MODEL_DIR/.bud-verified"

verified() { [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; }

if verified; then
  echo "model already cached and verified in $MODEL_DIR"
  exit 0
fi

# One staging folder per pod (HOSTNAME is the pod name): replicas starting together never write the same files, and
# a restarted init container resumes its own copy (`sync` skips files already there with the same size).
staging="$MODEL_DIR.partial-$HOSTNAME"
mkdir -p "$staging"
endpoint=()
if [ -n "$S3_ENDPOINT" ]; then endpoint=(--endpoint-url "$S3_ENDPOINT"); fi
source="s3://$S3_BUCKET/"
if [ -n "$S3_PREFIX" ]; then source="s3://$S3_BUCKET/${S3_PREFIX%/}/"; fi

echo "copying $source into $staging"
# The array expands to nothing when empty, even under `set -u` with the bash 4.2 of the AWS CLI image.
aws ${endpoint[@]+"${endpoint[@]}"} s3 sync "$source" "$staging" --only-show-errors --no-progress

if [ -s "$sums" ]; then
  echo "verifying $(wc -l < "$sums") files against their sha256 sums"
  if ! (cd "$staging" && sha256sum --check --strict --quiet "$sums"); then
    echo "model copy does not match the registry's sha256 sums; discarding it" >&2
    rm -rf "$staging"
    exit 1
  fi
else
  echo "no sha256 sums given: the copy is not verified"
fi
echo "$want" > "$staging/.bud-verified"

# Publish with a rename: readers see the whole verified folder or nothing.
if [ -e "$MODEL_DIR" ]; then
  if verified; then
    echo "another replica published the model first"
    rm -rf "$staging"
    exit 0
  fi
  rm -rf "$MODEL_DIR"   # an older copy verified against other sums
fi
if ! mv -T "$staging" "$MODEL_DIR"; then
  verified || exit 1   # lost a race to a replica that published the same model: fine
  rm -rf "$staging"
fi
echo "model ready in $MODEL_DIR"
