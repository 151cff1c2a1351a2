// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Tributary epoch settlement
/// @notice Operators anchor one payout root and one attribution root per epoch (strictly increasing);
/// contributors (or anyone on their behalf) claim their payout leaf once, with a Merkle proof.
/// @dev Leaves are OpenZeppelin StandardMerkleTree leaves:
///   payout      = keccak256(bytes.concat(keccak256(abi.encode(uint64 epoch, uint256 index, address account, uint256 amount))))
///   attribution = keccak256(bytes.concat(keccak256(abi.encode(uint64 epoch, bytes32 contributionId, address contributor, int256 influence1e18))))
/// Storage is kept lean for gas: one slot per epoch for the payout root, one more only when a challenge
/// window is configured, a claimed bitmap, and one global slot. The attribution root, the total and
/// the dataset version live in the `Anchored` event (anyone can read them from the logs).
contract TributarySettlement is AccessControl {
    using SafeERC20 for IERC20;

    /// @notice May anchor epochs.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice May veto an epoch during its challenge window.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    uint64 private constant VETOED = type(uint64).max;

    /// @notice The reward token paid by claims.
    IERC20 public immutable token;
    /// @notice Seconds between anchoring and claimability (0 = claimable at once, no veto).
    uint64 public immutable challengeWindow;

    /// @notice The smallest epoch that may be anchored next (epochs are strictly increasing).
    uint64 public nextEpoch;
    /// @notice Tokens deposited ahead of time and not yet assigned to an epoch.
    uint128 public credit;

    struct EpochMeta {
        uint64 claimableAt; // VETOED once vetoed
        uint128 total;
    }

    mapping(uint64 epoch => bytes32 root) private _payoutRoots;
    mapping(uint64 epoch => EpochMeta) private _meta; // only written when challengeWindow != 0
    mapping(uint64 epoch => mapping(uint256 word => uint256 bits)) private _claimed;

    /// @notice Epoch `epoch` was anchored.
    event Anchored(
        uint64 indexed epoch,
        bytes32 payoutRoot,
        bytes32 attributionRoot,
        uint256 total,
        uint256 datasetVersion,
        uint64 claimableAt
    );
    /// @notice A guardian vetoed epoch `epoch`; its total went back to `credit`.
    event Vetoed(uint64 indexed epoch, address indexed guardian);
    /// @notice Leaf `index` of epoch `epoch` paid `amount` to `account`.
    event Claimed(uint64 indexed epoch, uint256 index, address indexed account, uint256 amount);
    /// @notice `amount` tokens were deposited as credit by `from`.
    event Deposited(address indexed from, uint256 amount);

    error EpochNotIncreasing(uint64 epoch, uint64 nextEpoch);
    error ZeroRoot();
    error TotalTooLarge(uint256 total);
    error EpochNotAnchored(uint64 epoch);
    error EpochVetoed(uint64 epoch);
    error ChallengeWindowOpen(uint64 epoch, uint64 claimableAt);
    error ChallengeWindowClosed(uint64 epoch);
    error NoChallengeWindow();
    error AlreadyClaimed(uint64 epoch, uint256 index);
    error InvalidProof(uint64 epoch, uint256 index);

    constructor(IERC20 token_, uint64 challengeWindow_, address admin, address operator, address guardian) {
        token = token_;
        challengeWindow = challengeWindow_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        if (guardian != address(0)) _grantRole(GUARDIAN_ROLE, guardian);
    }

    /// @notice Anchor epoch `epoch`: its payout root (claims verify against it), its attribution root,
    /// the `total` paid by the payout tree and the dataset (Delta) version it was computed from.
    /// `total` is taken from `credit` first and the rest pulled from the operator (needs an allowance).
    function anchor(uint64 epoch, bytes32 payoutRoot, bytes32 attributionRoot, uint256 total, uint256 datasetVersion)
        external
        onlyRole(OPERATOR_ROLE)
    {
        uint64 next = nextEpoch;
        if (epoch < next) revert EpochNotIncreasing(epoch, next);
        if (payoutRoot == bytes32(0)) revert ZeroRoot();
        if (total > type(uint128).max) revert TotalTooLarge(total);
        uint128 available = credit;
        uint256 pull;
        if (available >= total) {
            available -= uint128(total);
        } else {
            pull = total - available;
            available = 0;
        }
        nextEpoch = epoch + 1;
        credit = available;
        _payoutRoots[epoch] = payoutRoot;
        uint64 claimableAt = uint64(block.timestamp);
        if (challengeWindow != 0) {
            claimableAt += challengeWindow;
            _meta[epoch] = EpochMeta(claimableAt, uint128(total));
        }
        emit Anchored(epoch, payoutRoot, attributionRoot, total, datasetVersion, claimableAt);
        if (pull != 0) token.safeTransferFrom(msg.sender, address(this), pull);
    }

    /// @notice Veto epoch `epoch` while its challenge window is open: it never becomes claimable and
    /// its total returns to `credit` (to fund a corrected payout in a later epoch).
    function veto(uint64 epoch) external onlyRole(GUARDIAN_ROLE) {
        if (challengeWindow == 0) revert NoChallengeWindow();
        if (_payoutRoots[epoch] == bytes32(0)) revert EpochNotAnchored(epoch);
        EpochMeta memory m = _meta[epoch];
        if (m.claimableAt == VETOED) revert EpochVetoed(epoch);
        if (block.timestamp >= m.claimableAt) revert ChallengeWindowClosed(epoch);
        _meta[epoch].claimableAt = VETOED;
        credit += m.total;
        emit Vetoed(epoch, msg.sender);
    }

    /// @notice Deposit `amount` tokens as credit for future epochs (anyone may pre-fund).
    function deposit(uint256 amount) external {
        uint256 c = uint256(credit) + amount;
        if (c > type(uint128).max) revert TotalTooLarge(c);
        credit = uint128(c);
        emit Deposited(msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Pay leaf `index` of epoch `epoch` (`amount` to `account`) once. Anyone may call it.
    function claim(uint64 epoch, uint256 index, address account, uint256 amount, bytes32[] calldata proof) external {
        bytes32 root = _payoutRoots[epoch];
        if (root == bytes32(0)) revert EpochNotAnchored(epoch);
        if (challengeWindow != 0) {
            uint64 openAt = _meta[epoch].claimableAt;
            if (openAt == VETOED) revert EpochVetoed(epoch);
            if (block.timestamp < openAt) revert ChallengeWindowOpen(epoch, openAt);
        }
        uint256 word = index >> 8;
        uint256 bit = uint256(1) << (index & 0xff);
        uint256 bits = _claimed[epoch][word];
        if (bits & bit != 0) revert AlreadyClaimed(epoch, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(epoch, index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof(epoch, index);
        _claimed[epoch][word] = bits | bit;
        emit Claimed(epoch, index, account, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice The payout root of `epoch` (zero if not anchored).
    function rootOf(uint64 epoch) external view returns (bytes32) {
        return _payoutRoots[epoch];
    }

    /// @notice Whether leaf `index` of `epoch` was claimed.
    function isClaimed(uint64 epoch, uint256 index) external view returns (bool) {
        return _claimed[epoch][index >> 8] & (uint256(1) << (index & 0xff)) != 0;
    }

    /// @notice Everything known on chain about `epoch`.
    function epochInfo(uint64 epoch)
        external
        view
        returns (bytes32 payoutRoot, uint64 claimableAt, bool vetoed, uint128 total)
    {
        payoutRoot = _payoutRoots[epoch];
        EpochMeta memory m = _meta[epoch];
        vetoed = m.claimableAt == VETOED;
        claimableAt = vetoed ? 0 : m.claimableAt;
        total = m.total;
    }
}
