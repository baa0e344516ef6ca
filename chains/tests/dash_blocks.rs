//! The scanner on two real Dash mainnet blocks (`../shared/data/dash/`): DIP2 special
//! transactions, DIP4 coinbase payloads, X11 block hashes.

use std::path::PathBuf;

use bitcoin::block::Header;
use bitcoin::consensus::deserialize;
use coinhub_chains::bitcoin::block::{ScriptSet, TxFormat, block_txids};
use coinhub_chains::bitcoin::dash::{self, SpecialPayload, tx_type};

fn dash_block(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/dash")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The facts of one block from `../shared/data/README.md`.
struct Facts {
    file: &'static str,
    size_bytes: usize,
    height: u32,
    tx_count: u64,
    hash: &'static str,
    /// DIP2 type of every special transaction, in block order.
    special: &'static [u16],
}

const BLOCKS: [Facts; 2] = [
    Facts {
        file: "block2045354.raw",
        size_bytes: 13_814,
        height: 2_045_354,
        tx_count: 30,
        hash: "000000000000002016c49d804e7b5d6ca84663ed032222e9061b2efec302edc3",
        special: &[tx_type::CB_TX, tx_type::PRO_REG_TX],
    },
    Facts {
        file: "block2282696.raw",
        size_bytes: 14_143,
        height: 2_282_696,
        tx_count: 21,
        hash: "000000000000002b22765c44677e7378ae129ef13bce9b715914e5f5f584d054",
        special: &[tx_type::CB_TX, tx_type::PRO_UP_SERV_TX],
    },
];

/// Proves each block decodes completely: the given transaction count, no byte left over,
/// X11 header hash equal to the published one (and not the double SHA-256), a coinbase of
/// type 5 whose DIP4 payload names the block's height, exactly one provider transaction of
/// the published type, and every special payload consumed exactly by its field decoder.
#[test]
fn real_dash_blocks_decode_completely() {
    for facts in &BLOCKS {
        let raw = dash_block(facts.file);
        assert_eq!(raw.len(), facts.size_bytes, "{}", facts.file);
        let scan = dash::scan_block(&raw, &ScriptSet::new())
            .unwrap_or_else(|e| panic!("{}: {e}", facts.file));
        assert_eq!(scan.tx_count, facts.tx_count, "{}", facts.file);
        assert_eq!(scan.hash.to_string(), facts.hash, "{}", facts.file);
        assert_ne!(scan.header.block_hash().to_string(), facts.hash);
        assert_eq!(
            scan.block_ref(u64::from(facts.height)).hash.as_str(),
            facts.hash
        );

        let types: Vec<u16> = scan.special_txs.iter().map(|s| s.tx_type).collect();
        assert_eq!(types, facts.special, "{}", facts.file);
        assert_eq!(
            scan.special_txs[0].tx_index, 0,
            "{}: coinbase is CbTx",
            facts.file
        );
        for special in &scan.special_txs {
            assert_eq!(special.version, 3, "{}", facts.file);
            let payload = SpecialPayload::decode(special.tx_type, &special.payload)
                .unwrap_or_else(|e| panic!("{} tx {}: {e}", facts.file, special.tx_index));
            match (special.tx_type, payload) {
                (tx_type::CB_TX, SpecialPayload::CbTx(cb)) => {
                    assert_eq!(cb.height, facts.height, "{}", facts.file);
                    // Version 3 (Dash Core 20+): quorum root, best ChainLock, credit pool.
                    assert_eq!(cb.version, 3, "{}", facts.file);
                    assert!(cb.merkle_root_quorums.is_some());
                    assert!(cb.best_cl_signature.is_some());
                    assert!(cb.credit_pool_balance_duffs.is_some_and(|b| b >= 0));
                }
                (tx_type::PRO_REG_TX, SpecialPayload::ProRegTx(reg)) => {
                    // An Evo masternode registration (version 2, basic BLS) with platform fields.
                    assert_eq!((reg.version, reg.mn_type), (2, dash::MN_TYPE_EVO));
                    assert!(reg.platform.is_some());
                    assert_eq!(reg.service.to_string(), "135.181.212.151:9999");
                    assert!(reg.payout_script.is_p2pkh());
                    assert!(reg.operator_reward <= 10_000);
                }
                (tx_type::PRO_UP_SERV_TX, SpecialPayload::ProUpServTx(serv)) => {
                    assert_eq!((serv.version, serv.mn_type), (2, dash::MN_TYPE_EVO));
                    assert_eq!(serv.service.to_string(), "5.189.164.253:9999");
                    let platform = serv
                        .platform
                        .expect("Evo service update has platform ports");
                    assert_eq!((platform.p2p_port, platform.http_port), (26_656, 443));
                }
                (t, p) => panic!("{}: type {t} decoded as {p:?}", facts.file),
            }
        }
    }
}

/// Proves the transaction boundaries (and so the DIP2 payload lengths) are right: the txids
/// the scanner hashes, payloads included, rebuild the merkle root in each header.
#[test]
fn real_dash_blocks_merkle_root() {
    for facts in &BLOCKS {
        let raw = dash_block(facts.file);
        let header: Header = deserialize(&raw[..80]).expect("80-byte header");
        let txids = block_txids(&raw, TxFormat::Dash).expect("decodes");
        assert_eq!(txids.len() as u64, facts.tx_count);
        let root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()))
            .expect("non-empty block");
        assert_eq!(root, header.merkle_root.to_raw_hash(), "{}", facts.file);
    }
}

/// Proves outputs are found in and around special transactions: watching the coinbase
/// (CbTx) output scripts, read independently by hand, reports each coinbase output with its
/// duff amount and the coinbase's txid, and every reported output (including ordinary
/// transactions paying the same scripts) carries the txid of its own transaction.
#[test]
fn real_dash_blocks_find_outputs() {
    for facts in &BLOCKS {
        let raw = dash_block(facts.file);
        let txids = block_txids(&raw, TxFormat::Dash).expect("decodes");
        let everything = dash::scan_block(&raw, &ScriptSet::new()).expect("decodes");
        assert!(everything.output_count >= facts.tx_count);
        let coinbase = &everything.special_txs[0];
        assert_eq!(coinbase.txid, txids[0]);

        let coinbase_outputs = coinbase_scripts(&raw);
        assert!(!coinbase_outputs.is_empty());
        let watched: ScriptSet = coinbase_outputs.iter().map(|(s, _)| s.clone()).collect();
        let scan = dash::scan_block(&raw, &watched).expect("decodes");
        let from_coinbase: Vec<_> = scan.outputs.iter().filter(|o| o.tx_index == 0).collect();
        assert_eq!(
            from_coinbase.len(),
            coinbase_outputs.len(),
            "{}",
            facts.file
        );
        for (output, (script, value)) in from_coinbase.iter().zip(&coinbase_outputs) {
            assert_eq!(output.txid, txids[0]);
            assert_eq!(output.script_pubkey.as_bytes(), &script[..]);
            assert_eq!(output.amount.to_sat(), *value);
        }
        for output in &scan.outputs {
            assert_eq!(output.txid, txids[output.tx_index as usize]);
        }
    }
}

/// The coinbase's output scripts and duff amounts, read by hand: header (80), tx count (1
/// byte here), version (4), 1 input (36 + script + 4), outputs.
fn coinbase_scripts(raw: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut pos = 80 + 1 + 4;
    assert_eq!(raw[pos], 1, "one coinbase input");
    pos += 1 + 36;
    let script_len = raw[pos] as usize;
    pos += 1 + script_len + 4;
    let count = raw[pos] as usize;
    pos += 1;
    let mut outputs = Vec::new();
    for _ in 0..count {
        let value = u64::from_le_bytes(raw[pos..pos + 8].try_into().expect("8 bytes"));
        pos += 8;
        let len = raw[pos] as usize;
        pos += 1;
        outputs.push((raw[pos..pos + len].to_vec(), value));
        pos += len;
    }
    outputs
}
