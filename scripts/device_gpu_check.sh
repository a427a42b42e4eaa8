#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU and no network (the session's "device" machine).
#
# Prepare here (a machine with the package registries), once:
#   mkdir -p .devcarry/wheels && echo /.devcarry/ >> .git/info/exclude
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .devcarry/wheels \
#       cbor2 pynacl cffi pycparser trio outcome sniffio pytest-trio
#   (cd .devcarry && apt-get download bubblewrap)
# then run this script there with .devcarry carried. It prints what the machine has, installs bubblewrap and the
# wheels, and runs tests/exec (test_gpu.py: NVML detection, a CUDA job in the sandbox, isolation) and the
# full-size examples/gpu-cuda job through `sandrun-p2p exec`. Results go to $OUT (or ./gpu-check).
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
  python3 -m pip install -q --no-index --find-links .devcarry/wheels cbor2 pynacl trio pytest-trio 2>&1 | tail -3
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
tail -3 "$OUT/pytest.txt"; cat "$OUT/machine.txt" | head -40
