"""The deterministic environment every job runs in, and its digest.

Fixed: cleared environment, the manifest's ``env``, PYTHONHASHSEED=0, LC_ALL/LANG=C.UTF-8, TZ=UTC,
SOURCE_DATE_EPOCH, single-threaded BLAS/OpenMP, cwd and HOME ``/work``, hostname, a fresh pid
namespace, file mtimes of the code bundle. NOT fixed (job authors must handle it): wall-clock time,
``/dev/urandom`` and unseeded randomness, CPU model (BLAS kernels may differ between CPUs), the
interpreter version installed on the node. Outputs that are not bit-stable need a declared
``compare`` rule (numbers rounded to N significant digits before hashing).
"""

from __future__ import annotations

import platform

from ..protocol.jobspec import Manifest
from ..protocol.trace import env_digest

WORKDIR = "/work"
CHECKPOINT_DIR = "/checkpoint"
HOSTNAME = "sandrun"
SOURCE_DATE_EPOCH = 0
PATH = "/usr/local/bin:/usr/bin:/bin"

FIXED_ENV: dict[str, str] = {
    "PATH": PATH,
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "HOME": WORKDIR,
    "TMPDIR": "/tmp",
    "SANDRUN_CHECKPOINT_DIR": CHECKPOINT_DIR,
}


def job_env(manifest: Manifest) -> dict[str, str]:
    """The complete environment of a job: the manifest's variables, then the fixed ones (which win)."""
    env = dict(manifest.env)
    env.update(FIXED_ENV)
    return env


def runtime_id() -> str:
    """Identity of the runtime for the environment digest (OS and architecture, not the host's name)."""
    return f"{platform.system().lower()}-{platform.machine()}"


def digest(manifest: Manifest) -> bytes:
    """Environment digest that goes into the trace."""
    return env_digest(job_env(manifest), runtime_id())
