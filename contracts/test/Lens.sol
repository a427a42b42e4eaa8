// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Test helper: reads the market's books in one eth_call (eth-tester spends ~50 ms per call).
interface IMarketBooks {
    struct JobView {
        address client;
        uint256 escrow;
        uint256 deadline;
        uint256 revealDeadline;
        uint8 k;
        uint8 q;
        uint8 commits;
        uint8 revealedMask;
        uint8 state;
        bytes8 seed;
        uint24[5] executors;
    }

    struct NodeView {
        address account;
        bytes32 nodeId;
        uint256 stake;
        uint256 earnings;
        uint256 openJobs;
        uint256 completed;
        uint256 failed;
        uint256 slashed;
        bool unbonding;
        uint256 unbondAt;
        uint256 lockedUntil;
    }

    function getJob(bytes32 jobId) external view returns (JobView memory);
    function getNode(uint24 idx) external view returns (NodeView memory);
    function nodeCount() external view returns (uint24);
    function balances(address) external view returns (uint256);
    function accounts(address) external view returns (uint96 balance, uint40 unlockAt);
    function batchCount() external view returns (uint64);
    function batches(uint64)
        external
        view
        returns (address, uint96 amount, uint24, uint40, uint8 state, uint32, bytes32);
}

contract Lens {
    /// Everything the market owes, and per node (index - 1): its openJobs counter and the open jobs that list it.
    function books(IMarketBooks m, bytes32[] calldata jobs, address[] calldata addrs)
        external
        view
        returns (uint256 owed, uint256[] memory counters, uint256[] memory listed)
    {
        uint24 n = m.nodeCount();
        counters = new uint256[](n);
        listed = new uint256[](n);
        for (uint24 i = 1; i <= n; ++i) {
            IMarketBooks.NodeView memory v = m.getNode(i);
            owed += v.stake + v.earnings;
            counters[i - 1] = v.openJobs;
        }
        for (uint256 i = 0; i < jobs.length; ++i) {
            IMarketBooks.JobView memory j = m.getJob(jobs[i]);
            owed += j.escrow;
            if (j.state == 1) {
                for (uint256 p = 0; p < j.commits; ++p) {
                    listed[j.executors[p] - 1] += 1;
                }
            }
        }
        for (uint256 i = 0; i < addrs.length; ++i) {
            owed += m.balances(addrs[i]);
            (uint96 deposit,) = m.accounts(addrs[i]);
            owed += deposit;
        }
        uint64 b = m.batchCount();
        for (uint64 i = 1; i <= b; ++i) {
            (, uint96 amount,,, uint8 state,,) = m.batches(i);
            if (state == 1) owed += amount;
        }
    }
}
