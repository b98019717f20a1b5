//! Server-generated names: `amq.gen-…` queues and `amq.ctag-…` consumer tags, each with 128
//! random bits in 22 characters of URL-safe base64, the shape RabbitMQ uses.

use rand::RngCore;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_22() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let n = u128::from_be_bytes(bytes);
    // 22 base64 digits cover 132 bits; take them from the 128-bit number, most significant first.
    (0..22).rev().map(|i| ALPHABET[((n >> (i * 6)) & 63) as usize] as char).collect()
}

pub fn queue_name() -> String {
    format!("amq.gen-{}", random_22())
}

pub fn consumer_tag() -> String {
    format!("amq.ctag-{}", random_22())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let q = super::queue_name();
        assert!(q.starts_with("amq.gen-") && q.len() == 30, "{q}");
        let t = super::consumer_tag();
        assert!(t.starts_with("amq.ctag-") && t.len() == 31, "{t}");
        assert_ne!(super::queue_name(), super::queue_name());
    }
}
