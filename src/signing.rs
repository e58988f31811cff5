//! Site signing keys, signed commits, and the trust a connection places in its
//! peer's keys.
//!
//! Why: the intermediate repository is shared, often run by a third party, and
//! anyone with write access to it could otherwise push a commit onto a peer's
//! branch and have it applied to this site's tracker. So every commit ferry makes
//! is signed with the site's SSH ed25519 key, in exactly the format git itself
//! writes with `gpg.format=ssh` (an SSHSIG armored signature in the `gpgsig`
//! header, namespace `git`), and every commit that arrives is checked against the
//! keys the connection trusts before the peer's branch moves. Using git's own
//! format means an auditor can check the exchange repo with nothing but
//! `git verify-commit`, and a peer may sign with plain git.
//!
//! A signature alone does not say *where* a commit belongs: a peer's genuine commit
//! for another site could be copied onto the branch it shares with us. Every ferry
//! commit therefore names its branch in a [`BRANCH_TRAILER`] line of its message,
//! which the signature covers, and a commit naming another branch is refused.
//!
//! The key is an OpenSSH private key file (made by `ferry init`, or named in
//! `ferry.yaml`), or a public key file whose private half ssh-agent holds, as
//! git's `user.signingkey` allows.
//!
//! Trust lives in `connections/<peer>.allowed_signers`, a file in the format of
//! ssh-keygen's allowed signers (`principal [namespaces="git"] ssh-ed25519 AAAA…`),
//! beside the connection's YAML rather than inside it: `ferry connection trust`
//! appends to it without rewriting a YAML file an admin edited by hand, and the
//! very same file works as git's `gpg.ssh.allowedSignersFile`.
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, Oid, Repository, Sort};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::files::{ConfigError, write_atomic};

/// The SSHSIG namespace of commit signatures, as git uses it.
pub const NAMESPACE: &str = "git";
/// The signing key's file name in the state folder when `ferry.yaml` names none.
pub const KEY_FILE: &str = "signing_key";
/// The trailer naming the branch a commit was made for (`<site>/<peer>`).
pub const BRANCH_TRAILER: &str = "Ferry-Branch";
/// Extension of a connection's trust file, `connections/<peer>.allowed_signers`.
pub const TRUST_EXTENSION: &str = "allowed_signers";

/// A signing key could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key file where the configuration says it is.
    #[error(
        "no signing key at {}: run `ferry init` in the site folder to create one (it keeps \
         every existing file), or name an existing key with `signing_key:` in ferry.yaml",
        .path.display()
    )]
    Missing {
        /// Where the key was expected.
        path: PathBuf,
    },
    /// Reading the key file failed.
    #[error("cannot read signing key {}: {source}", .path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an OpenSSH private key.
    #[error("{} is not an OpenSSH private key: {message}", .path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The key is protected by a passphrase, which a cron job cannot type.
    #[error(
        "signing key {} is protected by a passphrase; ferry runs unattended, so give it a \
         key without one (`ssh-keygen -t ed25519 -N '' -f FILE`)",
        .path.display()
    )]
    Encrypted {
        /// The key file.
        path: PathBuf,
    },
    /// Only ed25519 keys are used, so every site verifies the same way.
    #[error("signing key {} is {algorithm}; ferry signs with ed25519 keys only", .path.display())]
    NotEd25519 {
        /// The key file.
        path: PathBuf,
        /// The key's algorithm.
        algorithm: String,
    },
    /// Writing a new key failed.
    #[error("cannot write signing key {}: {source}", .path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is a public key, which means "sign through ssh-agent", but
    /// no agent is reachable.
    #[error(
        "{} is a public key, so ferry signs through ssh-agent, but SSH_AUTH_SOCK is not \
         set; start an agent and `ssh-add` the private key, or name the private key",
        .path.display()
    )]
    NoAgent {
        /// The public key file.
        path: PathBuf,
    },
    /// Talking to ssh-agent failed.
    #[error("ssh-agent at {} (for {}): {message}", .socket.display(), .path.display())]
    Agent {
        /// The public key file.
        path: PathBuf,
        /// The agent's socket.
        socket: PathBuf,
        /// What failed.
        message: String,
    },
    /// The agent does not hold the key the configuration names.
    #[error(
        "ssh-agent at {} does not hold the key {fingerprint} of {}; `ssh-add` its private key",
        .socket.display(), .path.display()
    )]
    NotInAgent {
        /// The public key file.
        path: PathBuf,
        /// The key's fingerprint.
        fingerprint: String,
        /// The agent's socket.
        socket: PathBuf,
    },
    /// The cryptography failed (random source, encoding).
    #[error("signing key {}: {source}", .path.display())]
    Crypto {
        /// The key file.
        path: PathBuf,
        /// The error of the ssh-key crate.
        source: ssh_key::Error,
    },
}

/// A site's signing key: an OpenSSH private key file, or a public key file whose
/// private half ssh-agent holds (as git's `user.signingkey` allows), so the
/// private key need not be readable by ferry at all.
#[derive(Clone)]
pub struct SiteKey {
    source: KeySource,
    public: PublicKey,
    path: PathBuf,
}

/// Where the private half of a [`SiteKey`] is.
#[derive(Clone)]
enum KeySource {
    /// In the key file, loaded (boxed: it is far larger than a socket path).
    File(Box<PrivateKey>),
    /// In the ssh-agent listening on this socket.
    Agent(PathBuf),
}

impl fmt::Debug for SiteKey {
    /// Shows the file and public key only, never the private half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteKey")
            .field("path", &self.path)
            .field("public", &self.public_line())
            .finish()
    }
}

impl SiteKey {
    /// Loads the key `path` names, with the ssh-agent of `SSH_AUTH_SOCK` when it is
    /// a public key (see [`SiteKey::load_with_agent`]).
    pub fn load(path: &Path) -> Result<SiteKey, KeyError> {
        let agent = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        SiteKey::load_with_agent(path, agent.as_deref())
    }

    /// Loads an unencrypted ed25519 OpenSSH private key; or, when `path` holds a
    /// public key, checks that the agent at `agent` holds its private half and
    /// signs through it.
    pub fn load_with_agent(path: &Path, agent: Option<&Path>) -> Result<SiteKey, KeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if !text.trim_start().starts_with("-----BEGIN") {
            return SiteKey::in_agent(path, &text, agent);
        }
        let key = PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(KeyError::Encrypted {
                path: path.to_path_buf(),
            });
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::NotEd25519 {
                path: path.to_path_buf(),
                algorithm: key.algorithm().to_string(),
            });
        }
        Ok(SiteKey {
            public: key.public_key().clone(),
            source: KeySource::File(Box::new(key)),
            path: path.to_path_buf(),
        })
    }

    /// A key whose private half the agent at `agent` holds; `text` is the
    /// content of the public key file `path`.
    fn in_agent(path: &Path, text: &str, agent: Option<&Path>) -> Result<SiteKey, KeyError> {
        let public = parse_public_key(text.trim()).map_err(|message| KeyError::Parse {
            path: path.to_path_buf(),
            message: format!(
                "neither an OpenSSH private key nor an ed25519 public key for ssh-agent: {message}"
            ),
        })?;
        let socket = agent.ok_or_else(|| KeyError::NoAgent {
            path: path.to_path_buf(),
        })?;
        let agent_error = |message: String| KeyError::Agent {
            path: path.to_path_buf(),
            socket: socket.to_path_buf(),
            message,
        };
        let held = ssh_agent_client_rs::Client::connect(socket)
            .and_then(|mut client| client.list_all_identities())
            .map_err(|e| agent_error(e.to_string()))?;
        let holds = held
            .iter()
            .any(|identity| <&KeyData>::from(identity) == public.key_data());
        if !holds {
            return Err(KeyError::NotInAgent {
                path: path.to_path_buf(),
                fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
                socket: socket.to_path_buf(),
            });
        }
        Ok(SiteKey {
            public,
            source: KeySource::Agent(socket.to_path_buf()),
            path: path.to_path_buf(),
        })
    }

    /// Creates a new ed25519 key at `path` (mode 0600) with `path.pub` beside it,
    /// commented `comment`. Refuses to replace an existing file: a site's key is
    /// its identity, and its peers trust it.
    pub fn generate(path: &Path, comment: &str) -> Result<SiteKey, KeyError> {
        let crypto = |source| KeyError::Crypto {
            path: path.to_path_buf(),
            source,
        };
        let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .map_err(crypto)?;
        key.set_comment(comment);
        let pem = key.to_openssh(LineEnding::LF).map_err(crypto)?;
        write_file(path, pem.as_bytes(), Replace::No)?;
        let site_key = SiteKey {
            public: key.public_key().clone(),
            source: KeySource::File(Box::new(key)),
            path: path.to_path_buf(),
        };
        // The public half is derived from the private one, so a stale `.pub` (its
        // key deleted) is replaced rather than left to contradict the new key.
        let public = format!("{}\n", site_key.public_line());
        write_file(&public_path(path), public.as_bytes(), Replace::Yes)?;
        Ok(site_key)
    }

    /// The private key, when it was loaded from a file (not for a key in
    /// ssh-agent); decrypting files sealed to this site needs it.
    pub fn private_key(&self) -> Option<&PrivateKey> {
        match &self.source {
            KeySource::File(key) => Some(key),
            KeySource::Agent(_) => None,
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The public key as one OpenSSH line (`ssh-ed25519 AAAA… comment`), what a
    /// peer passes to `ferry connection trust`.
    pub fn public_line(&self) -> String {
        openssh_line(&self.public)
    }

    /// Signs `payload` for git: an armored SSHSIG (namespace `git`, SHA-512, what
    /// ssh-keygen does), without the final newline, ready for a `gpgsig` header.
    pub fn sign(&self, payload: &[u8]) -> Result<String, KeyError> {
        let crypto = |source| KeyError::Crypto {
            path: self.path.clone(),
            source,
        };
        let signature = match &self.source {
            KeySource::File(key) => key
                .sign(NAMESPACE, HashAlg::Sha512, payload)
                .map_err(crypto)?,
            KeySource::Agent(socket) => {
                // The agent signs the SSHSIG envelope, exactly what ssh-keygen -Y
                // sign hands it; the public key and namespace are ours to add.
                let data =
                    SshSig::signed_data(NAMESPACE, HashAlg::Sha512, payload).map_err(crypto)?;
                let raw = ssh_agent_client_rs::Client::connect(socket)
                    .and_then(|mut client| client.sign(&self.public, &data))
                    .map_err(|e| KeyError::Agent {
                        path: self.path.clone(),
                        socket: socket.clone(),
                        message: e.to_string(),
                    })?;
                SshSig::new(
                    self.public.key_data().clone(),
                    NAMESPACE,
                    HashAlg::Sha512,
                    raw,
                )
                .map_err(crypto)?
            }
        };
        let pem = signature.to_pem(LineEnding::LF).map_err(crypto)?;
        // libgit2 indents every newline of the header, so a trailing one would
        // become a stray " " line that git's own writer never emits.
        Ok(pem.trim_end().to_string())
    }
}

/// Where the public half of a key file is kept: the same name plus `.pub`, as
/// ssh-keygen does.
pub fn public_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A public key as one OpenSSH line.
fn openssh_line(key: &PublicKey) -> String {
    // Encoding an in-memory ed25519 key cannot fail; fall back to the fingerprint
    // rather than panic should a future key type be unencodable.
    key.to_openssh()
        .unwrap_or_else(|_| key.fingerprint(HashAlg::Sha256).to_string())
}

/// Whether [`write_file`] may replace an existing file.
#[derive(PartialEq)]
enum Replace {
    Yes,
    No,
}

/// Writes a file with mode 0600, atomically; with [`Replace::No`], never over an
/// existing one.
fn write_file(path: &Path, bytes: &[u8], replace: Replace) -> Result<(), KeyError> {
    let write = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write)?;
    // tempfile creates its files with mode 0600 on unix.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(write)?;
    tmp.as_file().sync_all().map_err(write)?;
    if replace == Replace::Yes {
        tmp.persist(path).map_err(|e| write(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| write(e.error))?;
    }
    Ok(())
}

/// Whether a connection checks signatures.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// Every incoming commit must be signed by a trusted key (the default).
    #[default]
    Required,
    /// Nothing is checked: for labs and tests only, never across organisations.
    Off,
}

/// The peer keys one connection trusts, from its allowed signers file.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The peer.
    pub peer: String,
    /// `connections/<peer>.allowed_signers` (it may not exist).
    pub file: PathBuf,
    /// Whether signatures are checked.
    pub policy: SignaturePolicy,
    /// The trusted keys, in file order.
    pub keys: Vec<PublicKey>,
}

/// The trust file of the connection whose YAML is `connection_file`.
pub fn trust_file(connection_file: &Path) -> PathBuf {
    connection_file.with_extension(TRUST_EXTENSION)
}

impl Trust {
    /// Loads the keys `file` lists (none when it does not exist). A line ferry
    /// cannot use is a configuration error naming the file and line, not a key
    /// silently ignored.
    pub fn load(peer: &str, file: &Path, policy: SignaturePolicy) -> Result<Trust, ConfigError> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: file.to_path_buf(),
                    source,
                });
            }
        };
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let invalid = |message: String| ConfigError::Invalid {
                path: file.to_path_buf(),
                message: format!("line {}: {message}", number + 1),
            };
            if let Some(key) = parse_allowed_signer(line).map_err(invalid)? {
                keys.push(key);
            }
        }
        Ok(Trust {
            peer: peer.to_string(),
            file: file.to_path_buf(),
            policy,
            keys,
        })
    }

    /// Whether `key` is one of the trusted keys (comments do not matter).
    pub fn trusts(&self, key: &KeyData) -> bool {
        self.keys.iter().any(|k| k.key_data() == key)
    }

    /// Checks every commit that `tip` brings over `known` (all commits reachable
    /// from `tip` and not from `known`, merges and their other parents included)
    /// before `branch` (the peer's branch for this site, `refs/heads/<peer>/<site>`)
    /// may move to `tip`. The first commit refused stops the check.
    ///
    /// A connection with `signatures: off` admits everything; one that trusts no
    /// key admits nothing and says how to add one.
    pub fn admit(
        &self,
        repo: &Repository,
        known: Option<Oid>,
        tip: Oid,
        branch: &str,
    ) -> Result<usize, AdmitError> {
        if self.policy == SignaturePolicy::Off {
            tracing::warn!(peer = %self.peer, "signatures: off; incoming commits are not checked");
            return Ok(0);
        }
        if self.keys.is_empty() {
            return Err(AdmitError::NoTrustedKey {
                peer: self.peer.clone(),
                file: self.file.clone(),
            });
        }
        let git = |source| AdmitError::Git {
            tip,
            branch: branch.to_string(),
            source,
        };
        let mut walk = repo.revwalk().map_err(git)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
            .map_err(git)?;
        walk.push(tip).map_err(git)?;
        if let Some(known) = known {
            walk.hide(known).map_err(git)?;
        }
        let expected = branch.strip_prefix("refs/heads/").unwrap_or(branch);
        let mut checked = 0;
        for commit in walk {
            let commit = commit.map_err(git)?;
            self.check_commit(repo, commit, expected)
                .map_err(|reason| AdmitError::Refused {
                    commit,
                    peer: self.peer.clone(),
                    branch: branch.to_string(),
                    reason,
                })?;
            checked += 1;
        }
        Ok(checked)
    }

    /// Why one commit is not acceptable on the branch `expected` (`<peer>/<site>`).
    fn check_commit(&self, repo: &Repository, commit: Oid, expected: &str) -> Result<(), Refusal> {
        let (signature, signed) = match repo.extract_signature(&commit, None) {
            Ok(parts) => parts,
            Err(e) if e.code() == ErrorCode::NotFound => return Err(Refusal::Unsigned),
            Err(e) => return Err(Refusal::Unreadable(e.message().to_string())),
        };
        let armored = std::str::from_utf8(&signature)
            .map_err(|_| Refusal::NotSsh("the signature is not text".into()))?;
        let sshsig =
            SshSig::from_pem(armored.trim()).map_err(|e| Refusal::NotSsh(e.to_string()))?;
        if sshsig.namespace() != NAMESPACE {
            return Err(Refusal::Namespace(sshsig.namespace().to_string()));
        }
        if !self.trusts(sshsig.public_key()) {
            return Err(Refusal::UnknownSigner {
                fingerprint: sshsig.public_key().fingerprint(HashAlg::Sha256).to_string(),
                file: self.file.clone(),
            });
        }
        PublicKey::from(sshsig.public_key().clone())
            .verify(NAMESPACE, &signed, &sshsig)
            .map_err(|_| Refusal::BadSignature)?;
        let message = repo
            .find_commit(commit)
            .map_err(|e| Refusal::Unreadable(e.message().to_string()))?
            .message_raw_bytes()
            .to_vec();
        let named = branch_trailer(&String::from_utf8_lossy(&message));
        if named.as_deref() != Some(expected) {
            return Err(Refusal::WrongBranch { named });
        }
        Ok(())
    }
}

/// The SHA-256 fingerprint of the key whose SSH signature a commit carries,
/// for people (a report's "signed by"); `None` when it carries none. Whether
/// the key is trusted and the signature holds is [`Trust::admit`]'s, which
/// every fetched commit has passed.
pub fn signer(repo: &Repository, commit: Oid) -> Option<String> {
    let (signature, _) = repo.extract_signature(&commit, None).ok()?;
    let sshsig = SshSig::from_pem(std::str::from_utf8(&signature).ok()?.trim()).ok()?;
    Some(sshsig.public_key().fingerprint(HashAlg::Sha256).to_string())
}

/// The branch a commit message names in its [`BRANCH_TRAILER`] line (the last one
/// wins, as with git trailers).
fn branch_trailer(message: &str) -> Option<String> {
    let prefix = format!("{BRANCH_TRAILER}:");
    message
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().to_string())
        .next_back()
}

/// `message` with the trailer naming `refname` (`refs/heads/<site>/<peer>`) as its
/// last paragraph, so the signature binds the commit to its branch.
pub fn with_branch_trailer(message: &str, refname: &str) -> String {
    let branch = refname.strip_prefix("refs/heads/").unwrap_or(refname);
    format!("{}\n\n{BRANCH_TRAILER}: {branch}\n", message.trim_end())
}

/// Parses one allowed-signers line: `None` for blank and comment lines, the key
/// otherwise. Accepts what ferry writes and what an admin would: `principal
/// [namespaces="…"] ssh-ed25519 BASE64 [comment]`.
fn parse_allowed_signer(line: &str) -> Result<Option<PublicKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = fields.iter().position(|f| is_key_type(f)) else {
        return Err("no key type (ssh-ed25519) found; expected \
                    `PRINCIPAL [namespaces=\"git\"] ssh-ed25519 AAAA… [comment]`"
            .into());
    };
    if at == 0 {
        return Err("the line starts with the key; put the peer's name first, \
                    as in `PEER namespaces=\"git\" ssh-ed25519 AAAA…`"
            .into());
    }
    for option in split_options(&fields[1..at].join(" ")) {
        match option.split_once('=') {
            Some((name, list)) if name.eq_ignore_ascii_case("namespaces") => {
                if !list
                    .trim_matches('"')
                    .split(',')
                    .any(|ns| ns.trim() == NAMESPACE)
                {
                    return Err(format!(
                        "{option}: the key is not allowed for the \"git\" namespace"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "option {option:?} is not supported; ferry understands namespaces=\"git\" only"
                ));
            }
        }
    }
    let key = PublicKey::from_openssh(&fields[at..].join(" ")).map_err(|e| e.to_string())?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(format!(
            "{} keys are not accepted; ferry sites sign with ed25519",
            key.algorithm()
        ));
    }
    Ok(Some(key))
}

/// Splits an allowed-signers options field on the commas outside double quotes
/// (`namespaces="git,file",valid-after=…`).
fn split_options(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in options.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().filter(|o| !o.trim().is_empty()).collect()
}

/// Whether a field is an OpenSSH key type name.
fn is_key_type(field: &str) -> bool {
    field.starts_with("ssh-") || field.starts_with("ecdsa-") || field.starts_with("sk-")
}

/// Parses a public key given on the command line: the text of a `.pub` file, or
/// a path to one.
pub fn parse_public_key(text_or_path: &str) -> Result<PublicKey, String> {
    let text = if Path::new(text_or_path).is_file() {
        std::fs::read_to_string(text_or_path)
            .map_err(|e| format!("cannot read {text_or_path}: {e}"))?
    } else {
        text_or_path.to_string()
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{text_or_path:?} holds no public key"))?;
    let key = PublicKey::from_openssh(line).map_err(|e| {
        format!(
            "{text_or_path:?} is neither a .pub file nor an OpenSSH public key line \
             (`ssh-ed25519 AAAA…`, what `ferry key show` prints): {e}"
        )
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(format!(
            "the key is {}; ferry sites sign with ed25519 keys",
            key.algorithm()
        ));
    }
    Ok(key)
}

/// Adds `key` to the trust file of the connection to `peer`, keeping every line
/// already there (comments included). Returns `false` when it was already trusted.
pub fn add_trusted_key(trust: &Trust, key: &PublicKey) -> Result<bool, ConfigError> {
    if trust.trusts(key.key_data()) {
        return Ok(false);
    }
    let mut text = match std::fs::read_to_string(&trust.file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "# Keys whose signed commits this site accepts from {peer}, in ssh-keygen's\n\
             # allowed signers format (also usable as git's gpg.ssh.allowedSignersFile).\n\
             # Add with `ferry connection trust {peer} KEY`; remove a line to revoke.\n",
            peer = trust.peer
        ),
        Err(source) => {
            return Err(ConfigError::Read {
                path: trust.file.clone(),
                source,
            });
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "{} namespaces=\"{NAMESPACE}\" {}\n",
        trust.peer,
        openssh_line(key)
    ));
    write_atomic(&trust.file, text.as_bytes())?;
    Ok(true)
}

/// Why a commit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The commit carries no signature.
    Unsigned,
    /// The signature is not an SSH signature (a GPG one, or garbage).
    NotSsh(String),
    /// The signature was made for another purpose than git commits.
    Namespace(String),
    /// Signed by a key the connection does not trust.
    UnknownSigner {
        /// SHA256 fingerprint of the signing key.
        fingerprint: String,
        /// The trust file.
        file: PathBuf,
    },
    /// The signature does not match the commit's content.
    BadSignature,
    /// The commit was made for another branch (or names none).
    WrongBranch {
        /// The branch its trailer names, if any.
        named: Option<String>,
    },
    /// git could not read the commit.
    Unreadable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unsigned => write!(f, "it is not signed"),
            Refusal::NotSsh(why) => write!(f, "its signature is not an SSH signature ({why})"),
            Refusal::Namespace(ns) => write!(
                f,
                "its signature is for the namespace {ns:?}, not {NAMESPACE:?}"
            ),
            Refusal::UnknownSigner { fingerprint, file } => write!(
                f,
                "it is signed by {fingerprint}, a key this connection does not trust (see {})",
                file.display()
            ),
            Refusal::BadSignature => write!(
                f,
                "its signature does not match its content (the commit or the signature was altered)"
            ),
            Refusal::WrongBranch { named: Some(named) } => write!(
                f,
                "it was made for the branch {named}, not this one (a commit copied from another branch)"
            ),
            Refusal::WrongBranch { named: None } => write!(
                f,
                "it names no branch (no {BRANCH_TRAILER} line), so it was not made by ferry for this branch"
            ),
            Refusal::Unreadable(why) => write!(f, "it cannot be read ({why})"),
        }
    }
}

/// Incoming commits were not admitted; nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// A commit failed the check.
    #[error(
        "refusing commit {commit} on {peer}'s branch {branch}: {reason}; {branch} is \
         unchanged and nothing was imported"
    )]
    Refused {
        /// The commit.
        commit: Oid,
        /// The peer.
        peer: String,
        /// The branch it came on.
        branch: String,
        /// Why.
        reason: Refusal,
    },
    /// The connection trusts no key, so nothing can be admitted.
    #[error(
        "the connection to {peer} trusts no signing key, so nothing from {peer} can be \
         imported; ask {peer} for the output of `ferry key show` and run \
         `ferry connection trust {peer} KEY` (it writes {}), or, for a lab only, set \
         `signatures: off` in connections/{peer}.yaml",
        .file.display()
    )]
    NoTrustedKey {
        /// The peer.
        peer: String,
        /// The trust file to fill.
        file: PathBuf,
    },
    /// git failed while listing the commits.
    #[error("listing the commits of {branch} up to {tip}: {source}")]
    Git {
        /// The fetched tip.
        tip: Oid,
        /// The branch.
        branch: String,
        /// The git error.
        source: git2::Error,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// Runs ssh-keygen quietly; fails the test when it fails.
    fn ssh_keygen(args: &[&str]) {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_generated_key_loads_back_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/signing_key");
        let key = SiteKey::generate(&path, "ferry@support").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private key mode {mode:o}");
        let public = std::fs::read_to_string(public_path(&path)).unwrap();
        assert_eq!(public, format!("{}\n", key.public_line()));
        assert!(key.public_line().starts_with("ssh-ed25519 AAAA"));
        assert!(key.public_line().ends_with(" ferry@support"));

        let again = SiteKey::load(&path).unwrap();
        assert_eq!(again.public_key().key_data(), key.public_key().key_data());
        assert!(!format!("{again:?}").contains("PRIVATE"));

        // ssh-keygen reads it and derives the same public key.
        let out = Command::new("ssh-keygen")
            .args(["-y", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let derived = String::from_utf8(out.stdout).unwrap();
        assert!(
            key.public_line().starts_with(
                derived
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_str()
            ),
            "{derived}"
        );

        assert!(matches!(
            SiteKey::generate(&path, "again"),
            Err(KeyError::Write { .. })
        ));
        assert_eq!(
            SiteKey::load(&path).unwrap().public_line(),
            key.public_line()
        );
    }

    /// An `ssh-agent` on a socket in `dir`, killed when dropped.
    pub(crate) struct Agent {
        child: std::process::Child,
        pub(crate) socket: PathBuf,
    }

    impl Agent {
        pub(crate) fn start(dir: &Path) -> Agent {
            let socket = dir.join("agent.sock");
            let child = Command::new("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&socket)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("ssh-agent runs");
            // The socket file appears at bind, a moment before the agent listens
            // (a connection in between is refused): wait until one is accepted.
            let listening = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
            for _ in 0..500 {
                if listening() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(listening(), "ssh-agent did not start listening");
            Agent { child, socket }
        }

        pub(crate) fn add(&self, key: &Path) {
            let out = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &self.socket)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ssh-add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn a_public_key_file_signs_through_ssh_agent() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("agent_key");
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "in-agent",
            "-f",
            private.to_str().unwrap(),
        ]);
        let public = public_path(&private);

        let err = SiteKey::load_with_agent(&public, None).unwrap_err();
        assert!(matches!(err, KeyError::NoAgent { .. }), "{err}");
        assert!(err.to_string().contains("SSH_AUTH_SOCK"), "{err}");

        let agent = Agent::start(dir.path());
        let err = SiteKey::load_with_agent(&public, Some(&agent.socket)).unwrap_err();
        assert!(matches!(err, KeyError::NotInAgent { .. }), "{err}");
        assert!(err.to_string().contains("ssh-add"), "{err}");

        agent.add(&private);
        let key = SiteKey::load_with_agent(&public, Some(&agent.socket)).unwrap();
        assert!(key.public_line().ends_with(" in-agent"));
        let payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nsigned by the agent\n";
        let armored = key.sign(payload).unwrap();
        let sshsig = SshSig::from_pem(&armored).unwrap();
        key.public_key()
            .verify(NAMESPACE, payload, &sshsig)
            .unwrap();

        // ssh-keygen agrees, as git's verify-commit would.
        let sig_file = dir.path().join("payload.sig");
        std::fs::write(&sig_file, &armored).unwrap();
        let mut check = Command::new("ssh-keygen")
            .args(["-Y", "check-novalidate", "-n", "git", "-s"])
            .arg(&sig_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), payload).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The agent going away is an error naming it, not a panic.
        drop(agent);
        let err = key.sign(payload).unwrap_err();
        assert!(matches!(err, KeyError::Agent { .. }), "{err}");
    }

    #[test]
    fn keys_ferry_cannot_use_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        let err = SiteKey::load(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("ferry init"), "{err}");

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key").unwrap();
        assert!(matches!(
            SiteKey::load(&garbage),
            Err(KeyError::Parse { .. })
        ));

        let locked = dir.path().join("locked");
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "secret",
            "-f",
            locked.to_str().unwrap(),
        ]);
        let err = SiteKey::load(&locked).unwrap_err();
        assert!(matches!(err, KeyError::Encrypted { .. }), "{err}");

        let ecdsa = dir.path().join("ecdsa");
        ssh_keygen(&["-q", "-t", "ecdsa", "-N", "", "-f", ecdsa.to_str().unwrap()]);
        let err = SiteKey::load(&ecdsa).unwrap_err();
        assert!(
            matches!(err, KeyError::Parse { .. } | KeyError::NotEd25519 { .. }),
            "{err}"
        );

        // A key made by ssh-keygen is as good as one ferry made.
        let plain = dir.path().join("plain");
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "admin",
            "-f",
            plain.to_str().unwrap(),
        ]);
        let key = SiteKey::load(&plain).unwrap();
        let from_file = parse_public_key(public_path(&plain).to_str().unwrap()).unwrap();
        assert_eq!(from_file.key_data(), key.public_key().key_data());
    }

    #[test]
    fn allowed_signers_lines_ferry_and_admins_write() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIISs5Dm+wyEE0wE53LfZv8OUeRlk1hDeIiOK4wbuiw23";
        for line in [
            format!("engineering namespaces=\"git\" {key} ferry@engineering"),
            format!("engineering {key}"),
            format!("a@b,c namespaces=\"file,git\" {key}"),
            format!("  engineering  NAMESPACES=\"git\"   {key}  "),
        ] {
            let parsed = parse_allowed_signer(&line).unwrap().expect(&line);
            assert!(parsed.to_openssh().unwrap().starts_with(key), "{line}");
        }
        for blank in ["", "   ", "# a comment"] {
            assert!(parse_allowed_signer(blank).unwrap().is_none());
        }
        for (line, why) in [
            (key.to_string(), "peer's name first"),
            (format!("eng namespaces=\"file\" {key}"), "not allowed"),
            (format!("eng cert-authority {key}"), "not supported"),
            ("eng".to_string(), "no key type"),
            ("eng ssh-ed25519 AAAAnotbase64!".to_string(), ""),
            (
                "eng ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDH".to_string(),
                "",
            ),
        ] {
            let err = parse_allowed_signer(&line).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn trust_is_appended_keeping_the_file_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = trust_file(&dir.path().join("connections/engineering.yaml"));
        assert!(file.ends_with("connections/engineering.allowed_signers"));
        let empty = Trust::load("engineering", &file, SignaturePolicy::Required).unwrap();
        assert!(empty.keys.is_empty());

        let a = SiteKey::generate(&dir.path().join("a"), "ferry@engineering").unwrap();
        let b = SiteKey::generate(&dir.path().join("b"), "rotated").unwrap();
        assert!(add_trusted_key(&empty, &a.public_key()).unwrap());
        // An admin's comment survives the next addition.
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("# the old key, kept until the rotation is done");
        std::fs::write(&file, &text).unwrap();
        let one = Trust::load("engineering", &file, SignaturePolicy::Required).unwrap();
        assert!(
            !add_trusted_key(&one, &a.public_key()).unwrap(),
            "no duplicate"
        );
        assert!(add_trusted_key(&one, &b.public_key()).unwrap());
        let two = Trust::load("engineering", &file, SignaturePolicy::Required).unwrap();
        assert_eq!(two.keys.len(), 2);
        assert!(two.trusts(a.public_key().key_data()) && two.trusts(b.public_key().key_data()));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("# the old key, kept until the rotation is done\nengineering namespaces=\"git\" ssh-ed25519 "), "{text}");

        std::fs::write(&file, format!("{text}engineering ssh-ed25519\n")).unwrap();
        let err = Trust::load("engineering", &file, SignaturePolicy::Required).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("engineering.allowed_signers"), "{message}");
        assert!(
            message.contains(&format!("line {}", text.lines().count() + 1)),
            "{message}"
        );
    }

    #[test]
    fn the_branch_trailer_binds_a_message_to_its_branch() {
        let message = with_branch_trailer(
            "export: 1 issue\n\nbody\n\n",
            "refs/heads/support/engineering",
        );
        assert_eq!(
            message,
            "export: 1 issue\n\nbody\n\nFerry-Branch: support/engineering\n"
        );
        assert_eq!(
            branch_trailer(&message).as_deref(),
            Some("support/engineering")
        );
        assert_eq!(branch_trailer("no trailer"), None);
        assert_eq!(
            branch_trailer("x\n\nFerry-Branch: a/b\nFerry-Branch: c/d\n").as_deref(),
            Some("c/d")
        );
    }

    #[test]
    fn a_public_key_is_taken_as_text_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = SiteKey::generate(&dir.path().join("k"), "ferry@x").unwrap();
        let text = parse_public_key(&key.public_line()).unwrap();
        assert_eq!(text.key_data(), key.public_key().key_data());
        let file = parse_public_key(public_path(key.path()).to_str().unwrap()).unwrap();
        assert_eq!(file.key_data(), key.public_key().key_data());
        let err = parse_public_key("ssh-ed25519 nonsense").unwrap_err();
        assert!(err.contains("ferry key show"), "{err}");
        let err = parse_public_key(dir.path().join("absent.pub").to_str().unwrap()).unwrap_err();
        assert!(err.contains("neither a .pub file"), "{err}");
    }
}
