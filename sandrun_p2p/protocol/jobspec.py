"""Job manifest, job spec and job id, with validation that explains what is wrong.

The manifest follows the original sandrun design (entrypoint, interpreter, args, env,
outputs, timeout, memory_mb, cpu, gpu{...}); the spec adds what the network needs
(code CID, redundancy, quorum, deadline, client nonce, payment). ``job_id`` is the tagged
SHA-256 of the canonical spec, so every node derives the same id from the same spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from .encoding import Encoded, canonical, tagged_hash
from .errors import SpecError

PAY_ESCROW = "escrow"
PAY_VOUCHER = "voucher"
PAY_MODES = (PAY_ESCROW, PAY_VOUCHER)
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_MEMORY_MB = 1024 * 1024
MAX_CPU = 256
MAX_REDUNDANCY = 5
MAX_EXECUTORS = 64
MAX_ARGS = 64
MAX_ENV = 64
MAX_OUTPUTS = 64
MAX_STR = 256
INTERPRETERS = ("python3", "python", "bash", "sh", "node")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment names the executor sets itself; a job cannot override them.
RESERVED_ENV_PREFIXES = ("SANDRUN_",)


def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise SpecError(f"{where}: missing '{key}'")
    v = d[key]
    allowed = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(v, bool) and bool not in allowed:
        raise SpecError(f"{where}: '{key}' must be {_tname(typ)}, got bool")
    if not isinstance(v, typ):
        raise SpecError(f"{where}: '{key}' must be {_tname(typ)}, got {type(v).__name__}")
    return v


def _opt(d: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any, where: str) -> Any:
    return _req(d, key, typ, where) if key in d else default


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _check_str(s: str, what: str, max_len: int = MAX_STR) -> str:
    if len(s) > max_len:
        raise SpecError(f"{what} longer than {max_len} characters")
    if "\x00" in s:
        raise SpecError(f"{what} contains a NUL byte")
    return s


def _check_relpath(p: str, what: str) -> str:
    _check_str(p, what)
    if not p or p.startswith("/") or any(part == ".." for part in p.split("/")):
        raise SpecError(f"{what} '{p}' must be a relative path inside the job directory")
    return p


def _unknown(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown field(s) {', '.join(extra)}")


@dataclass(frozen=True)
class GpuRequirement:
    """What a GPU job needs. ``required=False`` means the job runs on CPU."""

    required: bool = False
    min_vram_gb: int = 0
    compute_capability: str = ""  # minimum, e.g. "7.5"
    cuda_version: str = ""  # minimum driver CUDA version, e.g. "12.0"
    count: int = 1

    @classmethod
    def from_dict(cls, d: Any) -> GpuRequirement:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise SpecError("manifest.gpu must be an object")
        w = "manifest.gpu"
        _unknown(d, {"required", "min_vram_gb", "compute_capability", "cuda_version", "count"}, w)
        g = cls(
            required=_opt(d, "required", bool, False, w),
            min_vram_gb=_opt(d, "min_vram_gb", int, 0, w),
            compute_capability=str(_opt(d, "compute_capability", (str, int, float), "", w)),
            cuda_version=str(_opt(d, "cuda_version", (str, int, float), "", w)),
            count=_opt(d, "count", int, 1, w),
        )
        if not 0 <= g.min_vram_gb <= 1024:
            raise SpecError("manifest.gpu.min_vram_gb must be between 0 and 1024")
        if not 1 <= g.count <= 16:
            raise SpecError("manifest.gpu.count must be between 1 and 16")
        for name in ("compute_capability", "cuda_version"):
            v = getattr(g, name)
            if v and not re.fullmatch(r"\d{1,2}(\.\d{1,2})?", v):
                raise SpecError(f"manifest.gpu.{name} must look like '8.0', got {v!r}")
        return g


def version_tuple(v: str) -> tuple[int, ...]:
    """'8.6' -> (8, 6); '' -> (0,)."""
    return tuple(int(x) for x in v.split(".")) if v else (0,)


@dataclass(frozen=True)
class CompareRule:
    """How outputs are compared between executors.

    Default: exact bytes. For outputs that are not bit-stable, a job may declare files whose
    numbers are rounded to ``digits`` significant digits before hashing (see
    :func:`sandrun_p2p.protocol.trace.normalize_numeric`), so honest nodes agree on the root.
    """

    round_files: tuple[str, ...] = ()
    digits: int = 6

    @classmethod
    def from_dict(cls, d: Any) -> CompareRule:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise SpecError("manifest.compare must be an object")
        _unknown(d, {"round_files", "digits"}, "manifest.compare")
        files = _opt(d, "round_files", list, [], "manifest.compare")
        if len(files) > MAX_OUTPUTS or not all(isinstance(f, str) for f in files):
            raise SpecError("manifest.compare.round_files must be a list of paths")
        digits = _opt(d, "digits", int, 6, "manifest.compare")
        if not 1 <= digits <= 17:
            raise SpecError("manifest.compare.digits must be between 1 and 17")
        return cls(tuple(_check_relpath(f, "compare file") for f in files), digits)


@dataclass(frozen=True)
class Manifest:
    """What to run and within which limits."""

    entrypoint: str
    interpreter: str = "python3"
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    outputs: tuple[str, ...] = ()
    timeout: int = 60
    memory_mb: int = 256
    cpu: int = 1
    gpu: GpuRequirement = field(default_factory=GpuRequirement)
    compare: CompareRule = field(default_factory=CompareRule)
    checkpoint_interval: int = 0  # seconds between snapshots of $SANDRUN_CHECKPOINT_DIR; 0 = none
    priority: bool = False

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, dict):
            raise SpecError("manifest must be a JSON object")
        w = "manifest"
        _unknown(
            d,
            {
                "entrypoint",
                "interpreter",
                "args",
                "env",
                "environment",
                "outputs",
                "timeout",
                "memory_mb",
                "cpu",
                "gpu",
                "compare",
                "checkpoint_interval",
                "priority",
            },
            w,
        )
        entry = _check_relpath(_req(d, "entrypoint", str, w), "manifest.entrypoint")
        interp = _opt(d, "interpreter", str, "python3", w)
        if interp not in INTERPRETERS:
            raise SpecError(f"manifest.interpreter must be one of {', '.join(INTERPRETERS)}, got {interp!r}")
        args = _opt(d, "args", list, [], w)
        if len(args) > MAX_ARGS or not all(isinstance(a, str) for a in args):
            raise SpecError(f"manifest.args must be a list of at most {MAX_ARGS} strings")
        env_d = _opt(d, "env", dict, None, w)
        if env_d is None:
            env_d = _opt(d, "environment", dict, {}, w)  # the sandrun server's name for it
        if len(env_d) > MAX_ENV:
            raise SpecError(f"manifest.env has more than {MAX_ENV} entries")
        env: list[tuple[str, str]] = []
        for k, v in sorted(env_d.items()):
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise SpecError(f"manifest.env name {k!r} is not a valid variable name")
            if k.startswith(RESERVED_ENV_PREFIXES):
                raise SpecError(f"manifest.env name {k!r} is reserved for the executor")
            if not isinstance(v, str):
                raise SpecError(f"manifest.env[{k}] must be a string")
            env.append((k, _check_str(v, f"manifest.env[{k}]", 4096)))
        outputs = _opt(d, "outputs", list, [], w)
        if len(outputs) > MAX_OUTPUTS or not all(isinstance(o, str) for o in outputs):
            raise SpecError(f"manifest.outputs must be a list of at most {MAX_OUTPUTS} glob patterns")
        timeout = _opt(d, "timeout", int, 60, w)
        if not 1 <= timeout <= MAX_TIMEOUT_S:
            raise SpecError(f"manifest.timeout must be between 1 and {MAX_TIMEOUT_S} seconds, got {timeout}")
        mem = _opt(d, "memory_mb", int, 256, w)
        if not 16 <= mem <= MAX_MEMORY_MB:
            raise SpecError(f"manifest.memory_mb must be between 16 and {MAX_MEMORY_MB}, got {mem}")
        cpu = _opt(d, "cpu", int, 1, w)
        if not 1 <= cpu <= MAX_CPU:
            raise SpecError(f"manifest.cpu must be between 1 and {MAX_CPU}, got {cpu}")
        ckpt = _opt(d, "checkpoint_interval", int, 0, w)
        if not 0 <= ckpt <= MAX_TIMEOUT_S:
            raise SpecError("manifest.checkpoint_interval must be >= 0 seconds")
        return cls(
            entrypoint=entry,
            interpreter=interp,
            args=tuple(_check_str(a, "manifest.args item", 4096) for a in args),
            env=tuple(env),
            outputs=tuple(_check_relpath(o, "manifest.outputs pattern") for o in outputs),
            timeout=timeout,
            memory_mb=mem,
            cpu=cpu,
            gpu=GpuRequirement.from_dict(d.get("gpu")),
            compare=CompareRule.from_dict(d.get("compare")),
            checkpoint_interval=ckpt,
            priority=_opt(d, "priority", bool, False, w),
        )

    @cached_property
    def encoded(self) -> Encoded:
        """``canonical(self.to_dict())``, computed once per object (it is frozen), for embedding (job ids)."""
        return Encoded(canonical(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies recursively and was the simulator's top cost
        # (every node re-derives the job id of every announcement it receives).
        g = self.gpu
        return {
            "entrypoint": self.entrypoint,
            "interpreter": self.interpreter,
            "args": list(self.args),
            "env": dict(self.env),
            "outputs": list(self.outputs),
            "timeout": self.timeout,
            "memory_mb": self.memory_mb,
            "cpu": self.cpu,
            "gpu": {
                "required": g.required,
                "min_vram_gb": g.min_vram_gb,
                "compute_capability": g.compute_capability,
                "cuda_version": g.cuda_version,
                "count": g.count,
            },
            "compare": {"round_files": list(self.compare.round_files), "digits": self.compare.digits},
            "checkpoint_interval": self.checkpoint_interval,
            "priority": self.priority,
        }


def _check_result_key(key: bytes) -> None:
    """A result key is a 32-byte Ed25519 public key that has an X25519 form (what results are sealed to)."""
    if len(key) != 32:
        raise SpecError(f"spec.result_key must be a 32-byte Ed25519 public key, got {len(key)} bytes")
    try:
        VerifyKey(key).to_curve25519_public_key()
    except (CryptoError, RuntimeError, ValueError):
        raise SpecError(
            "spec.result_key is not a valid Ed25519 public key (no X25519 form to seal results to)"
        ) from None


def default_quorum(redundancy: int) -> int:
    """Smallest strict majority of ``redundancy``: 1->1, 2->2, 3->2, 4->3, 5->3."""
    return redundancy // 2 + 1


@dataclass(frozen=True)
class JobSpec:
    """Everything that identifies a job. ``job_id`` hashes all of it."""

    code_cid: str
    manifest: Manifest
    redundancy: int = 1
    quorum: int = 1
    deadline: int = 0  # unix seconds by which a verified result must be settled
    nonce: bytes = b""  # client-chosen, makes identical jobs distinct
    payment_wei: int = 0  # escrowed maximum price
    encrypted: bool = False
    # When set, only these node ids may execute (e.g. the nodes a client trusts to spot-check a result; see
    # trust.check_executors). Empty: any eligible node. Sorted, part of the job id only when set.
    executors: tuple[bytes, ...] = ()
    # When set, the client's per-job Ed25519 public key (32 bytes): executors seal the result archive to its
    # X25519 form (store.crypto.seal_to), so only the client reads outputs. Part of the job id only when set.
    result_key: bytes = b""
    # How the origin pays: PAY_ESCROW (a per-job escrow on chain, the default) or PAY_VOUCHER (k = 1 only: the
    # origin signs a voucher on its deposit for the executor whose reveal it saw; the executor settles many
    # results in one batch). Part of the job id only when it is not the default.
    pay: str = "escrow"

    @classmethod
    def from_dict(cls, d: Any) -> JobSpec:
        if not isinstance(d, dict):
            raise SpecError("job spec must be an object")
        w = "spec"
        _unknown(
            d,
            {
                "code_cid",
                "manifest",
                "redundancy",
                "quorum",
                "deadline",
                "nonce",
                "payment_wei",
                "encrypted",
                "executors",
                "result_key",
                "pay",
            },
            w,
        )
        cid = _check_str(_req(d, "code_cid", str, w), "spec.code_cid", 128)
        if not re.fullmatch(r"[A-Za-z0-9]{8,128}", cid):
            raise SpecError(f"spec.code_cid {cid!r} is not a CID")
        k = _opt(d, "redundancy", int, 1, w)
        if not 1 <= k <= MAX_REDUNDANCY:
            raise SpecError(f"spec.redundancy must be between 1 and {MAX_REDUNDANCY}, got {k}")
        q = _opt(d, "quorum", int, default_quorum(k), w)
        if not (k // 2 < q <= k):
            raise SpecError(
                f"spec.quorum must be a strict majority of redundancy {k} (between {k // 2 + 1} and {k}), got {q}"
            )
        deadline = _req(d, "deadline", int, w)
        if deadline <= 0:
            raise SpecError("spec.deadline must be the unix time (seconds) by which the job must settle")
        nonce = _opt(d, "nonce", bytes, b"", w)
        if len(nonce) > 32:
            raise SpecError("spec.nonce is at most 32 bytes")
        pay = _opt(d, "payment_wei", int, 0, w)
        if pay < 0 or pay >= 2**128:
            raise SpecError("spec.payment_wei out of range")
        execs = _opt(d, "executors", list, [], w)
        if (
            len(execs) > MAX_EXECUTORS
            or not all(isinstance(x, bytes) and len(x) == 32 for x in execs)
            or execs != sorted(set(execs))
        ):
            raise SpecError(
                f"spec.executors must be a sorted list of at most {MAX_EXECUTORS} distinct 32-byte node ids"
            )
        if execs and len(execs) < k:
            raise SpecError(f"spec.executors names {len(execs)} node(s), fewer than redundancy {k}")
        result_key = _opt(d, "result_key", bytes, b"", w)
        if "result_key" in d:
            _check_result_key(result_key)
        pay_mode = _opt(d, "pay", str, PAY_ESCROW, w)
        if pay_mode not in PAY_MODES:
            raise SpecError(f"spec.pay must be one of {', '.join(PAY_MODES)}, got {pay_mode!r}")
        if pay_mode == PAY_VOUCHER and k != 1:
            raise SpecError(
                f"spec.pay {PAY_VOUCHER!r} is for redundancy 1 only (got {k}): use {PAY_ESCROW!r}"
            )
        return cls(
            code_cid=cid,
            manifest=Manifest.from_dict(_req(d, "manifest", dict, w)),
            redundancy=k,
            quorum=q,
            deadline=deadline,
            nonce=nonce,
            payment_wei=pay,
            encrypted=_opt(d, "encrypted", bool, False, w),
            executors=tuple(execs),
            result_key=result_key,
            pay=pay_mode,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {
            "code_cid": self.code_cid,
            "manifest": self.manifest.to_dict(),
            "redundancy": self.redundancy,
            "quorum": self.quorum,
            "deadline": self.deadline,
            "nonce": self.nonce,
            "payment_wei": self.payment_wei,
            "encrypted": self.encrypted,
        }
        if self.executors:  # absent when unset, so the ids of ordinary jobs do not change
            d["executors"] = list(self.executors)
        if self.result_key:  # likewise
            d["result_key"] = self.result_key
        if self.pay != PAY_ESCROW:  # likewise
            d["pay"] = self.pay
        return d

    @cached_property
    def job_id(self) -> bytes:
        """Computed once per spec object (the spec is frozen; canonical CBOR + SHA-256 is not free)."""
        return job_id(self)


def job_id(spec: JobSpec) -> bytes:
    """32-byte id of a job: tagged SHA-256 of its canonical spec (its manifest's encoding made once per manifest
    object: 2.4x faster for the simulator's 100k jobs of a few kinds; the same bytes, tests/protocol)."""
    d = spec.to_dict()
    d["manifest"] = spec.manifest.encoded
    return tagged_hash("job", d)
