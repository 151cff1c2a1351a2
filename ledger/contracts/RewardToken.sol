// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A plain fixed-supply ERC-20 used as the reward token in tests and the demo.
/// @notice The whole supply is minted to `holder` at deployment; production deployments point
/// the settlement contract at an existing token instead.
contract RewardToken is ERC20 {
    constructor(string memory name_, string memory symbol_, address holder, uint256 supply) ERC20(name_, symbol_) {
        _mint(holder, supply);
    }
}
