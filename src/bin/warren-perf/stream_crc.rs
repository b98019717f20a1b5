//! CRC-32 (IEEE, bit-reflected: what osiris stores for a chunk's data) with carry-less
//! multiplication where the CPU has it, as the stream clients' CRC is (Java's `CRC32` is a
//! PCLMULQDQ intrinsic): checking every delivered chunk must not make the tool the bottleneck.
//! Elsewhere, and for short inputs and tails, the broker's table-driven CRC
//! (`warren::stream::log::crc`) does it.
//!
//! The method is the folding one of Gopal et al., "Fast CRC Computation for Generic Polynomials
//! Using PCLMULQDQ Instruction" (Intel, 2009): 128-bit lanes are folded forward by multiplying
//! them by x^k mod P, four lanes at a time, then one at a time; the last 128 bits are reduced
//! to 64 and then to 32 with a Barrett reduction. The constants are those powers of x mod P
//! for P = 0x104C11DB7, bit-reflected and shifted left by one, as the paper tabulates them.

use warren::stream::log::crc::crc32_update;

/// The CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= clmul::MIN_LEN
        && std::arch::is_x86_feature_detected!("pclmulqdq")
        && std::arch::is_x86_feature_detected!("sse4.1")
    {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { clmul::crc32(data) };
    }
    crc32_update(0, data)
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_clmulepi64_si128, _mm_cvtsi32_si128, _mm_extract_epi32, _mm_loadu_si128,
        _mm_set_epi32, _mm_set_epi64x, _mm_srli_si128, _mm_xor_si128,
    };

    use super::crc32_update;

    /// Shorter inputs go to the table: four lanes are needed to start.
    pub const MIN_LEN: usize = 64;

    /// x^(512+32) and x^(512-32) mod P: fold a lane forward over four lanes (64 octets).
    const FOLD_BY_4: (i64, i64) = (0x1_5444_2bd4, 0x1_c6e4_1596);
    /// x^(128+32) and x^(128-32) mod P: fold a lane forward over one lane (16 octets).
    const FOLD_BY_1: (i64, i64) = (0x1_7519_97d0, 0x0_ccaa_009e);
    /// x^64 mod P: from 96 bits to 64.
    const TO_64: i64 = 0x1_63cd_6124;
    /// P itself and its Barrett constant μ = x^64 / P.
    const POLY: i64 = 0x1_db71_0641;
    const MU: i64 = 0x1_f701_1641;

    /// One 16-octet lane from the front of `data`, which then starts after it.
    ///
    /// # Safety
    /// `data` holds at least 16 octets.
    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn lane(data: &mut &[u8]) -> __m128i {
        debug_assert!(data.len() >= 16);
        // SAFETY: 16 readable octets (unaligned load).
        let v = unsafe { _mm_loadu_si128(data.as_ptr().cast()) };
        *data = &data[16..];
        v
    }

    /// `acc` folded forward by the distance `k` stands for, into `next`.
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn fold(acc: __m128i, next: __m128i, k: __m128i) -> __m128i {
        let low = _mm_clmulepi64_si128(acc, k, 0x00);
        let high = _mm_clmulepi64_si128(acc, k, 0x11);
        _mm_xor_si128(next, _mm_xor_si128(low, high))
    }

    /// # Safety
    /// The CPU has PCLMULQDQ and SSE4.1; `data` holds at least [`MIN_LEN`] octets.
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn crc32(mut data: &[u8]) -> u32 {
        debug_assert!(data.len() >= MIN_LEN);
        // SAFETY (every `lane` below): the loop conditions leave enough octets.
        let mut lanes = unsafe { [lane(&mut data), lane(&mut data), lane(&mut data), lane(&mut data)] };
        // The initial remainder (all ones) enters with the first octets.
        lanes[0] = _mm_xor_si128(lanes[0], _mm_cvtsi32_si128(-1));
        let by4 = _mm_set_epi64x(FOLD_BY_4.1, FOLD_BY_4.0);
        while data.len() >= 64 {
            for l in &mut lanes {
                *l = fold(*l, unsafe { lane(&mut data) }, by4);
            }
        }
        let by1 = _mm_set_epi64x(FOLD_BY_1.1, FOLD_BY_1.0);
        let mut acc = fold(lanes[0], lanes[1], by1);
        acc = fold(acc, lanes[2], by1);
        acc = fold(acc, lanes[3], by1);
        while data.len() >= 16 {
            acc = fold(acc, unsafe { lane(&mut data) }, by1);
        }
        // 128 bits to 96: the low half times x^(128-32) mod P, plus the high half.
        let acc = _mm_xor_si128(_mm_clmulepi64_si128(acc, by1, 0x10), _mm_srli_si128(acc, 8));
        // 96 to 64: the low 32 bits times x^64 mod P, plus the rest.
        let low32 = _mm_set_epi32(0, 0, 0, -1);
        let acc = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(acc, low32), _mm_set_epi64x(0, TO_64), 0x00),
            _mm_srli_si128(acc, 4),
        );
        // Barrett: q = (low 32 bits × μ) mod x^32, remainder = acc + q × P, in the high half.
        let pmu = _mm_set_epi64x(MU, POLY);
        let q = _mm_clmulepi64_si128(_mm_and_si128(acc, low32), pmu, 0x10);
        let qp = _mm_clmulepi64_si128(_mm_and_si128(q, low32), pmu, 0x00);
        let remainder = _mm_extract_epi32(_mm_xor_si128(acc, qp), 1) as u32;
        // What is left (under 16 octets) continues with the table.
        crc32_update(!remainder, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_table_crc() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let mut rng = crate::topology::Rng::new(7);
        let data: Vec<u8> = (0..5010).map(|_| (rng.next() >> 24) as u8).collect();
        for len in (0..200).chain([255, 256, 257, 1000, 4095, 4999]) {
            for start in [0, 1, 3, 7] {
                let d = &data[start..start + len];
                assert_eq!(crc32(d), crc32_update(0, d), "len {len} start {start}");
            }
        }
        assert_eq!(crc32(&[0u8; 4096]), crc32_update(0, &[0u8; 4096]));
        assert_eq!(crc32(&[0xffu8; 4096]), crc32_update(0, &[0xffu8; 4096]));
    }
}
