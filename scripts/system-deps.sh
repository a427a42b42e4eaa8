#!/usr/bin/env bash
# Install the Debian packages sandrun-p2p needs, only those missing (idempotent; needs root or sudo).
#   bubblewrap  the local job sandbox (namespaces, private filesystem, no network)
#   libgmp-dev  py-libp2p's fastecdsa builds from source against GMP
#   gcc, python3-dev, python3-venv  building wheels, the virtualenv
#   curl, procps, psmisc  health checks and PID handling in the test scripts
#   nodejs, npm  solc-js (contracts), anvil and js-ipfs for the tests (Node 20 is preinstalled on CI images)
set -euo pipefail
need=()
for pkg in bubblewrap libgmp-dev gcc curl procps psmisc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if ((${#need[@]})); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "installing system packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
