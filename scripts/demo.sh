#!/usr/bin/env bash
# The README's first command (`make demo`). Until the node agent and client land, this runs the
# protocol self-check: five in-memory nodes (one faulty) take a redundancy-3 job from announcement
# through claiming, commit/reveal and quorum to settlement. It does not start processes or a chain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/sandrun-p2p selfcheck
