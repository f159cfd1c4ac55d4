//! The challenge's workload: key choice (80% of requests on the hot keys),
//! operation choice, value sizes in three bands, and self-checking values.
//!
//! A value of length `L` for key `K` written with version `V` is
//! `K:L:V:` followed by filler bytes: a fixed pseudo-random pattern (see
//! [`filler_pattern`]) read from an offset that `K` and `V` choose. Every
//! byte of every value read is checked, by comparing slices with the
//! pattern. The filler alphabet is `A-Z a-z 0-9 - _`, so values never
//! contain `\r` (or any other byte the text protocol treats specially). A
//! value whose chosen size is shorter than its header is lengthened to the
//! header.

use rand::Rng;

/// Share of requests that go to the hot keys (the challenge's 80/20 pattern).
pub const HOT_REQUEST_SHARE: f64 = 0.8;

/// Size bands: (cumulative probability, smallest size, largest size).
const SIZE_BANDS: [(f64, usize, usize); 3] = [
    (0.7, 1, 1024),
    (0.9, 1024, 10 * 1024),
    (1.0, 10 * 1024, 100 * 1024),
];

const FILLER_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read one key.
    Read,
    /// Write one key.
    Write,
}

/// Why a value read back is not a well-formed value for its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value does not start with `<key>:`.
    #[error("value does not start with its key")]
    WrongKey,
    /// The `<len>:<version>:` header is missing or malformed.
    #[error("malformed value header")]
    BadHeader,
    /// The value's length differs from the one in its header.
    #[error("value length {got} differs from its header's {expected}")]
    WrongLength {
        /// Length from the header.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A filler byte differs from the one that was written.
    #[error("value corrupted at byte {offset}")]
    Corrupt {
        /// Offset of the first wrong byte in the value.
        offset: usize,
    },
}

/// The key space and the request mix.
#[derive(Debug, Clone)]
pub struct Workload {
    key_count: u64,
    hot_count: u64,
    read_ratio: f64,
}

impl Workload {
    /// A workload over `key_count` keys of which the first
    /// `ceil(key_count * hot_key_ratio)` are hot.
    pub fn new(key_count: u64, hot_key_ratio: f64, read_ratio: f64) -> Self {
        let key_count = key_count.max(1);
        let hot = (key_count as f64 * hot_key_ratio).ceil() as u64;
        Workload {
            key_count,
            hot_count: hot.min(key_count),
            read_ratio,
        }
    }

    /// Number of hot keys.
    #[cfg(test)]
    pub fn hot_count(&self) -> u64 {
        self.hot_count
    }

    /// Picks a key index: 80% of the time among the hot keys.
    pub fn choose_key<R: Rng>(&self, rng: &mut R) -> u64 {
        let (h, n) = (self.hot_count, self.key_count);
        if h == 0 || h == n {
            return rng.gen_range(0..n);
        }
        if rng.gen_bool(HOT_REQUEST_SHARE) {
            rng.gen_range(0..h)
        } else {
            rng.gen_range(h..n)
        }
    }

    /// Picks read or write according to the read ratio.
    pub fn choose_op<R: Rng>(&self, rng: &mut R) -> Op {
        if rng.gen::<f64>() < self.read_ratio {
            Op::Read
        } else {
            Op::Write
        }
    }
}

/// The name of key number `i`: `bench:000123`, as a `String` (for the
/// read-back check; the request loop uses [`KeyName`]).
pub fn key_name(i: u64) -> String {
    KeyName::new(i).as_str().to_owned()
}

/// The name of a key, formatted on the stack (no allocation per request).
#[derive(Clone, Copy)]
pub struct KeyName {
    buf: [u8; KeyName::CAPACITY],
    len: u8,
}

impl KeyName {
    /// `bench:` plus the 20 digits of the largest `u64`.
    const CAPACITY: usize = 26;

    /// The name of key number `i`: `bench:` and at least six digits.
    pub fn new(i: u64) -> Self {
        let mut digits = [b'0'; 20];
        let mut n = i;
        let mut used = 0;
        while n > 0 || used < 6 {
            digits[19 - used] = b'0' + (n % 10) as u8;
            n /= 10;
            used += 1;
        }
        let mut buf = [0u8; Self::CAPACITY];
        buf[..6].copy_from_slice(b"bench:");
        buf[6..6 + used].copy_from_slice(&digits[20 - used..]);
        KeyName {
            buf,
            len: (6 + used) as u8,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into `buf`.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("bench:?")
    }
}

/// How the size of each written value is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeModel {
    /// The challenge's three bands (see [`choose_size`]).
    Bands,
    /// Every value asks for this many bytes (at least its header is sent).
    Fixed(usize),
}

impl SizeModel {
    /// `Fixed(n)` for a non-zero `n`, the challenge's bands for 0.
    pub fn from_flag(value_size: usize) -> Self {
        if value_size == 0 {
            SizeModel::Bands
        } else {
            SizeModel::Fixed(value_size)
        }
    }

    /// The size asked for a value written during the measured phase.
    pub fn choose<R: Rng>(self, rng: &mut R) -> usize {
        match self {
            SizeModel::Bands => choose_size(rng),
            SizeModel::Fixed(n) => n,
        }
    }

    /// The size asked for key `i`'s preloaded value.
    pub fn preload(self, seed: u64, i: u64) -> usize {
        match self {
            SizeModel::Bands => preload_size(seed, i),
            SizeModel::Fixed(n) => n,
        }
    }
}

/// Picks a value size: 70% 1 B..1 KiB, 20% 1..10 KiB, 10% 10..100 KiB.
pub fn choose_size<R: Rng>(rng: &mut R) -> usize {
    let p: f64 = rng.gen();
    for &(cum, lo, hi) in &SIZE_BANDS {
        if p < cum {
            return rng.gen_range(lo..=hi);
        }
    }
    let (_, lo, hi) = SIZE_BANDS[SIZE_BANDS.len() - 1];
    rng.gen_range(lo..=hi)
}

/// The size of key `i`'s preloaded value for a given seed, so that a later
/// run with `--assume-preloaded` knows the live data size without writing.
pub fn preload_size(seed: u64, i: u64) -> usize {
    use rand::SeedableRng;
    let mut rng =
        rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5052_454c_4f41_4400 ^ i.wrapping_mul(K1));
    choose_size(&mut rng)
}

/// The length a value gets when `wanted` bytes are asked for (at least its header).
pub fn effective_len(key: &str, wanted: usize, version: u64) -> usize {
    let mut len = wanted;
    loop {
        let h = header_len(key, len, version);
        if h <= len {
            return len;
        }
        len = h;
    }
}

fn header_len(key: &str, len: usize, version: u64) -> usize {
    key.len() + 3 + digits(len as u64) + digits(version)
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

const K1: u64 = 0x9E37_79B9_7F4A_7C15;

/// Period of the filler stream, in bytes. A value's filler is the stream
/// [`filler_pattern`] read from an offset chosen by its key and version, so
/// two versions of a key (almost always) have different filler.
pub const FILLER_PERIOD: usize = 128 * 1024;

fn filler_seed(key: &str, version: u64) -> u64 {
    // FNV-1a of the key, mixed with the version.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ version.wrapping_mul(K1)
}

/// Where in the filler pattern the filler of `key` at `version` starts.
fn filler_offset(key: &str, version: u64) -> usize {
    // The top bits of a multiplicative hash are the well-mixed ones.
    let h = filler_seed(key, version).wrapping_mul(K1);
    (h >> 32) as usize % FILLER_PERIOD
}

/// The filler pattern: [`FILLER_PERIOD`] bytes of the filler alphabet from a
/// fixed splitmix64 stream (one byte per 6 bits), computed once. Writing a
/// value copies slices of it and checking one compares slices, so neither
/// costs more than a `memcpy`/`memcmp` of the value.
pub fn filler_pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x4553_4341_4245_4c4f; // "ESCABELO"
        let mut out = Vec::with_capacity(FILLER_PERIOD);
        while out.len() < FILLER_PERIOD {
            state = state.wrapping_add(K1);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let mut word = z ^ (z >> 31);
            for _ in 0..10 {
                if out.len() == FILLER_PERIOD {
                    break;
                }
                out.push(FILLER_ALPHABET[(word & 63) as usize]);
                word >>= 6;
            }
        }
        out.into_boxed_slice()
    })
}

/// Calls `f` on consecutive slices of the filler stream starting at
/// `offset`, `len` bytes in all; stops early if `f` returns `false`.
fn filler_chunks(offset: usize, len: usize, mut f: impl FnMut(&[u8]) -> bool) {
    let pattern = filler_pattern();
    let mut pos = offset % FILLER_PERIOD;
    let mut left = len;
    while left > 0 {
        let take = left.min(FILLER_PERIOD - pos);
        if !f(&pattern[pos..pos + take]) {
            return;
        }
        left -= take;
        pos = 0;
    }
}

/// Appends the decimal digits of `n` (no allocation).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the value for `key` at `version` to `out`; returns its length,
/// which is `wanted` or, if that is shorter than the header, the header's.
pub fn write_value(out: &mut Vec<u8>, key: &str, wanted: usize, version: u64) -> usize {
    let len = effective_len(key, wanted, version);
    out.reserve(len);
    out.extend_from_slice(key.as_bytes());
    out.push(b':');
    push_decimal(out, len as u64);
    out.push(b':');
    push_decimal(out, version);
    out.push(b':');
    let filler = len - header_len(key, len, version);
    filler_chunks(filler_offset(key, version), filler, |chunk| {
        out.extend_from_slice(chunk);
        true
    });
    len
}

/// The value for `key` at `version` with `wanted` bytes, as a new vector.
#[cfg(test)]
pub fn make_value(key: &str, wanted: usize, version: u64) -> Vec<u8> {
    let mut v = Vec::new();
    write_value(&mut v, key, wanted, version);
    v
}

fn parse_number(b: &[u8]) -> Option<(u64, usize)> {
    let end = b.iter().position(|&c| c == b':')?;
    if end == 0 || end > 20 || !b[..end].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(&b[..end]).ok()?;
    Some((s.parse().ok()?, end + 1))
}

/// Checks that `value` is a well-formed value for `key` (any version).
pub fn check_value(key: &str, value: &[u8]) -> Result<(), ValueError> {
    let k = key.as_bytes();
    if value.len() <= k.len() || &value[..k.len()] != k || value[k.len()] != b':' {
        return Err(ValueError::WrongKey);
    }
    let mut pos = k.len() + 1;
    let (len, used) = parse_number(&value[pos..]).ok_or(ValueError::BadHeader)?;
    pos += used;
    let (version, used) = parse_number(&value[pos..]).ok_or(ValueError::BadHeader)?;
    pos += used;
    let len = usize::try_from(len).map_err(|_| ValueError::BadHeader)?;
    if len != value.len() {
        return Err(ValueError::WrongLength {
            expected: len,
            got: value.len(),
        });
    }
    if pos != header_len(key, len, version) {
        return Err(ValueError::BadHeader);
    }
    let body = &value[pos..];
    let mut checked = 0;
    let mut bad = None;
    filler_chunks(filler_offset(key, version), body.len(), |want| {
        let got = &body[checked..checked + want.len()];
        if got != want {
            // Only on failure: find the first differing byte.
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            bad = Some(pos + checked + i);
            return false;
        }
        checked += want.len();
        true
    });
    match bad {
        Some(offset) => Err(ValueError::Corrupt { offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    #[test]
    fn values_roundtrip_and_have_no_cr() {
        let mut rng = SmallRng::seed_from_u64(1);
        for v in 0..200u64 {
            let key = key_name(v * 37);
            let want = choose_size(&mut rng);
            let val = make_value(&key, want, v);
            assert_eq!(val.len(), effective_len(&key, want, v));
            assert!(val.len() >= want);
            assert!(!val.contains(&b'\r'));
            assert_eq!(check_value(&key, &val), Ok(()));
        }
    }

    #[test]
    fn tiny_sizes_get_the_header() {
        let v = make_value("bench:000001", 1, 7);
        assert_eq!(check_value("bench:000001", &v), Ok(()));
        assert_eq!(&v[..], b"bench:000001:18:7:");
    }

    #[test]
    fn corruption_is_detected() {
        let key = key_name(5);
        let good = make_value(&key, 5000, 3);
        let mut bad = good.clone();
        bad[4000] = if bad[4000] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            check_value(&key, &bad),
            Err(ValueError::Corrupt { offset: 4000 })
        );
        assert_eq!(
            check_value(&key, &good[..4999]),
            Err(ValueError::WrongLength {
                expected: 5000,
                got: 4999
            })
        );
        assert_eq!(check_value(&key_name(6), &good), Err(ValueError::WrongKey));
        assert_eq!(check_value(&key, b"error"), Err(ValueError::WrongKey));
        assert_eq!(
            check_value(&key, b"bench:000005:x:1:"),
            Err(ValueError::BadHeader)
        );
        // Another version's header with this version's filler.
        let mut swapped = good.clone();
        let other = make_value(&key, 5000, 4);
        swapped[..20].copy_from_slice(&other[..20]);
        assert!(check_value(&key, &swapped).is_err());
    }

    #[test]
    fn filler_pattern_is_fixed_and_in_the_alphabet() {
        let p = filler_pattern();
        assert_eq!(p.len(), FILLER_PERIOD);
        assert!(p.iter().all(|b| FILLER_ALPHABET.contains(b)));
        // Every symbol appears: the pattern is not degenerate.
        for c in FILLER_ALPHABET {
            assert!(p.contains(c));
        }
        // The format is stable: an --assume-preloaded run relies on it.
        assert_eq!(
            &make_value("bench:000001", 30, 0)[..],
            b"bench:000001:30:0:I_5EpZOKKlJ8"
        );
    }

    #[test]
    fn key_names() {
        for i in [0u64, 1, 999_999, 1_000_000, 12_345_678, u64::MAX] {
            assert_eq!(KeyName::new(i).as_str(), format!("bench:{i:06}"));
        }
        assert_eq!(key_name(42), "bench:000042");
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn values_longer_than_the_pattern_are_checked_throughout() {
        let key = key_name(77);
        let len = 3 * FILLER_PERIOD + 123;
        let good = make_value(&key, len, 9);
        assert_eq!(good.len(), len);
        assert_eq!(check_value(&key, &good), Ok(()));
        for at in [40, FILLER_PERIOD + 5, 2 * FILLER_PERIOD, len - 1] {
            let mut bad = good.clone();
            bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                check_value(&key, &bad),
                Err(ValueError::Corrupt { offset: at })
            );
        }
    }

    #[test]
    fn versions_and_keys_get_different_filler() {
        let key = key_name(3);
        let a = make_value(&key, 2000, 10);
        let b = make_value(&key, 2000, 11);
        let c = make_value(&key_name(4), 2000, 10);
        assert_ne!(a[30..], b[30..]);
        assert_ne!(a[30..], c[30..]);
    }

    #[test]
    fn size_bands_and_hot_keys() {
        let mut rng = SmallRng::seed_from_u64(2);
        let n = 100_000;
        let mut bands = [0usize; 3];
        for _ in 0..n {
            let s = choose_size(&mut rng);
            assert!((1..=100 * 1024).contains(&s));
            bands[if s <= 1024 {
                0
            } else if s <= 10 * 1024 {
                1
            } else {
                2
            }] += 1;
        }
        let share = |c: usize| c as f64 / n as f64;
        assert!((share(bands[0]) - 0.7).abs() < 0.01);
        assert!((share(bands[1]) - 0.2).abs() < 0.01);
        assert!((share(bands[2]) - 0.1).abs() < 0.01);

        let w = Workload::new(10_000, 0.2, 0.8);
        assert_eq!(w.hot_count(), 2000);
        let mut hot = 0;
        let mut reads = 0;
        for _ in 0..n {
            if w.choose_key(&mut rng) < 2000 {
                hot += 1;
            }
            if w.choose_op(&mut rng) == Op::Read {
                reads += 1;
            }
        }
        assert!((share(hot) - 0.8).abs() < 0.01);
        assert!((share(reads) - 0.8).abs() < 0.01);
    }
}
