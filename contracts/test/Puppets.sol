// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Test helpers (never deployed outside tests): contracts that act on the market as a client or a node.

/// Forwards any call to the market, with value, and bubbles its revert data up.
contract Puppet {
    address public immutable market;

    constructor(address market_) {
        market = market_;
    }

    function exec(bytes calldata data) external payable returns (bytes memory ret) {
        bool ok;
        (ok, ret) = market.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }
}

/// On receiving ETH, calls the market again with `reenterData`, and records whether that succeeded.
contract ReentrantReceiver is Puppet {
    bytes public reenterData;
    uint256 public attempts;
    uint256 public successes;
    bytes public lastError;
    uint256 public received;

    constructor(address market_) Puppet(market_) {}

    function setReenter(bytes calldata data) external {
        reenterData = data;
    }

    receive() external payable {
        received += msg.value;
        if (reenterData.length == 0) return;
        attempts += 1;
        (bool ok, bytes memory ret) = market.call(reenterData);
        if (ok) successes += 1;
        else lastError = ret;
    }
}

/// Refuses every payment.
contract RevertingReceiver is Puppet {
    constructor(address market_) Puppet(market_) {}

    receive() external payable {
        revert("RevertingReceiver: no payments");
    }
}
