//! MurmurHash3 x86_32 (Austin Appleby's public-domain algorithm), the hash
//! flagd's `fractional` buckets with. Streaming over several slices, so the
//! default bucketing key (`flagKey` + `targetingKey`) needs no allocation.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

fn mix_k(mut k: u32) -> u32 {
    k = k.wrapping_mul(C1);
    k = k.rotate_left(15);
    k.wrapping_mul(C2)
}

/// MurmurHash3 x86_32 with `seed` over the concatenation of `parts`.
pub fn murmur3_32(parts: &[&[u8]], seed: u32) -> u32 {
    let mut h = seed;
    let mut tail = [0u8; 4];
    let mut tail_len = 0usize;
    let mut total = 0usize;
    for part in parts {
        total += part.len();
        for &byte in *part {
            tail[tail_len] = byte;
            tail_len += 1;
            if tail_len == 4 {
                h ^= mix_k(u32::from_le_bytes(tail));
                h = h.rotate_left(13);
                h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
                tail_len = 0;
            }
        }
    }
    if tail_len > 0 {
        let mut k = 0u32;
        for (i, &byte) in tail[..tail_len].iter().enumerate() {
            k |= u32::from(byte) << (8 * i);
        }
        h ^= mix_k(k);
    }
    h ^= total as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::murmur3_32;

    /// Published MurmurHash3 x86_32 vectors.
    #[test]
    fn known_vectors() {
        assert_eq!(murmur3_32(&[b""], 0), 0);
        assert_eq!(murmur3_32(&[b""], 1), 0x514e_28b7);
        assert_eq!(murmur3_32(&[b""], 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(&[b"\0\0\0\0"], 0), 0x2362_f9de);
        assert_eq!(murmur3_32(&[b"aaaa"], 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_32(&[b"abc"], 0), 0xb3dd_93fa);
        assert_eq!(murmur3_32(&[b"Hello, world!"], 0x9747_b28c), 0x2488_4cba);
        assert_eq!(
            murmur3_32(
                &[b"The quick brown fox jumps over the lazy dog"],
                0x9747_b28c
            ),
            0x2fa8_26cd
        );
    }

    #[test]
    fn streaming_equals_one_slice() {
        let whole = murmur3_32(&[b"fractional-flagjack"], 0);
        assert_eq!(murmur3_32(&[b"fractional-flag", b"jack"], 0), whole);
        assert_eq!(
            murmur3_32(&[b"frac", b"", b"tional-flagja", b"ck"], 0),
            whole
        );
    }
}
