//! Starting libgit2 without paying for TLS a run may never use.
//!
//! libgit2 built with OpenSSL (git2's `https` feature, for `https://` channels)
//! sets up its TLS context when it is initialised, which is the first git call
//! of a process, and that includes `SSL_CTX_set_default_verify_paths`: OpenSSL 3
//! then decodes every certificate of the system bundle. That took 50 ms of a
//! ferry run here, two thirds of an export with nothing to do, and cron runs
//! ferry four times per sync (export, push, pull, import) on every connection,
//! almost none of them over https.
//!
//! So the binary initialises libgit2 with OpenSSL's certificate file pointed at
//! an empty one (OpenSSL loads nothing and carries on; the hashed directory of
//! certificates it also sets up is only read on demand), puts the environment
//! back as it was, and an https channel loads the bundle into libgit2's context
//! before its first connection. Certificates are verified exactly as before,
//! against the same bundle (`SSL_CERT_FILE` if the user set it, else the one
//! `openssl-probe` finds, as git2 itself does).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The variable OpenSSL reads its default certificate file from.
const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// The certificate file libgit2 was started without, when it was.
static DEFERRED: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Initialises libgit2 without loading the certificate bundle (see the module
/// documentation); [`load_ca_bundle`] loads it when an https channel needs it.
///
/// # Safety
///
/// It changes the process environment and libgit2's global state: call it
/// before any other thread exists and before any other git call, which is the
/// first thing the binary's `main` does.
pub unsafe fn init_without_ca_bundle() {
    if !cfg!(all(unix, not(target_os = "macos"))) || DEFERRED.get().is_some() {
        // Elsewhere libgit2 uses the platform's TLS, not OpenSSL.
        return;
    }
    let saved: Option<OsString> = std::env::var_os(CERT_FILE_VAR);
    let Some(bundle) = saved
        .clone()
        .map(PathBuf::from)
        .or_else(|| openssl_probe::probe().cert_file)
    else {
        // No bundle file to load later: let OpenSSL look in its own default
        // places at start-up, as it always has.
        let _ = DEFERRED.set(None);
        return;
    };
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe { std::env::set_var(CERT_FILE_VAR, "/dev/null") };
    // Any git2 call initialises libgit2 (and git2's own OpenSSL set-up, which
    // leaves an already set variable alone).
    // SAFETY: reading an option; libgit2 is initialised by the call itself.
    let _ = unsafe { git2::opts::get_mwindow_size() };
    // SAFETY: as above.
    unsafe {
        match &saved {
            Some(value) => std::env::set_var(CERT_FILE_VAR, value),
            None => std::env::remove_var(CERT_FILE_VAR),
        }
    }
    let _ = DEFERRED.set(Some(bundle));
}

/// Loads the certificate bundle into libgit2's TLS context if
/// [`init_without_ca_bundle`] left it out; once per process.
pub fn load_ca_bundle() -> Result<(), git2::Error> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let Some(Some(bundle)) = DEFERRED.get() else {
        return Ok(());
    };
    LOADED
        .get_or_init(|| {
            // SAFETY: libgit2 was initialised by `init_without_ca_bundle`; the
            // `OnceLock` keeps two threads from setting the option at once.
            unsafe { git2::opts::set_ssl_cert_file(bundle) }.map_err(|e| {
                format!(
                    "loading the TLS certificates of {}: {}",
                    bundle.display(),
                    e.message()
                )
            })
        })
        .clone()
        .map_err(|message| {
            git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssl, message)
        })
}
