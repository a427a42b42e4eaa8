// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title SandrunMarket
/// @notice Settlement for the sandrun-p2p compute marketplace. Only money lives here:
///   * a node registry (stake, Ed25519 node id bound to the staking address, unbonding delay,
///     reputation counters);
///   * the per-job path for high-value jobs: escrow, commit/reveal of trace roots, quorum payout,
///     refunds, automatic slashing of silent and dissenting executors;
///   * evidence-based slashing for equivocation (two EIP-712 attestations of the same job with
///     different trace roots, signed by the same staked address);
///   * the batched path for micropayments: client deposit accounts debited by signed cumulative
///     vouchers, settled for many jobs in one transaction with a Merkle root of the results, paid
///     after a challenge window during which an equivocation proof voids the batch.
/// @dev Pull payments only, no loop longer than the job redundancy (at most 5), a timeout path out
///   of every state. No owner, no upgrade, no pause: every parameter is fixed at deployment.
contract SandrunMarket {
    // ------------------------------------------------------------------------------------------
    // Parameters
    // ------------------------------------------------------------------------------------------

    uint256 public constant MAX_REDUNDANCY = 5;
    /// Most jobs one postJobs or commitRevealMany takes (bounds their loops and their gas).
    uint256 public constant MAX_JOBS_PER_CALL = 64;

    /// Minimum stake for a node to commit to jobs or settle batches.
    uint256 public immutable minStake;
    /// Stake taken from an executor that commits and never reveals, or reveals a dissenting root.
    uint256 public immutable faultPenalty;
    /// Seconds between requestUnbond and withdrawStake.
    uint256 public immutable unbondingDelay;
    /// Seconds after a job's deadline during which reveals are accepted.
    uint256 public immutable revealWindow;
    /// Longest accepted job deadline, counted from posting.
    uint256 public immutable maxJobDuration;
    /// Seconds a settled batch waits for evidence before it pays.
    uint256 public immutable challengeWindow;
    /// Seconds between requestDepositWithdrawal and withdrawDeposit (time for executors to settle vouchers).
    uint256 public immutable depositDelay;

    // EIP-712
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("SandrunMarket");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256("Attestation(bytes32 jobId,bytes32 traceRoot)");
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address executor,bytes32 jobId,uint64 seq,uint96 amount,uint96 cumulative)");
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    // secp256k1n / 2: signatures with a higher s are rejected (malleability)
    uint256 private constant _HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ------------------------------------------------------------------------------------------
    // Registry
    // ------------------------------------------------------------------------------------------

    /// Hot record of a node, one storage slot: read by every commit, written by every settlement.
    struct Node {
        uint88 stake;
        uint88 earnings; // withdrawable by the node's account
        uint16 openJobs; // per-job commitments not yet settled
        uint32 completed; // jobs paid (per-job quorum, or jobs in a finalized batch)
        uint24 failed; // silent, dissenting, or in a job without quorum
        uint8 flags; // bit 0: unbonding
    }

    /// Cold record of a node, one storage slot.
    struct NodeInfo {
        address account;
        uint40 unbondAt;
        uint40 lockedUntil; // end of the challenge window of its latest batch
        uint16 slashed;
    }

    uint8 private constant _UNBONDING = 1;

    uint24 public nodeCount;
    mapping(address => uint24) public nodeIndex; // account -> node index (0: none)
    mapping(bytes32 => uint24) public indexOfNodeId; // Ed25519 node id -> node index
    mapping(uint24 => bytes32) public nodeIdOf;
    mapping(uint24 => Node) private _nodes;
    mapping(uint24 => NodeInfo) private _info;

    // ------------------------------------------------------------------------------------------
    // Per-job path
    // ------------------------------------------------------------------------------------------

    uint8 public constant STATE_NONE = 0;
    uint8 public constant STATE_OPEN = 1;
    uint8 public constant STATE_SETTLED = 2; // a quorum agreed and was paid
    uint8 public constant STATE_FAILED = 3; // no quorum, no executor, or cancelled: escrow refunded

    /// Two storage slots. `meta` packs (low bits first):
    ///   deadline u32 | k u8 | q u8 | commits u8 | revealed-mask u8 | state u8 | seed u64 | 5 x executor u24
    struct Job {
        address client;
        uint96 escrow; // while open: the escrow; once closed: the refund the client has not claimed yet
        uint256 meta;
    }

    mapping(bytes32 => Job) private _jobs;
    /// Per position: keccak256(commitment, usage) until revealed, then (trace-root prefix 160 | usage 96).
    mapping(bytes32 => bytes32[5]) private _entries;

    /// One job of a postJobs call: what postJob takes, with its escrow (postJob's msg.value).
    struct JobPost {
        bytes32 jobId;
        uint8 k;
        uint8 q;
        uint32 deadline;
        uint96 escrow;
    }

    /// One job of a commitRevealMany call: what commitReveal takes.
    struct CommitRevealItem {
        bytes32 jobId;
        bytes32 traceRoot;
        bytes32 salt;
        uint96 usage;
    }

    struct Opening {
        uint8 pos;
        bytes32 traceRoot;
        bytes32 salt;
        uint96 usage;
    }

    // ------------------------------------------------------------------------------------------
    // Balances, evidence, batched path
    // ------------------------------------------------------------------------------------------

    /// Pull balances of accounts that are not (or not only) nodes: slashing rewards for reporters and clients.
    mapping(address => uint256) public balances;
    /// keccak256(node index, job id) -> already slashed for equivocation on that job.
    mapping(bytes32 => bool) public equivocationSlashed;

    struct Account {
        uint96 balance;
        uint40 unlockAt; // 0: no withdrawal requested
    }

    mapping(address => Account) public accounts; // client deposit accounts
    struct Channel {
        uint96 paid; // cumulative amount paid from the client's deposit to the executor
        uint64 seq; // sequence number of the last voucher settled
    }

    mapping(address => mapping(address => Channel)) public channels; // client -> executor

    uint8 public constant BATCH_PENDING = 1;
    uint8 public constant BATCH_PAID = 2;
    uint8 public constant BATCH_VOIDED = 3;

    struct Batch {
        address client;
        uint96 amount;
        uint24 executor;
        uint40 releaseAt;
        uint8 state;
        uint32 count;
        bytes32 resultsRoot;
    }

    uint64 public batchCount;
    mapping(uint64 => Batch) public batches;

    // Slashing reasons
    uint8 public constant SLASH_NO_REVEAL = 1;
    uint8 public constant SLASH_DISSENT = 2;
    uint8 public constant SLASH_EQUIVOCATION = 3;

    // ------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------

    event NodeRegistered(uint24 indexed node, address indexed account, bytes32 indexed nodeId, uint256 stake);
    event StakeAdded(uint24 indexed node, uint256 amount, uint256 stake);
    event UnbondRequested(uint24 indexed node, uint256 unbondAt);
    event UnbondCancelled(uint24 indexed node);
    event StakeWithdrawn(uint24 indexed node, address to, uint256 amount);

    event JobPosted(
        bytes32 indexed jobId, address indexed client, uint8 k, uint8 q, uint32 deadline, uint256 escrow, bytes8 seed
    );
    event Committed(bytes32 indexed jobId, uint24 indexed node, uint8 pos, bytes32 commitment, uint96 usage);
    event Revealed(bytes32 indexed jobId, uint8 pos, bytes32 traceRoot);
    /// The job is over. SETTLED: `agreeing` executors revealed roots starting with `rootPrefix` (the full root is
    /// in their Revealed events) and `credited[pos]` was added to the earnings of the executor at each position
    /// (usage, capped at escrow / agreeing, plus a share of the penalties). FAILED: no quorum (agreeing == 0),
    /// nobody committed, or the client cancelled. `refund` is what the client can claim.
    event JobClosed(
        bytes32 indexed jobId, uint8 state, bytes20 rootPrefix, uint8 agreeing, uint256 refund, uint256[] credited
    );
    event RefundClaimed(bytes32 indexed jobId, address to, uint256 amount);

    event Slashed(uint24 indexed node, bytes32 indexed jobId, uint8 reason, uint256 amount, address reporter);
    event Withdrawn(address indexed account, address to, uint256 amount);

    event Deposited(address indexed client, uint256 amount, uint256 balance);
    event DepositWithdrawalRequested(address indexed client, uint256 unlockAt);
    event DepositWithdrawn(address indexed client, address to, uint256 amount);
    event BatchSettled(
        uint64 indexed batchId,
        uint24 indexed node,
        address indexed client,
        uint256 amount,
        uint256 shortfall,
        bytes32 resultsRoot,
        uint32 count,
        uint256 releaseAt
    );
    event BatchPaid(uint64 indexed batchId, uint24 indexed node, uint256 amount);
    event BatchVoided(uint64 indexed batchId, uint24 indexed node, bytes32 jobId, address challenger);

    // ------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------

    error BadParameter(bytes32 what);
    error NotRegistered();
    error AlreadyRegistered();
    error NodeIdTaken();
    error StakeTooLow();
    error Unbonding();
    error NotUnbonding();
    error StillBonded(uint256 unbondAt, uint256 lockedUntil, uint256 openJobs);
    error JobExists();
    error NoSuchJob();
    error JobNotOpen();
    error CommitClosed();
    error AlreadyCommitted();
    error NotLastCommitment(uint256 pos, uint256 k); // commitReveal by the pos-th committer of k
    error RevealNotOpen();
    error RevealClosed();
    error BadPosition(uint256 pos);
    error AlreadyRevealed(uint256 pos);
    error BadOpening(uint256 pos);
    error TooEarly();
    error NotClient();
    error NothingToPay();
    error TransferFailed();
    error Reentrancy();
    error BadSignature();
    error NotEquivocation();
    error AlreadySlashed();
    error NotExecutor();
    error VoucherSpent();
    error NoSuchBatch();
    error BatchNotPending();
    error ChallengeClosed();
    error BadProof();
    error ValueTooLarge();

    // ------------------------------------------------------------------------------------------
    // Construction
    // ------------------------------------------------------------------------------------------

    constructor(
        uint256 minStake_,
        uint256 faultPenalty_,
        uint256 unbondingDelay_,
        uint256 revealWindow_,
        uint256 maxJobDuration_,
        uint256 challengeWindow_,
        uint256 depositDelay_
    ) {
        if (minStake_ == 0 || minStake_ > type(uint88).max) revert BadParameter("minStake");
        if (faultPenalty_ == 0 || faultPenalty_ > minStake_) revert BadParameter("faultPenalty");
        if (revealWindow_ == 0 || revealWindow_ > 365 days) revert BadParameter("revealWindow");
        if (maxJobDuration_ == 0 || maxJobDuration_ > 365 days) revert BadParameter("maxJobDuration");
        // a node that unbonds must stay slashable for any job it could still be part of
        if (unbondingDelay_ < maxJobDuration_ + revealWindow_ || unbondingDelay_ > 730 days) {
            revert BadParameter("unbondingDelay");
        }
        if (challengeWindow_ == 0 || challengeWindow_ > 365 days) revert BadParameter("challengeWindow");
        if (depositDelay_ == 0 || depositDelay_ > 365 days) revert BadParameter("depositDelay");
        minStake = minStake_;
        faultPenalty = faultPenalty_;
        unbondingDelay = unbondingDelay_;
        revealWindow = revealWindow_;
        maxJobDuration = maxJobDuration_;
        challengeWindow = challengeWindow_;
        depositDelay = depositDelay_;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    // ------------------------------------------------------------------------------------------
    // Reentrancy guard (transient storage, EIP-1153)
    // ------------------------------------------------------------------------------------------

    uint256 private constant _LOCK_SLOT = uint256(keccak256("sandrun.market.lock"));

    modifier nonReentrant() {
        uint256 slot = _LOCK_SLOT;
        uint256 locked;
        assembly {
            locked := tload(slot)
        }
        if (locked != 0) revert Reentrancy();
        assembly {
            tstore(slot, 1)
        }
        _;
        assembly {
            tstore(slot, 0)
        }
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ------------------------------------------------------------------------------------------
    // Registry
    // ------------------------------------------------------------------------------------------

    /// @notice Stake and bind `nodeId` (the node's Ed25519 public key) to msg.sender, first come first served.
    /// @dev The binding is not proven on chain (Ed25519 verification costs ~1M gas): peers accept a node only
    ///   when its advert, signed by the Ed25519 key, names this account. A squatter locks a stake and gains
    ///   nothing; the victim can pick a new key.
    function register(bytes32 nodeId) external payable returns (uint24 idx) {
        if (nodeIndex[msg.sender] != 0) revert AlreadyRegistered();
        if (nodeId == bytes32(0) || indexOfNodeId[nodeId] != 0) revert NodeIdTaken();
        if (msg.value < minStake) revert StakeTooLow();
        if (msg.value > type(uint88).max) revert ValueTooLarge();
        idx = nodeCount + 1; // checked: reverts past 2^24 - 1 nodes
        nodeCount = idx;
        nodeIndex[msg.sender] = idx;
        indexOfNodeId[nodeId] = idx;
        nodeIdOf[idx] = nodeId;
        _nodes[idx].stake = uint88(msg.value);
        _info[idx].account = msg.sender;
        emit NodeRegistered(idx, msg.sender, nodeId, msg.value);
    }

    function addStake() external payable {
        uint24 idx = _nodeOf(msg.sender);
        Node storage n = _nodes[idx];
        uint256 stake = uint256(n.stake) + msg.value;
        if (stake > type(uint88).max) revert ValueTooLarge();
        n.stake = uint88(stake);
        emit StakeAdded(idx, msg.value, stake);
    }

    /// @notice Stop taking jobs; the stake can be withdrawn after `unbondingDelay`, once no job is open.
    function requestUnbond() external {
        uint24 idx = _nodeOf(msg.sender);
        Node storage n = _nodes[idx];
        if (n.flags & _UNBONDING != 0) revert Unbonding();
        n.flags |= _UNBONDING;
        uint256 unbondAt = block.timestamp + unbondingDelay;
        _info[idx].unbondAt = uint40(unbondAt);
        emit UnbondRequested(idx, unbondAt);
    }

    function cancelUnbond() external {
        uint24 idx = _nodeOf(msg.sender);
        Node storage n = _nodes[idx];
        if (n.flags & _UNBONDING == 0) revert NotUnbonding();
        n.flags &= ~_UNBONDING;
        _info[idx].unbondAt = 0;
        emit UnbondCancelled(idx);
    }

    /// @notice Withdraw the whole stake: after the unbonding delay, with no open job and no batch in its
    ///   challenge window. The node stays registered (id binding and reputation) with zero stake.
    function withdrawStake(address to) external nonReentrant {
        uint24 idx = _nodeOf(msg.sender);
        Node storage n = _nodes[idx];
        NodeInfo storage info = _info[idx];
        if (n.flags & _UNBONDING == 0) revert NotUnbonding();
        if (block.timestamp < info.unbondAt || block.timestamp < info.lockedUntil || n.openJobs != 0) {
            revert StillBonded(info.unbondAt, info.lockedUntil, n.openJobs);
        }
        uint256 amount = n.stake;
        if (amount == 0) revert NothingToPay();
        n.stake = 0;
        emit StakeWithdrawn(idx, to, amount);
        _send(to, amount);
    }

    function _nodeOf(address account) private view returns (uint24 idx) {
        idx = nodeIndex[account];
        if (idx == 0) revert NotRegistered();
    }

    // ------------------------------------------------------------------------------------------
    // Per-job path
    // ------------------------------------------------------------------------------------------

    /// @notice Escrow msg.value for job `jobId`: k executors commit before `deadline`, q of them must agree.
    ///   Any address may post; a fresh address per job is normal. The ranking seed is the previous block's
    ///   hash (first 8 bytes), which the client cannot choose.
    function postJob(bytes32 jobId, uint8 k, uint8 q, uint32 deadline) external payable {
        _postJob(jobId, k, q, deadline, msg.value, bytes8(blockhash(block.number - 1)));
    }

    /// @notice postJob for several jobs in one transaction (at most MAX_JOBS_PER_CALL): each gets its own escrow
    ///   and JobPosted, all the same seed; msg.value must be the sum of the escrows. All or nothing: one bad
    ///   job reverts the whole call with that job's error.
    function postJobs(JobPost[] calldata posts) external payable {
        uint256 n = posts.length;
        if (n == 0 || n > MAX_JOBS_PER_CALL) revert BadParameter("batch");
        bytes8 seed = bytes8(blockhash(block.number - 1));
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            JobPost calldata p = posts[i];
            total += p.escrow;
            _postJob(p.jobId, p.k, p.q, p.deadline, p.escrow, seed);
        }
        if (total != msg.value) revert BadParameter("escrow");
    }

    function _postJob(bytes32 jobId, uint8 k, uint8 q, uint32 deadline, uint256 escrow, bytes8 seed) private {
        if (k == 0 || k > MAX_REDUNDANCY) revert BadParameter("k");
        if (2 * uint256(q) <= k || q > k) revert BadParameter("q");
        if (deadline <= block.timestamp || deadline > block.timestamp + maxJobDuration) {
            revert BadParameter("deadline");
        }
        if (escrow == 0) revert BadParameter("escrow");
        if (escrow > type(uint88).max) revert ValueTooLarge();
        Job storage j = _jobs[jobId];
        if (j.client != address(0)) revert JobExists();
        j.client = msg.sender;
        j.escrow = uint96(escrow);
        j.meta = uint256(deadline) | (uint256(k) << 32) | (uint256(q) << 40) | (uint256(STATE_OPEN) << 64)
            | (uint256(uint64(seed)) << 72);
        emit JobPosted(jobId, msg.sender, k, q, deadline, escrow, seed);
    }

    /// @notice Cancel a job nobody has committed to yet; the escrow becomes claimable with claimRefund.
    function cancelJob(bytes32 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.client != msg.sender) revert NotClient();
        uint256 meta = j.meta;
        if (_state(meta) != STATE_OPEN) revert JobNotOpen();
        if (_commits(meta) != 0) revert CommitClosed();
        j.meta = _withState(meta, STATE_FAILED);
        emit JobClosed(jobId, STATE_FAILED, bytes20(0), 0, j.escrow, new uint256[](0));
    }

    /// @notice Commit to a result: `commitment` = sha256(jobId || nodeId || traceRoot || salt), and the price
    ///   the executor claims for its usage (paid at most escrow / agreeing executors).
    function commit(bytes32 jobId, bytes32 commitment, uint96 usage) external {
        (Job storage j, uint256 meta, uint256 pos, uint24 idx) = _takePosition(jobId);
        j.meta = meta;
        _entries[jobId][pos] = keccak256(abi.encodePacked(commitment, usage));
        emit Committed(jobId, idx, uint8(pos), commitment, usage);
    }

    /// @notice Commit and reveal in one transaction when this commitment is the k-th (it opens the reveals, so
    ///   nobody is left who could copy the result): the commitment is computed here from the opening, both
    ///   `Committed` and `Revealed` are emitted, and the job settles when every position is then revealed
    ///   (always for k = 1). Reverts with `NotLastCommitment` otherwise: commit, then reveal once the others
    ///   have committed.
    function commitReveal(bytes32 jobId, bytes32 traceRoot, bytes32 salt, uint96 usage) external {
        _commitReveal(jobId, traceRoot, salt, usage);
    }

    /// @notice commitReveal for several jobs in one transaction (at most MAX_JOBS_PER_CALL; an executor sends
    ///   those that are ready together). All or nothing: one job refused reverts the call with its error.
    function commitRevealMany(CommitRevealItem[] calldata items) external {
        uint256 n = items.length;
        if (n == 0 || n > MAX_JOBS_PER_CALL) revert BadParameter("batch");
        for (uint256 i = 0; i < n; ++i) {
            CommitRevealItem calldata it = items[i];
            _commitReveal(it.jobId, it.traceRoot, it.salt, it.usage);
        }
    }

    function _commitReveal(bytes32 jobId, bytes32 traceRoot, bytes32 salt, uint96 usage) private {
        (Job storage j, uint256 meta, uint256 pos, uint24 idx) = _takePosition(jobId);
        if (pos + 1 != _k(meta)) revert NotLastCommitment(pos, _k(meta));
        bytes32 commitment = sha256(abi.encodePacked(jobId, nodeIdOf[idx], traceRoot, salt));
        emit Committed(jobId, idx, uint8(pos), commitment, usage);
        bytes32[5] memory vals = [bytes32(0), 0, 0, 0, 0];
        _open(jobId, pos, traceRoot, usage, vals);
        _revealed(jobId, j, meta, vals, uint256(1) << pos);
    }

    /// Checks and effects of a commitment by msg.sender, except its entry: the caller writes the job's new
    /// `meta` (one more commitment, this node at position `pos`) or passes it on to the reveal.
    function _takePosition(bytes32 jobId)
        private
        returns (Job storage j, uint256 meta, uint256 pos, uint24 idx)
    {
        idx = _nodeOf(msg.sender);
        Node storage n = _nodes[idx];
        if (n.stake < minStake) revert StakeTooLow();
        if (n.flags & _UNBONDING != 0) revert Unbonding();
        j = _jobs[jobId];
        meta = j.meta;
        if (_state(meta) != STATE_OPEN) revert JobNotOpen();
        pos = _commits(meta);
        if (pos >= _k(meta) || block.timestamp > _deadline(meta)) revert CommitClosed();
        for (uint256 i = 0; i < pos; ++i) {
            if (_exec(meta, i) == idx) revert AlreadyCommitted();
        }
        n.openJobs += 1;
        meta = meta + (uint256(1) << 48) + (uint256(idx) << (136 + 24 * pos));
    }

    /// @notice Open one or more commitments. Anyone may submit openings (an executor usually submits all
    ///   of them, collected from gossip, in one transaction); each one is checked against the commitment of
    ///   its position, so only what the executor committed to can be revealed; positions already revealed are
    ///   skipped (at least one opening must be new). Reveals open when all k have
    ///   committed or the deadline passed, and close `revealWindow` after the deadline. When every committed
    ///   position is revealed, the job settles in the same call.
    function reveal(bytes32 jobId, Opening[] calldata openings) external {
        Job storage j = _jobs[jobId];
        uint256 meta = j.meta;
        if (_state(meta) != STATE_OPEN) revert JobNotOpen();
        uint256 commits = _commits(meta);
        uint256 deadline = _deadline(meta);
        if (commits < _k(meta) && block.timestamp <= deadline) revert RevealNotOpen();
        if (block.timestamp > deadline + revealWindow) revert RevealClosed();
        uint256 mask = _mask(meta);
        uint256 fresh = 0;
        bytes32[5] memory vals = [bytes32(0), 0, 0, 0, 0];
        bytes32[5] storage entries = _entries[jobId];
        for (uint256 i = 0; i < openings.length; ++i) {
            Opening calldata o = openings[i];
            uint256 pos = o.pos;
            if (pos >= commits) revert BadPosition(pos);
            uint256 bit = uint256(1) << pos;
            // skip what is already revealed: a front-run partial reveal cannot make a batch of openings fail
            if ((mask | fresh) & bit != 0) continue;
            bytes32 c = sha256(abi.encodePacked(jobId, nodeIdOf[_exec(meta, pos)], o.traceRoot, o.salt));
            if (keccak256(abi.encodePacked(c, o.usage)) != entries[pos]) revert BadOpening(pos);
            fresh |= bit;
            _open(jobId, pos, o.traceRoot, o.usage, vals);
        }
        if (fresh == 0) revert AlreadyRevealed(openings.length == 0 ? 0 : openings[0].pos);
        _revealed(jobId, j, meta, vals, fresh);
    }

    /// Record a checked opening of position `pos` in `vals` (trace-root prefix 160 | usage 96).
    function _open(bytes32 jobId, uint256 pos, bytes32 traceRoot, uint96 usage, bytes32[5] memory vals) private {
        vals[pos] = bytes32((uint256(traceRoot) & ~uint256(type(uint96).max)) | uint256(usage));
        emit Revealed(jobId, uint8(pos), traceRoot);
    }

    /// Mark the `fresh` positions (opened in `vals`) revealed; settle when every committed position is, else
    /// store their entries and the job's `meta`.
    function _revealed(bytes32 jobId, Job storage j, uint256 meta, bytes32[5] memory vals, uint256 fresh) private {
        uint256 commits = _commits(meta);
        meta |= fresh << 56;
        if (_mask(meta) == (uint256(1) << commits) - 1) {
            _settle(jobId, j, meta, vals, fresh);
        } else {
            bytes32[5] storage entries = _entries[jobId];
            for (uint256 pos = 0; pos < commits; ++pos) {
                if (fresh & (uint256(1) << pos) != 0) entries[pos] = vals[pos];
            }
            j.meta = meta;
        }
    }

    /// @notice Close a job whose time is up: no commitment by the deadline (refund), or the reveal window
    ///   has ended (settle with what was revealed; silent executors are slashed).
    function finalize(bytes32 jobId) external {
        Job storage j = _jobs[jobId];
        uint256 meta = j.meta;
        if (_state(meta) != STATE_OPEN) revert JobNotOpen();
        uint256 deadline = _deadline(meta);
        if (_commits(meta) == 0) {
            if (block.timestamp <= deadline) revert TooEarly();
            j.meta = _withState(meta, STATE_FAILED);
            emit JobClosed(jobId, STATE_FAILED, bytes20(0), 0, j.escrow, new uint256[](0));
            return;
        }
        if (block.timestamp <= deadline + revealWindow) revert TooEarly();
        bytes32[5] memory vals = [bytes32(0), 0, 0, 0, 0];
        _settle(jobId, j, meta, vals, 0);
    }

    /// @notice Send the refund of a closed job to `to`. Only the client that posted it may claim.
    function claimRefund(bytes32 jobId, address to) external nonReentrant {
        Job storage j = _jobs[jobId];
        if (j.client != msg.sender) revert NotClient();
        uint256 st = _state(j.meta);
        if (st != STATE_SETTLED && st != STATE_FAILED) revert JobNotOpen();
        uint256 amount = j.escrow;
        if (amount == 0) revert NothingToPay();
        j.escrow = 0;
        emit RefundClaimed(jobId, to, amount);
        _send(to, amount);
    }

    struct Tally {
        uint256 commits;
        uint256 mask;
        uint256 agreeing; // size of the largest group of equal roots
        bytes32 winner; // its entry
        bool quorum;
        uint256 escrow;
        uint256 cap;
        uint256 paid; // usage paid to the agreeing executors, before the penalty bonus
        uint256 pool; // penalties collected
    }

    function _settle(bytes32 jobId, Job storage j, uint256 meta, bytes32[5] memory vals, uint256 fresh) private {
        Tally memory t = Tally(0, 0, 0, 0, false, 0, 0, 0, 0);
        t.commits = _commits(meta);
        t.mask = _mask(meta);
        t.escrow = j.escrow;
        bytes32[5] storage entries = _entries[jobId];
        for (uint256 pos = 0; pos < t.commits; ++pos) {
            uint256 bit = uint256(1) << pos;
            if (t.mask & bit != 0 && fresh & bit == 0) vals[pos] = entries[pos];
            entries[pos] = 0; // no longer needed: the storage refund pays for most of the settlement
        }
        // the largest group of equal trace roots (160-bit prefixes); q > k/2 makes a quorum unique
        for (uint256 a = 0; a < t.commits; ++a) {
            if (t.mask & (uint256(1) << a) == 0) continue;
            uint256 same = 0;
            for (uint256 b = 0; b < t.commits; ++b) {
                if (t.mask & (uint256(1) << b) != 0 && _prefix(vals[a]) == _prefix(vals[b])) ++same;
            }
            if (same > t.agreeing) {
                t.agreeing = same;
                t.winner = vals[a];
            }
        }
        t.quorum = t.agreeing >= _q(meta);
        if (t.quorum) t.cap = t.escrow / t.agreeing;

        // the silent, and (when there is a quorum) the dissenting, lose faultPenalty of their stake
        uint256 agreedMask = 0;
        uint256[] memory credited = new uint256[](t.commits);
        for (uint256 pos = 0; pos < t.commits; ++pos) {
            uint24 idx = _exec(meta, pos);
            Node storage n = _nodes[idx];
            bool revealed = t.mask & (uint256(1) << pos) != 0;
            if (revealed && t.quorum && _prefix(vals[pos]) == _prefix(t.winner)) {
                agreedMask |= uint256(1) << pos;
                uint256 usage = uint256(vals[pos]) & type(uint96).max;
                credited[pos] = usage < t.cap ? usage : t.cap;
                t.paid += credited[pos];
                continue;
            }
            n.openJobs -= 1;
            n.failed += 1;
            if (!revealed || t.quorum) {
                uint256 penalty = n.stake < faultPenalty ? n.stake : faultPenalty;
                n.stake -= uint88(penalty);
                t.pool += penalty;
                _info[idx].slashed += 1;
                emit Slashed(idx, jobId, revealed ? SLASH_DISSENT : SLASH_NO_REVEAL, penalty, address(0));
            }
        }
        // penalties go to the agreeing executors, or back to the client when there is no quorum
        uint256 bonus = t.quorum ? t.pool / t.agreeing : 0;
        for (uint256 pos = 0; pos < t.commits; ++pos) {
            if (agreedMask & (uint256(1) << pos) == 0) continue;
            Node storage n = _nodes[_exec(meta, pos)];
            n.openJobs -= 1;
            n.completed += 1;
            credited[pos] += bonus;
            n.earnings += uint88(credited[pos]);
        }
        uint256 refund = t.escrow - t.paid + t.pool - bonus * (t.quorum ? t.agreeing : 0);
        uint8 st = t.quorum ? STATE_SETTLED : STATE_FAILED;
        j.escrow = uint96(refund);
        j.meta = _withState(meta, st);
        emit JobClosed(jobId, st, t.quorum ? _prefix(t.winner) : bytes20(0), uint8(t.quorum ? t.agreeing : 0), refund, credited);
    }

    // ------------------------------------------------------------------------------------------
    // Withdrawals
    // ------------------------------------------------------------------------------------------

    /// @notice Send msg.sender's earnings (as a node) and pull balance (rewards) to `to`.
    function withdraw(address to) external nonReentrant {
        uint256 amount = balances[msg.sender];
        balances[msg.sender] = 0;
        uint24 idx = nodeIndex[msg.sender];
        if (idx != 0) {
            Node storage n = _nodes[idx];
            amount += n.earnings;
            n.earnings = 0;
        }
        if (amount == 0) revert NothingToPay();
        emit Withdrawn(msg.sender, to, amount);
        _send(to, amount);
    }

    // ------------------------------------------------------------------------------------------
    // Equivocation evidence
    // ------------------------------------------------------------------------------------------

    /// @notice Slash a node that signed two attestations of the same per-job-path job with different trace
    ///   roots. Its whole stake goes half to the reporter and half to the job's client (all to the client when
    ///   the node reports itself, so self-reporting is never a way out). Equivocation on a batched job is
    ///   proven against the batch instead (challengeBatch).
    function slashEquivocation(bytes32 jobId, bytes32 rootA, bytes calldata sigA, bytes32 rootB, bytes calldata sigB)
        external
    {
        address client = _jobs[jobId].client;
        if (client == address(0)) revert NoSuchJob();
        if (rootA == rootB) revert NotEquivocation();
        address a = _recover(attestationDigest(jobId, rootA), sigA);
        address b = _recover(attestationDigest(jobId, rootB), sigB);
        if (a != b) revert NotEquivocation();
        uint24 idx = _nodeOf(a);
        _slashEquivocation(idx, a, jobId, client, false);
    }

    function _slashEquivocation(uint24 idx, address offender, bytes32 jobId, address client, bool voided)
        private
        returns (uint256 amount)
    {
        bytes32 key = keccak256(abi.encodePacked(idx, jobId));
        if (equivocationSlashed[key]) {
            if (voided) return 0; // the batch is still voided; the stake was already taken
            revert AlreadySlashed();
        }
        Node storage n = _nodes[idx];
        amount = n.stake;
        if (amount == 0 && !voided) revert NothingToPay();
        equivocationSlashed[key] = true;
        n.stake = 0;
        _info[idx].slashed += 1;
        if (msg.sender == offender) {
            balances[client] += amount;
        } else {
            uint256 half = amount / 2;
            balances[client] += half;
            balances[msg.sender] += amount - half;
        }
        emit Slashed(idx, jobId, SLASH_EQUIVOCATION, amount, msg.sender);
    }

    // ------------------------------------------------------------------------------------------
    // Batched path
    // ------------------------------------------------------------------------------------------

    function deposit() external payable {
        Account storage a = accounts[msg.sender];
        uint256 balance = uint256(a.balance) + msg.value;
        if (balance > type(uint88).max) revert ValueTooLarge();
        a.balance = uint96(balance);
        emit Deposited(msg.sender, msg.value, balance);
    }

    /// @notice Start the delay after which the whole deposit can be withdrawn. Executors holding vouchers
    ///   settle them meanwhile.
    function requestDepositWithdrawal() external {
        uint256 unlockAt = block.timestamp + depositDelay;
        accounts[msg.sender].unlockAt = uint40(unlockAt);
        emit DepositWithdrawalRequested(msg.sender, unlockAt);
    }

    function withdrawDeposit(address to) external nonReentrant {
        Account storage a = accounts[msg.sender];
        if (a.unlockAt == 0 || block.timestamp < a.unlockAt) revert TooEarly();
        uint256 amount = a.balance;
        a.balance = 0;
        a.unlockAt = 0;
        if (amount == 0) revert NothingToPay();
        emit DepositWithdrawn(msg.sender, to, amount);
        _send(to, amount);
    }

    /// @notice Settle every job a client owes msg.sender for, with the client's latest voucher (a cumulative
    ///   amount and a sequence number the client increments per job). `resultsRoot` is the Merkle root of the (jobId, traceRoot) results the batch covers; they
    ///   stand as msg.sender's attestations. The amount is paid after `challengeWindow` unless someone proves
    ///   that one of those results contradicts another attestation of msg.sender (challengeBatch).
    function settleBatch(
        address client,
        bytes32 jobId,
        uint64 seq,
        uint96 amount,
        uint96 cumulative,
        bytes calldata clientSig,
        bytes32 resultsRoot
    ) external returns (uint64 batchId) {
        uint24 idx = _nodeOf(msg.sender);
        if (_nodes[idx].stake < minStake) revert StakeTooLow();
        bytes32 digest = voucherDigest(msg.sender, jobId, seq, amount, cumulative);
        if (_recover(digest, clientSig) != client) revert BadSignature();
        Channel storage ch = channels[client][msg.sender];
        uint256 paid = ch.paid;
        uint256 lastSeq = ch.seq;
        if (cumulative <= paid || seq < lastSeq) revert VoucherSpent();
        uint256 jobs = seq - lastSeq; // jobs covered, as numbered by the client
        uint32 count = jobs > type(uint32).max ? type(uint32).max : uint32(jobs);
        uint256 due = cumulative - paid;
        Account storage a = accounts[client];
        uint256 available = a.balance;
        uint256 take = due < available ? due : available;
        if (take == 0) revert NothingToPay();
        a.balance = uint96(available - take);
        ch.paid = uint96(paid + take);
        ch.seq = seq;
        batchId = batchCount + 1;
        batchCount = batchId;
        uint256 releaseAt = block.timestamp + challengeWindow;
        batches[batchId] = Batch({
            client: client,
            amount: uint96(take),
            executor: idx,
            releaseAt: uint40(releaseAt),
            state: BATCH_PENDING,
            count: count,
            resultsRoot: resultsRoot
        });
        _info[idx].lockedUntil = uint40(releaseAt);
        emit BatchSettled(batchId, idx, client, take, due - take, resultsRoot, count, releaseAt);
    }

    /// @notice Pay a batch whose challenge window has passed. Anyone may call.
    function finalizeBatch(uint64 batchId) external {
        Batch storage b = batches[batchId];
        if (b.state != BATCH_PENDING) revert BatchNotPending();
        if (block.timestamp < b.releaseAt) revert TooEarly();
        b.state = BATCH_PAID;
        Node storage n = _nodes[b.executor];
        uint256 amount = b.amount;
        n.earnings += uint88(amount);
        uint256 completed = uint256(n.completed) + b.count;
        n.completed = completed > type(uint32).max ? type(uint32).max : uint32(completed);
        emit BatchPaid(batchId, b.executor, amount);
    }

    /// @notice Void a pending batch: the leaf (jobId, leafRoot) is in its results root and the executor also
    ///   signed an attestation of jobId with another root. The batch amount returns to the client's deposit,
    ///   the executor's stake is slashed (half to the challenger, half to the client).
    function challengeBatch(
        uint64 batchId,
        bytes32 jobId,
        bytes32 leafRoot,
        bytes32[] calldata proof,
        bytes32 otherRoot,
        bytes calldata sig
    ) external {
        Batch storage b = batches[batchId];
        if (b.state != BATCH_PENDING) revert BatchNotPending();
        if (block.timestamp >= b.releaseAt) revert ChallengeClosed();
        if (!_verifyProof(proof, b.resultsRoot, resultLeaf(jobId, leafRoot))) revert BadProof();
        if (otherRoot == leafRoot) revert NotEquivocation();
        uint24 idx = b.executor;
        address offender = _info[idx].account;
        if (_recover(attestationDigest(jobId, otherRoot), sig) != offender) revert NotEquivocation();
        b.state = BATCH_VOIDED;
        address client = b.client;
        Account storage a = accounts[client];
        a.balance += b.amount;
        emit BatchVoided(batchId, idx, jobId, msg.sender);
        _slashEquivocation(idx, offender, jobId, client, true);
    }

    // ------------------------------------------------------------------------------------------
    // Hashing and signatures
    // ------------------------------------------------------------------------------------------

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }

    function attestationDigest(bytes32 jobId, bytes32 traceRoot) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(ATTESTATION_TYPEHASH, jobId, traceRoot));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function voucherDigest(address executor, bytes32 jobId, uint64 seq, uint96 amount, uint96 cumulative)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, executor, jobId, seq, amount, cumulative));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// Leaf of a batch results tree: double-hashed so no inner node can pass for a leaf.
    function resultLeaf(bytes32 jobId, bytes32 traceRoot) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(jobId, traceRoot))));
    }

    /// Sorted-pair Merkle proof (inner node = keccak256 of the two children, smaller first).
    function _verifyProof(bytes32[] calldata proof, bytes32 root, bytes32 leaf) private pure returns (bool) {
        bytes32 h = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            bytes32 p = proof[i];
            h = h < p ? keccak256(abi.encodePacked(h, p)) : keccak256(abi.encodePacked(p, h));
        }
        return h == root;
    }

    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address signer) {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > _HALF_N || (v != 27 && v != 28)) revert BadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
    }

    // ------------------------------------------------------------------------------------------
    // Packing helpers
    // ------------------------------------------------------------------------------------------

    function _deadline(uint256 meta) private pure returns (uint256) {
        return meta & 0xffffffff;
    }

    function _k(uint256 meta) private pure returns (uint256) {
        return (meta >> 32) & 0xff;
    }

    function _q(uint256 meta) private pure returns (uint256) {
        return (meta >> 40) & 0xff;
    }

    function _commits(uint256 meta) private pure returns (uint256) {
        return (meta >> 48) & 0xff;
    }

    function _mask(uint256 meta) private pure returns (uint256) {
        return (meta >> 56) & 0xff;
    }

    function _state(uint256 meta) private pure returns (uint8) {
        return uint8(meta >> 64);
    }

    function _withState(uint256 meta, uint8 st) private pure returns (uint256) {
        return (meta & ~(uint256(0xff) << 64)) | (uint256(st) << 64);
    }

    function _exec(uint256 meta, uint256 pos) private pure returns (uint24) {
        return uint24(meta >> (136 + 24 * pos));
    }

    function _prefix(bytes32 entry) private pure returns (bytes20) {
        return bytes20(entry);
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

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

    function getJob(bytes32 jobId) external view returns (JobView memory v) {
        Job storage j = _jobs[jobId];
        uint256 meta = j.meta;
        if (j.client == address(0)) revert NoSuchJob();
        v.client = j.client;
        v.escrow = j.escrow;
        v.deadline = _deadline(meta);
        v.revealDeadline = v.deadline + revealWindow;
        v.k = uint8(_k(meta));
        v.q = uint8(_q(meta));
        v.commits = uint8(_commits(meta));
        v.revealedMask = uint8(_mask(meta));
        v.state = _state(meta);
        v.seed = bytes8(uint64(meta >> 72));
        for (uint256 i = 0; i < v.commits; ++i) {
            v.executors[i] = _exec(meta, i);
        }
    }

    /// The ranking seed recorded when the job was posted.
    function jobSeed(bytes32 jobId) external view returns (bytes8) {
        if (_jobs[jobId].client == address(0)) revert NoSuchJob();
        return bytes8(uint64(_jobs[jobId].meta >> 72));
    }

    /// The stored entry of a position: keccak256(commitment, usage) before its reveal is stored,
    /// then (trace-root prefix | usage).
    function entryOf(bytes32 jobId, uint8 pos) external view returns (bytes32) {
        return _entries[jobId][pos];
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

    function getNode(uint24 idx) public view returns (NodeView memory v) {
        if (idx == 0 || idx > nodeCount) revert NotRegistered();
        Node storage n = _nodes[idx];
        NodeInfo storage info = _info[idx];
        v.account = info.account;
        v.nodeId = nodeIdOf[idx];
        v.stake = n.stake;
        v.earnings = n.earnings;
        v.openJobs = n.openJobs;
        v.completed = n.completed;
        v.failed = n.failed;
        v.slashed = info.slashed;
        v.unbonding = n.flags & _UNBONDING != 0;
        v.unbondAt = info.unbondAt;
        v.lockedUntil = info.lockedUntil;
    }

    function getNodeByAccount(address account) external view returns (uint24 idx, NodeView memory v) {
        idx = _nodeOf(account);
        v = getNode(idx);
    }

    /// True when the account can commit to a new job now.
    function isEligible(address account) external view returns (bool) {
        uint24 idx = nodeIndex[account];
        if (idx == 0) return false;
        Node storage n = _nodes[idx];
        return n.stake >= minStake && n.flags & _UNBONDING == 0;
    }
}
