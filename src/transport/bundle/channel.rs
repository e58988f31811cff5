//! [`BundleChannel`]: the air-gapped channel, an outbox and an inbox folder.
//!
//! `push` writes a bundle of what the peer has not acknowledged into the outbox;
//! `fetch` takes every bundle of the inbox in order. Each bundle moves
//! inbox → `applying/` → (the peer's branch moves) → `archive/`, so a bundle is
//! never taken twice and a run killed anywhere is finished by the next one; a
//! refused bundle moves to `rejected/` with a `.reason` file for an operator.
//!
//! # One pending bundle per peer
//!
//! Every bundle is *cumulative*: its prerequisite is the peer's last
//! acknowledgement, so it holds everything of this site's branch the peer has
//! not confirmed. The newest one therefore holds all that any older one in the
//! outbox holds, and once it is complete (written, fsynced, renamed into place,
//! the folder fsynced) `push` removes the older ones: the outbox holds one
//! bundle per peer, of what the peer had not acknowledged when it was written,
//! whatever the number of runs since the stick last came back (a site syncing
//! every ten minutes would otherwise put a thousand full copies on a weekly
//! stick).
//!
//! We chose this over chaining each bundle on the previous one written (with
//! gaps detected from the acks and re-sent) because it needs no gap detection
//! at all, a lost or skipped bundle never matters, any one bundle is enough,
//! and its bound is plain: one bundle per peer. A chain writes less per run,
//! but must keep every link until it is acknowledged (one more file per run
//! while no ack comes), the peer must receive every link in order, and a lost
//! link must be noticed from the acks and sent again. Until the first ack both
//! carry the whole site once; after it, the cumulative bundle is a thin pack
//! of what is unacknowledged, about what the links would add up to.
//!
//! A bundle someone already carried away stays good: its prerequisite is an
//! ack the peer has, so it applies on its own; the peer archives one older than
//! what it already has (it received a newer bundle first) with a note, since
//! nothing in it is new, and takes a newer one after an older one as a
//! fast-forward.
//!
//! A run killed at any point leaves a complete bundle of everything
//! unacknowledged: the older ones go only after the newer one is in place, and
//! `refs/ferry/bundled/<peer>` moves only after they went, so the next run
//! writes the bundle again and finishes the removal.
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::Oid;

use super::{
    APPLYING_DIR, ARCHIVE_DIR, BundleError, ENCRYPTED_SUFFIX, EXTENSION, NotAFile, REJECTED_DIR,
    TEMPORARY_PREFIX, escaped, is_encrypted, open_sealed, plan, verify, write,
};
use crate::config::BundleSettings;
use crate::exchange::{Exchange, own_branch, peer_branch};
use crate::failpoint;
use crate::signing::Trust;
use crate::transport::{Channel, FetchOutcome, Limits, PushOutcome, TransportError, WaitingBundle};
use crate::words::short_id;
use ssh_key::PublicKey;

/// `refs/ferry/bundled/<peer>`: this site's commit last written to the outbox, so
/// `ferry sync` writes a bundle only when the branch moved since.
pub fn bundled_ref(peer: &str) -> String {
    format!("refs/ferry/bundled/{peer}")
}

/// What happened to one inbox file.
enum Step {
    /// Applied and archived.
    Applied(Oid),
    /// Waiting for its predecessor; left in the inbox.
    Waiting(WaitingBundle),
    /// The commit this site already has, or an older one; archived.
    Duplicate(String),
    /// Refused and moved aside.
    Refused(String),
}

/// An outbox and an inbox folder (see the module documentation).
pub struct BundleChannel {
    outbox: PathBuf,
    inbox: PathBuf,
    max_bytes: u64,
    description: String,
    /// Whom bundles are sealed for: the peer's trusted keys when the channel
    /// encrypts, none otherwise.
    seal_for: Vec<PublicKey>,
}

impl BundleChannel {
    /// The channel of `settings`; relative folders are resolved against `site_root`.
    /// With `encrypt: true`, bundles are sealed for the keys `trust` holds.
    pub fn new(settings: &BundleSettings, site_root: &Path, trust: &Trust) -> BundleChannel {
        BundleChannel {
            outbox: site_root.join(&settings.outbox),
            inbox: site_root.join(&settings.inbox),
            max_bytes: settings.max_bytes,
            description: crate::config::ChannelSetting::Bundles(settings.clone()).to_string(),
            seal_for: if settings.encrypt {
                trust.keys.clone()
            } else {
                Vec::new()
            },
        }
    }

    fn failed(&self, message: String) -> TransportError {
        TransportError::Failed {
            channel: self.description.clone(),
            message,
        }
    }

    fn bundle_err(&self, source: BundleError) -> TransportError {
        TransportError::Bundle {
            channel: self.description.clone(),
            source: Box::new(source),
        }
    }

    /// Refuses a folder that is not there, rather than creating it: an unmounted
    /// medium must not turn into a folder on the local disk.
    fn check_dir(&self, what: &str, dir: &Path) -> Result<(), TransportError> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(self.failed(format!(
                "{what} folder {} does not exist; mount the medium that carries the bundles, \
                 or create it with `mkdir -p {}`",
                dir.display(),
                dir.display()
            )))
        }
    }

    /// Moves `from` to `to`, creating `to`'s folder when it is one of the
    /// inbox's own (`applying/`, `archive/`, `rejected/`).
    fn move_file(&self, from: &Path, to: &Path) -> Result<(), TransportError> {
        if let Some(dir) = to.parent() {
            self.own_dir(dir)?;
        }
        fs::rename(from, to).map_err(|e| {
            self.failed(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    }

    /// Makes sure `dir`, a folder below the inbox that ferry writes into, is a
    /// real folder: whoever carries the medium could have left a link there
    /// pointing anywhere on this machine. The inbox itself was checked by
    /// [`BundleChannel::check_dir`] (and may well be a link to a mount point).
    fn own_dir(&self, dir: &Path) -> Result<(), TransportError> {
        if dir == self.inbox {
            return Ok(());
        }
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(meta) => Err(self.failed(format!(
                "{} is {}, not a folder; ferry writes only into real folders below the inbox: \
                 remove it",
                dir.display(),
                NotAFile::of(meta.file_type()).map_or("a file".to_string(), |k| k.to_string())
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(dir)
                .map_err(|e| self.failed(format!("cannot create {}: {e}", dir.display()))),
            Err(e) => Err(self.failed(format!("cannot read {}: {e}", dir.display()))),
        }
    }

    /// Inbox entries in `dir` named like bundles, by name (ferry's names sort in
    /// branch order). Entries that are not regular files are listed too, so that
    /// they are refused for what they are rather than silently skipped; nothing
    /// here follows a link.
    fn bundles_in(&self, dir: &Path) -> Result<Vec<PathBuf>, TransportError> {
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() || dir == self.inbox => {}
            _ => return Ok(Vec::new()),
        }
        let entries = fs::read_dir(dir)
            .map_err(|e| self.failed(format!("cannot list {}: {e}", dir.display())))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| self.failed(format!("cannot list {}: {e}", dir.display())))?
                .path();
            let name = path.file_name().unwrap_or_default().as_bytes();
            // Dot files are bundles still being written (see `write`).
            if !name.starts_with(b".")
                && (name.ends_with(format!(".{EXTENSION}").as_bytes())
                    || name.ends_with(ENCRYPTED_SUFFIX.as_bytes()))
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Removes the temporary files of bundles this site was writing to its outbox
    /// when a run died (see [`write`]); only this site writes there, and the
    /// site lock keeps a second run out, so every one of them is abandoned.
    fn remove_unfinished_bundles(&self) -> Result<(), TransportError> {
        let entries = fs::read_dir(&self.outbox)
            .map_err(|e| self.failed(format!("cannot list {}: {e}", self.outbox.display())))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPORARY_PREFIX)
            {
                let path = entry.path();
                fs::remove_file(&path)
                    .map_err(|e| self.failed(format!("cannot remove {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Removes the bundles for `peer` in the outbox other than `newest`, which
    /// was just written and holds all they hold (see the module documentation).
    ///
    /// The outbox folder is fsynced first, so that a power cut cannot undo the
    /// rename of `newest` and keep the removals. Only names this site writes for
    /// this peer are removed ([`own_bundle_for`]): whatever else is in the
    /// folder is left alone.
    fn remove_superseded(
        &self,
        site: &str,
        peer: &str,
        newest: &str,
    ) -> Result<(), TransportError> {
        fs::File::open(&self.outbox)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.failed(format!("cannot sync {}: {e}", self.outbox.display())))?;
        let entries = fs::read_dir(&self.outbox)
            .map_err(|e| self.failed(format!("cannot list {}: {e}", self.outbox.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| self.failed(format!("cannot list {}: {e}", self.outbox.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name == newest || !own_bundle_for(name, site, peer) {
                continue;
            }
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if !is_file {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Carried away (moved off the stick) while we listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self.failed(format!(
                        "cannot remove {}, superseded by {newest}: {e}; remove it by hand \
                         (the newer bundle holds all it holds)",
                        path.display()
                    )));
                }
            }
            failpoint::hit("bundle-after-remove-superseded");
        }
        Ok(())
    }

    /// Moves a refused bundle to `rejected/` with a reason file beside it, and
    /// returns the reason file's name when it is not `<name>.reason` (a name that
    /// long would pass the file system's limit).
    ///
    /// The reason file is created private (0600) under a temporary name and
    /// renamed into place, so a link someone left at its name is replaced, never
    /// written through.
    fn reject(&self, file: &Path, reason: &str) -> Result<Option<String>, TransportError> {
        let name = file.file_name().unwrap_or_default();
        let dir = self.inbox.join(REJECTED_DIR);
        self.move_file(file, &dir.join(name))?;
        let (reason_name, shortened) = reason_file_name(name.as_bytes());
        let reason_path = dir.join(OsStr::from_bytes(&reason_name));
        let failed =
            |e: std::io::Error| self.failed(format!("cannot write {}: {e}", reason_path.display()));
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMPORARY_PREFIX)
            .tempfile_in(&dir)
            .map_err(failed)?;
        tmp.write_all(format!("{}: {reason}\n", shown_name(name)).as_bytes())
            .map_err(failed)?;
        tmp.persist(&reason_path).map_err(|e| failed(e.error))?;
        Ok(shortened.then(|| shown_name(OsStr::from_bytes(&reason_name))))
    }

    /// Processes one bundle: verify, mark it applying, move the ref, archive it.
    /// A bundle found in `applying/` that is already part of the branch is the
    /// one a dead run had applied: it is only archived.
    fn process(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
        file: &Path,
    ) -> Result<Step, TransportError> {
        let name = file.file_name().unwrap_or_default().to_owned();
        let display = shown_name(&name);
        let applying = self.inbox.join(APPLYING_DIR).join(&name);
        let archived = self.inbox.join(ARCHIVE_DIR).join(&name);
        let recovering = file == applying;
        // The plaintext of an encrypted bundle, kept until the bundle is handled.
        let plain;
        let checked = if is_encrypted(file) {
            match open_sealed(exchange, file, self.max_bytes) {
                Ok(opened) => {
                    plain = opened;
                    verify(
                        exchange,
                        site,
                        peer,
                        plain.path(),
                        self.max_bytes,
                        trust,
                        &Limits::default(),
                    )
                }
                Err(e) => Err(e),
            }
        } else {
            verify(
                exchange,
                site,
                peer,
                file,
                self.max_bytes,
                trust,
                &Limits::default(),
            )
        };
        match checked {
            Ok(verified) => {
                if !recovering {
                    self.move_file(file, &applying)?;
                }
                failpoint::hit("bundle-after-applying");
                let tip = verified.tip();
                verified.apply().map_err(|e| self.bundle_err(e))?;
                failpoint::hit("bundle-after-ref");
                self.move_file(&applying, &archived)?;
                Ok(Step::Applied(tip))
            }
            Err(BundleError::Replay { head, .. }) if recovering => {
                self.move_file(&applying, &archived)?;
                Ok(Step::Applied(head))
            }
            // The very commit this site already has: the peer wrote the same bundle
            // twice (it died between writing it and recording that it had). Nothing
            // to apply and nothing rolled back.
            Err(BundleError::Replay { tip, head, .. }) if tip == head => {
                self.move_file(file, &archived)?;
                Ok(Step::Duplicate(format!(
                    "{display} brings {}, which this site already has (delivered twice); archived",
                    short_id(tip)
                )))
            }
            // Older than what this site has: the peer replaced it in its outbox by
            // a newer bundle, which arrived first. The branch never moves back, so
            // it is only archived.
            Err(BundleError::Replay { tip, head, .. }) => {
                self.move_file(file, &archived)?;
                Ok(Step::Duplicate(format!(
                    "{display} brings {}, older than {} which this site already has \
                     (superseded by a newer bundle); archived",
                    short_id(tip),
                    short_id(head)
                )))
            }
            Err(BundleError::MissingPrerequisite { oid, .. }) => {
                if recovering {
                    self.move_file(file, &self.inbox.join(&name))?;
                }
                Ok(Step::Waiting(WaitingBundle {
                    file: display,
                    needs: oid,
                }))
            }
            Err(e) if e.is_refusal() => {
                let reason = e.to_string();
                let elsewhere = self.reject(file, &reason)?;
                Ok(Step::Refused(match elsewhere {
                    None => format!("{display}: {reason}"),
                    Some(reason_file) => format!(
                        "{display}: {reason} (the reason is in {REJECTED_DIR}/{reason_file}, \
                         the name being too long for {display}.reason)"
                    ),
                }))
            }
            Err(e) => Err(self.bundle_err(e)),
        }
    }
}

/// Whether `name` is a bundle `push` writes for `site` → `peer`:
/// `<site>-<peer>-<8 digits>-<hex>` with a bundle ending. The tail after the
/// peer holds exactly one dash, so a peer whose name extends this one's
/// (`b` and `b-c`) never matches the other's files.
fn own_bundle_for(name: &str, site: &str, peer: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(site)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_prefix(peer))
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    let Some(stem) = rest
        .strip_suffix(ENCRYPTED_SUFFIX)
        .or_else(|| rest.strip_suffix(&format!(".{EXTENSION}")))
    else {
        return false;
    };
    let Some((count, commit)) = stem.split_once('-') else {
        return false;
    };
    count.len() == 8
        && count.bytes().all(|b| b.is_ascii_digit())
        && !commit.is_empty()
        && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The longest file name, in bytes, the file systems ferry runs on take.
const MAX_NAME_BYTES: usize = 255;

/// The reason file's name for the bundle named `name`: `<name>.reason`, or, when
/// that would be too long, as much of the name as fits with a hash of all of it
/// (so two long names never share a reason file); with whether it was shortened.
fn reason_file_name(name: &[u8]) -> (Vec<u8>, bool) {
    const SUFFIX: &[u8] = b".reason";
    if name.len() + SUFFIX.len() <= MAX_NAME_BYTES {
        return ([name, SUFFIX].concat(), false);
    }
    use sha2::Digest;
    let hash = format!("-{:x}", sha2::Sha256::digest(name));
    let hash = &hash.as_bytes()[..17];
    let mut keep = MAX_NAME_BYTES - SUFFIX.len() - hash.len();
    // Cut between characters, not inside one.
    while keep > 0 && name.get(keep).is_some_and(|b| b & 0xC0 == 0x80) {
        keep -= 1;
    }
    ([&name[..keep], hash, SUFFIX].concat(), true)
}

/// An inbox file name for a message: whoever wrote the medium chose it.
fn shown_name(name: &OsStr) -> String {
    escaped(&name.to_string_lossy())
}

impl Channel for BundleChannel {
    fn fetch(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        trust: &Trust,
    ) -> Result<FetchOutcome, TransportError> {
        self.check_dir("inbox", &self.inbox)?;
        let before = exchange
            .resolve(&peer_branch(site, peer))
            .map_err(|source| TransportError::Exchange {
                channel: self.description.clone(),
                source,
            })?;
        let mut after = before;
        let mut refused = Vec::new();
        let mut waiting = Vec::new();
        let mut duplicates = Vec::new();
        for file in self.bundles_in(&self.inbox.join(APPLYING_DIR))? {
            match self.process(exchange, site, peer, trust, &file)? {
                Step::Applied(tip) => after = Some(tip),
                Step::Waiting(_) => {}
                Step::Duplicate(note) => duplicates.push(note),
                Step::Refused(reason) => refused.push(reason),
            }
        }
        // Passes until nothing moves, so a bundle whose name sorts before its
        // predecessor's still goes in once the predecessor did.
        loop {
            let mut progress = false;
            waiting.clear();
            for file in self.bundles_in(&self.inbox)? {
                match self.process(exchange, site, peer, trust, &file)? {
                    Step::Applied(tip) => {
                        after = Some(tip);
                        progress = true;
                    }
                    Step::Waiting(bundle) => waiting.push(bundle),
                    Step::Duplicate(note) => duplicates.push(note),
                    Step::Refused(reason) => refused.push(reason),
                }
            }
            if !progress || waiting.is_empty() {
                break;
            }
        }
        if !refused.is_empty() {
            return Err(TransportError::BundlesRefused {
                channel: self.description.clone(),
                rejected_dir: self.inbox.join(REJECTED_DIR),
                refused,
            });
        }
        Ok(FetchOutcome {
            before,
            after,
            notes: duplicates,
            waiting,
        })
    }

    fn push(
        &self,
        exchange: &Exchange,
        site: &str,
        peer: &str,
        adopt: Option<Oid>,
    ) -> Result<PushOutcome, TransportError> {
        if let Some(adopt) = adopt {
            // Nobody else writes this site's bundles: there is no shared copy of
            // its branch that could have moved.
            return Err(TransportError::Failed {
                channel: self.description.clone(),
                message: format!(
                    "--adopt {adopt}: a bundle channel holds no copy of this site's branch \
                     to adopt; it is for git channels"
                ),
            });
        }
        self.check_dir("outbox", &self.outbox)?;
        self.remove_unfinished_bundles()?;
        let ex_err = |source| TransportError::Exchange {
            channel: self.description.clone(),
            source,
        };
        let Some(tip) = exchange.resolve(&own_branch(site, peer)).map_err(ex_err)? else {
            return Ok(PushOutcome::UpToDate);
        };
        let marker = bundled_ref(peer);
        if exchange.resolve(&marker).map_err(ex_err)? == Some(tip) {
            return Ok(PushOutcome::UpToDate);
        }
        let outcome = match plan(exchange, site, peer, false).map_err(|e| self.bundle_err(e))? {
            Some(plan) => {
                let count = exchange.commits_between(None, tip).map_err(ex_err)?.len();
                let suffix = if self.seal_for.is_empty() {
                    format!(".{EXTENSION}")
                } else {
                    ENCRYPTED_SUFFIX.to_string()
                };
                let name = format!("{site}-{peer}-{count:08}-{}{suffix}", short_id(tip));
                write(exchange, &plan, &self.outbox.join(&name), &self.seal_for)
                    .map_err(|e| self.bundle_err(e))?;
                failpoint::hit("bundle-after-write");
                self.remove_superseded(site, peer, &name)?;
                PushOutcome::Pushed(tip)
            }
            // The peer acknowledged this very commit (it came by `ferry bundle`).
            None => PushOutcome::UpToDate,
        };
        exchange
            .set_ref(&marker, tip, "ferry: bundle written to the outbox")
            .map_err(ex_err)?;
        Ok(outcome)
    }

    fn check(
        &self,
        _exchange: &Exchange,
        _site: &str,
        _peer: &str,
        _trust: &Trust,
    ) -> Result<String, TransportError> {
        self.check_dir("inbox", &self.inbox)?;
        self.check_dir("outbox", &self.outbox)?;
        // The outbox is written (a bundle) and the inbox too (each bundle moves
        // to applying/, archive/ or rejected/ beside it).
        for dir in [&self.outbox, &self.inbox] {
            let probe = dir.join(format!("{TEMPORARY_PREFIX}doctor-{}", std::process::id()));
            fs::write(&probe, b"")
                .and_then(|()| fs::remove_file(&probe))
                .map_err(|e| self.failed(format!("cannot write in {}: {e}", dir.display())))?;
        }
        let waiting = self.bundles_in(&self.inbox)?.len();
        Ok(format!(
            "inbox and outbox writable; {waiting} bundle{} waiting in the inbox",
            if waiting == 1 { "" } else { "s" }
        ))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::own_bundle_for;

    #[test]
    fn own_bundles_are_told_from_other_peers_and_other_files() {
        let ours = "a-b-00000012-0123456789.bundle";
        assert!(own_bundle_for(ours, "a", "b"));
        assert!(own_bundle_for(
            "a-b-00000012-0123456789.bundle.age",
            "a",
            "b"
        ));
        // Peer `b-c` of the same site, and the other way round.
        assert!(!own_bundle_for(
            "a-b-c-00000012-0123456789.bundle",
            "a",
            "b"
        ));
        assert!(!own_bundle_for(ours, "a", "b-c"));
        assert!(!own_bundle_for(ours, "a-b", "c"));
        for other in [
            "a-b-00000012-0123456789.bundle.reason",
            "a-b-0000012-0123456789.bundle",
            "a-b-00000012-.bundle",
            "a-b-00000012-xyz.bundle",
            "notes.txt",
            ".ferry-bundle-a-b-00000012-0123456789.bundle",
        ] {
            assert!(!own_bundle_for(other, "a", "b"), "{other}");
        }
    }
}
