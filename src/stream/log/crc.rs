//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320): what osiris computes with
//! `erlang:crc32/1` over a chunk's data section and what stream clients check. Slicing-by-8.

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static T: [[u32; 256]; 8] = tables();

/// Continue a CRC over more bytes (`crc32_update(0, a ++ b) == crc32_update(crc32_update(0, a), b)`).
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let a = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) ^ c;
        let d = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        c = T[7][(a & 0xff) as usize]
            ^ T[6][((a >> 8) & 0xff) as usize]
            ^ T[5][((a >> 16) & 0xff) as usize]
            ^ T[4][(a >> 24) as usize]
            ^ T[3][(d & 0xff) as usize]
            ^ T[2][((d >> 8) & 0xff) as usize]
            ^ T[1][((d >> 16) & 0xff) as usize]
            ^ T[0][(d >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = T[0][((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 7, 8, 9, 500, 1000] {
            assert_eq!(crc32_update(crc32(&data[..split]), &data[split..]), crc32(&data));
        }
    }
}
