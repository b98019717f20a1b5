//! RabbitMQ-compatible password hashes: `base64(salt ‖ H(salt ‖ password))` with a 4-byte
//! random salt, H being SHA-256 (`rabbit_password_hashing_sha256`, RabbitMQ's default), SHA-512
//! (`rabbit_password_hashing_sha512`) or MD5 (`rabbit_password_hashing_md5`, RabbitMQ before
//! 3.6). A definitions file exported from RabbitMQ therefore imports with working passwords,
//! and hashes made here work in RabbitMQ.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest;

/// Salt length in bytes (RabbitMQ's `rabbit_password:generate_salt/0`).
pub const SALT_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    Sha256,
    Sha512,
    Md5,
}

impl HashingAlgorithm {
    /// RabbitMQ's module names, as they appear in definitions files.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "rabbit_password_hashing_sha256" => HashingAlgorithm::Sha256,
            "rabbit_password_hashing_sha512" => HashingAlgorithm::Sha512,
            "rabbit_password_hashing_md5" => HashingAlgorithm::Md5,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashingAlgorithm::Sha256 => {
                sha2::Sha256::new().chain_update(salt).chain_update(password).finalize().to_vec()
            }
            HashingAlgorithm::Sha512 => {
                sha2::Sha512::new().chain_update(salt).chain_update(password).finalize().to_vec()
            }
            HashingAlgorithm::Md5 => md5::Md5::new().chain_update(salt).chain_update(password).finalize().to_vec(),
        }
    }

    fn digest_len(self) -> usize {
        match self {
            HashingAlgorithm::Sha256 => 32,
            HashingAlgorithm::Sha512 => 64,
            HashingAlgorithm::Md5 => 16,
        }
    }
}

/// A stored password: salt and digest.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: HashingAlgorithm,
    /// `salt ‖ digest`, as decoded from the base64 form.
    raw: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a hash into logs.
        write!(f, "PasswordHash({})", self.algorithm.name())
    }
}

impl PasswordHash {
    /// Hash `password` with a fresh random salt.
    pub fn generate(algorithm: HashingAlgorithm, password: &str) -> Self {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::with_salt(algorithm, salt, password)
    }

    fn with_salt(algorithm: HashingAlgorithm, salt: [u8; SALT_LEN], password: &str) -> Self {
        let mut raw = salt.to_vec();
        raw.extend(algorithm.digest(&salt, password.as_bytes()));
        PasswordHash { algorithm, raw }
    }

    /// Read the base64 form of a definitions file; the length must fit the algorithm.
    pub fn parse(algorithm: HashingAlgorithm, encoded: &str) -> Result<Self, String> {
        let raw = STANDARD.decode(encoded.trim()).map_err(|e| format!("the password hash is not base64 ({e})"))?;
        let want = SALT_LEN + algorithm.digest_len();
        if raw.len() != want {
            return Err(format!(
                "the password hash has {} bytes; {} hashes have {want} (a {SALT_LEN}-byte salt and the digest)",
                raw.len(),
                algorithm.name()
            ));
        }
        Ok(PasswordHash { algorithm, raw })
    }

    /// The base64 form (as RabbitMQ's definitions export writes it).
    pub fn encode(&self) -> String {
        STANDARD.encode(&self.raw)
    }

    pub fn algorithm(&self) -> HashingAlgorithm {
        self.algorithm
    }

    /// Whether `password` matches (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let (salt, digest) = self.raw.split_at(SALT_LEN);
        let got = self.algorithm.digest(salt, password.as_bytes());
        got.len() == digest.len() && got.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes exported by RabbitMQ 3.10.8 (`rabbitmqctl add_user`, then `export_definitions`).
    const FROM_RABBITMQ: &[(&str, &str)] = &[
        ("S3cret!", "F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs"),
        ("pässwörd", "XxbhvkY0Cbx3EB49xE9Pa9tbqkZFK2QwIYCqvNvarV1VjJ0f"),
        ("guest", "i5KII00KzG9U7uwcAZ15Ejdw6Pn1J6mJwbt4t2+HrIQm0BzL"),
    ];

    #[test]
    fn rabbitmq_hashes_verify() {
        for (password, encoded) in FROM_RABBITMQ {
            let h = PasswordHash::parse(HashingAlgorithm::Sha256, encoded).unwrap();
            assert!(h.verify(password), "{password}");
            assert!(!h.verify(&format!("{password}x")), "{password}x");
            assert!(!h.verify(""), "empty");
            assert_eq!(h.encode(), *encoded, "round trip");
        }
    }

    #[test]
    fn generated_hashes_have_rabbitmqs_layout() {
        for algo in [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512, HashingAlgorithm::Md5] {
            let h = PasswordHash::generate(algo, "pw");
            let raw = STANDARD.decode(h.encode()).unwrap();
            assert_eq!(raw.len(), SALT_LEN + algo.digest_len());
            assert!(h.verify("pw") && !h.verify("pW"));
            assert_eq!(PasswordHash::parse(algo, &h.encode()).unwrap(), h);
            assert_eq!(HashingAlgorithm::parse(algo.name()), Some(algo));
        }
        // The salt is random: the same password hashes differently.
        let (a, b) = (
            PasswordHash::generate(HashingAlgorithm::Sha256, "pw"),
            PasswordHash::generate(HashingAlgorithm::Sha256, "pw"),
        );
        assert_ne!(a.encode(), b.encode());
        // Same salt, same hash: SHA-256 of salt ‖ password, computed here independently.
        let h = PasswordHash::with_salt(HashingAlgorithm::Sha256, [1, 2, 3, 4], "pw");
        let mut want = vec![1, 2, 3, 4];
        want.extend(sha2::Sha256::digest([1u8, 2, 3, 4, b'p', b'w']));
        assert_eq!(STANDARD.decode(h.encode()).unwrap(), want);
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        assert!(PasswordHash::parse(HashingAlgorithm::Sha256, "not base64!").unwrap_err().contains("base64"));
        let short = STANDARD.encode([0u8; 10]);
        assert!(PasswordHash::parse(HashingAlgorithm::Sha256, &short).unwrap_err().contains("36"));
        // A SHA-256 hash read as SHA-512 is the wrong length, not a silently failing login.
        assert!(PasswordHash::parse(HashingAlgorithm::Sha512, FROM_RABBITMQ[0].1).is_err());
        assert_eq!(
            format!("{:?}", PasswordHash::generate(HashingAlgorithm::Sha256, "x")),
            "PasswordHash(rabbit_password_hashing_sha256)"
        );
    }
}
