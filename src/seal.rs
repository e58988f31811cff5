//! Encrypting files to a peer's SSH key, for bundles carried across an air gap.
//!
//! Why: a bundle file travels on a USB stick or through a mail gateway, outside
//! both sites' control; signatures prove who wrote it but anyone holding the file
//! can read the issues in it. [age](https://age-encryption.org) encrypts to the
//! very ssh-ed25519 keys the sites already exchange for signatures
//! (`connections/<peer>.allowed_signers`), so sealing needs no second key
//! distribution, and the real `age`/`rage` tools can open a file by hand with the
//! site's key.
use std::io::{Read, Write};
use std::path::PathBuf;

use ssh_key::PublicKey;

use crate::signing::SiteKey;

/// Sealing or opening a file failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Nothing to encrypt to.
    #[error(
        "no key to encrypt to: the connection trusts none of the peer's keys \
         (add one with `ferry connection trust PEER KEY`)"
    )]
    NoRecipient,
    /// A key age cannot encrypt to.
    #[error("{key} cannot be used to encrypt to: {message}")]
    BadRecipient {
        /// The key, as one OpenSSH line.
        key: String,
        /// age's reason.
        message: String,
    },
    /// Encrypting failed (writing to memory, the random source).
    #[error("encrypting: {0}")]
    Encrypt(String),
    /// The site key is held by ssh-agent, which signs but cannot decrypt.
    #[error(
        "the signing key {} is a public key used through ssh-agent; opening an encrypted \
         file needs the private key file, which an agent cannot lend",
        .path.display()
    )]
    AgentKey {
        /// The configured key file.
        path: PathBuf,
    },
    /// The file is not for this key, not an age file, or damaged.
    #[error("cannot decrypt with the key {}: {message}", .path.display())]
    Decrypt {
        /// The site's key file.
        path: PathBuf,
        /// age's reason.
        message: String,
    },
}

/// Encrypts `bytes` so that the holder of any one of `peer_keys` (ssh-ed25519)
/// can decrypt them; the result is a binary age file.
pub fn encrypt_for(peer_keys: &[PublicKey], bytes: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(bytes.len() + 256);
    let io = |e: std::io::Error| SealError::Encrypt(e.to_string());
    let mut writer = encrypting_writer(peer_keys, &mut out)?;
    writer.write_all(bytes).map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(out)
}

/// A writer that encrypts what it is given into `out` for `peer_keys`, in
/// age's 64 KiB chunks: a bundle of any size is sealed without being held in
/// memory. Call `finish` to write the last chunk.
pub fn encrypting_writer<W: Write>(
    peer_keys: &[PublicKey],
    out: W,
) -> Result<age::stream::StreamWriter<W>, SealError> {
    if peer_keys.is_empty() {
        return Err(SealError::NoRecipient);
    }
    let recipients = peer_keys
        .iter()
        .map(|key| {
            // age parses `type base64`; the comment is not part of the key.
            let line = PublicKey::new(key.key_data().clone(), "")
                .to_openssh()
                .map_err(|e| SealError::Encrypt(e.to_string()))?;
            line.parse::<age::ssh::Recipient>()
                .map_err(|e| SealError::BadRecipient {
                    key: line.clone(),
                    message: format!("{e:?}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
    encryptor
        .wrap_output(out)
        .map_err(|e| SealError::Encrypt(e.to_string()))
}

/// Decrypts an age file made by [`encrypt_for`] for this site's key.
pub fn decrypt_with(site_key: &SiteKey, bytes: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut reader = decrypting_reader(site_key, bytes)?;
    let mut plain = Vec::new();
    reader
        .read_to_end(&mut plain)
        .map_err(|e| SealError::Decrypt {
            path: site_key.path().to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(plain)
}

/// A reader of the plain text of the age file `input`, sealed for this site's
/// key, decrypting (and authenticating) one chunk at a time.
pub fn decrypting_reader<R: Read>(
    site_key: &SiteKey,
    input: R,
) -> Result<age::stream::StreamReader<R>, SealError> {
    let failed = |message: String| SealError::Decrypt {
        path: site_key.path().to_path_buf(),
        message,
    };
    let Some(private) = site_key.private_key() else {
        return Err(SealError::AgentKey {
            path: site_key.path().to_path_buf(),
        });
    };
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| failed(e.to_string()))?;
    let identity =
        age::ssh::Identity::from_buffer(pem.as_bytes(), None).map_err(|e| failed(e.to_string()))?;
    let decryptor = age::Decryptor::new(input).map_err(|e| failed(e.to_string()))?;
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::public_path;
    use crate::signing::tests::Agent;

    fn key(dir: &std::path::Path, name: &str) -> SiteKey {
        SiteKey::generate(&dir.join(name), &format!("ferry@{name}")).unwrap()
    }

    #[test]
    fn each_peer_key_opens_what_was_sealed_for_it_and_no_other_does() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, stranger) = (
            key(dir.path(), "old"),
            key(dir.path(), "new"),
            key(dir.path(), "stranger"),
        );
        let secret = b"issues/ENG/1.yaml: summary: Printer on fire\n".repeat(100);
        let sealed = encrypt_for(&[old.public_key(), new.public_key()], &secret).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        assert!(
            !sealed
                .windows(b"Printer on fire".len())
                .any(|w| w == b"Printer on fire"),
            "the plaintext shows through"
        );
        // During a key rotation both keys open it.
        assert_eq!(decrypt_with(&old, &sealed).unwrap(), secret);
        assert_eq!(decrypt_with(&new, &sealed).unwrap(), secret);
        let err = decrypt_with(&stranger, &sealed).unwrap_err();
        assert!(matches!(err, SealError::Decrypt { .. }), "{err}");
        assert!(err.to_string().contains("stranger"), "{err}");

        // A damaged file is refused, not half-decrypted.
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            decrypt_with(&old, &damaged),
            Err(SealError::Decrypt { .. })
        ));
        assert!(matches!(
            decrypt_with(&old, b"not an age file"),
            Err(SealError::Decrypt { .. })
        ));
    }

    #[test]
    fn sealing_needs_a_key_and_opening_needs_the_private_file() {
        assert!(matches!(
            encrypt_for(&[], b"x"),
            Err(SealError::NoRecipient)
        ));
        let dir = tempfile::tempdir().unwrap();
        let site = key(dir.path(), "site");
        let sealed = encrypt_for(&[site.public_key()], b"").unwrap();
        assert_eq!(decrypt_with(&site, &sealed).unwrap(), b"");

        // The same key used through ssh-agent signs, but cannot open files.
        let agent = Agent::start(dir.path());
        agent.add(site.path());
        let in_agent =
            SiteKey::load_with_agent(&public_path(site.path()), Some(&agent.socket)).unwrap();
        let err = decrypt_with(&in_agent, &sealed).unwrap_err();
        assert!(matches!(err, SealError::AgentKey { .. }), "{err}");
        assert!(err.to_string().contains("site.pub"), "{err}");
    }
}
