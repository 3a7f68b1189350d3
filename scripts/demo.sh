#!/usr/bin/env bash
# certd's main job on the embedded default: no AWS account, no HSM. certd's own development CA
# issues a certificate, certd checks it against the FIPS policy and deploys it as one atomic set
# into a memory-backed directory (/dev/shm/certd-demo/demo), then shows the status.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
[ -f dist/src/cli.js ] && [ -z "$(find src providers -newer dist/src/cli.js -name '*.ts' | head -1)" ] || npm run build --silent
export CERTD_LOG_FORMAT=${CERTD_LOG_FORMAT:-text}
echo "\$ certd rotate --now --config examples/demo.yaml"
bin/certd rotate --now --config examples/demo.yaml
echo
echo "\$ certd status --config examples/demo.yaml"
bin/certd status --config examples/demo.yaml
echo
echo "\$ ls -l /dev/shm/certd-demo/demo/..data/"
ls -l /dev/shm/certd-demo/demo/..data/
echo
echo "\$ certd validate --cert /dev/shm/certd-demo/demo/cert.pem --chain /dev/shm/certd-demo/demo/chain.pem --key /dev/shm/certd-demo/demo/privkey.pem --min-remaining 1h"
bin/certd validate --cert /dev/shm/certd-demo/demo/cert.pem --chain /dev/shm/certd-demo/demo/chain.pem --key /dev/shm/certd-demo/demo/privkey.pem --min-remaining 1h
