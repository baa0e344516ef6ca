//! Transactions of the EVM hot wallet, a 2-of-3 [Safe](https://github.com/safe-global/safe-smart-account)
//! (v1.5.0) owned by keys A, B and C (owner of each key: its EVM account's `1/0`, see
//! [`crate::derivation::SAFE_OWNER_BRANCH`]). Pure: builds, hashes, signs and checks; sends
//! nothing.
//!
//! Sources:
//! - Safe v1.5.0 `contracts/Safe.sol`: `SAFE_TX_TYPEHASH`, `DOMAIN_SEPARATOR_TYPEHASH`,
//!   `domainSeparator()` (chain id and the Safe's own address, no name or version since
//!   v1.3.0), `getTransactionHash(...)`, `execTransaction(...)` and `checkNSignatures(...)`:
//!   signatures are 65-byte `r ‖ s ‖ v`, concatenated in strictly ascending order of their
//!   owners' addresses; `v` 27/28 means plain ECDSA over the SafeTx hash itself (0 is an
//!   EIP-1271 contract signature, 1 a pre-approved hash, above 30 an `eth_sign` signature).
//! - [EIP-712](https://eips.ethereum.org/EIPS/eip-712): the SafeTx hash is
//!   `keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct(SafeTx))`, where a `bytes` member
//!   (`data`) enters `hashStruct` as its `keccak256`.
//! - [EIP-155](https://eips.ethereum.org/EIPS/eip-155): the chain id in the domain makes a
//!   signature valid on one chain only; the Safe's address, on one Safe only; its nonce, once.
//! - [ERC-20](https://eips.ethereum.org/EIPS/eip-20): `transfer(address,uint256)`, selector
//!   `0xa9059cbb`.
//!
//! The cosigner signs only what [`describe_safe_tx`] can describe as a plain transfer: a CALL
//! (never a DELEGATECALL, which would run foreign code as the Safe), no gas refund (which would
//! pay the Safe's funds to whoever executes), and either a bare native transfer or exactly one
//! ERC-20 `transfer`.

use alloy::primitives::{Address, B256, Bytes, Signature, U256, b256};
use alloy::signers::SignerSync;
use alloy::sol_types::{SolCall, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

use crate::derivation::EvmPrivateKey;

/// `Enum.Operation.Call`: the Safe calls `to`. The only operation Coinhub uses.
pub const OPERATION_CALL: u8 = 0;
/// `Enum.Operation.DelegateCall`: the Safe runs `to`'s code in its own storage. Never signed.
pub const OPERATION_DELEGATECALL: u8 = 1;
/// Length of one packed signature, `r ‖ s ‖ v`.
pub const SIGNATURE_LEN: usize = 65;
/// `keccak256("SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)")`,
/// as in `Safe.sol` v1.5.0.
pub const SAFE_TX_TYPEHASH: B256 =
    b256!("bb8310d486368db6bd6f849402fdd73ad53d316b5a4b2644ad6efe0f941286d8");
/// `keccak256("EIP712Domain(uint256 chainId,address verifyingContract)")`, as in `Safe.sol`
/// v1.5.0 (since v1.3.0).
pub const DOMAIN_SEPARATOR_TYPEHASH: B256 =
    b256!("47e79534a245952e8b16893a336b85a3d9ea9fa8c573f3d803afb92a79469218");
/// Length of ERC-20 `transfer(address,uint256)` calldata: selector and two 32-byte words.
pub const ERC20_TRANSFER_CALLDATA_LEN: usize = 4 + 32 + 32;

/// Solidity types for ABI encoding and EIP-712 hashing; field names are the contract's.
mod abi {
    alloy::sol! {
        /// EIP-712 struct of a Safe transaction (`Safe.sol` `SAFE_TX_TYPEHASH`).
        struct SafeTx {
            address to;
            uint256 value;
            bytes data;
            uint8 operation;
            uint256 safeTxGas;
            uint256 baseGas;
            uint256 gasPrice;
            address gasToken;
            address refundReceiver;
            uint256 nonce;
        }

        /// The Safe entry point (`Enum.Operation` is `uint8` in the ABI).
        interface ISafe {
            function execTransaction(
                address to,
                uint256 value,
                bytes data,
                uint8 operation,
                uint256 safeTxGas,
                uint256 baseGas,
                uint256 gasPrice,
                address gasToken,
                address refundReceiver,
                bytes signatures
            ) external payable returns (bool success);
        }

        /// ERC-20 transfer.
        interface IERC20 {
            function transfer(address to, uint256 amount) external returns (bool);
        }
    }
}

/// A Safe transaction: the fields the owners sign (with the chain id and the Safe's address
/// from the EIP-712 domain). Serializable for the cosigner's HTTP API (addresses, amounts and
/// data as `0x` hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeTx {
    /// Called address: the recipient of a native transfer, or the ERC-20 token contract.
    pub to: Address,
    /// Native amount sent with the call, in wei.
    pub value: U256,
    /// Calldata: empty for a native transfer, `transfer(address,uint256)` for ERC-20.
    pub data: Bytes,
    /// [`OPERATION_CALL`] or [`OPERATION_DELEGATECALL`].
    pub operation: u8,
    /// Gas reserved for the inner call when a refund is paid; 0 here.
    pub safe_tx_gas: U256,
    /// Gas paid for outside the inner call when a refund is paid; 0 here.
    pub base_gas: U256,
    /// Refund price per gas; 0 = the executor pays its own gas and gets no refund.
    pub gas_price: U256,
    /// Refund token (zero address = native coin); zero here.
    pub gas_token: Address,
    /// Receiver of the refund (zero address = `tx.origin`); zero here.
    pub refund_receiver: Address,
    /// The Safe's nonce this transaction consumes.
    pub nonce: U256,
}

impl SafeTx {
    /// A native-coin transfer of `amount_wei` to `to` at Safe nonce `nonce`: CALL, no data,
    /// no gas refund.
    pub fn native_transfer(to: Address, amount_wei: U256, nonce: U256) -> Self {
        Self::call(to, amount_wei, Bytes::new(), nonce)
    }

    /// An ERC-20 transfer of `amount` base units of `token` to `to` at Safe nonce `nonce`: a
    /// CALL to `token` with `transfer(to, amount)` calldata, no value, no gas refund.
    pub fn erc20_transfer(token: Address, to: Address, amount: U256, nonce: U256) -> Self {
        let data = abi::IERC20::transferCall { to, amount }.abi_encode();
        assert_eq!(data.len(), ERC20_TRANSFER_CALLDATA_LEN);
        Self::call(token, U256::ZERO, data.into(), nonce)
    }

    fn call(to: Address, value: U256, data: Bytes, nonce: U256) -> Self {
        Self {
            to,
            value,
            data,
            operation: OPERATION_CALL,
            safe_tx_gas: U256::ZERO,
            base_gas: U256::ZERO,
            gas_price: U256::ZERO,
            gas_token: Address::ZERO,
            refund_receiver: Address::ZERO,
            nonce,
        }
    }

    fn to_sol(&self) -> abi::SafeTx {
        abi::SafeTx {
            to: self.to,
            value: self.value,
            data: self.data.clone(),
            operation: self.operation,
            safeTxGas: self.safe_tx_gas,
            baseGas: self.base_gas,
            gasPrice: self.gas_price,
            gasToken: self.gas_token,
            refundReceiver: self.refund_receiver,
            nonce: self.nonce,
        }
    }
}

/// What a [`SafeTx`] moves, as the cosigner checks it against policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeTransfer {
    /// The ERC-20 contract, or `None` for the chain's native coin.
    pub token: Option<Address>,
    /// Who receives the funds.
    pub destination: Address,
    /// Amount in wei (native) or the token's base units.
    pub amount: U256,
}

/// Why a Safe transaction is not a plain transfer the cosigner may sign, or a signature is
/// unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SafeTxError {
    /// The operation is not CALL (1 = DELEGATECALL would run `to`'s code as the Safe).
    #[error("operation {operation} is not a call (0); delegatecall (1) is never signed")]
    NotACall {
        /// The rejected operation.
        operation: u8,
    },
    /// `safeTxGas` is not zero (only meaningful with a gas refund).
    #[error("safe_tx_gas is {safe_tx_gas}, must be 0")]
    SafeTxGasNotZero {
        /// The rejected value.
        safe_tx_gas: U256,
    },
    /// `baseGas` is not zero (a refund would pay it from the Safe).
    #[error("base_gas is {base_gas}, must be 0")]
    BaseGasNotZero {
        /// The rejected value.
        base_gas: U256,
    },
    /// `gasPrice` is not zero: the Safe would refund gas to the executor.
    #[error("gas_price is {gas_price}, must be 0 (no gas refund from the safe)")]
    GasPriceNotZero {
        /// The rejected value.
        gas_price: U256,
    },
    /// `gasToken` is not the zero address.
    #[error("gas_token is {gas_token}, must be the zero address")]
    GasTokenNotZero {
        /// The rejected token.
        gas_token: Address,
    },
    /// `refundReceiver` is not the zero address.
    #[error("refund_receiver is {refund_receiver}, must be the zero address")]
    RefundReceiverNotZero {
        /// The rejected receiver.
        refund_receiver: Address,
    },
    /// Native value sent together with calldata (a contract call carrying coins, or coins
    /// sent alongside an ERC-20 transfer).
    #[error("value {value} sent with {data_len} bytes of calldata; a transfer moves one asset")]
    ValueWithData {
        /// The native value.
        value: U256,
        /// Length of the calldata.
        data_len: usize,
    },
    /// The calldata does not start with the ERC-20 `transfer(address,uint256)` selector
    /// (`None`: shorter than a selector).
    #[error("calldata is not an erc-20 transfer: selector {selector:?}")]
    NotErc20Transfer {
        /// The first four bytes of the calldata, if there are four.
        selector: Option<[u8; 4]>,
    },
    /// The calldata has the `transfer` selector but is not exactly its canonical 68-byte
    /// encoding (wrong length, or an address word with non-zero high bytes).
    #[error("erc-20 transfer calldata of {data_len} bytes is not the canonical 68-byte encoding")]
    MalformedErc20Transfer {
        /// Length of the calldata.
        data_len: usize,
    },
    /// A signature's `v` is not 27 or 28 (Safe reads other values as contract signatures,
    /// approved hashes or `eth_sign` signatures).
    #[error("signature v is {v}, must be 27 or 28")]
    SignatureV {
        /// The rejected `v`.
        v: u8,
    },
    /// No public key recovers from the signature (e.g. `r` or `s` out of range).
    #[error("no signer recovers from the signature")]
    UnrecoverableSignature,
}

/// The EIP-712 domain separator of `safe` on chain `chain_id`, as `Safe.domainSeparator()`:
/// `keccak256(abi.encode(DOMAIN_SEPARATOR_TYPEHASH, chainId, safe))`.
pub fn domain_separator(chain_id: u64, safe: Address) -> B256 {
    eip712_domain! {
        chain_id: chain_id,
        verifying_contract: safe,
    }
    .separator()
}

/// The hash the owners sign, as `Safe.getTransactionHash(...)` computes it for `tx` on
/// `safe` at chain `chain_id`: `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(SafeTx))`.
pub fn safe_tx_hash(tx: &SafeTx, chain_id: u64, safe: Address) -> B256 {
    let domain = eip712_domain! {
        chain_id: chain_id,
        verifying_contract: safe,
    };
    let sol = tx.to_sol();
    debug_assert_eq!(sol.eip712_type_hash(), SAFE_TX_TYPEHASH);
    sol.eip712_signing_hash(&domain)
}

/// Signs a SafeTx hash with an owner key: plain ECDSA over `hash` (RFC 6979 nonces), returned
/// as `r ‖ s ‖ v` with `v` = 27 or 28, the form `checkNSignatures` verifies with `ecrecover`.
pub fn sign_safe_tx(key: &EvmPrivateKey, hash: B256) -> [u8; SIGNATURE_LEN] {
    let signature = key
        .to_signer()
        .sign_hash_sync(&hash)
        .expect("ecdsa signing with a valid secp256k1 key does not fail");
    let bytes = signature.as_bytes();
    assert!(matches!(bytes[64], 27 | 28), "electrum v is 27 or 28");
    bytes
}

/// The owner address that signed `hash`, for a 65-byte `r ‖ s ‖ v` signature with `v` 27 or
/// 28 — what the Safe's `ecrecover` branch computes.
///
/// # Errors
/// [`SafeTxError::SignatureV`] if `v` is not 27 or 28; [`SafeTxError::UnrecoverableSignature`]
/// if no key recovers.
pub fn recover_owner(hash: B256, signature: &[u8; SIGNATURE_LEN]) -> Result<Address, SafeTxError> {
    let v = signature[64];
    if !matches!(v, 27 | 28) {
        return Err(SafeTxError::SignatureV { v });
    }
    let parsed =
        Signature::from_raw_array(signature).map_err(|_| SafeTxError::UnrecoverableSignature)?;
    parsed
        .recover_address_from_prehash(&hash)
        .map_err(|_| SafeTxError::UnrecoverableSignature)
}

/// Concatenates owner signatures in ascending order of owner address, the order
/// `checkNSignatures` requires. Pairs are `(owner, signature)`; the order given does not
/// matter. Two signatures of one owner are both kept (the Safe then reverts with `GS026`).
pub fn pack_signatures(signatures: &[(Address, [u8; SIGNATURE_LEN])]) -> Bytes {
    let mut sorted = signatures.to_vec();
    sorted.sort_by_key(|(owner, _)| *owner);
    let packed: Vec<u8> = sorted
        .iter()
        .flat_map(|(_, signature)| signature.iter().copied())
        .collect();
    assert_eq!(packed.len(), signatures.len() * SIGNATURE_LEN);
    packed.into()
}

/// Calldata of `Safe.execTransaction(to, value, data, operation, safeTxGas, baseGas, gasPrice,
/// gasToken, refundReceiver, signatures)` for `tx` (the Safe uses its current nonce, which
/// must equal `tx.nonce` for the signatures to verify).
pub fn exec_transaction_calldata(tx: &SafeTx, signatures: Bytes) -> Bytes {
    abi::ISafe::execTransactionCall {
        to: tx.to,
        value: tx.value,
        data: tx.data.clone(),
        operation: tx.operation,
        safeTxGas: tx.safe_tx_gas,
        baseGas: tx.base_gas,
        gasPrice: tx.gas_price,
        gasToken: tx.gas_token,
        refundReceiver: tx.refund_receiver,
        signatures,
    }
    .abi_encode()
    .into()
}

/// The cosigner's reading of `tx`: the single transfer it makes, or why it is not a plain
/// transfer. Accepts a CALL with every gas/refund field zero that is either a native transfer
/// (empty data; `to` receives `value`) or an ERC-20 transfer (no value; data exactly the
/// canonical `transfer(address,uint256)`; `to` is the token).
///
/// # Errors
/// The first problem found, in this order: [`SafeTxError::NotACall`],
/// [`SafeTxError::SafeTxGasNotZero`], [`SafeTxError::BaseGasNotZero`],
/// [`SafeTxError::GasPriceNotZero`], [`SafeTxError::GasTokenNotZero`],
/// [`SafeTxError::RefundReceiverNotZero`], [`SafeTxError::ValueWithData`],
/// [`SafeTxError::NotErc20Transfer`], [`SafeTxError::MalformedErc20Transfer`].
pub fn describe_safe_tx(tx: &SafeTx) -> Result<SafeTransfer, SafeTxError> {
    if tx.operation != OPERATION_CALL {
        return Err(SafeTxError::NotACall {
            operation: tx.operation,
        });
    }
    if !tx.safe_tx_gas.is_zero() {
        return Err(SafeTxError::SafeTxGasNotZero {
            safe_tx_gas: tx.safe_tx_gas,
        });
    }
    if !tx.base_gas.is_zero() {
        return Err(SafeTxError::BaseGasNotZero {
            base_gas: tx.base_gas,
        });
    }
    if !tx.gas_price.is_zero() {
        return Err(SafeTxError::GasPriceNotZero {
            gas_price: tx.gas_price,
        });
    }
    if !tx.gas_token.is_zero() {
        return Err(SafeTxError::GasTokenNotZero {
            gas_token: tx.gas_token,
        });
    }
    if !tx.refund_receiver.is_zero() {
        return Err(SafeTxError::RefundReceiverNotZero {
            refund_receiver: tx.refund_receiver,
        });
    }
    if tx.data.is_empty() {
        return Ok(SafeTransfer {
            token: None,
            destination: tx.to,
            amount: tx.value,
        });
    }
    if !tx.value.is_zero() {
        return Err(SafeTxError::ValueWithData {
            value: tx.value,
            data_len: tx.data.len(),
        });
    }
    let (to, amount) = decode_erc20_transfer(&tx.data)?;
    Ok(SafeTransfer {
        token: Some(tx.to),
        destination: to,
        amount,
    })
}

/// `(to, amount)` of canonical ERC-20 `transfer(address,uint256)` calldata.
fn decode_erc20_transfer(data: &[u8]) -> Result<(Address, U256), SafeTxError> {
    let selector: Option<[u8; 4]> = data.get(..4).map(|bytes| {
        bytes
            .try_into()
            .expect("a four-byte slice converts to [u8; 4]")
    });
    if selector != Some(abi::IERC20::transferCall::SELECTOR) {
        return Err(SafeTxError::NotErc20Transfer { selector });
    }
    let malformed = || SafeTxError::MalformedErc20Transfer {
        data_len: data.len(),
    };
    if data.len() != ERC20_TRANSFER_CALLDATA_LEN {
        return Err(malformed());
    }
    let call = abi::IERC20::transferCall::abi_decode(data).map_err(|_| malformed())?;
    // Re-encoding must give the same bytes: refuses dirty high bytes in the address word,
    // which a token might read differently from us.
    if call.abi_encode() != data {
        return Err(malformed());
    }
    Ok((call.to, call.amount))
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{address, keccak256};
    use alloy::sol_types::SolValue;
    use proptest::prelude::*;

    use super::*;
    use crate::derivation::MasterKey;
    use crate::mnemonic::Mnemonic;

    /// The Safe transaction hash exactly as `Safe.sol` v1.5.0 `getTransactionHash` assembles
    /// it, word by word (independent of alloy's EIP-712 code).
    fn safe_tx_hash_by_hand(tx: &SafeTx, chain_id: u64, safe: Address) -> B256 {
        let domain =
            keccak256((DOMAIN_SEPARATOR_TYPEHASH, U256::from(chain_id), safe).abi_encode());
        let struct_hash = keccak256(
            (
                SAFE_TX_TYPEHASH,
                tx.to,
                tx.value,
                keccak256(&tx.data),
                U256::from(tx.operation),
                tx.safe_tx_gas,
                tx.base_gas,
                tx.gas_price,
                tx.gas_token,
                tx.refund_receiver,
                tx.nonce,
            )
                .abi_encode(),
        );
        let mut preimage = vec![0x19, 0x01];
        preimage.extend_from_slice(domain.as_slice());
        preimage.extend_from_slice(struct_hash.as_slice());
        keccak256(preimage)
    }

    fn owner_key(entropy_byte: u8) -> EvmPrivateKey {
        let mnemonic = Mnemonic::from_entropy(&[entropy_byte; 16]).expect("entropy");
        let master = MasterKey::from_seed(&mnemonic.to_seed_with_passphrase("")).expect("master");
        master
            .evm_key_at(crate::derivation::SAFE_OWNER_BRANCH, 0)
            .expect("owner key")
    }

    /// Proves that the type hashes are the strings `Safe.sol` v1.5.0 hashes, and that the
    /// sol! struct's EIP-712 type is that string.
    #[test]
    fn safe_tx_type_hashes_match_safe_sol() {
        assert_eq!(
            keccak256(
                "SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,\
                 uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,\
                 uint256 nonce)"
            ),
            SAFE_TX_TYPEHASH
        );
        assert_eq!(
            keccak256("EIP712Domain(uint256 chainId,address verifyingContract)"),
            DOMAIN_SEPARATOR_TYPEHASH
        );
        let tx = SafeTx::native_transfer(Address::ZERO, U256::ZERO, U256::ZERO);
        assert_eq!(tx.to_sol().eip712_type_hash(), SAFE_TX_TYPEHASH);
    }

    /// Proves the hash against a published vector: Safe `0x88Ff…3993` on chain 1, native
    /// transfer of 0.123 ETH to `0xdE0B…7BAe` at nonce 1, expected SafeTx hash
    /// `0x9380…b575` (the Ledger Safe app's test of `safe_hashes.sh` output), and against a
    /// word-by-word rebuild of `getTransactionHash` with every field non-zero.
    #[test]
    fn safe_tx_hash_vectors() {
        let tx = SafeTx::native_transfer(
            address!("0xde0b295669a9fd93d5f28d9ec85e40f4cb697bae"),
            U256::from(123_000_000_000_000_000_u64),
            U256::from(1),
        );
        let safe = address!("0x88Ffb774b8583c1C9A2b71b7391861c0Be253993");
        assert_eq!(
            safe_tx_hash(&tx, 1, safe),
            b256!("938061ada63cd3e0fa939ef7881e8bffcf1bc1ebc0904ba6ed69d0a5f46db575")
        );
        assert_eq!(
            safe_tx_hash(&tx, 1, safe),
            safe_tx_hash_by_hand(&tx, 1, safe)
        );

        let every_field = SafeTx {
            to: address!("0x2222222222222222222222222222222222222222"),
            value: U256::from(3),
            data: Bytes::from_static(&[0x44; 4]),
            operation: OPERATION_DELEGATECALL,
            safe_tx_gas: U256::from(5),
            base_gas: U256::from(6),
            gas_price: U256::from(7),
            gas_token: address!("0x8888888888888888888888888888888888888888"),
            refund_receiver: address!("0x9999999999999999999999999999999999999999"),
            nonce: U256::from(10),
        };
        let safe = address!("0x1111111111111111111111111111111111111111");
        assert_eq!(
            safe_tx_hash(&every_field, 0x5afe, safe),
            safe_tx_hash_by_hand(&every_field, 0x5afe, safe)
        );
        assert_eq!(
            domain_separator(0x5afe, safe),
            keccak256((DOMAIN_SEPARATOR_TYPEHASH, U256::from(0x5afe), safe).abi_encode())
        );
        // The domain binds chain and Safe.
        assert_ne!(
            safe_tx_hash(&every_field, 1, safe),
            safe_tx_hash(&every_field, 0x5afe, safe)
        );
    }

    /// Proves that a signature has v 27/28 and recovers to the signing owner, and that other
    /// v values (contract, approved-hash, eth_sign forms) are refused by `recover_owner`.
    #[test]
    fn sign_and_recover() {
        let key = owner_key(1);
        let hash = keccak256("a safe tx hash");
        let signature = sign_safe_tx(&key, hash);
        assert!(matches!(signature[64], 27 | 28));
        assert_eq!(recover_owner(hash, &signature), Ok(key.address()));
        assert_ne!(
            recover_owner(keccak256("another hash"), &signature),
            Ok(key.address())
        );
        for v in [0, 1, 31, 32] {
            let mut other = signature;
            other[64] = v;
            assert_eq!(
                recover_owner(hash, &other),
                Err(SafeTxError::SignatureV { v })
            );
        }
        let zero = [0u8; SIGNATURE_LEN - 1]
            .into_iter()
            .chain([27])
            .collect::<Vec<_>>();
        let zero: [u8; SIGNATURE_LEN] = zero.try_into().expect("65 bytes");
        assert_eq!(
            recover_owner(hash, &zero),
            Err(SafeTxError::UnrecoverableSignature)
        );
    }

    /// Proves that signatures are packed by ascending owner whatever the input order.
    #[test]
    fn pack_signatures_sorts_by_owner() {
        let keys = [owner_key(1), owner_key(2), owner_key(3)];
        let hash = keccak256("tx");
        let mut pairs: Vec<_> = keys
            .iter()
            .map(|key| (key.address(), sign_safe_tx(key, hash)))
            .collect();
        pairs.sort_by_key(|(owner, _)| std::cmp::Reverse(*owner));
        let packed = pack_signatures(&pairs);
        assert_eq!(packed.len(), 3 * SIGNATURE_LEN);
        let owners: Vec<Address> = packed
            .chunks(SIGNATURE_LEN)
            .map(|chunk| {
                recover_owner(hash, chunk.try_into().expect("65 bytes")).expect("recovers")
            })
            .collect();
        let mut sorted = owners.clone();
        sorted.sort();
        assert_eq!(owners, sorted);
        assert_eq!(pack_signatures(&[]), Bytes::new());
    }

    /// Proves the calldata of `execTransaction` has the Safe's selector and round-trips.
    #[test]
    fn exec_transaction_calldata_encodes_every_field() {
        let tx = SafeTx::erc20_transfer(
            address!("0x1000000000000000000000000000000000000001"),
            address!("0x2000000000000000000000000000000000000002"),
            U256::from(5),
            U256::from(7),
        );
        let signatures = Bytes::from(vec![0xab; 2 * SIGNATURE_LEN]);
        let calldata = exec_transaction_calldata(&tx, signatures.clone());
        // execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)
        assert_eq!(calldata[..4], [0x6a, 0x76, 0x12, 0x02]);
        let call = abi::ISafe::execTransactionCall::abi_decode(&calldata).expect("decodes");
        assert_eq!(call.to, tx.to);
        assert_eq!(call.data, tx.data);
        assert_eq!(call.operation, OPERATION_CALL);
        assert_eq!(call.signatures, signatures);
    }

    /// Proves the constructors build plain transfers that describe back to themselves, and
    /// the ERC-20 calldata is `a9059cbb ‖ to ‖ amount`.
    #[test]
    fn constructors_describe_back() {
        let token = address!("0x1000000000000000000000000000000000000001");
        let to = address!("0x2000000000000000000000000000000000000002");
        let tx = SafeTx::erc20_transfer(token, to, U256::from(0x1234), U256::ZERO);
        assert_eq!(
            hex::encode(&tx.data),
            "a9059cbb\
             0000000000000000000000002000000000000000000000000000000000000002\
             0000000000000000000000000000000000000000000000000000000000001234"
        );
        assert_eq!(
            describe_safe_tx(&tx),
            Ok(SafeTransfer {
                token: Some(token),
                destination: to,
                amount: U256::from(0x1234)
            })
        );
        let tx = SafeTx::native_transfer(to, U256::from(9), U256::from(3));
        assert_eq!(
            describe_safe_tx(&tx),
            Ok(SafeTransfer {
                token: None,
                destination: to,
                amount: U256::from(9)
            })
        );
    }

    /// Proves that every non-transfer shape is refused with the error naming it: delegatecall,
    /// each gas/refund field, value with data, other calldata, malformed transfer calldata.
    #[test]
    fn describe_refuses_non_transfers() {
        let token = address!("0x1000000000000000000000000000000000000001");
        let to = address!("0x2000000000000000000000000000000000000002");
        let base = SafeTx::erc20_transfer(token, to, U256::from(1), U256::ZERO);
        let with = |edit: &dyn Fn(&mut SafeTx)| {
            let mut tx = base.clone();
            edit(&mut tx);
            describe_safe_tx(&tx).expect_err("refused")
        };
        assert_eq!(
            with(&|tx| tx.operation = OPERATION_DELEGATECALL),
            SafeTxError::NotACall { operation: 1 }
        );
        assert_eq!(
            with(&|tx| tx.safe_tx_gas = U256::from(1)),
            SafeTxError::SafeTxGasNotZero {
                safe_tx_gas: U256::from(1)
            }
        );
        assert_eq!(
            with(&|tx| tx.base_gas = U256::from(2)),
            SafeTxError::BaseGasNotZero {
                base_gas: U256::from(2)
            }
        );
        assert_eq!(
            with(&|tx| tx.gas_price = U256::from(3)),
            SafeTxError::GasPriceNotZero {
                gas_price: U256::from(3)
            }
        );
        assert_eq!(
            with(&|tx| tx.gas_token = token),
            SafeTxError::GasTokenNotZero { gas_token: token }
        );
        assert_eq!(
            with(&|tx| tx.refund_receiver = to),
            SafeTxError::RefundReceiverNotZero {
                refund_receiver: to
            }
        );
        assert_eq!(
            with(&|tx| tx.value = U256::from(4)),
            SafeTxError::ValueWithData {
                value: U256::from(4),
                data_len: 68
            }
        );
        // approve(address,uint256) has the same shape as transfer.
        assert_eq!(
            with(&|tx| tx.data = {
                let mut data = base.data.to_vec();
                data[..4].copy_from_slice(&[0x09, 0x5e, 0xa7, 0xb3]);
                data.into()
            }),
            SafeTxError::NotErc20Transfer {
                selector: Some([0x09, 0x5e, 0xa7, 0xb3])
            }
        );
        assert_eq!(
            with(&|tx| tx.data = Bytes::from_static(&[0xa9, 0x05])),
            SafeTxError::NotErc20Transfer { selector: None }
        );
        assert_eq!(
            with(&|tx| tx.data = base.data.slice(..67)),
            SafeTxError::MalformedErc20Transfer { data_len: 67 }
        );
        assert_eq!(
            with(&|tx| tx.data = [base.data.as_ref(), &[0]].concat().into()),
            SafeTxError::MalformedErc20Transfer { data_len: 69 }
        );
        // A dirty high byte in the address word.
        assert_eq!(
            with(&|tx| tx.data = {
                let mut data = base.data.to_vec();
                data[4] = 0x01;
                data.into()
            }),
            SafeTxError::MalformedErc20Transfer { data_len: 68 }
        );
    }

    /// Proves that a `SafeTx` survives the JSON of the cosigner API unchanged.
    #[test]
    fn serde_round_trip() {
        let tx = SafeTx::erc20_transfer(
            address!("0x1000000000000000000000000000000000000001"),
            address!("0x2000000000000000000000000000000000000002"),
            U256::MAX,
            U256::from(42),
        );
        let json = serde_json::to_string(&tx).expect("serializes");
        assert!(json.contains("\"safe_tx_gas\""), "{json}");
        assert_eq!(
            serde_json::from_str::<SafeTx>(&json).expect("deserializes"),
            tx
        );
    }

    proptest! {
        /// Proves for arbitrary addresses, amounts and nonces that the constructors describe
        /// back to the transfer they were built from, and the hash equals the by-hand rebuild.
        #[test]
        fn transfers_describe_back(
            token in any::<[u8; 20]>(),
            to in any::<[u8; 20]>(),
            amount in any::<[u64; 4]>(),
            nonce in any::<u64>(),
            chain_id in any::<u64>(),
        ) {
            let (token, to) = (Address::from(token), Address::from(to));
            let amount = U256::from_limbs(amount);
            let nonce = U256::from(nonce);
            let erc20 = SafeTx::erc20_transfer(token, to, amount, nonce);
            prop_assert_eq!(
                describe_safe_tx(&erc20),
                Ok(SafeTransfer { token: Some(token), destination: to, amount })
            );
            prop_assert_eq!(
                safe_tx_hash(&erc20, chain_id, token),
                safe_tx_hash_by_hand(&erc20, chain_id, token)
            );
            let native = SafeTx::native_transfer(to, amount, nonce);
            prop_assert_eq!(
                describe_safe_tx(&native),
                Ok(SafeTransfer { token: None, destination: to, amount })
            );
        }
    }
}
