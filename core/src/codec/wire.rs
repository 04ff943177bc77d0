//! Primitive wire types of MQTT (§1.5 of 3.1.1 and 5.0): integers, variable byte integers,
//! length-prefixed strings and binary data, read from and written to byte slices.
//!
//! [`Reader`] only ever looks inside the frame it was given, so a field that claims more
//! bytes than the packet holds is [`DecodeError::MalformedLength`], never an overread.
//! [`Writer`] is used only after the caller has checked the exact encoded length.

use super::error::DecodeError;

/// Largest value a variable byte integer can hold (§1.5.5): 268 435 455.
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Largest string or binary field: a two-byte length prefix.
pub(crate) const MAX_FIELD: usize = u16::MAX as usize;

/// Bytes a variable byte integer takes for `value` (1 to 4).
#[inline]
pub(crate) const fn var_int_len(value: u32) -> usize {
    if value < 128 {
        1
    } else if value < 16_384 {
        2
    } else if value < 2_097_152 {
        3
    } else {
        4
    }
}

/// Checks a UTF-8 encoded string field (§1.5.4): well-formed UTF-8 with no surrogates
/// ([MQTT-1.5.4-1], which `from_utf8` enforces) and no U+0000 ([MQTT-1.5.4-2]).
#[inline]
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    check_str_scan(bytes).map(|(s, _)| s)
}

/// [`check_str`], also returning what [`scan`] found, for a caller with more to check
/// (a topic name's wildcards) that should not look at the bytes twice.
#[inline]
pub(crate) fn check_str_scan(bytes: &[u8]) -> Result<(&str, u8), DecodeError> {
    let found = scan(bytes);
    // U+0000 is the only code point whose UTF-8 form contains a zero byte.
    if found & HAS_NULL != 0 {
        return Err(DecodeError::NullCharacter);
    }
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    Ok((s, found))
}

/// [`scan`] found a zero byte (U+0000 in a UTF-8 string).
pub(crate) const HAS_NULL: u8 = 1;
/// [`scan`] found a `+` or `#` (a wildcard, if the field is a topic name).
pub(crate) const HAS_WILDCARD: u8 = 2;

/// Looks through a field for zero bytes and wildcards in one pass, eight bytes a step,
/// and returns [`HAS_NULL`] and [`HAS_WILDCARD`] bits.
///
/// Every string of every packet goes through here, most of them 10 to 100 bytes long.
/// A byte-at-a-time `any` with a branch per byte, or `contains` (a call, then a byte loop
/// below 16 bytes), costs several times more; only a malformed packet has a match, so
/// stopping at the first one would buy nothing.
#[inline]
pub(crate) fn scan(bytes: &[u8]) -> u8 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // `#` (0x23) and `+` (0x2B) differ only in bit 3, and no other byte becomes 0x2B when
    // that bit is set: one comparison finds both.
    const BIT3: u64 = u64::from_ne_bytes([0x08; 8]);
    const PLUS: u64 = u64::from_ne_bytes([b'+'; 8]);
    // `(v - ONES) & !v` has the high bit of a byte set if that byte of `v` is zero, and
    // of none if no byte is (a borrow can mark bytes after a zero one too, which does not
    // change the yes/no answer). The high bits are masked once, at the end.
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v;
    let (words, tail) = bytes.as_chunks::<8>();
    let mut null = 0;
    let mut wildcard = 0;
    for word in words {
        let v = u64::from_ne_bytes(*word);
        null |= zero_bytes(v);
        wildcard |= zero_bytes((v | BIT3) ^ PLUS);
    }
    if !tail.is_empty() {
        if let Some(last) = bytes.last_chunk::<8>() {
            // The last eight bytes, overlapping ones already seen: no byte loop.
            let v = u64::from_ne_bytes(*last);
            null |= zero_bytes(v);
            wildcard |= zero_bytes((v | BIT3) ^ PLUS);
        } else {
            // Fewer than eight bytes in all.
            for &b in tail {
                null |= u64::from(b == 0) << 7;
                wildcard |= u64::from(b | 0x08 == b'+') << 7;
            }
        }
    }
    (u8::from(null & HIGHS != 0) * HAS_NULL) | (u8::from(wildcard & HIGHS != 0) * HAS_WILDCARD)
}

/// A cursor over one complete frame (or a part of it).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    pub(crate) const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything not read yet, consuming it.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    #[inline]
    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::MalformedLength);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&byte, tail) = self.buf.split_first().ok_or(DecodeError::MalformedLength)?;
        self.buf = tail;
        Ok(byte)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.buf {
            [hi, lo, ref tail @ ..] => {
                self.buf = tail;
                Ok(u16::from_be_bytes([hi, lo]))
            }
            _ => Err(DecodeError::MalformedLength),
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.buf {
            [a, b, c, d, ref tail @ ..] => {
                self.buf = tail;
                Ok(u32::from_be_bytes([a, b, c, d]))
            }
            _ => Err(DecodeError::MalformedLength),
        }
    }

    /// A variable byte integer (§1.5.5). Inside a frame, running out of bytes is a length
    /// error; a fifth continuation byte is [`DecodeError::InvalidVarInt`], and so is an
    /// encoding longer than needed: only 5.0 has variable byte integers inside packets, and
    /// it requires the shortest form ([MQTT-1.5.5-1] of 5.0).
    #[inline]
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match decode_var_int(self.buf) {
            VarInt::Value { value, len } if len == var_int_len(value) => {
                self.buf = &self.buf[len..];
                Ok(value)
            }
            VarInt::Incomplete => Err(DecodeError::MalformedLength),
            VarInt::Value { .. } | VarInt::Invalid => Err(DecodeError::InvalidVarInt),
        }
    }

    /// Two-byte length, then that many bytes (§1.5.6).
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.bytes(len)
    }

    /// Two-byte length, then that many bytes of checked UTF-8 (§1.5.4).
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.binary()?)
    }
}

/// Outcome of reading a variable byte integer from the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes it took.
    Value { value: u32, len: usize },
    /// The buffer ends before the last byte of the integer.
    Incomplete,
    /// More than four bytes ([MQTT-1.5.5-1]).
    Invalid,
}

#[inline]
pub(crate) fn decode_var_int(buf: &[u8]) -> VarInt {
    let mut value = 0u32;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return VarInt::Value { value, len: i + 1 };
        }
    }
    VarInt::Invalid
}

/// `dst.copy_from_slice(src)` for slices of equal length, with short ones copied inline.
///
/// Topic names, strings and small payloads are mostly under 64 bytes, where a call into
/// the C library's `memcpy` (what `copy_from_slice` becomes for a length not known at
/// compile time) costs more than the copy. Two fixed-size copies, which may overlap, cover
/// every length of a range without a loop.
#[inline]
fn copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    debug_assert_eq!(dst.len(), n);
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        33..=64 => {
            dst[..32].copy_from_slice(&src[..32]);
            dst[n - 32..].copy_from_slice(&src[n - 32..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Writes into a buffer the caller has already sized with the packet's `encoded_len`.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline]
    pub(crate) const fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        copy(&mut self.buf[self.pos..end], bytes);
        self.pos = end;
    }

    #[inline]
    pub(crate) fn u8(&mut self, value: u8) {
        self.buf[self.pos] = value;
        self.pos += 1;
    }

    #[inline]
    pub(crate) fn u16(&mut self, value: u16) {
        self.bytes(&value.to_be_bytes());
    }

    #[inline]
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    #[inline]
    pub(crate) fn var_int(&mut self, mut value: u32) {
        loop {
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.u8(byte);
            if value == 0 {
                break;
            }
        }
    }

    /// A length-prefixed field; lengths were checked against [`MAX_FIELD`] beforehand.
    #[inline]
    pub(crate) fn binary(&mut self, bytes: &[u8]) {
        self.u16(bytes.len() as u16);
        self.bytes(bytes);
    }

    #[inline]
    pub(crate) fn str(&mut self, value: &str) {
        self.binary(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries_from_spec_table() {
        // MQTT 5.0 §1.5.5, table 1-1: the smallest and largest values of each length.
        let cases: [(&[u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            assert_eq!(
                decode_var_int(bytes),
                VarInt::Value {
                    value,
                    len: bytes.len()
                }
            );
            assert_eq!(var_int_len(value), bytes.len());
            let mut out = [0u8; 4];
            let mut w = Writer::new(&mut out);
            w.var_int(value);
            let written = w.position();
            assert_eq!(&out[..written], bytes);
        }
    }

    #[test]
    fn var_int_fifth_byte_is_invalid() {
        // [MQTT-1.5.5-1]: at most four bytes.
        assert_eq!(
            decode_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            VarInt::Invalid
        );
        assert_eq!(decode_var_int(&[0x80, 0x80]), VarInt::Incomplete);
    }

    #[test]
    fn scan_agrees_with_a_byte_loop() {
        // Every length around the eight-byte steps, with each interesting byte at every
        // position (including the overlapping last word and the short-field loop).
        let naive = |bytes: &[u8]| {
            let null = bytes.contains(&0);
            let wildcard = bytes.iter().any(|&b| b == b'+' || b == b'#');
            (u8::from(null) * HAS_NULL) | (u8::from(wildcard) * HAS_WILDCARD)
        };
        let mut buf = [b'a'; 40];
        for len in 0..=buf.len() {
            assert_eq!(scan(&buf[..len]), 0);
            for at in 0..len {
                for special in [0, b'+', b'#', 0x01, 0x80, 0xFF, b'*', b'$'] {
                    buf[at] = special;
                    assert_eq!(
                        scan(&buf[..len]),
                        naive(&buf[..len]),
                        "{len} {at} {special}"
                    );
                    buf[at] = b'a';
                }
            }
        }
        // Bytes that differ from 0, '+' or '#' by one bit or a borrow.
        for b in 0..=255u8 {
            let word = [b; 9];
            assert_eq!(scan(&word), naive(&word), "{b}");
            assert_eq!(scan(&word[..3]), naive(&word[..3]), "{b}");
        }
    }

    #[test]
    fn short_copies_match_copy_from_slice() {
        let src: [u8; 80] = core::array::from_fn(|i| i as u8 + 1);
        for n in 0..=src.len() {
            let mut out = [0u8; 80];
            copy(&mut out[..n], &src[..n]);
            assert_eq!(&out[..n], &src[..n], "{n}");
            assert!(out[n..].iter().all(|&b| b == 0), "{n}: wrote past the end");
        }
    }

    #[test]
    fn strings_reject_null_and_surrogates() {
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::NullCharacter));
        // U+D800 encoded as if it were a scalar value: ED A0 80.
        assert_eq!(
            check_str(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(check_str(&[0xC0, 0x80]), Err(DecodeError::InvalidUtf8));
        assert_eq!(check_str("a/ü/€".as_bytes()), Ok("a/ü/€"));
    }
}
