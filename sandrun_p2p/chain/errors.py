"""Errors of the settlement client, and decoding of contract reverts into them."""

from __future__ import annotations

import ast
import re
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector


class ChainError(RuntimeError):
    """A transaction or call that failed.

    ``reason`` is the contract's custom error name (``"CommitClosed"``), ``"Error"`` for a plain
    ``revert("...")`` (the text is in ``detail``), ``"Panic"``, or a client-side tag (``"timeout"``,
    ``"connection"``, ``"nonce"``, ``"reverted"`` when no reason could be read). ``args`` holds the decoded
    error arguments by name.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        args: dict[str, Any] | None = None,
        method: str | None = None,
        tx_hash: str | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.args_ = dict(args or {})
        self.method = method
        self.tx_hash = tx_hash
        where = f"{method}: " if method else ""
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.args_.items())
        text = f"{where}{reason}" + (f"({shown})" if shown else "") + (f": {detail}" if detail else "")
        super().__init__(text)


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return repr(v.rstrip(b"\x00").decode("ascii")) if _printable(v) else "0x" + v.hex()
    return repr(v)


def _printable(v: bytes) -> bool:
    s = v.rstrip(b"\x00")
    return bool(s) and all(32 <= c < 127 for c in s)


_PANICS = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to a zero-initialised function",
}


class RevertDecoder:
    """Turns revert data into a ChainError using the custom errors of a set of ABIs."""

    def __init__(self, *abis: list[dict]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                names = [i["name"] or f"arg{n}" for n, i in enumerate(item["inputs"])]
                self._errors[function_signature_to_4byte_selector(sig)] = (item["name"], types, names)

    def decode(self, data: bytes, method: str | None = None, tx_hash: str | None = None) -> ChainError:
        sel, body = data[:4], data[4:]
        if sel == bytes.fromhex("08c379a0"):
            try:
                (msg,) = abi_decode(["string"], body)
                return ChainError("Error", msg, method=method, tx_hash=tx_hash)
            except Exception:
                pass
        if sel == bytes.fromhex("4e487b71"):
            try:
                (code,) = abi_decode(["uint256"], body)
                return ChainError("Panic", _PANICS.get(code, hex(code)), method=method, tx_hash=tx_hash)
            except Exception:
                pass
        if sel in self._errors:
            name, types, names = self._errors[sel]
            try:
                values = abi_decode(types, body)
                return ChainError(
                    name, args=dict(zip(names, values, strict=True)), method=method, tx_hash=tx_hash
                )
            except Exception:
                return ChainError(name, "undecodable arguments", method=method, tx_hash=tx_hash)
        if not data:
            return ChainError("reverted", "no revert data", method=method, tx_hash=tx_hash)
        return ChainError("reverted", "unknown revert data 0x" + data.hex(), method=method, tx_hash=tx_hash)


def _abi_type(inp: dict) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in inp["components"]) + ")" + t[len("tuple") :]
    return t


_HEX = re.compile(r"0x[0-9a-fA-F]*")


def revert_data_from_exception(exc: BaseException) -> bytes | str | None:
    """Revert data carried by a web3 / eth-tester / JSON-RPC exception: bytes, a reason string, or None."""
    # web3 ContractCustomError / ContractLogicError / ContractPanicError carry .data
    data = getattr(exc, "data", None)
    if isinstance(data, str) and _HEX.fullmatch(data):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    # Web3RPCError carries the raw response
    resp = getattr(exc, "rpc_response", None)
    if isinstance(resp, dict):
        err = resp.get("error") or {}
        d = err.get("data")
        if isinstance(d, dict):
            d = d.get("data")
        if isinstance(d, str) and _HEX.fullmatch(d):
            return bytes.fromhex(d[2:])
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, dict):
            d = arg.get("data")
            if isinstance(d, str) and _HEX.fullmatch(d):
                return bytes.fromhex(d[2:])
        if isinstance(arg, bytes | bytearray):
            return bytes(arg)
        if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[1], str) and _HEX.fullmatch(arg[1]):
            return bytes.fromhex(arg[1][2:])
        if isinstance(arg, str):
            parsed = _parse_tester_message(arg)
            if parsed is not None:
                return parsed
    return None


def _parse_tester_message(msg: str) -> bytes | str | None:
    """eth-tester reports a revert as "execution reverted: b'...'" (a Python bytes literal) or with the text."""
    text = msg
    prefix = "execution reverted"
    if text.startswith(prefix):
        text = text[len(prefix) :].lstrip(": ").strip()
    if text.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    if _HEX.fullmatch(text) and len(text) >= 10:
        return bytes.fromhex(text[2:])
    if msg.startswith(prefix):
        return text
    return None
