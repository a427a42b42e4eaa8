#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU and no network (the session's "device" machine).
#
# Prepare here (a machine with the package registries), once:
#   mkdir -p .devcarry/wheels && echo /.devcarry/ >> .git/info/exclude
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .devcarry/wheels \
#       cbor2 pynacl cffi pycparser trio outcome sniffio pytest-trio
#   (cd .devcarry && apt-get download bubblewrap)
# For the network phase also (a cp312 wheelhouse of the agent's dependencies, built here with pyenv's 3.12):
#   python3.12 -m venv /tmp/v312 && /tmp/v312/bin/pip wheel -w .devcarry/full libp2p==0.8.1 web3 \
#       'eth-tester[py-evm]' coincurve aioipfs aleph-cid multiaddr cbor2 pynacl trio pytest-trio httpx
# then run this script there with .devcarry carried. It prints what the machine has, installs bubblewrap and the
# wheels, and runs tests/exec (test_gpu.py: NVML detection, a CUDA job in the sandbox, isolation) and the
# full-size examples/gpu-cuda job through `sandrun-p2p exec`; with .devcarry/full, a 2-node `sandrun-p2p testnet`
# (embedded chain) that runs examples/gpu-cuda with redundancy 2 and settles it (JOB=name picks another example,
# e.g. JOB=primes to try the phase on a machine without a GPU). Where the machine's python3 has PyTorch, its
# environment becomes a job runtime (--job-runtime) and examples/gpu-matmul runs through `exec` and the
# testnet too. Results go to $OUT (or ./gpu-check).
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
{
  echo "== machine"; uname -r; id; python3 -V; command -v python3
  nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv
  ls -ld /dev/nvidia* 2>&1; cat /proc/sys/kernel/unprivileged_userns_clone /proc/sys/user/max_user_namespaces 2>&1; ldconfig -p | grep -E "libcuda\.so|libnvidia-ml\.so" || echo "driver libraries not in the ld cache"
} > "$OUT/machine.txt" 2>&1
if ! command -v bwrap >/dev/null; then
  rm -rf /tmp/bw && dpkg -x .devcarry/bubblewrap_*.deb /tmp/bw && cp /tmp/bw/usr/bin/bwrap /usr/local/bin/bwrap
fi
{
  echo "== bubblewrap"; bwrap --version
  bwrap --unshare-all --unshare-user --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --symlink usr/bin /bin --proc /proc --dev /dev -- /bin/sh -c 'echo sandbox ok; ls /sys/class/net 2>/dev/null'
  echo "== wheels"
  python3 -m pip install -q --no-index --find-links .devcarry/wheels --find-links .devcarry/full cbor2 pynacl trio pytest-trio 2>&1 | tail -3
} >> "$OUT/machine.txt" 2>&1
export PYTHONPATH=$PWD
python3 - >> "$OUT/machine.txt" 2>&1 <<'PY'
from sandrun_p2p.exec.capabilities import driver_lib_dirs, gpus
print("== NVML", gpus(), "driver libs:", driver_lib_dirs())
PY
timeout 400 python3 -m pytest -p no:cacheprovider -q -rs tests/exec > "$OUT/pytest.txt" 2>&1
echo "pytest rc=$?" >> "$OUT/pytest.txt"
start=$(date +%s%N)
python3 -m sandrun_p2p exec --code examples/gpu-cuda --manifest examples/gpu-cuda/job.json \
  --json --work-root /tmp/gpu-runs > "$OUT/exec.json" 2> "$OUT/exec.stderr.txt"
echo "exec rc=$? wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" >> "$OUT/exec.stderr.txt"
cat /tmp/gpu-runs/results/*/stdout /tmp/gpu-runs/results/*/stderr >> "$OUT/exec.stderr.txt" 2>/dev/null
# PyTorch jobs (examples/gpu-matmul) where the machine's python3 has it: its environment as a job runtime
RTS=""
if python3 -c "import torch" 2>/dev/null; then
  RT=$(python3 -c 'import sys; print(sys.prefix)'); BASE=$(python3 -c 'import sys; print(sys.base_prefix)')
  RTS="--job-runtime $RT"
  case $BASE in /usr | /usr/*) ;; *) RTS="$RTS --job-runtime $BASE" ;; esac
  { echo "runtimes: $RTS; python3 -> $(readlink -f "$RT/bin/python3")"; cat "$RT/pyvenv.cfg" 2>/dev/null; } > "$OUT/matmul.txt"
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  python3 -m sandrun_p2p exec --code examples/gpu-matmul --manifest examples/gpu-matmul/job.json --json \
    --work-root /tmp/mm-runs $RTS >> "$OUT/matmul.txt" 2>&1
  echo "matmul exec rc=$? wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" >> "$OUT/matmul.txt"
  cat /tmp/mm-runs/results/*/stdout /tmp/mm-runs/results/*/stderr >> "$OUT/matmul.txt" 2>/dev/null
fi
if [ -d .devcarry/full ]; then
  JOB=${JOB:-gpu-cuda}
  NET=$(mktemp -d /tmp/gnet.XXXXXX); export SANDRUN_P2P_HOME=$NET/client
  python3 -m pip install -q --no-index --find-links .devcarry/full libp2p==0.8.1 web3 'eth-tester[py-evm]' \
    coincurve aioipfs aleph-cid multiaddr httpx > "$OUT/net-install.txt" 2>&1
  # shellcheck disable=SC2086
  python3 -m sandrun_p2p testnet --nodes 2 --data-dir "$NET/net" --timeout 180 $RTS > "$OUT/testnet.log" 2>&1 &
  TP=$!
  for _ in $(seq 1 240); do
    grep -q "running; press Ctrl-C" "$OUT/testnet.log" && break
    kill -0 $TP 2>/dev/null || break
    sleep 0.5
  done
  for J in $JOB ${RTS:+gpu-matmul}; do
    start=$(date +%s%N)
    timeout 200 python3 -m sandrun_p2p submit --code "examples/$J" --manifest "examples/$J/job.json" --redundancy 2 \
      --peer "$NET/net/node0" --escrow auto --wait --json --out "$NET/out-$J" > "$OUT/submit-$J.json" 2>> "$OUT/submit.stderr.txt"
    echo "submit $J rc=$? wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" >> "$OUT/submit.stderr.txt"
    cat "$NET/out-$J"/*.json >> "$OUT/submit.stderr.txt" 2>/dev/null
  done
  python3 -m sandrun_p2p nodes --data-dir "$NET/net/node1" --json > "$OUT/nodes.json" 2>&1
  kill -TERM $TP; wait $TP
  tail -3 "$OUT/submit.stderr.txt"
fi
tail -3 "$OUT/pytest.txt"; cat "$OUT/machine.txt" | head -40
