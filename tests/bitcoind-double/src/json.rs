//! Bitcoin Core's JSON shapes for headers, blocks, transactions and scripts.
//!
//! Field names, order, and presence follow Bitcoin Core v31 (`blockheaderToJSON`,
//! `blockToJSON`, `TxToUniv`, `ScriptToUniv`); the recordings under
//! `shared/fixtures/bitcoin-core/` are the reference.

use bitcoin::address::Address;
use bitcoin::hashes::Hash;
use bitcoin::opcodes::all::{OP_PUSHNUM_1, OP_PUSHNUM_16};
use bitcoin::script::{Instruction, Script};
use bitcoin::{Amount, BlockHash, Network, Transaction, base58};
use serde_json::{Map, Value, json};

use crate::Flavor;
use crate::node::{Coin, Node};

/// BTC amount as a JSON number (Bitcoin Core prints amounts as numbers with 8 decimals).
pub(crate) fn btc(amount: Amount) -> Value {
    json!(amount.to_btc())
}

/// Signed BTC amount as a JSON number.
pub(crate) fn btc_signed(sat: i64) -> Value {
    json!(bitcoin::SignedAmount::from_sat(sat).to_btc())
}

/// Bitcoin Core's `GetDifficulty`, computed and rounded (16 significant digits, as UniValue
/// prints doubles) the same way, so the double prints 4.656542373906925e-10 on regtest.
#[allow(
    clippy::float_arithmetic,
    reason = "Bitcoin Core reports difficulty as a double"
)]
pub(crate) fn difficulty(bits: u32) -> f64 {
    let mut shift = (bits >> 24) & 0xff;
    let mut diff = f64::from(0x0000_ffff_u32) / f64::from((bits & 0x00ff_ffff).max(1));
    while shift < 29 {
        diff *= 256.0;
        shift += 1;
    }
    while shift > 29 {
        diff /= 256.0;
        shift -= 1;
    }
    // UniValue writes doubles with 16 significant digits.
    format!("{diff:.15e}").parse().unwrap_or(diff)
}

/// `getblockheader` verbose object.
pub(crate) fn header_json(node: &Node, hash: &BlockHash) -> Value {
    let e = &node.blocks[hash];
    let h = &e.block.header;
    let mut m = Map::new();
    m.insert("hash".into(), json!(hash.to_string()));
    m.insert("confirmations".into(), json!(node.confirmations(hash)));
    m.insert("height".into(), json!(e.height));
    m.insert("version".into(), json!(h.version.to_consensus()));
    m.insert(
        "versionHex".into(),
        json!(format!("{:08x}", h.version.to_consensus())),
    );
    m.insert("merkleroot".into(), json!(h.merkle_root.to_string()));
    m.insert("time".into(), json!(h.time));
    m.insert("mediantime".into(), json!(e.median_time));
    m.insert("nonce".into(), json!(h.nonce));
    m.insert(
        "bits".into(),
        json!(format!("{:08x}", h.bits.to_consensus())),
    );
    m.insert(
        "target".into(),
        json!(hex::encode(h.target().to_be_bytes())),
    );
    m.insert(
        "difficulty".into(),
        json!(difficulty(h.bits.to_consensus())),
    );
    m.insert(
        "chainwork".into(),
        json!(hex::encode(e.chainwork.to_be_bytes())),
    );
    m.insert("nTx".into(), json!(e.block.txdata.len()));
    if e.height > 0 {
        m.insert(
            "previousblockhash".into(),
            json!(h.prev_blockhash.to_string()),
        );
    }
    if let Some(next) = node.next_hash(hash) {
        m.insert("nextblockhash".into(), json!(next.to_string()));
    }
    Value::Object(m)
}

/// `getblock` at verbosity 1 (txids), 2 (transactions with fees) or 3 (with prevouts).
pub(crate) fn block_json(node: &Node, hash: &BlockHash, verbosity: u8) -> Value {
    let Value::Object(mut m) = header_json(node, hash) else {
        unreachable!("header is an object")
    };
    let e = &node.blocks[hash];
    let block = &e.block;
    let size = block.total_size();
    let weight = block.weight().to_wu() as usize;
    m.insert("strippedsize".into(), json!((weight - size) / 3));
    m.insert("size".into(), json!(size));
    m.insert("weight".into(), json!(weight));
    let cb = &block.txdata[0];
    let mut cbm = Map::new();
    cbm.insert("version".into(), json!(cb.version.0));
    cbm.insert("locktime".into(), json!(cb.lock_time.to_consensus_u32()));
    cbm.insert("sequence".into(), json!(cb.input[0].sequence.0));
    cbm.insert(
        "coinbase".into(),
        json!(hex::encode(cb.input[0].script_sig.as_bytes())),
    );
    if let Some(w) = cb.input[0].witness.iter().next() {
        cbm.insert("witness".into(), json!(hex::encode(w)));
    }
    m.insert("coinbase_tx".into(), Value::Object(cbm));
    let txs: Vec<Value> = if verbosity <= 1 {
        block
            .txdata
            .iter()
            .map(|t| json!(t.compute_txid().to_string()))
            .collect()
    } else {
        block
            .txdata
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                let undo = e.undo.as_ref().and_then(|u| u.get(i));
                let fee = if tx.is_coinbase() {
                    None
                } else {
                    undo.map(|coins| {
                        let input: Amount = coins.iter().map(|c| c.txout.value).sum();
                        let output: Amount = tx.output.iter().map(|o| o.value).sum();
                        input.checked_sub(output).unwrap_or(Amount::ZERO)
                    })
                };
                let prevouts = if verbosity >= 3 {
                    undo.map(|u| u.as_slice())
                } else {
                    None
                };
                tx_json(node.flavor, tx, fee, prevouts, true)
            })
            .collect()
    };
    m.insert("tx".into(), Value::Array(txs));
    Value::Object(m)
}

/// `TxToUniv`: the decoded transaction, optionally with fee, prevouts and raw hex.
pub(crate) fn tx_json(
    flavor: Flavor,
    tx: &Transaction,
    fee: Option<Amount>,
    prevouts: Option<&[Coin]>,
    include_hex: bool,
) -> Value {
    let mut m = Map::new();
    m.insert("txid".into(), json!(tx.compute_txid().to_string()));
    m.insert("hash".into(), json!(tx.compute_wtxid().to_string()));
    m.insert("version".into(), json!(tx.version.0));
    m.insert("size".into(), json!(tx.total_size()));
    m.insert("vsize".into(), json!(tx.vsize()));
    m.insert("weight".into(), json!(tx.weight().to_wu()));
    m.insert("locktime".into(), json!(tx.lock_time.to_consensus_u32()));
    let vin: Vec<Value> = tx
        .input
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let mut v = Map::new();
            if tx.is_coinbase() {
                v.insert(
                    "coinbase".into(),
                    json!(hex::encode(input.script_sig.as_bytes())),
                );
            } else {
                v.insert("txid".into(), json!(input.previous_output.txid.to_string()));
                v.insert("vout".into(), json!(input.previous_output.vout));
                v.insert(
                    "scriptSig".into(),
                    json!({
                        "asm": script_asm(&input.script_sig, true),
                        "hex": hex::encode(input.script_sig.as_bytes()),
                    }),
                );
            }
            if !input.witness.is_empty() {
                let items: Vec<Value> = input
                    .witness
                    .iter()
                    .map(|w| json!(hex::encode(w)))
                    .collect();
                v.insert("txinwitness".into(), Value::Array(items));
            }
            if let Some(coin) = prevouts.and_then(|p| p.get(i)) {
                v.insert(
                    "prevout".into(),
                    json!({
                        "generated": coin.coinbase,
                        "height": coin.height,
                        "value": btc(coin.txout.value),
                        "scriptPubKey": script_pubkey_json(flavor, &coin.txout.script_pubkey),
                    }),
                );
            }
            v.insert("sequence".into(), json!(input.sequence.0));
            Value::Object(v)
        })
        .collect();
    m.insert("vin".into(), Value::Array(vin));
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, out)| {
            json!({
                "value": btc(out.value),
                "n": n,
                "scriptPubKey": script_pubkey_json(flavor, &out.script_pubkey),
            })
        })
        .collect();
    m.insert("vout".into(), Value::Array(vout));
    if let Some(fee) = fee {
        m.insert("fee".into(), btc(fee));
    }
    if include_hex {
        m.insert(
            "hex".into(),
            json!(bitcoin::consensus::encode::serialize_hex(tx)),
        );
    }
    Value::Object(m)
}

/// `ScriptToUniv` for an output script: asm, desc, hex, address (when there is one), type.
pub(crate) fn script_pubkey_json(flavor: Flavor, spk: &Script) -> Value {
    let kind = script_type(flavor, spk);
    let address = script_address(flavor, spk);
    let hex_spk = hex::encode(spk.as_bytes());
    let desc_body = match (kind, &address) {
        ("witness_v1_taproot", _) => format!("rawtr({})", hex::encode(&spk.as_bytes()[2..])),
        ("pubkey", _) => {
            format!(
                "pk({})",
                spk.p2pk_public_key()
                    .map(|k| k.to_string())
                    .unwrap_or_default()
            )
        }
        (_, Some(a)) => format!("addr({a})"),
        _ => format!("raw({hex_spk})"),
    };
    let mut m = Map::new();
    m.insert("asm".into(), json!(script_asm(spk, false)));
    m.insert("desc".into(), json!(descriptor_with_checksum(&desc_body)));
    m.insert("hex".into(), json!(hex_spk));
    if let Some(a) = address {
        m.insert("address".into(), json!(a));
    }
    m.insert("type".into(), json!(kind));
    Value::Object(m)
}

/// Bitcoin Core's `GetTxnOutputType` name for a script.
pub(crate) fn script_type(flavor: Flavor, spk: &Script) -> &'static str {
    let segwit = flavor == Flavor::Bitcoin;
    if spk.is_p2pkh() {
        "pubkeyhash"
    } else if spk.is_p2sh() {
        "scripthash"
    } else if spk.is_p2pk() {
        "pubkey"
    } else if spk.is_op_return() {
        "nulldata"
    } else if spk.is_multisig() {
        "multisig"
    } else if segwit && spk.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if segwit && spk.is_p2wsh() {
        "witness_v0_scripthash"
    } else if segwit && spk.is_p2tr() {
        "witness_v1_taproot"
    } else if segwit && spk.as_bytes() == [0x51, 0x02, 0x4e, 0x73] {
        "anchor"
    } else if segwit && spk.is_witness_program() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// The address of an output script on this flavor's regtest, if it has one.
pub(crate) fn script_address(flavor: Flavor, spk: &Script) -> Option<String> {
    match flavor {
        Flavor::Bitcoin => Address::from_script(spk, Network::Regtest)
            .ok()
            .map(|a| a.to_string()),
        Flavor::Dash => {
            let b = spk.as_bytes();
            let (version, hash) = if spk.is_p2pkh() {
                (DASH_REGTEST_P2PKH, &b[3..23])
            } else if spk.is_p2sh() {
                (DASH_REGTEST_P2SH, &b[2..22])
            } else {
                return None;
            };
            let mut data = vec![version];
            data.extend_from_slice(hash);
            Some(base58::encode_check(&data))
        }
    }
}

/// Dash testnet/regtest P2PKH address version byte.
pub(crate) const DASH_REGTEST_P2PKH: u8 = 140;
/// Dash testnet/regtest P2SH address version byte.
pub(crate) const DASH_REGTEST_P2SH: u8 = 19;

/// Bitcoin Core's `ScriptToAsmStr`.
pub(crate) fn script_asm(script: &Script, attempt_sighash_decode: bool) -> String {
    let mut parts = Vec::new();
    for ins in script.instructions() {
        match ins {
            Err(_) => {
                parts.push("[error]".to_owned());
                break;
            }
            Ok(Instruction::PushBytes(pb)) => {
                let v = pb.as_bytes();
                if v.len() <= 4 {
                    parts.push(script_num(v).to_string());
                } else {
                    let mut suffix = "";
                    let mut data = v;
                    if attempt_sighash_decode
                        && !script.is_op_return()
                        && let Ok(sig) = bitcoin::ecdsa::Signature::from_slice(v)
                    {
                        suffix = sighash_name(sig.sighash_type.to_u32());
                        data = &v[..v.len() - 1];
                    }
                    parts.push(format!("{}{}", hex::encode(data), suffix));
                }
            }
            Ok(Instruction::Op(op)) => {
                let code = op.to_u8();
                let name = if code == 0x4f {
                    "-1".to_owned()
                } else if (OP_PUSHNUM_1.to_u8()..=OP_PUSHNUM_16.to_u8()).contains(&code) {
                    (code - OP_PUSHNUM_1.to_u8() + 1).to_string()
                } else if code == 0xb1 {
                    "OP_CHECKLOCKTIMEVERIFY".to_owned()
                } else if code == 0xb2 {
                    "OP_CHECKSEQUENCEVERIFY".to_owned()
                } else if code > 0xba {
                    "OP_UNKNOWN".to_owned()
                } else {
                    op.to_string()
                };
                parts.push(name);
            }
        }
    }
    parts.join(" ")
}

fn sighash_name(t: u32) -> &'static str {
    match t {
        0x01 => "[ALL]",
        0x02 => "[NONE]",
        0x03 => "[SINGLE]",
        0x81 => "[ALL|ANYONECANPAY]",
        0x82 => "[NONE|ANYONECANPAY]",
        0x83 => "[SINGLE|ANYONECANPAY]",
        _ => "",
    }
}

/// `CScriptNum(vch, false).getint()` for pushes of at most 4 bytes.
fn script_num(v: &[u8]) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let mut result: i64 = 0;
    for (i, b) in v.iter().enumerate() {
        result |= i64::from(*b) << (8 * i);
    }
    let last = v[v.len() - 1];
    if last & 0x80 != 0 {
        -(result & !(0x80_i64 << (8 * (v.len() - 1))))
    } else {
        result
    }
}

/// Appends the BIP380 descriptor checksum: `desc#checksum`.
pub(crate) fn descriptor_with_checksum(desc: &str) -> String {
    const INPUT_CHARSET: &str = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    const CHECKSUM_CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GENERATOR: [u64; 5] = [
        0xf5dee51989,
        0xa9fdca3312,
        0x1bab10e32d,
        0x3706b1677a,
        0x644d626ffd,
    ];
    fn polymod(chk: u64, value: u64) -> u64 {
        let top = chk >> 35;
        let mut chk = ((chk & 0x7_ffff_ffff) << 5) ^ value;
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
        chk
    }
    let mut chk = 1u64;
    let mut groups = Vec::new();
    for c in desc.chars() {
        let Some(pos) = INPUT_CHARSET.find(c) else {
            return desc.to_owned();
        };
        let pos = pos as u64;
        chk = polymod(chk, pos & 31);
        groups.push(pos >> 5);
        if groups.len() == 3 {
            chk = polymod(chk, groups[0] * 9 + groups[1] * 3 + groups[2]);
            groups.clear();
        }
    }
    match groups.len() {
        1 => chk = polymod(chk, groups[0]),
        2 => chk = polymod(chk, groups[0] * 3 + groups[1]),
        _ => {}
    }
    for _ in 0..8 {
        chk = polymod(chk, 0);
    }
    chk ^= 1;
    let sum: String = (0..8)
        .map(|i| CHECKSUM_CHARSET[((chk >> (5 * (7 - i))) & 31) as usize] as char)
        .collect();
    format!("{desc}#{sum}")
}

/// Hex of a block hash in serialized (internal) byte order, as REST `.hex` replies use.
pub(crate) fn hash_internal_hex(hash: &BlockHash) -> String {
    hex::encode(hash.to_byte_array())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::ScriptBuf;

    /// Proves difficulty prints exactly as Bitcoin Core's regtest value.
    #[test]
    fn difficulty_matches_core() {
        assert_eq!(
            json!(difficulty(0x207f_ffff)).to_string(),
            "4.656542373906925e-10"
        );
    }

    /// Proves descriptor checksums and output-script JSON match values Bitcoin Core recorded.
    #[test]
    fn script_json_matches_recorded_values() {
        assert_eq!(
            descriptor_with_checksum(
                "addr(bcrt1q2upsjqzaxarkhlaj68nwwn43jt2mw2l5r8u3fkkn6ehm5gjde9gsd34ayj)"
            ),
            "addr(bcrt1q2upsjqzaxarkhlaj68nwwn43jt2mw2l5r8u3fkkn6ehm5gjde9gsd34ayj)#ewmnwhyp"
        );
        let spk = ScriptBuf::from_hex(
            "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
        )
        .expect("hex");
        let v = script_pubkey_json(Flavor::Bitcoin, &spk);
        assert_eq!(
            v["asm"],
            "OP_RETURN aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
        );
        assert_eq!(
            v["desc"],
            "raw(6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9)#cav96mf3"
        );
        assert_eq!(v["type"], "nulldata");
        assert!(v.get("address").is_none());
        let tr = ScriptBuf::from_hex(
            "5120bebb80531021d2a6ad538e22af9b34e046a6b1e00786f4140da6410eda04f4ae",
        )
        .expect("hex");
        let v = script_pubkey_json(Flavor::Bitcoin, &tr);
        assert_eq!(
            v["asm"],
            "1 bebb80531021d2a6ad538e22af9b34e046a6b1e00786f4140da6410eda04f4ae"
        );
        assert_eq!(
            v["desc"],
            "rawtr(bebb80531021d2a6ad538e22af9b34e046a6b1e00786f4140da6410eda04f4ae)#9a8ht0gw"
        );
        assert_eq!(
            v["address"],
            "bcrt1ph6acq5csy8f2dt2n3c32lxe5upr2dv0qq7r0g9qd5eqsaksy7jhq94m04u"
        );
        assert_eq!(v["type"], "witness_v1_taproot");
    }
}
