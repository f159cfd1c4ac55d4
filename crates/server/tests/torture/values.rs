//! Self-checking keys and values: every value starts with its key and a
//! unique write id, and the rest is filler derived from both, so any value
//! read back can be traced to the one write that produced it.

use rand::Rng;

/// The name of key number `i` of the shared key space. A few keys are long
/// (hundreds of bytes) so that key handling is exercised as well.
pub fn key_name(i: usize) -> String {
    if i % 97 == 13 {
        format!("t:{i:05}:{}", "L".repeat(100 + (i * 7) % 400))
    } else {
        format!("t:{i:05}")
    }
}

/// Filler alphabet: letters, digits, and the bytes a value may hold that a
/// careless parser could trip on (space, `|`, tab, `\n`, `#`).
const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 |\t\n#.-_:";

fn seed(key: &str, id: u64) -> u64 {
    // FNV-1a over the key, then the id mixed in (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// The value of write `id` to `key`, exactly `len` bytes long: the text
/// `<key>#<id>#` followed by filler, cut to `len` (so a value shorter than
/// its header is a prefix of that header).
pub fn value_bytes(key: &str, id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(32));
    v.extend_from_slice(format!("{key}#{id}#").as_bytes());
    if v.len() >= len {
        v.truncate(len);
        return v;
    }
    let mut s = seed(key, id);
    while v.len() < len {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let mut r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        for _ in 0..8 {
            if v.len() == len {
                break;
            }
            v.push(ALPHABET[(r as usize & 0xff) % ALPHABET.len()]);
            r >>= 8;
        }
    }
    v
}

/// A short description of a value read back, for failure messages: the
/// key and write id it claims to come from, and its length.
pub fn describe(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(&v[..v.len().min(600)]);
    let mut parts = text.splitn(3, '#');
    match (parts.next(), parts.next()) {
        (Some(k), Some(id)) if id.parse::<u64>().is_ok() => {
            format!("value of key {k:?} write id {id}, {} bytes", v.len())
        }
        _ => format!(
            "unrecognised value {:?}, {} bytes",
            String::from_utf8_lossy(&v[..v.len().min(60)]),
            v.len()
        ),
    }
}

/// The write id a value claims in its header, if it has a full header.
pub fn claimed_id(v: &[u8]) -> Option<u64> {
    let mut it = v.splitn(3, |&b| b == b'#');
    let _key = it.next()?;
    let id = it.next()?;
    it.next()?;
    std::str::from_utf8(id).ok()?.parse().ok()
}

/// A value length with the challenge's mix: 70% 1 B..1 KiB, 20% 1..10 KiB,
/// 10% 10 KiB..`big_max`.
pub fn pick_len(rng: &mut impl Rng, big_max: usize) -> usize {
    let p: f64 = rng.gen();
    if p < 0.70 {
        rng.gen_range(1..=1024)
    } else if p < 0.90 {
        rng.gen_range(1025..=10 * 1024)
    } else {
        rng.gen_range(10 * 1024 + 1..=big_max.max(10 * 1024 + 1))
    }
}

#[test]
fn values_are_deterministic_and_self_describing() {
    let a = value_bytes("t:00001", 42, 5000);
    assert_eq!(a.len(), 5000);
    assert_eq!(a, value_bytes("t:00001", 42, 5000));
    assert_ne!(a, value_bytes("t:00001", 43, 5000));
    assert_ne!(a, value_bytes("t:00002", 42, 5000));
    assert!(!a.contains(&b'\r'));
    assert_eq!(claimed_id(&a), Some(42));
    assert_eq!(value_bytes("t:00001", 42, 3), b"t:0");
    assert!(describe(&a).contains("write id 42"));
}
