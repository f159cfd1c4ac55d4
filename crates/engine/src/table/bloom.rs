//! The Bloom filter (layout in the module doc): double hashing from one
//! xxh3-64 hash of the key.

use xxhash_rust::xxh3::xxh3_64;

/// Hash of a key as the filter uses it.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Largest number of probes accepted.
pub(crate) const PROBES_MAX: u8 = 30;

/// Builds the filter contents from key hashes.
pub(crate) fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let bits = (hashes.len().saturating_mul(bits_per_key)).max(64);
    let bytes = bits.div_ceil(8);
    let m = (bytes * 8) as u64;
    // k = bits_per_key * ln 2, rounded.
    let probes = ((bits_per_key as f64) * std::f64::consts::LN_2).round() as u64;
    let probes = probes.clamp(1, u64::from(PROBES_MAX)) as u8;
    let mut out = vec![0u8; bytes + 1];
    for &h in hashes {
        let delta = h.rotate_left(31) | 1;
        let mut g = h;
        for _ in 0..probes {
            let bit = g % m;
            out[(bit / 8) as usize] |= 1 << (bit % 8);
            g = g.wrapping_add(delta);
        }
    }
    out[bytes] = probes;
    out
}

/// A filter read from disk.
#[derive(Debug, Clone)]
pub(crate) struct Bloom {
    bits: bytes::Bytes,
    probes: u8,
}

impl Bloom {
    /// Parses filter contents; `None` if malformed.
    pub fn decode(contents: bytes::Bytes) -> Option<Bloom> {
        let (&probes, bits) = contents.split_last()?;
        if bits.len() < 8 || !(1..=PROBES_MAX).contains(&probes) {
            return None;
        }
        let n = bits.len();
        Some(Bloom {
            bits: contents.slice(..n),
            probes,
        })
    }

    /// False if the key is certainly absent.
    pub fn may_contain_hash(&self, h: u64) -> bool {
        let m = (self.bits.len() * 8) as u64;
        let delta = h.rotate_left(31) | 1;
        let mut g = h;
        for _ in 0..self.probes {
            let bit = g % m;
            if self.bits[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            g = g.wrapping_add(delta);
        }
        true
    }
}
