"""``sandrun-p2p deploy-contracts``: deploy the settlement contracts and write the addresses file."""

from __future__ import annotations

import argparse
import sys

from .errors import ChainError

DESCRIPTION = "deploy the settlement contracts and write the addresses file the agent and client read"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blockchain-rpc",
        metavar="URL",
        default=None,
        help="JSON-RPC URL of the chain (default: a fresh embedded chain, useful only to try the deployment)",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--key-env", metavar="VAR", help="environment variable holding the deployer's hex private key"
    )
    key.add_argument("--keystore", metavar="FILE", help="encrypted keystore file of the deployer")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        default=None,
        help="environment variable holding the keystore password (default SANDRUN_KEYSTORE_PASSWORD)",
    )
    parser.add_argument("--out", metavar="FILE", default="sandrun-chain.json", help="addresses file to write")
    parser.add_argument(
        "--dev-account",
        action="store_true",
        help="deploy from the chain's first development account (anvil, devnet)",
    )
    g = parser.add_argument_group("contract parameters (wei, seconds)")
    from .market import MarketParams

    d = MarketParams()
    g.add_argument("--min-stake", type=int, default=d.min_stake)
    g.add_argument("--fault-penalty", type=int, default=d.fault_penalty)
    g.add_argument("--unbonding-delay", type=int, default=d.unbonding_delay)
    g.add_argument("--reveal-window", type=int, default=d.reveal_window)
    g.add_argument("--max-job-duration", type=int, default=d.max_job_duration)
    g.add_argument("--challenge-window", type=int, default=d.challenge_window)
    g.add_argument("--deposit-delay", type=int, default=d.deposit_delay)


def run(args: argparse.Namespace) -> int:
    from .chain import Chain, load_signer
    from .deployment import deploy
    from .market import MarketParams

    params = MarketParams(
        min_stake=args.min_stake,
        fault_penalty=args.fault_penalty,
        unbonding_delay=args.unbonding_delay,
        reveal_window=args.reveal_window,
        max_job_duration=args.max_job_duration,
        challenge_window=args.challenge_window,
        deposit_delay=args.deposit_delay,
    )
    try:
        if args.blockchain_rpc:
            kind = "rpc"
            if args.dev_account:  # development accounts: anvil's mnemonic, or the devnet's eth-tester keys
                kind = "anvil" if _is_anvil(args.blockchain_rpc) else "devnet"
            chain = Chain.connect(args.blockchain_rpc, kind=kind)
        else:
            chain = Chain.embedded()
            print("no --blockchain-rpc: deploying on a throw-away embedded chain", file=sys.stderr)
        if args.dev_account or not args.blockchain_rpc:
            signer = chain.dev_signers()[0]
        else:
            signer = load_signer(key_env=args.key_env, keystore=args.keystore, password_env=args.password_env)
        dep = deploy(chain, signer, params, out=args.out)
    except (ChainError, OSError, ValueError) as e:
        print(f"deploy-contracts: {e}", file=sys.stderr)
        return 1
    print(
        f"SandrunMarket deployed at {dep.market_address} on chain {dep.chain_id} (block {dep.deploy_block})"
    )
    print(f"addresses written to {args.out}")
    return 0


def _is_anvil(url: str) -> bool:
    try:
        from web3 import HTTPProvider, Web3

        return "anvil" in Web3(HTTPProvider(url)).client_version.lower()
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandrun-p2p deploy-contracts", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
